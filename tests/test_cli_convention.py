"""One command-line convention across subcommands."""
import argparse

import pytest

from genericssl.cli import build_parser, main
from genericssl.config import preset_names


def _all_parsers(parser, path=("genericssl",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, path + (name,))


def _options(parser):
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def test_a_short_option_means_the_same_thing_in_every_command():
    meaning: dict[str, tuple[str, tuple]] = {}
    for path, parser in _all_parsers(build_parser()):
        for action in _options(parser):
            longs = [o for o in action.option_strings if o.startswith("--")]
            for short in (o for o in action.option_strings if not o.startswith("--")):
                long_name = {"--output": "--out", "--out": "--out"}.get(longs[0], longs[0])
                if short in meaning:
                    assert meaning[short][0] == long_name, (short, path, meaning[short])
                else:
                    meaning[short] = (long_name, path)
    assert meaning["-c"][0] == "--device" and meaning["-i"][0] == "--exp"
    assert meaning["-k"][0] == "--checkpoint" and meaning["-o"][0] == "--out"


def test_every_option_has_help_and_shows_its_default():
    for path, parser in _all_parsers(build_parser()):
        for action in _options(parser):
            if action.help == argparse.SUPPRESS:
                continue
            assert action.help, (path, action.option_strings)
        text = parser.format_help()
        assert "``" not in text and ":func:" not in text, path
    help_text = build_parser()._subparsers._group_actions[0].choices["predict"].format_help()
    assert "(default: 4)" in help_text   # --batch-windows
    assert "(default: auto)" in help_text


def test_method_lists_its_choices(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--method", "fancy"])
    err = capsys.readouterr().err
    assert "invalid choice: 'fancy'" in err and "mean_teacher" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    from genericssl import __version__
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"genericssl {__version__}"


def test_presets_lists_every_preset_and_prints_one(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in preset_names():
        assert name in out
    assert main(["presets", "synapse_0.2"]) == 0
    out = capsys.readouterr().out
    assert "num_classes: 14" in out and "preset synapse_0.2" in out
    assert main(["presets", "--fields"]) == 0
    assert "ema_m" in capsys.readouterr().out
    assert main(["presets", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


def test_max_epoch_help_says_inclusive(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "inclusive" in capsys.readouterr().out


def test_device_as_gpu_number_and_checkpoint_mistaken_for_a_device(capsys):
    import torch
    from genericssl.devices import resolve_device
    from genericssl.errors import UserError
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda:0: no CUDA device"):
            resolve_device("0")
    with pytest.raises(UserError, match="checkpoint is --checkpoint / -k"):
        resolve_device("runs/x/best_model.pth")


def test_predict_stride_zero_is_refused(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["predict", "-k", str(tmp_path / "m.pth"), "--input", str(tmp_path), "-o", str(tmp_path / "o"),
              "--stride-xy", "0"])
    assert "must be at least 1" in capsys.readouterr().err
