"""Arguments shared by the commands that build a task configuration."""
from __future__ import annotations

from pathlib import Path

import yaml

from ..config import load_config

# CLI flag -> TaskConfig field, for the fields users override most; the short
# options are the authors' train.sh letters (-l lr, -w weight, -n max epoch).
OVERRIDES = {
    "lr": float, "unsup_weight": float, "max_epoch": int, "batch_size": int, "patch_size": str,
    "base_filters": int, "num_classes": int, "seed": int, "num_workers": int, "iters_per_epoch": int,
    "rampup_epochs": int, "patience": int, "ema_m": float, "method": str, "eval_every": int,
}
SHORT = {"lr": "-l", "unsup_weight": "-w", "max_epoch": "-n"}


def add_task_arguments(parser, method: bool = True) -> None:
    from ..config import SPECS, method_names_light

    g = parser.add_argument_group("task")
    g.add_argument("--task", "-t", help="a preset: la_0.05, synapse_0.2, mmwhs_ct2mr, mnms_A_0.02, ... "
                                        "(`genericssl presets` lists them; default: none, the plain defaults)")
    g.add_argument("--config", metavar="FILE", help="YAML file of configuration fields (may name a preset with "
                                                    "'task:'); applied after the preset, before the flags")
    g.add_argument("--data-dir", help="prepared dataset folder (default: the preset's data_dir under "
                                      "$GENERICSSL_DATA, or the current folder)")
    g.add_argument("--eval-split", metavar="NAME", help="split list used for validation "
                                                        "(e.g. heldout_eval_0.05; default: the preset's)")
    g.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any configuration field (repeatable), e.g. --set stride_xy=64; "
                        "`--print-config` lists the fields")
    g.add_argument("--print-config", action="store_true",
                   help="print the resolved configuration, each value with where it came from, and exit")
    o = parser.add_argument_group("overrides (default: the preset's value)")
    for field, typ in OVERRIDES.items():
        if field == "method" and not method:
            continue
        flags = ["--" + field.replace("_", "-")] + ([SHORT[field]] if field in SHORT else [])
        extra = {}
        if field == "method":
            extra["choices"] = method_names_light()
        extra["metavar"] = {"patch_size": "DxHxW", "method": "NAME"}.get(field, "X" if typ is float else "N")
        text = SPECS[field].help
        if field == "method":  # the NAME metavar hides argparse's list of choices: say them here
            text = f"training method: {', '.join(extra['choices'])}"
        o.add_argument(*flags, dest=field, type=typ, default=None, help=text, **extra)
    o.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                   help="disable float16 autocast on CUDA (default: on)")


def parse_set(items: list[str]) -> tuple[dict, dict]:
    """``--set FIELD=VALUE`` items -> (overrides, each field's source); values read as YAML."""
    from ..config import ConfigError

    overrides, sources = {}, {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set lr=1e-3")
        key = key.strip().replace("-", "_")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            overrides[key] = value
        sources[key] = f"--set {item}"
    return overrides, sources


def config_from_args(args):
    """The task configuration of a train/run command line: preset, --config file, flags, --set."""
    from ..config import apply_overrides

    overrides, sources = {}, {}
    for f in OVERRIDES:
        if getattr(args, f, None) is not None:
            overrides[f] = getattr(args, f)
            sources[f] = "flag --" + f.replace("_", "-")
    if getattr(args, "amp", None) is not None:
        overrides["amp"], sources["amp"] = args.amp, "flag --no-amp"
    set_overrides, set_sources = parse_set(args.set)
    overrides.update(set_overrides)
    sources.update(set_sources)
    cfg = load_config(args.task, args.config, overrides, sources=sources)
    if args.eval_split:
        cfg = apply_overrides(cfg, {"splits": {"eval": args.eval_split}, "eval_is_train_warning": None},
                              source="flag --eval-split").validate()
    return cfg


def print_config_requested(args, cfg) -> bool:
    """``--print-config``: print the resolved configuration with each value's source."""
    if not getattr(args, "print_config", False):
        return False
    from ..config import format_config
    print(format_config(cfg))
    return True


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a stride of 0 is an error, not a fallback)."""
    import argparse
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def add_run_folder_arguments(parser) -> None:
    """Where a run goes and on what; -c and -i are the authors' train.sh letters."""
    parser.add_argument("--out", "-o", metavar="DIR", help="run folder (default: runs/<task>_<method>[_<exp>])")
    parser.add_argument("--exp", "-i", default="", metavar="NAME",
                        help="experiment name, appended to the default run folder (train.sh -i)")
    parser.add_argument("--device", "-c", default="auto",
                        help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps, or a GPU number "
                             "as in train.sh -c 0")


def resolve_data_dir(args, cfg) -> Path:
    from ..config import data_path
    return data_path(cfg, getattr(args, "data_dir", None))


def add_nproc_argument(parser) -> None:
    parser.add_argument("--nproc", type=int, default=None, metavar="N",
                        help="train in N local processes (one per GPU with CUDA, else on the CPU cores), "
                             "as torchrun --standalone --nproc-per-node N would; for several machines run "
                             "torchrun yourself (README, 'Several GPUs and machines')")


def relaunched(args, cfg) -> int | None:
    """With ``--nproc N`` (N > 1): run this command in N processes and return the job's exit code.

    The configuration was checked here first, so a bad value is one message, not N.
    """
    if getattr(args, "nproc", None) is None or args.nproc == 1:
        return None
    from ..data.loaders import per_process_batch
    from ..launch import launch_local, strip_option
    if args.nproc > 1:
        per_process_batch(cfg.batch_size, args.nproc)
    return launch_local(args.nproc, strip_option(args._argv, "--nproc"))
