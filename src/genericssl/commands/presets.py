"""`genericssl presets`: the paper's task presets, or one preset's resolved configuration."""
from __future__ import annotations


def add_arguments(parser):
    parser.add_argument("name", nargs="?", metavar="TASK",
                        help="print this preset's whole configuration, each value with its source")
    parser.add_argument("--fields", action="store_true",
                        help="list every configuration field with its allowed values and meaning")


def main(args) -> int:
    from ..config import describe_fields, format_config, load_preset, preset_names

    if args.fields:
        rows = describe_fields()
        width = max(len(n) for n, _, _ in rows)
        for name, allowed, help_text in rows:
            print(f"{name:<{width}}  {help_text}\n{'':<{width}}  allowed: {allowed}")
        return 0
    if args.name:
        print(format_config(load_preset(args.name).validate()))
        return 0
    rows = []
    for name in preset_names():
        c = load_preset(name)
        rows.append((name, c.dataset, "x".join(map(str, c.patch_size)), str(c.num_classes),
                     str(c.batch_size), str(c.max_epoch), ",".join(map(str, c.seeds)),
                     f"{c.splits['labeled']} + {c.splits['unlabeled']} -> {c.splits['test']}"))
    head = ("task", "dataset", "patch", "classes", "batch", "max_epoch", "seeds", "splits (labeled + unlabeled -> test)")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    print("\n`genericssl presets TASK` prints one in full; `genericssl train -t TASK --set FIELD=VALUE` "
          "overrides a field; `genericssl presets --fields` lists the fields.")
    return 0
