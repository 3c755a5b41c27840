"""A new scan reaches the model as the training cases did: for a fake raw case of each dataset,
the array `genericssl predict` prepares from the NIfTI equals the one `genericssl prepare` wrote.

Where training needs the label (MM-WHS heart crop, M&Ms labeled slices), the case is built so
that step keeps the whole volume, the only situation in which predict's label-free path can
agree with it."""
import numpy as np
import pytest

from genericssl.cli import main as cli
from genericssl.predict import raw_preparation
from genericssl.config import load_config
from genericssl.imageio import as_3d, dataset_axes, read_volume
from prepare_fixtures import (VENDOR_DIRS, lps_affine, make_la, make_mmwhs, make_mnms,
                              make_synapse, mmwhs_volume, mnms_subject, mnms_subject_id, save_nifti, turn,
                              write_mmwhs_case, write_mnms_subject)


def _prepare(dataset, raw, out):
    assert cli(["prepare", dataset, "--raw", str(raw), "--out", str(out), "--workers", "1"]) == 0


def _predict_input(task, scan, out, frame=None):
    """(prepared array, context, preparation) exactly as `genericssl predict` makes them."""
    cfg = load_config(task)
    prep = raw_preparation(cfg, dataset_axes(cfg.dataset, out))
    vol = read_volume(scan)
    arr, ctx = prep.forward(as_3d(vol, frame), vol.affine)
    return arr, ctx, prep


def test_synapse(tmp_path):
    make_synapse(tmp_path / "raw", n=8)
    _prepare("synapse", tmp_path / "raw", tmp_path / "out")
    arr, ctx, prep = _predict_input("synapse_0.2", tmp_path / "raw" / "imagesTr" / "img0003.nii.gz", tmp_path / "out")
    np.testing.assert_array_equal(arr, np.load(tmp_path / "out" / "npy" / "0003_image.npy"))
    back = prep.backward(np.load(tmp_path / "out" / "npy" / "0003_label.npy"), ctx)
    assert back.shape == (24, 20, 10)


def test_mmwhs_when_the_heart_crop_keeps_the_whole_volume(tmp_path):
    raw = tmp_path / "raw"
    make_mmwhs(raw)
    image, label = mmwhs_volume(7)
    # Myocardium at two opposite corners: the bounding box, grown by 4 and 3, is the whole volume.
    label[0, 0, 0] = label[-1, -1, -1] = 205
    # Stored flipped and permuted, so predict's reorientation to RAI is part of what is compared.
    img, aff = turn(image, lps_affine(), (0, 2), (2, 0, 1))
    lab, _ = turn(label, lps_affine(), (0, 2), (2, 0, 1))
    write_mmwhs_case(raw, "ct_train_1005", img, lab, aff)
    _prepare("mmwhs", raw, tmp_path / "out")
    scan = raw / "CT" / "imagesTr" / "ct_train_1005_image.nii.gz"
    arr, ctx, prep = _predict_input("mmwhs_mr2ct", scan, tmp_path / "out")
    np.testing.assert_array_equal(arr, np.load(tmp_path / "out" / "npy" / "ct_train_1005_image.npy"))
    # The prepared label, mapped back through predict's way out, lies on the stored scan again.
    back = prep.backward(np.load(tmp_path / "out" / "npy" / "ct_train_1005_label.npy"), ctx)
    assert back.shape == img.shape
    heart = np.isin(lab, [205, 420, 500, 820])
    assert (back > 0)[heart].mean() > 0.9 and (back > 0)[~heart].mean() < 0.1


@pytest.fixture(scope="module")
def mnms_raw(tmp_path_factory):
    """M&Ms with one subject labeled on every slice of frame 0, so training keeps all slices."""
    root = tmp_path_factory.mktemp("mnms") / "MNMs"
    make_mnms(root, per_vendor=2)
    sid = mnms_subject_id("B", 1)
    image, label = mnms_subject(5)
    label[10:20, 8:16, :, 0] = 1
    write_mnms_subject(root / "Labeled" / VENDOR_DIRS["B"], sid, image, label)
    return root, sid, image.shape


def test_mnms_3d_when_every_slice_is_labeled(mnms_raw, tmp_path):
    root, sid, shape = mnms_raw
    _prepare("mnms", root, tmp_path / "out")
    scan = root / "Labeled" / VENDOR_DIRS["B"] / sid / f"{sid}_sa.nii.gz"
    arr, ctx, prep = _predict_input("mnms_A_0.02", scan, tmp_path / "out", frame=0)
    np.testing.assert_array_equal(arr, np.load(tmp_path / "out" / "npy" / f"{sid}_sa_0_image.npy"))
    back = prep.backward(np.load(tmp_path / "out" / "npy" / f"{sid}_sa_0_label.npy"), ctx)
    assert back.shape == shape[:3]
    assert not back[:5].any() and not back[25:].any()  # outside the central in-plane crop: background


def test_mnms_2d_slices_when_every_slice_is_labeled(mnms_raw, tmp_path):
    root, sid, shape = mnms_raw
    _prepare("mnms2d", root, tmp_path / "out")
    scan = root / "Labeled" / VENDOR_DIRS["B"] / sid / f"{sid}_sa.nii.gz"
    arr, ctx, prep = _predict_input("mnms2d_A_0.02", scan, tmp_path / "out", frame=0)
    assert arr.shape[0] == shape[2]
    for d in range(shape[2]):
        np.testing.assert_array_equal(arr[d], np.load(tmp_path / "out" / "npy" / f"{sid}_sa_0_{d}_image.npy"))
    labels = np.stack([np.load(tmp_path / "out" / "npy" / f"{sid}_sa_0_{d}_label.npy") for d in range(shape[2])])
    assert prep.backward(labels, ctx).shape == shape[:3]


def test_la(tmp_path):
    arrays = make_la(tmp_path / "raw")
    _prepare("la", tmp_path / "raw", tmp_path / "out")
    cid = sorted(arrays)[1]
    # LA ships as HDF5; a NIfTI of the same array in the same (x, y, z) order is what predict would get.
    scan = save_nifti(tmp_path / f"{cid}.nii.gz", arrays[cid][0], np.eye(4))
    arr, ctx, prep = _predict_input("la_0.1", scan, tmp_path / "out")
    np.testing.assert_array_equal(arr, np.load(tmp_path / "out" / "npy" / f"{cid}_image.npy"))
    label = np.load(tmp_path / "out" / "npy" / f"{cid}_label.npy")
    np.testing.assert_array_equal(prep.backward(label, ctx), label)


def test_custom_reorients_and_resamples_as_prepare_did(tmp_path):
    from genericssl.prepare.common import read_nifti
    from test_prepare_custom import AFFINE, make_raw

    raw, out = tmp_path / "raw", tmp_path / "out"
    make_raw(raw, n_labeled=3, n_unlabeled=1)
    data, _, _ = read_nifti(raw / "images" / "case01_0000.nii.gz", "x")   # stored with x flipped
    save_nifti(raw / "images" / "case01_0000.nii.gz", *turn(data, AFFINE, flips=(0,)))
    (raw / "genericssl.yaml").write_text(
        "num_classes: 3\norientation: RAS\nresample: [16, 24, 32]\n"
        "cases: {labeled: [case00], eval: [case01], test: [case02]}\n")
    _prepare("custom", raw, out)
    cfg = load_config(config_file=out / "task.yaml")
    prep = raw_preparation(cfg, dataset_axes(cfg.dataset, out), data_dir=out)
    assert prep.name == "reorient to RAS, resize to 16x24x32 (trilinear)" and prep.note is None
    for cid in ("case00", "case01"):
        vol = read_volume(raw / "images" / f"{cid}_0000.nii.gz")
        arr, ctx = prep.forward(as_3d(vol), vol.affine)
        np.testing.assert_allclose(arr, np.load(out / "npy" / f"{cid}_image.npy"), rtol=1e-6, atol=1e-6)
    # a label on the prepared grid goes back onto the stored (flipped) scan
    back = prep.backward(np.load(out / "npy" / "case01_label.npy"), ctx)
    assert back.shape == as_3d(vol).shape
    stored, _, _ = read_nifti(raw / "labels" / "case01.nii.gz", "label")
    dice = lambda a, b: 2 * (a & b).sum() / (a.sum() + b.sum())
    # Dice of the round trip through a coarser grid (10-voxel boxes lose their edges), and
    # far better than if the flip had not been undone
    assert dice(back > 0, stored[::-1] > 0) > 0.75 > dice(back > 0, stored > 0) + 0.2
    # without the record (a folder prepared by an older version) predict says what it does instead
    legacy = load_config(config_file=out / "task.yaml")
    prep = raw_preparation(legacy, "zyx", data_dir=tmp_path / "nowhere")
    assert prep.name == "axes only" and "records no orientation or resampling" in prep.note
