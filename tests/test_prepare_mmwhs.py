"""`genericssl prepare mmwhs`: orientation, label codes, crop, intensity, 144^3, UDA splits."""
import json

import numpy as np
import pytest

from genericssl.prepare import mmwhs
from genericssl.prepare.common import read_nifti, reorient
from prepare_fixtures import (MMWHS_SHAPE, TURNS, lps_affine, make_mmwhs, mmwhs_volume, save_nifti, turn,
                              write_mmwhs_case)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The same anatomy stored canonically and in flipped / permuted orientations."""
    root = tmp_path_factory.mktemp("mmwhs")
    make_mmwhs(root / "plain")
    make_mmwhs(root / "turned", turned=True)
    for name in ("plain", "turned"):
        assert mmwhs.prepare(root / name, root / f"out_{name}", workers=1) == 0
    return root


def test_orientation_does_not_change_the_output(prepared):
    for p in sorted((prepared / "out_plain" / "npy").iterdir()):
        assert np.array_equal(np.load(p), np.load(prepared / "out_turned" / "npy" / p.name)), p.name


def test_reorientation_matches_itk_rai(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    image, _ = mmwhs_volume(0)
    for flips, perm in TURNS:
        data, aff = turn(image, lps_affine(), flips, perm)
        path = save_nifti(tmp_path / "x.nii.gz", data, aff)
        arr, a, _ = read_nifti(path, "image")
        ours, _ = reorient(arr, a, mmwhs.RAI)
        itk = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS"))
        assert np.array_equal(ours.transpose(2, 1, 0), itk)
        assert np.array_equal(ours, image)


def test_label_codes_crop_and_intensity(prepared):
    npy = prepared / "out_plain" / "npy"
    image, label = np.load(npy / "ct_train_1001_image.npy"), np.load(npy / "ct_train_1001_label.npy")
    assert image.shape == label.shape == (144, 144, 144)
    assert set(np.unique(label)) == {0, 1, 2, 3, 4}
    # The heart (code 205) spans fixture z 3..11, y 4..13, x 5..14; the crop keeps 4 voxels before
    # and 3 after, and scipy's order-0 zoom maps output i to round(i * (c - 1) / 143).
    _, raw = mmwhs_volume(0)
    zyx = raw.transpose(2, 1, 0)
    for ax in range(3):
        idx = np.flatnonzero((zyx > 0).any(axis=tuple(a for a in range(3) if a != ax)))
        lo, hi = max(idx[0] - 4, 0), min(idx[-1] + 4, zyx.shape[ax])
        c = hi - lo
        src = np.round(np.arange(144) * (c - 1) / 143).astype(int) + lo
        labeled = (label.any(axis=tuple(a for a in range(3) if a != ax)))
        expect = np.isin(src, np.flatnonzero(np.isin(zyx, [205, 420, 500, 820]).any(
            axis=tuple(a for a in range(3) if a != ax))))
        assert np.array_equal(labeled, expect), ax
    # z-scored after the clip to [0, p98]: the clipped top 2 % share the maximum.
    assert abs(image.mean()) < 0.2 and abs(image.std() - 1) < 0.2
    assert (image == image.max()).mean() > 0.01 and image.max() < 5
    meta = json.loads((prepared / "out_plain" / "dataset.json").read_text())
    assert meta["cases"]["ct_train_1001"]["domain"] == "ct" and meta["cases"]["mr_train_1001"]["domain"] == "mr"
    assert meta["labels"]["1"] == "myocardium" and meta["axes"] == "zyx"


def test_mr_train_1002_border_labels_are_blanked(tmp_path):
    image, label = mmwhs_volume(3)
    label[2:6, 2:5, 0:2] = 205  # a stray label in the first z slices, outside the heart
    make_mmwhs(tmp_path / "raw", numbers=(1001, 1003, 1004))
    for cid in ("mr_train_1002", "mr_train_1005"):
        write_mmwhs_case(tmp_path / "raw", cid, image, label, lps_affine())
    assert mmwhs.prepare(tmp_path / "raw", tmp_path / "out") == 0
    npy = tmp_path / "out" / "npy"
    kept, blanked = np.load(npy / "mr_train_1005_label.npy"), np.load(npy / "mr_train_1002_label.npy")
    assert kept[:20].any() and not blanked[:20].any()  # 1002's crop starts at the heart, 1005's at z 0


def test_splits_use_the_authors_test_cases():
    ids = [f"{m}_train_{1001 + i}" for m in ("ct", "mr") for i in range(20)]
    s = mmwhs.make_splits(ids, seed=0)
    assert s["test_mr"] == mmwhs.TEST["mr"] and s["test_ct"] == mmwhs.TEST["ct"]
    assert len(s["train_ct2mr_labeled"]) == 16 and len(s["train_ct2mr_unlabeled"]) == 13
    assert len(s["eval_ct2mr"]) == 3 and all(i.startswith("mr") for i in s["eval_ct2mr"])
    assert sorted(s["train_ct2mr_unlabeled"] + s["eval_ct2mr"] + s["test_mr"]) == sorted(ids[20:])
    assert sorted(s["train_mr2ct_labeled"] + s["test_mr"]) == sorted(ids[20:])
    assert s == mmwhs.make_splits(ids, seed=0) and s != mmwhs.make_splits(ids, seed=1)


def test_missing_test_cases_are_chosen_and_announced(capsys):
    ids = [f"{m}_train_{1030 + i}" for m in ("ct", "mr") for i in range(6)]
    s = mmwhs.make_splits(ids, seed=0)
    out = capsys.readouterr().out
    assert "CT: the authors' test cases" in out and "MR: the authors' test cases" in out
    assert len(s["test_ct"]) == 1 and s["test_ct"][0] in out
    assert all(s[k] for k in s)


def test_prepared_splits_are_complete(prepared):
    splits = prepared / "out_plain" / "split_txts"
    names = {p.stem for p in splits.iterdir()}
    assert names == {"train_ct2mr_labeled", "train_ct2mr_unlabeled", "eval_ct2mr", "test_mr",
                     "train_mr2ct_labeled", "train_mr2ct_unlabeled", "eval_mr2ct", "test_ct"}
    assert "ct_train_1003" in (splits / "test_ct.txt").read_text()  # the one authors' test case present


def test_bad_cases_are_skipped(tmp_path, capsys):
    raw = tmp_path / "raw"
    make_mmwhs(raw, numbers=(1001, 1002, 1004, 1005, 1006))
    image, label = mmwhs_volume(0)
    write_mmwhs_case(raw, "ct_train_1004", image, np.where(label == 600, 999, label), lps_affine())
    write_mmwhs_case(raw, "ct_train_1005", np.full(MMWHS_SHAPE, np.nan, np.float32), label, lps_affine())
    flipped = lps_affine()
    flipped[0, 0] *= -1
    write_mmwhs_case(raw, "mr_train_1004", image, label, lps_affine(), label_affine=flipped)
    assert mmwhs.prepare(raw, tmp_path / "out", allow_skips=True) == 0
    out = capsys.readouterr().out
    for cid, why in (("ct_train_1004", "[999]"), ("ct_train_1005", "NaN"), ("mr_train_1004", "affines differ")):
        assert any(cid in line and why in line for line in out.splitlines()), (cid, why)
