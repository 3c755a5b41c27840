"""`genericssl train`: train a method on a task; resumable."""
from __future__ import annotations

import json
from pathlib import Path

from ._common import add_nproc_argument, add_task_arguments, config_from_args, relaunched, resolve_data_dir


def add_arguments(parser):
    add_task_arguments(parser)
    parser.add_argument("--out", help="run folder (default runs/<task>_<method>[_<exp>])")
    parser.add_argument("--exp", "-i", default="", help="experiment name, appended to the run folder")
    parser.add_argument("--device", "-c", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--resume", nargs="?", const="", default=None,
                        help="continue a killed run from its last.pth (default: the run folder's)")
    parser.add_argument("--overwrite", action="store_true", help="start again in a folder that holds a run")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_nproc_argument(parser)


def default_out(cfg, exp: str) -> Path:
    return Path("runs") / "_".join(x for x in (cfg.name, cfg.method, exp) if x)


def main(args):
    from ..training import Trainer

    cfg = config_from_args(args)
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
