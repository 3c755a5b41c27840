"""Split lists, case loading, intensity normalisation, validation messages."""
import numpy as np
import pytest

from genericssl.data.cases import load_case, normalize_intensity, read_split
from genericssl.errors import UserError


def _write_case(root, case_id, image, label=None):
    (root / "npy").mkdir(parents=True, exist_ok=True)
    np.save(root / "npy" / f"{case_id}_image.npy", image)
    if label is not None:
        np.save(root / "npy" / f"{case_id}_label.npy", label)


def test_read_split(tmp_path):
    (tmp_path / "split_txts").mkdir()
    (tmp_path / "split_txts" / "train.txt").write_text("a\n  b \n\nc\n")
    assert read_split(tmp_path, "train") == ["a", "b", "c"]
    with pytest.raises(UserError, match=r"split_txts/labeled\.txt does not exist.*train"):
        read_split(tmp_path, "labeled")
    (tmp_path / "split_txts" / "empty.txt").write_text("\n \n")
    with pytest.raises(UserError, match=r"split_txts/empty\.txt is empty"):
        read_split(tmp_path, "empty")


def test_read_split_accepts_authors_mmwhs_folder(tmp_path):
    (tmp_path / "splits_txts").mkdir()
    (tmp_path / "splits_txts" / "test_ct.txt").write_text("ct_train_1003\n")
    assert read_split(tmp_path, "test_ct") == ["ct_train_1003"]


def test_normalize_minmax_clip_percentile_constant():
    image = np.array([[-1000.0, 0.0], [100.0, 400.0]], np.float32)
    assert np.allclose(normalize_intensity(image, None), (image + 1000) / 1400)
    out = normalize_intensity(image, {"clip": [-75, 275], "percentile": None})
    assert np.allclose(out, [[0, 75 / 350], [175 / 350, 1]])
    ramp = np.arange(1000, dtype=np.float32)
    ramp[0], ramp[-1] = -1e6, 1e6                      # outliers
    out = normalize_intensity(ramp, {"clip": None, "percentile": [0.5, 99.5]})
    lo, hi = np.percentile(ramp, [0.5, 99.5])
    assert out.min() == 0 and out.max() == 1
    assert out[500] == pytest.approx((500 - lo) / (hi - lo), rel=1e-5)
    const = normalize_intensity(np.full((3, 3), 7.0), {"clip": None, "percentile": None})
    assert const.dtype == np.float32 and not np.isnan(const).any() and not const.any()


def test_load_case_normalises_and_returns_uint8(tmp_path):
    image = np.random.default_rng(0).normal(100, 20, (6, 7, 8)).astype(np.float32)
    label = (image > 100).astype(np.int64)
    _write_case(tmp_path, "c1", image, label)
    img, lab = load_case(tmp_path, "c1", {"clip": None, "percentile": None}, num_classes=2)
    assert img.dtype == np.float32 and img.min() == 0 and img.max() == 1
    assert lab.dtype == np.uint8 and np.array_equal(lab, label)
    img, lab = load_case(tmp_path, "c1", None, need_label=False)
    assert lab is None


def test_load_case_without_label_file_for_unlabeled(tmp_path):
    _write_case(tmp_path, "u1", np.ones((4, 4, 4), np.float32))
    assert load_case(tmp_path, "u1", None, need_label=False)[1] is None
    with pytest.raises(UserError, match=r"u1_label\.npy does not exist"):
        load_case(tmp_path, "u1", None)


@pytest.mark.parametrize("problem, match", [
    ("missing", r"c_image\.npy does not exist"),
    ("shape", r"c_label\.npy: label shape \[4, 4, 5\] differs from the image shape \[4, 4, 4\]"),
    ("nan", r"c_image\.npy: image holds 1 NaN"),
    ("values", r"c_label\.npy: label values \[3, 7\] are outside 0\.\.2"),
    ("negative", r"c_label\.npy: label values \[-1\] are outside"),
    ("fractional", r"c_label\.npy: label holds non-integer values"),
])
def test_validation_errors_name_the_file(tmp_path, problem, match):
    image = np.ones((4, 4, 4), np.float32)
    label = np.zeros((4, 4, 4), np.int16)
    if problem == "shape":
        label = np.zeros((4, 4, 5), np.uint8)
    elif problem == "nan":
        image[1, 1, 1] = np.nan
    elif problem == "values":
        label[0, 0, 0], label[1, 0, 0] = 3, 7
    elif problem == "negative":
        label[0, 0, 0] = -1
    elif problem == "fractional":
        label = np.full((4, 4, 4), 0.5, np.float32)
    if problem != "missing":
        _write_case(tmp_path, "c", image, label)
    with pytest.raises(UserError, match=match):
        load_case(tmp_path, "c", None, num_classes=3)
