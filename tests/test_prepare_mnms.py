"""`genericssl prepare mnms` / `mnms2d`: labeled frames of 4D cines, crops, vendor splits."""
import json
import math

import numpy as np
import pytest

from genericssl.errors import UserError
from genericssl.prepare import mnms
from prepare_fixtures import (LABELED_FRAMES, LABELED_Z, VENDOR_DIRS, make_mnms, mnms_subject,
                              mnms_subject_id, save_nifti, write_mnms_subject)


def _split(out, name):
    return (out / "split_txts" / f"{name}.txt").read_text().splitlines()


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("mnms") / "MNMs"
    subjects = make_mnms(root, per_vendor=3)
    # In-plane markers: x is cropped to [5, 25), y to [4, 20) (s//2 -/+ s//3).
    sid = subjects["A"][0]
    image, label = mnms_subject(0)
    for x, y, value in ((4, 10, 3001), (25, 10, 3002), (12, 3, 3003), (12, 20, 3004),
                        (5, 10, 2001), (24, 10, 2002), (12, 4, 2003), (12, 19, 2004)):
        image[x, y, 2, 0] = value
    write_mnms_subject(root / "Labeled" / VENDOR_DIRS["A"], sid, image, label)
    return root


@pytest.fixture(scope="module")
def out3d(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("mnms_out")
    assert mnms.prepare(raw, out, seed=0) == 0
    return out


def test_labeled_frames_become_cases(raw, out3d):
    meta = json.loads((out3d / "dataset.json").read_text())
    sid = mnms_subject_id("A", 0)
    assert {c for c in meta["cases"] if c.startswith(sid)} == {f"{sid}_sa_{t}" for t in LABELED_FRAMES}
    assert len(meta["cases"]) == 4 * 3 * len(LABELED_FRAMES)
    assert meta["cases"][f"{sid}_sa_0"]["domain"] == "A" and meta["axes"] == "zyx"
    image = np.load(out3d / "npy" / f"{sid}_sa_0_image.npy")
    label = np.load(out3d / "npy" / f"{sid}_sa_0_label.npy")
    assert image.shape == label.shape == (32, 144, 144) and label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1, 2, 3}
    # inclusive slice range: the last labeled slice (class 3 only) is the last 8 of 32 output slices
    assert (label[-8:] == 3).any() and not (label[:-8] == 3).any()
    inside, outside = {2001, 2002, 2003, 2004}, {3001, 3002, 3003, 3004}
    values = set(np.unique(image).astype(int))
    assert inside <= values and not outside & values
    z0, z1 = LABELED_Z
    sp = meta["cases"][f"{sid}_sa_0"]["spacing"]
    assert np.allclose(sp, [9.0 * (z1 - z0 + 1) / 32, 1.3 * 16 / 144, 1.3 * 20 / 144])


def test_authors_slice_range_drops_the_last_labeled_slice(raw, tmp_path):
    assert mnms.prepare(raw, tmp_path, authors_slice_range=True) == 0
    sid = mnms_subject_id("B", 1)
    label = np.load(tmp_path / "npy" / f"{sid}_sa_3_label.npy")
    assert label.shape == (32, 144, 144) and set(np.unique(label)) == {0, 1, 2}


def test_vendor_splits(raw, out3d):
    subjects = {v: [mnms_subject_id(v, i) for i in range(3)] for v in "ABCD"}
    assert _split(out3d, "vendorA") == sorted(f"{s}_sa" for s in subjects["A"])
    frames = lambda subs: {f"{s}_sa_{t}" for s in subs for t in LABELED_FRAMES}  # noqa: E731
    for r in mnms.RATIOS:
        for x in "ABCD":
            lab, unl = set(_split(out3d, f"train_to{x}_labeled_{r}")), set(_split(out3d, f"train_to{x}_unlabeled_{r}"))
            others = [v for v in "ABCD" if v != x]
            assert lab | unl == frames(s for v in others for s in subjects[v]) and not lab & unl
            lab_subjects = {c.rsplit("_sa_", 1)[0] for c in lab}
            assert len(lab_subjects) == 3 * math.ceil(3 * r)  # ceil(n r) subjects of each source vendor
            assert lab == {c for c in lab | unl if c.rsplit("_sa_", 1)[0] in lab_subjects}  # frames together
            assert _split(out3d, f"eval_to{x}_{r}") == sorted(lab)
            assert set(_split(out3d, f"test_to{x}_{r}")) == frames(subjects[x])


def test_raw_may_be_the_labeled_folder_and_2d_draws_the_same_subjects(raw, out3d, tmp_path):
    assert mnms.prepare_2d(raw / "Labeled", tmp_path, seed=0) == 0
    meta = json.loads((tmp_path / "dataset.json").read_text())
    sid = mnms_subject_id("C", 2)
    z0, z1 = LABELED_Z
    assert {c for c in meta["cases"] if c.startswith(f"{sid}_sa_0_")} == {f"{sid}_sa_0_{d}" for d in range(z1 - z0 + 1)}
    image = np.load(tmp_path / "npy" / f"{sid}_sa_0_0_image.npy")
    # in-plane crop 16 x 20 (y, x); short side to 288: 288 x int(288 / 16 * 20)
    assert image.shape == (288, 360) and meta["axes"] == "yx"
    assert set(np.unique(np.load(tmp_path / "npy" / f"{sid}_sa_0_3_label.npy"))) == {0, 3}
    for r in mnms.RATIOS:
        subj2d = {c.rsplit("_sa_", 1)[0] for c in _split(tmp_path, f"train_toA_labeled_{r}")}
        subj3d = {c.rsplit("_sa_", 1)[0] for c in _split(out3d, f"train_toA_labeled_{r}")}
        assert subj2d == subj3d


def test_2d_leaves_out_all_zero_slices(tmp_path):
    root = tmp_path / "MNMs"
    make_mnms(root, per_vendor=2)
    image, label = mnms_subject(0)
    image[:, :, 2, :] = 0
    write_mnms_subject(root / "Labeled" / VENDOR_DIRS["A"], mnms_subject_id("A", 0), image, label)
    assert mnms.prepare_2d(root, tmp_path / "out") == 0
    cases = json.loads((tmp_path / "out" / "dataset.json").read_text())["cases"]
    sid = mnms_subject_id("A", 0)
    assert f"{sid}_sa_0_0" in cases and f"{sid}_sa_0_1" not in cases  # fixture slice 2 is range index 1


def test_bad_subjects_are_skipped(tmp_path, capsys):
    root = tmp_path / "MNMs"
    make_mnms(root, per_vendor=3)
    folder = root / "Labeled" / VENDOR_DIRS["B"]
    (folder / mnms_subject_id("B", 0) / f"{mnms_subject_id('B', 0)}_sa_gt.nii.gz").unlink()
    image, label = mnms_subject(5)
    write_mnms_subject(folder, mnms_subject_id("B", 1), image, np.where(label == 2, 7, label).astype(np.uint8))
    sid = mnms_subject_id("C", 0)
    save_nifti(root / "Labeled" / VENDOR_DIRS["C"] / sid / f"{sid}_sa_gt.nii.gz", label[:, :, :5])
    assert mnms.prepare(root, tmp_path / "out", allow_skips=True) == 0
    out = capsys.readouterr().out
    for sid, why in ((mnms_subject_id("B", 0), "label file missing"), (mnms_subject_id("B", 1), "[7]"),
                     (mnms_subject_id("C", 0), "shape")):
        assert any(sid in line and why in line for line in out.splitlines()), (sid, why)
    assert _split(tmp_path / "out", "vendorB") == [f"{mnms_subject_id('B', 2)}_sa"]


def test_authors_vendor_lists_drop_in(raw, out3d, tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "vendorA.txt").write_text("".join(f"{mnms_subject_id('A', i)}_sa\n" for i in range(3)))
    assert mnms.prepare(raw, out3d, splits=tmp_path / "lists") == 0
    (tmp_path / "lists" / "vendorA.txt").write_text("Q9Q9Q9_sa\n")
    with pytest.raises(UserError, match="vendorA.txt.*Q9Q9Q9_sa"):
        mnms.prepare(raw, out3d, splits=tmp_path / "lists")


def test_missing_vendor_folders_point_to_mnms_sort(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match="mnms-sort"):
        mnms.prepare(tmp_path / "x", tmp_path / "out")
