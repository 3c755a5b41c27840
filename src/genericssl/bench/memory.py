"""`genericssl bench memory`: estimated GPU memory of a training iteration, per preset.

For each task preset (or ``--config``) and each number of checkpointed levels: the
memory one float32 iteration holds on a CPU (counted), the estimate of
``torch.cuda.max_memory_allocated`` for one float16-autocast iteration on a GPU (derived;
``gpu_memory.py`` says how), and which common GPU sizes it fits with room for the CUDA
context and the caching allocator. Prints a markdown table
and, with ``--json``, one JSON line per row.
"""
from __future__ import annotations

import json

# One preset per dataset: the tasks of a dataset share the network and the patch.
DEFAULT_PRESETS = ["la_0.05", "synapse_0.2", "mmwhs_ct2mr", "mnms_A_0.02", "mnms2d_A_0.02"]
GPU_SIZES_GB = [8, 12, 16, 24, 40, 80]
CONTEXT_GB = 0.5      # the CUDA context, outside max_memory_allocated
HEADROOM = 1.2        # caching-allocator rounding and fragmentation, cuDNN workspaces


def add_memory_arguments(p) -> None:
    p.add_argument("-t", "--task", nargs="+", default=DEFAULT_PRESETS, metavar="TASK",
                   help="task presets (default: one per dataset: %(default)s)")
    p.add_argument("--config", metavar="FILE", help="a task file of your own (e.g. the task.yaml `prepare` "
                                                    "writes) instead of the presets")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a configuration field of every row (repeatable), e.g. --set batch_size=2")
    p.add_argument("--levels", type=int, nargs="+", default=[0, 2, 5], metavar="N",
                   help="checkpoint_levels to estimate (default: 0 2 5)")
    p.add_argument("--method", default=None, help="the method whose iteration is estimated (default: the preset's)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for the CPU probes")
    p.add_argument("--json", action="store_true", help="also one JSON line per row")


def fits(gib: float) -> str:
    need = gib * HEADROOM + CONTEXT_GB
    ok = [g for g in GPU_SIZES_GB if g * 0.93 >= need]  # a "16 GB" card offers ~14.9 GiB
    return f">= {ok[0]} GB" if ok else f"> {GPU_SIZES_GB[-1]} GB"


def main_memory(args) -> int:
    import torch
    from tqdm.auto import tqdm

    from ..commands._common import parse_set
    from ..config import apply_overrides, load_config
    from .gpu_memory import GIB, estimate

    torch.set_num_threads(args.threads)
    overrides, sources = parse_set(args.set)
    # Each task read once (a file included), every field checked before the first estimate.
    if args.config:
        tasks = {args.config: load_config(None, args.config, overrides, sources)}
    else:
        tasks = {t: load_config(t, None, overrides, sources) for t in args.task}
    rows = []
    jobs = [(t, n) for t in tasks for n in args.levels]
    for task, levels in tqdm(jobs, desc="estimating", leave=False):
        cfg = apply_overrides(tasks[task], {"checkpoint_levels": levels}, source="--levels").validate()
        est = estimate(cfg, args.method)
        gib = est["gpu_fp16_bytes"] / GIB
        row = {"bench": "memory", "task": task, "method": args.method or cfg.method,
               "patch": list(cfg.patch_size), "batch": f"{cfg.batch_size}+{cfg.batch_size}",
               "base_filters": cfg.base_filters, "num_classes": cfg.num_classes, "checkpoint_levels": levels,
               "gpu_fp16_gib": round(gib, 2), "cpu_fp32_gib": round(est["peak_bytes"] / GIB, 2), "persistent_gib": round(est["persistent_bytes"] / GIB, 2),
               "fits": fits(gib)}
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    print("| task | patch, batch | classes | checkpoint_levels | GPU, fp16 autocast (est.) | fits | CPU, fp32 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {'x'.join(map(str, r['patch']))}, {r['batch']} | {r['num_classes']} | "
              f"{r['checkpoint_levels']} | {r['gpu_fp16_gib']:.1f} GiB | {r['fits']} | {r['cpu_fp32_gib']:.1f} GiB |")
    return 0
