"""`genericssl prepare`: every skipped case is listed with its file and reason, and a dataset
with skipped cases is finished (and exits 0) only with --allow-skips."""
import gzip

import numpy as np
import pytest
import yaml

from genericssl.cli import main as cli
from genericssl.prepare import common
from prepare_fixtures import (SYNAPSE_AFFINE, lps_affine, make_la, make_mmwhs, make_synapse, mmwhs_volume,
                              save_nifti, synapse_volume, write_mmwhs_case)


def _prepare(capsys, dataset, raw, out, *extra):
    code = cli(["prepare", dataset, "--raw", str(raw), "--out", str(out), "--workers", "1", *extra])
    text = capsys.readouterr()
    assert "Traceback" not in text.out + text.err
    return code, text.out, text.err


def _line(text, *words):
    """The one output line holding every word, or None."""
    return next((line for line in text.splitlines() if all(w in line for w in words)), None)


def _break_missing_image(raw):
    (raw / "imagesTr" / "img0002.nii.gz").unlink()
    return raw / "imagesTr" / "img0002.nii.gz", "image file missing"


def _break_missing_label(raw):
    (raw / "labelsTr" / "label0002.nii.gz").unlink()
    return raw / "labelsTr" / "label0002.nii.gz", "label file missing"


def _break_unreadable(raw):
    path = raw / "imagesTr" / "img0002.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header"))
    return path, "cannot read image"


def _break_truncated(raw):
    path = raw / "labelsTr" / "label0002.nii.gz"
    path.write_bytes(path.read_bytes()[:60])
    return path, "cannot read label"


def _break_shape(raw):
    _, label = synapse_volume(1)
    save_nifti(raw / "labelsTr" / "label0002.nii.gz", label[:, :, :9], SYNAPSE_AFFINE)
    return "label0002.nii.gz", "differs from label shape"


def _break_codes(raw):
    _, label = synapse_volume(1)
    save_nifti(raw / "labelsTr" / "label0002.nii.gz", np.where(label == 5, 14, label).astype(np.uint8),
               SYNAPSE_AFFINE)
    return raw / "labelsTr" / "label0002.nii.gz", "label codes [14]"


def _break_nan(raw):
    image, _ = synapse_volume(1)
    save_nifti(raw / "imagesTr" / "img0002.nii.gz", np.full(image.shape, np.nan, np.float32), SYNAPSE_AFFINE)
    return raw / "imagesTr" / "img0002.nii.gz", "NaN"


@pytest.mark.parametrize("brk", [_break_missing_image, _break_missing_label, _break_unreadable, _break_truncated,
                                 _break_shape, _break_codes, _break_nan], ids=lambda f: f.__name__[7:])
def test_each_bad_case_is_named_with_its_file_and_the_run_exits_1(tmp_path, capsys, brk):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_synapse(raw, n=2)
    path, why = brk(raw)
    code, stdout, stderr = _prepare(capsys, "synapse", raw, out)
    assert code == 1
    assert "1 cases written, 1 skipped" in stdout
    assert _line(stdout, "0002", str(path), why), stdout
    assert "--allow-skips" in stderr
    assert not (out / "dataset.json").exists() and not (out / "split_txts").exists()
    assert (out / "npy" / "0001_image.npy").is_file()  # the good case is kept for the rerun


def test_allow_skips_finishes_the_dataset_without_them(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_synapse(raw, n=8)
    path, _ = _break_missing_image(raw)
    assert _prepare(capsys, "synapse", raw, out)[0] == 1
    code, stdout, _ = _prepare(capsys, "synapse", raw, out, "--allow-skips")
    assert code == 0
    assert "7 cases written, 1 skipped" in stdout and "7 reused" in stdout
    assert _line(stdout, "0002", str(path), "image file missing")
    listed = set()
    for name in ("train", "eval", "test"):
        listed |= set((out / "split_txts" / f"{name}.txt").read_text().split())
    assert len(listed) == 7 and "0002" not in listed


def test_mmwhs_label_without_its_image_is_reported(tmp_path, capsys):
    raw = tmp_path / "raw"
    make_mmwhs(raw, numbers=(1001, 1002))
    image, label = mmwhs_volume(0)
    write_mmwhs_case(raw, "ct_train_1009", image, label, lps_affine())
    (raw / "CT" / "imagesTr" / "ct_train_1009_image.nii.gz").unlink()
    code, stdout, _ = _prepare(capsys, "mmwhs", raw, tmp_path / "out")
    assert code == 1
    assert _line(stdout, "ct_train_1009", str(raw / "CT" / "imagesTr" / "ct_train_1009_image.nii.gz"),
                 "image file missing"), stdout


def test_custom_label_without_its_image_is_reported(tmp_path, capsys):
    raw = tmp_path / "raw"
    shape, affine = (20, 18, 10), np.eye(4)
    for i in range(4):
        save_nifti(raw / "images" / f"case{i}.nii.gz", np.random.default_rng(i).normal(size=shape), affine)
        save_nifti(raw / "labels" / f"case{i}.nii.gz", np.zeros(shape, np.uint8), affine)
    save_nifti(raw / "labels" / "case9.nii.gz", np.zeros(shape, np.uint8), affine)
    (raw / "genericssl.yaml").write_text(yaml.safe_dump(
        {"num_classes": 2, "cases": {"labeled": ["case0"], "eval": ["case1"], "test": ["case2"]}}))
    code, stdout, _ = _prepare(capsys, "custom", raw, tmp_path / "out")
    assert code == 1
    assert _line(stdout, "case9", str(raw / "images" / "case9.nii.gz"), "image file missing"), stdout
    assert not (tmp_path / "out" / "task.yaml").exists()


def test_la_case_missing_from_the_lists_folder(tmp_path, capsys):
    raw = tmp_path / "raw"
    make_la(raw, n_train=3, n_test=1)
    cid = (raw / "train.list").read_text().split()[0]
    path = raw / "2018LA_Seg_Training Set" / cid / "mri_norm2.h5"
    path.unlink()
    code, stdout, _ = _prepare(capsys, "la", raw, tmp_path / "out")
    assert code == 1 and _line(stdout, cid, str(path), "file missing"), stdout


def _nan_frame(item):
    # Like an M&Ms subject: one good frame, one frame skipped for its content, not its file.
    common.save_case(item["npy_dir"], f"{item['key']}_0", np.arange(8.0).reshape(2, 2, 2),
                     np.zeros((2, 2, 2), np.uint8), 2)
    return {"cases": {f"{item['key']}_0": {}}, "skipped": [[f"{item['key']}_1", "image contains NaN"]]}


def test_a_reason_without_a_file_gets_the_cases_inputs(tmp_path, capsys):
    items = [{"key": "s1", "inputs": [str(tmp_path / "s1_sa.nii.gz"), str(tmp_path / "s1_sa_gt.nii.gz")]}]
    for _ in range(2):  # prepared, then reused from its record: the same line both times
        res = common.run_items(_nan_frame, items, tmp_path / "out", params={}, workers=1, force=False, desc="t")
        assert common.summarize(res, "T") == 1
        line = _line(capsys.readouterr().out, "s1_1", "image contains NaN")
        assert line and str(tmp_path / "s1_sa.nii.gz") in line
    assert common.skip_line("a", "a: cannot read /x/a.nii.gz", ["/x/a.nii.gz"]) == "a: cannot read /x/a.nii.gz"
