"""`genericssl prepare synapse`: (z, y, x) arrays resized to 80x160x160, the IBSSL splits."""
import json

import numpy as np

from genericssl.prepare import synapse
from prepare_fixtures import SYNAPSE_AFFINE, make_synapse, save_nifti, synapse_volume


def test_arrays_are_zyx_resized_without_corner_alignment(tmp_path):
    raw = tmp_path / "raw"
    make_synapse(raw, n=5)
    # Case 0001 replaced by a ramp along z (NIfTI axis 2) and a label block at known (x, y, z).
    shape = (24, 20, 10)
    ramp = np.broadcast_to(np.arange(10, dtype=np.float32), shape).copy()
    label = np.zeros(shape, np.uint8)
    label[0:12, 0:10, 0:5] = 7  # the low x, y, z octant
    save_nifti(raw / "imagesTr" / "img0001.nii.gz", ramp, SYNAPSE_AFFINE)
    save_nifti(raw / "labelsTr" / "label0001.nii.gz", label, SYNAPSE_AFFINE)
    out = tmp_path / "out"
    assert synapse.prepare(raw, out) == 0

    image = np.load(out / "npy" / "0001_image.npy")
    lab = np.load(out / "npy" / "0001_label.npy")
    assert image.shape == lab.shape == (80, 160, 160) and image.dtype == np.float32 and lab.dtype == np.uint8
    # align_corners=False: output slice i samples z = (i + 0.5) * 10 / 80 - 0.5, clamped to [0, 9].
    expect = np.clip((np.arange(80) + 0.5) * 10 / 80 - 0.5, 0, 9)
    assert np.allclose(image[:, 5, 5], expect, atol=1e-5)
    assert np.all(lab[:40, :80, :80] == 7) and not lab[40:].any() and not lab[:, 80:].any()
    assert not lab[:, :, 80:].any()
    for cid in ("0002", "0003"):
        assert set(np.unique(np.load(out / "npy" / f"{cid}_label.npy"))) <= set(range(14))
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["axes"] == "zyx" and meta["num_classes"] == 14
    assert np.allclose(meta["cases"]["0001"]["spacing"], [3.0 * 10 / 80, 0.8 * 20 / 160, 0.8 * 24 / 160])


def test_splits_on_30_cases_match_the_authors_counts():
    ids = [f"{i:04d}" for i in range(1, 31)]
    s = synapse.make_splits(ids, seed=0)
    assert [len(s[k]) for k in ("train", "eval", "test", "labeled_0.2", "unlabeled_0.2")] == [20, 4, 6, 4, 16]
    assert sorted(s["train"] + s["eval"] + s["test"]) == ids
    assert sorted(s["labeled_0.2"] + s["unlabeled_0.2"]) == s["train"]
    assert s == synapse.make_splits(list(reversed(ids)), seed=0)
    assert len({tuple(synapse.make_splits(ids, seed)["test"]) for seed in (0, 1, 666)}) == 3


def test_bad_cases_are_skipped(tmp_path, capsys):
    raw = tmp_path / "raw"
    make_synapse(raw, n=9)
    (raw / "labelsTr" / "label0002.nii.gz").unlink()
    image, label = synapse_volume(0)
    save_nifti(raw / "labelsTr" / "label0003.nii.gz", np.where(label == 5, 14, label).astype(np.uint8), SYNAPSE_AFFINE)
    shifted = SYNAPSE_AFFINE.copy()
    shifted[0, 3] = 30.0  # label 30 mm away from its image
    save_nifti(raw / "labelsTr" / "label0004.nii.gz", label, shifted)
    save_nifti(raw / "labelsTr" / "label0005.nii.gz", label[:, :, :9], SYNAPSE_AFFINE)
    assert synapse.prepare(raw, tmp_path / "out", allow_skips=True) == 0
    out = capsys.readouterr().out
    for cid, why in (("0002", "label file missing"), ("0003", "label codes [14]"), ("0004", "affines differ"),
                     ("0005", "shape")):
        assert any(cid in line and why in line for line in out.splitlines()), (cid, why)
    listed = set()
    for name in ("train", "eval", "test"):
        listed |= set((tmp_path / "out" / "split_txts" / f"{name}.txt").read_text().split())
    assert listed == {"0001", "0006", "0007", "0008", "0009"}
