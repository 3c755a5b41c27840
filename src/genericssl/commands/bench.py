"""`genericssl bench train|infer|memory|accuracy`: figures, not tests."""
from __future__ import annotations

import importlib

# subcommand -> (module, add_arguments, main, help)
BENCHES = {
    "train": ("genericssl.bench.train", "add_train_arguments", "main_train",
              "seconds per training iteration and peak memory"),
    "infer": ("genericssl.bench.infer", "add_infer_arguments", "main_infer",
              "seconds per volume for sliding-window inference"),
    "memory": ("genericssl.bench.memory", "add_memory_arguments", "main_memory",
               "estimated GPU memory of a training iteration per preset, with and without checkpointing"),
    "accuracy": ("genericssl.bench.accuracy", "add_accuracy_arguments", "main_accuracy",
                 "the synthetic benchmark of all four settings, every method"),
}


def add_arguments(parser):
    sub = parser.add_subparsers(dest="bench", metavar="BENCH", required=True)
    for name, (module, add, main, help_text) in BENCHES.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=parser.formatter_class)
        try:
            mod = importlib.import_module(module)
        except ImportError:
            p.set_defaults(_bench=None)
            continue
        getattr(mod, add)(p)
        p.set_defaults(_bench=getattr(mod, main))


def main(args):
    from ..errors import UserError

    if args._bench is None:
        raise UserError(f"'bench {args.bench}' is not available in this installation")
    return args._bench(args)
