"""Arguments shared by the commands that build a task configuration."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from ..config import load_config

# CLI flag -> TaskConfig field, for the fields users override most.
OVERRIDES = {
    "lr": float, "unsup_weight": float, "max_epoch": int, "batch_size": int, "patch_size": str,
    "base_filters": int, "num_classes": int, "seed": int, "num_workers": int, "iters_per_epoch": int,
    "rampup_epochs": int, "patience": int, "ema_m": float, "method": str, "eval_every": int,
}


def add_task_arguments(parser, method: bool = True) -> None:
    g = parser.add_argument_group("task")
    g.add_argument("--task", "-t", help="a preset: la_0.05, synapse_0.2, mmwhs_ct2mr, mnms_A_0.02, ...")
    g.add_argument("--config", help="YAML file of configuration fields (may name a preset with 'task:')")
    g.add_argument("--data-dir", help="prepared dataset folder (default: the preset's data_dir under "
                                      "$GENERICSSL_DATA, or the current folder)")
    g.add_argument("--eval-split", help="split list used for validation (e.g. heldout_eval_0.05)")
    g.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any configuration field (repeatable), e.g. --set stride_xy=64")
    o = parser.add_argument_group("overrides")
    for field, typ in OVERRIDES.items():
        if field == "method" and not method:
            continue
        flag = "--" + field.replace("_", "-")
        o.add_argument(flag, dest=field, type=typ, default=None,
                       help="patch size as DxHxW" if field == "patch_size" else None)
    o.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                   help="disable mixed precision on CUDA")


def config_from_args(args):
    overrides = {f: getattr(args, f, None) for f in OVERRIDES}
    overrides["amp"] = getattr(args, "amp", None)
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip()] = yaml.safe_load(value)
    cfg = load_config(args.task, args.config, overrides)
    if args.eval_split:
        cfg.splits = {**cfg.splits, "eval": args.eval_split}
        cfg.eval_is_train_warning = None
    return cfg


def resolve_data_dir(args, cfg) -> Path:
    if getattr(args, "data_dir", None):
        return Path(args.data_dir)
    path = Path(cfg.data_dir)
    if path.is_absolute():
        return path
    return Path(os.environ.get("GENERICSSL_DATA", ".")) / path


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
