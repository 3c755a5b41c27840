"""`genericssl train`: train a method on a task; resumable."""
from __future__ import annotations

import json
from pathlib import Path

from ._common import (add_nproc_argument, add_run_folder_arguments, add_task_arguments, config_from_args,
                      print_config_requested, relaunched, resolve_data_dir)


def add_arguments(parser):
    add_task_arguments(parser)
    add_run_folder_arguments(parser)
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="LAST_PTH",
                        help="continue a killed run from its last.pth (default: the run folder's ckpts/last.pth)")
    parser.add_argument("--overwrite", action="store_true", help="start again in a folder that holds a run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_nproc_argument(parser)


def default_out(cfg, exp: str) -> Path:
    return Path("runs") / "_".join(x for x in (cfg.name, cfg.method, exp) if x)


def main(args):
    from ..training import Trainer

    cfg = config_from_args(args)
    if print_config_requested(args, cfg):
        return 0
    code = relaunched(args, cfg)
    if code is not None:
        return code
    out = Path(args.out) if args.out else default_out(cfg, args.exp)
    resume = None
    if args.resume is not None:
        resume = Path(args.resume) if args.resume else out / "ckpts" / "last.pth"
    trainer = Trainer(cfg, resolve_data_dir(args, cfg), out, device=args.device, resume=resume,
                      progress=not args.no_progress, overwrite=args.overwrite)
    summary = trainer.fit()
    if trainer.is_main:
        print(json.dumps(summary, indent=1))
    return 0
