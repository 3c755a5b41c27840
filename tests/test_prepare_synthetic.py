"""`genericssl prepare synthetic`: the demo's and the benchmark's synthetic data, in the prepared
layout, with a task.yaml that `genericssl train --config` takes as it is."""
import numpy as np
import pytest
import yaml

from genericssl.cli import main as cli
from genericssl.commands.demo import DEMO_SETTINGS
from genericssl.config import load_config
from genericssl.data.cases import read_split
from genericssl.data.loaders import make_train_loaders
from genericssl.prepare.synthetic import setting_names

SIZE = 16


def _prepare(capsys, out, *argv):
    code = cli(["prepare", "synthetic", "--out", str(out), *map(str, argv)])
    text = capsys.readouterr()
    assert "Traceback" not in text.out + text.err
    return code, text.out + text.err


@pytest.mark.parametrize("setting", ["demo", "ssl", "ibssl", "uda", "semidg"])
def test_each_setting_writes_a_dataset_the_loaders_read_and_a_task_that_loads(tmp_path, capsys, setting):
    out = tmp_path / "data"
    code, text = _prepare(capsys, out, "--setting", setting, "--size", SIZE, "--seed", 3)
    assert code == 0, text
    assert f"genericssl train --config {out / 'task.yaml'}" in text
    cfg = load_config(config_file=out / "task.yaml")
    assert cfg.data_dir == str(out.resolve()) and cfg.patch_size == (SIZE,) * 3 and cfg.seed == 3
    assert cfg.base_filters == 8 and cfg.num_workers == 0
    for role in ("labeled", "unlabeled", "eval", "test"):
        for cid in read_split(out, cfg.splits[role]):
            assert (out / "npy" / f"{cid}_image.npy").is_file() and (out / "npy" / f"{cid}_label.npy").is_file()
    labeled, unlabeled = make_train_loaders(cfg)
    batch = next(iter(labeled))
    assert batch["image"].shape == (cfg.batch_size, 1, SIZE, SIZE, SIZE)
    assert int(batch["label"].max()) < cfg.num_classes
    assert next(iter(unlabeled))["image"].shape == batch["image"].shape


def test_demo_takes_the_demos_training_settings(tmp_path, capsys):
    assert _prepare(capsys, tmp_path / "d", "--setting", "demo", "--size", SIZE)[0] == 0
    fields = yaml.safe_load((tmp_path / "d" / "task.yaml").read_text())
    assert {k: fields[k] for k in DEMO_SETTINGS} == DEMO_SETTINGS
    assert fields["num_classes"] == 4


def test_one_task_file_per_held_out_domain(tmp_path, capsys):
    out = tmp_path / "dg"
    assert _prepare(capsys, out, "--setting", "semidg", "--size", SIZE)[0] == 0
    names = sorted(p.stem for p in (out / "tasks").glob("*.yaml"))
    assert len(names) == 4
    for name in names:
        cfg = load_config(config_file=out / "tasks" / f"{name}.yaml")
        assert cfg.name == name and cfg.max_epoch > 0 and cfg.splits["test"].endswith("_test")
    assert yaml.safe_load((out / "task.yaml").read_text()) == yaml.safe_load((out / "tasks" / f"{names[0]}.yaml")
                                                                             .read_text())


def test_the_seed_decides_the_data(tmp_path, capsys):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        assert _prepare(capsys, tmp_path / name, "--setting", "demo", "--size", SIZE, "--seed", seed)[0] == 0
    case = "A_train_000_image.npy"
    a, b, c = (np.load(tmp_path / n / "npy" / case) for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    code, text = _prepare(capsys, tmp_path / "d", "--setting", "demo", "--size", 8)
    assert code == 2 and "--size 8" in text and "at least 16" in text
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    code, text = _prepare(capsys, tmp_path / "mine", "--setting", "demo", "--size", SIZE)
    assert code == 2 and str(tmp_path / "mine") in text and "not empty" in text
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert set(setting_names()) >= {"demo", "ssl", "ibssl", "uda", "semidg"}



def test_a_benchmark_setting_prepares_the_data_its_cells_train_on(tmp_path, capsys):
    from genericssl.bench.cells import prepare_setting
    from genericssl.bench.settings import SETTINGS

    assert SETTINGS["ssl"].variation > 0   # the anatomy varies from case to case in both
    assert _prepare(capsys, tmp_path / "p", "--setting", "ssl", "--size", SIZE, "--seed", 2)[0] == 0
    prepare_setting(SETTINGS["ssl"], tmp_path / "bench", SIZE, 2, log=lambda m: None)
    bench = next((tmp_path / "bench" / "data").glob("ssl-s2-*")) / "npy"
    for case in ("A_train_000_image.npy", "A_train_005_label.npy", "A_test_001_image.npy"):
        assert np.array_equal(np.load(tmp_path / "p" / "npy" / case), np.load(bench / case))
