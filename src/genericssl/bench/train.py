"""`genericssl bench train`: seconds per training iteration and peak memory.

Random data of the preset's shape, the real method step, backward and SGD step
(the trainer's own ``optimizer_step``); one warm-up iteration, then the median of
``--iters``. Prints one JSON line. The step timed is the one most of a run trains
with (a method's ``steady_state()``, where it has one): for BCP the self-training
step, not its cheaper labeled pre-training of the first 2/17 of the epochs.

``--nproc N``: the same preset (the same global batch) first in one process with
``--threads`` threads, then in N processes under DistributedDataParallel sharing
them (N x threads/N on the CPU, one GPU each on CUDA), in the same command; prints
both times, the speed-up and the scaling efficiency (speed-up / N).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from .. import allocator

PRESETS = {
    # name: (base_filters, num_classes, batch (labeled = unlabeled), patch)
    "S": (16, 2, 2, (64, 64, 48)),
    "M": (32, 2, 2, (96, 96, 64)),
    "LA": (32, 2, 4, (112, 112, 80)),
    # one cell of `bench accuracy` (SSL settings: background and two structures)
    "bench": (8, 3, 2, (32, 32, 32)),
}


def add_train_arguments(p) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="S",
                   help="S: 16 filters, 2+2, 64x64x48; M: 32 filters, 2+2, 96x96x64; LA: the paper's 32, 4+4, "
                        "112x112x80; bench: a `bench accuracy` cell, 8 filters, 3 classes, 2+2, 32^3")
    p.add_argument("--iters", type=int, default=3,
                   help="timed iterations after one warm-up (0: the first iteration only, e.g. for the LA preset "
                        "on a CPU, where it takes minutes)")
    p.add_argument("--method", default="ad", help="the method whose iteration is timed")
    p.add_argument("--device", "-c", default="cpu", help="cpu, cuda, cuda:1, mps or auto")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads on the CPU")
    p.add_argument("--no-amp", action="store_true", help="fp32 on CUDA")
    p.add_argument("--channels-last", choices=["on", "off"], default=None,
                   help="force the channels-last memory format (default: the method's choice)")
    p.add_argument("--checkpoint-levels", type=int, default=None, choices=range(6), metavar="0-5",
                   help="activation checkpointing of the top N resolution levels (default: the "
                        "configuration field checkpoint_levels' default)")
    p.add_argument("--batch", type=int, default=None,
                   help="global batch (labeled = unlabeled) instead of the preset's, e.g. to keep each "
                        "of --nproc processes at the preset's batch")
    p.add_argument("--nproc", type=int, default=1,
                   help="also time N processes (DDP) on the same global batch and print the scaling "
                        "efficiency against 1 process (default 1: one process only)")
    p.add_argument("--sync-bn", choices=["on", "off"], default="on",
                   help="with several processes: BatchNorm over the global batch (default on, as training)")
    p.add_argument("--result-file", help=argparse.SUPPRESS)


def steady_method(cfg, method_name: str, device, before_setup=None):
    """The method as the trainer builds it, in its main stage and in training mode;
    ``before_setup(method)`` runs before ``finish_setup`` (e.g. to synchronise BatchNorm)."""
    import torch

    from ..methods import get_method

    torch.manual_seed(0)
    method = get_method(method_name)(cfg, device)
    # A method whose first epochs run a cheaper step (BCP's labeled pre-training) says how to
    # enter its main stage with ``steady_state()``; looked up here rather than declared on
    # methods/base.py, whose bytes are in every `bench accuracy` cell's cache key.
    steady_state = getattr(method, "steady_state", None)
    if steady_state is not None:
        steady_state()
    if before_setup is not None:
        before_setup(method)
    method.finish_setup()
    method.train()
    return method


def random_batches(method, batch: int, patch, seed: int) -> tuple[dict, dict | None]:
    """A labeled and (if the method uses one) an unlabeled batch of random images and labels."""
    import torch

    cfg = method.cfg
    g = torch.Generator().manual_seed(seed)
    bl = method.prepare_batch({"image": torch.rand(batch, cfg.in_channels, *patch, generator=g),
                               "label": torch.randint(0, cfg.num_classes, (batch, *patch), generator=g)})
    bu = method.prepare_batch({"image": torch.rand(batch, cfg.in_channels, *patch, generator=g)})
    return bl, bu if method.uses_unlabeled else None


def measure(args) -> dict:
    """One process's timing (in a job of several, its share of each global batch)."""
    import torch

    from .. import distributed
    from ..config import TaskConfig
    from ..data.loaders import per_process_batch
    from ..methods.base import StepModule
    from ..training import make_optimizer, optimizer_step, resolve_device, wrap_for_processes

    torch.set_num_threads(args.threads)
    n, C, B, patch = PRESETS[args.preset]
    B = args.batch or B
    ctx, device = distributed.setup(resolve_device(args.device))
    share = per_process_batch(B, ctx.world_size)
    cfg = TaskConfig(name=f"bench_{args.preset}", patch_size=patch, num_classes=C, base_filters=n,
                     batch_size=B, amp=not args.no_amp, max_epoch=300).validate()
    if args.checkpoint_levels is not None:
        cfg.checkpoint_levels = args.checkpoint_levels
    if args.channels_last is not None:
        cfg.channels_last = args.channels_last == "on"
    sync_bn = ctx.active and args.sync_bn == "on"

    def synchronise(method):
        for m in method.modules().values():
            distributed.convert_sync_batchnorm(m, device)

    method = steady_method(cfg, args.method, device, synchronise if sync_bn else None)
    opt = make_optimizer(method.parameters(), 1e-3)
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    step_module = wrap_for_processes(StepModule(method), ctx, device)
    bl, bu = random_batches(method, share, patch, ctx.rank)

    def step():
        optimizer_step(step_module, method, opt, scaler, bl, bu, amp, device.type)
        if device.type == "cuda":
            torch.cuda.synchronize()

    times, kernel = [], []
    for i in range(args.iters + 1):
        distributed.barrier()
        t, sys0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        step()
        times.append(time.perf_counter() - t)
        sys1 = resource.getrusage(resource.RUSAGE_SELF)
        kernel.append((sys1.ru_stime - sys0.ru_stime, sys1.ru_minflt - sys0.ru_minflt))
    timed = 1 if args.iters else 0  # --iters 0: the first iteration is the figure
    result = {"bench": "train", "preset": args.preset, "method": args.method, "device": str(device),
              "base_filters": n, "num_classes": C, "batch": f"{B}+{B}", "patch": list(patch),
              "amp": amp, "channels_last": method.channels_last, "checkpoint_levels": cfg.checkpoint_levels, "threads": torch.get_num_threads(), "iters": args.iters,
              "sec_per_iter": round(statistics.median(times[timed:]), 3),
              "sec_first_iter": round(times[0], 3),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              # Kernel time and page faults per timed iteration: what the allocator setting changes.
              "kernel_sec_per_iter": round(statistics.median(k[0] for k in kernel[timed:]), 3),
              "minor_faults_per_iter": int(statistics.median(k[1] for k in kernel[timed:])),
              "malloc": allocator.state()}
    if ctx.active:
        result.update(processes=ctx.world_size, backend=ctx.backend, per_process_batch=f"{share}+{share}",
                      sync_bn=sync_bn)
    if device.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        result["gpu"] = torch.cuda.get_device_name()
    return result


def scaling(args) -> dict:
    """1 process, then ``args.nproc`` processes on the same global batch, in this command."""
    from ..launch import launch_local, strip_option

    one = measure(args)
    threads = max(1, args.threads // args.nproc)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        argv = strip_option(strip_option(args._argv, "--nproc"), "--threads")
        os.environ["OMP_NUM_THREADS"] = str(threads)
        code = launch_local(args.nproc, argv + ["--threads", str(threads), "--result-file", out],
                            log=lambda *a, **k: None)
        if code:
            from ..errors import UserError
            raise UserError(f"the {args.nproc}-process run failed (exit code {code}); its message is above")
        many = json.loads(Path(out).read_text())
    speedup = one["sec_per_iter"] / many["sec_per_iter"]
    return {"bench": "train_scaling", "preset": args.preset, "method": args.method, "device": many["device"],
            "global_batch": one["batch"], "one_process": {k: one[k] for k in ("sec_per_iter", "threads", "peak_rss_mb")},
            "n_processes": {k: many[k] for k in ("processes", "backend", "per_process_batch", "sync_bn",
                                                  "sec_per_iter", "threads", "peak_rss_mb")},
            "speedup": round(speedup, 3), "efficiency": round(speedup / args.nproc, 3),
            **({"peak_gpu_mb": many["peak_gpu_mb"], "gpu": many["gpu"]} if "gpu" in many else {})}


def main_train(args) -> int:
    from .. import distributed

    if args.nproc > 1 and distributed.launched_world_size() == 1:
        print(json.dumps(scaling(args)))
        return 0
    result = measure(args)
    if distributed.current().is_main:
        if args.result_file:
            with open(args.result_file, "w") as f:
                json.dump(result, f)
        else:
            print(json.dumps(result))
    return 0
