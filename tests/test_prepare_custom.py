"""`genericssl prepare custom`: your own NIfTI data described by YAML/JSON, plus task.yaml."""
import json

import numpy as np
import pytest
import yaml

from genericssl.config import load_config
from genericssl.errors import UserError
from genericssl.prepare import custom
from genericssl.prepare.common import read_nifti
from prepare_fixtures import save_nifti, turn

AFFINE = np.diag([0.7, 0.7, 2.5, 1.0])


def make_raw(root, n_labeled=5, n_unlabeled=2, shape=(40, 36, 20), codes=(1, 2)):
    """images/ and labels/ as nnU-Net names them (``_0000`` on images), (x, y, z) on disk."""
    for i in range(n_labeled + n_unlabeled):
        rng = np.random.default_rng(i)
        save_nifti(root / "images" / f"case{i:02d}_0000.nii.gz", rng.normal(size=shape).astype(np.float32), AFFINE)
        if i < n_labeled:
            label = np.zeros(shape, np.int16)
            label[5:15, 5:15, 2:8] = codes[0]
            label[20:30, 5:15, 2:8] = codes[1]
            save_nifti(root / "labels" / f"case{i:02d}.nii.gz", label, AFFINE)


def describe(root, **fields):
    desc = {"labels": ["background", "liver", "tumour"], "intensity": {"clip": [-2, 2]},
            "cases": {"labeled": ["case00", "case01"], "eval": ["case02"], "test": ["case03", "case04"]},
            "domains": {"case00": "siteA", "case05": "siteB"}}
    desc.update(fields)
    (root / "genericssl.yaml").write_text(yaml.safe_dump(desc))


def _split(out, name):
    return (out / "split_txts" / f"{name}.txt").read_text().splitlines()


def test_prepares_cases_splits_and_a_trainable_task(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_raw(raw)
    describe(raw)
    assert custom.prepare(raw, out) == 0
    assert _split(out, "labeled") == ["case00", "case01"] and _split(out, "test") == ["case03", "case04"]
    assert _split(out, "unlabeled") == ["case05", "case06"]  # every image not listed elsewhere
    image = np.load(out / "npy" / "case00_image.npy")
    label = np.load(out / "npy" / "case00_label.npy")
    assert image.shape == label.shape == (20, 36, 40)  # (z, y, x)
    assert label[2:8, 5:15, 20:30].min() == 2 and set(np.unique(label)) == {0, 1, 2}
    assert not np.load(out / "npy" / "case06_label.npy").any()
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "tumour"}
    assert meta["cases"]["case05"] == {**meta["cases"]["case05"], "domain": "siteB", "labeled": False}
    assert meta["cases"]["case00"]["domain"] == "siteA"
    assert np.allclose(meta["cases"]["case00"]["spacing"], [2.5, 0.7, 0.7])
    cfg = load_config(config_file=out / "task.yaml")
    assert cfg.data_dir == str(out.resolve()) and cfg.num_classes == 3
    assert cfg.patch_size == (16, 32, 32)  # multiples of 16 not above the smallest case (20, 36, 40)
    assert cfg.intensity["clip"] == [-2.0, 2.0]
    assert cfg.splits == {"labeled": "labeled", "unlabeled": "unlabeled", "eval": "eval", "test": "test"}
    assert "genericssl train --config" in capsys.readouterr().out


def test_resample_orientation_label_map_and_task_fields(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_raw(raw, codes=(205, 500))
    for sub, name in (("images", "case01_0000"), ("labels", "case01")):  # stored with x flipped
        data, _, _ = read_nifti(raw / sub / f"{name}.nii.gz", "x")
        save_nifti(raw / sub / f"{name}.nii.gz", *turn(data, AFFINE, flips=(0,)))
    desc = {"num_classes": 3, "label_map": {205: 1, 500: 2}, "orientation": "RAS", "resample": [24, 48, 160],
            "cases": {"labeled": ["case00", "case01"], "unlabeled": ["case05"], "eval": ["case02"], "test": ["case03"]},
            "task": {"batch_size": 1, "max_epoch": 5}}
    (tmp_path / "d.json").write_text(json.dumps(desc))
    assert custom.prepare(raw, out, description=tmp_path / "d.json") == 0
    a, b = (np.load(out / "npy" / f"case0{i}_label.npy") for i in (0, 1))
    assert a.shape == (24, 48, 160) and set(np.unique(a)) == {0, 1, 2} and np.array_equal(a, b)
    cfg = load_config(config_file=out / "task.yaml")
    assert cfg.patch_size == (16, 48, 128) and cfg.batch_size == 1 and cfg.max_epoch == 5


def test_bad_cases_and_bad_descriptions(tmp_path, capsys):
    raw = tmp_path / "raw"
    make_raw(raw)
    save_nifti(raw / "labels" / "case01.nii.gz", np.full((40, 36, 20), 5, np.uint8), AFFINE)  # unknown class
    (raw / "labels" / "case03.nii.gz").unlink()
    describe(raw)
    assert custom.prepare(raw, tmp_path / "out", allow_skips=True) == 0
    out = capsys.readouterr().out
    assert any("case01" in l and "[5]" in l for l in out.splitlines())
    assert any("case03" in l and "label file missing" in l for l in out.splitlines())
    assert _split(tmp_path / "out", "labeled") == ["case00"] and _split(tmp_path / "out", "test") == ["case04"]

    describe(raw, colour="red")
    with pytest.raises(UserError, match="unknown key.*colour"):
        custom.prepare(raw, tmp_path / "out")
    describe(raw, cases={"labeled": ["case00"], "eval": ["case02"], "test": ["nosuch"]})
    with pytest.raises(UserError, match="no image file.*nosuch"):
        custom.prepare(raw, tmp_path / "out")
    describe(raw, intensity={"percentile": [5, 300]})
    with pytest.raises(UserError, match="percentile"):
        custom.prepare(raw, tmp_path / "out")
    describe(raw, task={"batch_sise": 2})
    with pytest.raises(UserError, match="batch_sise"):
        custom.prepare(raw, tmp_path / "out")
    (raw / "genericssl.yaml").unlink()
    with pytest.raises(UserError, match="--description"):
        custom.prepare(raw, tmp_path / "out")


def test_default_patch():
    assert custom.default_patch([(20, 36, 40), (70, 300, 31)]) == [16, 32, 16]
    assert custom.default_patch([(200, 300, 400)]) == [128, 128, 128]
    assert custom.default_patch([(8, 300, 400)]) == [16, 128, 128]
