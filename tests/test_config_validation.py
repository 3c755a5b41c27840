"""The configuration is checked as a whole when it is built: kinds, ranges, rules between
fields, each rejection naming the field, the value, what is allowed and where it came from."""
import argparse

import pytest

from genericssl.cli import main
from genericssl.config import (SPECS, ConfigError, TaskConfig, apply_overrides, format_config, load_config,
                               method_names_light)


def _train(capsys, *argv):
    code = main(["train", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_every_field_has_a_spec_with_a_description():
    import dataclasses
    names = [f.name for f in dataclasses.fields(TaskConfig)]
    assert list(SPECS) == names
    for name, spec in SPECS.items():
        assert spec.help and spec.allowed(), name


def test_plain_values_are_coerced_from_strings():
    cfg = apply_overrides(TaskConfig(), {"lr": "1e-3", "batch_size": "4", "max_epoch": 10.0, "amp": "false",
                                         "patch_size": "96x96x64", "seeds": "0,1,666"}).validate()
    assert cfg.lr == 1e-3 and isinstance(cfg.lr, float)
    assert cfg.batch_size == 4 and isinstance(cfg.batch_size, int)
    assert cfg.max_epoch == 10 and isinstance(cfg.max_epoch, int)
    assert cfg.amp is False
    assert cfg.patch_size == (96, 96, 64)
    assert cfg.seeds == [0, 1, 666]


def test_yaml_reads_1e_3_as_a_string_and_the_config_takes_it(tmp_path):
    f = tmp_path / "task.yaml"
    f.write_text("task: la_0.05\nlr: 1e-3\nbatch_size: 2\n")
    cfg = load_config(config_file=f)
    assert cfg.lr == pytest.approx(1e-3) and cfg.name == "la_0.05"
    assert cfg.source_of("lr") == f"file {f}"
    assert cfg.source_of("patch_size") == "preset la_0.05"
    assert cfg.source_of("iters_per_epoch") == "default"


@pytest.mark.parametrize("item, field, words", [
    ("lr=abc", "lr", "not a number"),
    ("lr=-1", "lr", "> 0"),
    ("num_classes=two", "num_classes", "not an integer"),
    ("num_classes=1", "num_classes", ">= 2"),
    ("batch_size=2.5", "batch_size", "not an integer"),
    ("splits=foo", "splits", "not a mapping"),
    ("patch_size=0x16x16", "patch_size", ">= 16"),
    ("patch_size=[-16,16,16]", "patch_size", ">= 16"),
    ("eval_every=0", "eval_every", ">= 1"),
    ("ema_m=5", "ema_m", "< 1"),
    ("ema_m=0", "ema_m", "> 0"),
    ("max_epoch=-1", "max_epoch", ">= 0"),
    ("amp=maybe", "amp", "true or false"),
    ("repeat=both", "repeat", "'labeled', 'unlabeled'"),
    ("seed=-3", "seed", ">= 0"),
    ("iters_per_epoch=0", "iters_per_epoch", ">= 1"),
    ("intensity={gamma: 1}", "intensity", "unknown keys gamma"),
])
def test_bad_values_are_one_message_with_field_value_allowed_and_source(capsys, item, field, words):
    code, out, err = _train(capsys, "-t", "la_0.05", "--set", item, "--print-config")
    assert code == 2 and out == ""
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{field} = " in err and words in err and f"--set {item}" in err, err


def test_several_problems_are_reported_together(capsys):
    code, out, err = _train(capsys, "--set", "num_classes=two", "--set", "batch_size=2.5", "--lr", "-1",
                            "--print-config")
    assert code == 2
    assert "3 problems" in err and "num_classes" in err and "batch_size" in err and "flag --lr" in err


def test_cross_field_rules_name_both_sources(capsys):
    code, _, err = _train(capsys, "-t", "la_0.05", "--patch-size", "16x16", "--print-config")
    assert code == 2 and "spatial_dims" in err and "flag --patch-size" in err and "preset la_0.05" in err
    code, _, err = _train(capsys, "--patch-size", "24x16x16", "--print-config")
    assert code == 2 and "multiple of 16" in err
    code, _, err = _train(capsys, "--set", "intensity={clip: [5, 1]}", "--print-config")
    assert code == 2 and "intensity.clip" in err and "lo < hi" in err
    code, _, err = _train(capsys, "--set", "splits={eval: ''}", "--print-config")
    assert code == 2 and "splits.eval" in err


def test_set_without_equals_and_unknown_fields_are_errors(capsys):
    code, _, err = _train(capsys, "--set", "lr", "--print-config")
    assert code == 2 and "FIELD=VALUE" in err and "'lr'" in err
    code, _, err = _train(capsys, "--set", "lrr=1", "--print-config")
    assert code == 2 and "unknown field 'lrr'" in err and "did you mean lr" in err


def test_bad_yaml_value_names_the_file(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("batch_size: x\n")
    code, _, err = _train(capsys, "--config", f, "--print-config")
    assert code == 2 and "batch_size = 'x'" in err and f"file {f}" in err


def test_unknown_method_and_task_list_the_choices(capsys):
    code, _, err = _train(capsys, "--set", "method=fancy", "--print-config")
    assert code == 2 and "unknown method 'fancy'" in err and "mean_teacher" in err
    code, _, err = _train(capsys, "-t", "la_05", "--print-config")
    assert code == 2 and "did you mean la_0.05" in err


def test_method_names_without_torch_match_the_registry():
    from genericssl.methods import method_names
    assert method_names_light() == method_names()


def test_print_config_shows_every_field_and_its_source(capsys):
    code, out, err = _train(capsys, "-t", "synapse_0.2", "-l", "0.05", "--set", "stride_xy=64", "--print-config")
    assert code == 0, err
    lines = {l.split(":", 1)[0]: l for l in out.splitlines()}
    assert set(lines) == set(SPECS)
    assert "0.05" in lines["lr"] and "flag --lr" in lines["lr"]
    assert "--set stride_xy=64" in lines["stride_xy"]
    assert "preset synapse_0.2" in lines["num_classes"]
    assert "default" in lines["sync_bn"]
    # What it prints is YAML that builds the same configuration.
    import yaml
    again = apply_overrides(TaskConfig(), yaml.safe_load(out)).validate()
    assert again.to_dict() == load_config("synapse_0.2", overrides={"lr": 0.05, "stride_xy": 64}).to_dict()


def test_format_config_round_trips_for_every_preset():
    import yaml
    from genericssl.config import load_preset, preset_names
    for name in preset_names():
        cfg = load_preset(name).validate()
        assert apply_overrides(TaskConfig(), yaml.safe_load(format_config(cfg))).validate() == cfg


def test_validate_catches_values_set_directly():
    cfg = TaskConfig()
    cfg.stride_xy = 0
    with pytest.raises(ConfigError, match="stride_xy = 0"):
        cfg.validate()
