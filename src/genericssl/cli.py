"""The ``genericssl`` command: one subcommand per stage of the job.

Each subcommand lives in ``genericssl.commands.<name>`` and exposes
``add_arguments(parser)`` and ``main(args) -> int``; importing is lazy so that
``genericssl --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import AgreedError, UserError

COMMANDS = {
    "presets": "list the paper's task presets, or print one's configuration with each value's source",
    "prepare": "turn a downloaded dataset into training-ready arrays and split lists",
    "train": "train a method (A&D by default) on a task",
    "predict": "segment new scans with a trained checkpoint",
    "evaluate": "score label maps against ground truth (Dice, Jaccard, HD95, ASD)",
    "run": "train -> test -> evaluate in one command (the authors' train.sh)",
    "export": "write D_theta as a TorchScript or ONNX file for serving",
    "demo": "train A&D and a supervised baseline on a synthetic task, on a CPU, in minutes",
    "bench": "speed benchmarks (train, infer) and the synthetic accuracy benchmark",
}


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it says it already or has none."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or not action.option_strings or default in (None, False, "", [])
                or default is argparse.SUPPRESS or isinstance(action, argparse._VersionAction)):
            return text
        return f"{text} (default: %(default)s)"


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """For a description laid out by hand (a table of datasets)."""


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="genericssl", formatter_class=HelpFormatter,
        description="Semi-supervised segmentation of 3D medical images: the Aggregating & Decoupling "
                    "framework (NeurIPS 2023) and its baselines. One subcommand per stage of the job; "
                    "`genericssl COMMAND --help` describes each.")
    parser.add_argument("--version", action="version", version=f"genericssl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        module = importlib.import_module(f"genericssl.commands.{name}")
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    args._argv = argv  # `--nproc N` relaunches the same command line
    from .allocator import keep_freed_memory

    keep_freed_memory()  # before the first large tensor; GENERICSSL_MALLOC=system turns it off
    rank = int(os.environ.get("RANK", "0"))
    try:
        return int(args._main(args) or 0)
    except UserError as e:
        # A message every process raised alike is printed once; one process's own, with its rank.
        if rank == 0 or not isinstance(e, AgreedError):
            where = f" (rank {rank})" if rank else ""
            print(f"genericssl {args.command}{where}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if "genericssl.distributed" in sys.modules:
            sys.modules["genericssl.distributed"].shutdown()


if __name__ == "__main__":
    sys.exit(main())
