"""`genericssl bench train`: seconds per training iteration and peak memory.

Random data of the preset's shape, the real method step, backward and SGD step;
one warm-up iteration, then the median of ``--iters``. Prints one JSON line.
"""
from __future__ import annotations

import json
import resource
import statistics
import time

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
    p.add_argument("--iters", type=int, default=3, help="timed iterations after one warm-up")
    p.add_argument("--method", default="ad")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads on the CPU")
    p.add_argument("--no-amp", action="store_true", help="fp32 on CUDA")
    p.add_argument("--channels-last", choices=["on", "off"], default=None,
                   help="force the channels-last memory format (default: the method's choice)")


def main_train(args) -> int:
    import torch

    from ..config import TaskConfig
    from ..methods import get_method
    from ..training import resolve_device

    torch.set_num_threads(args.threads)
    n, C, B, patch = PRESETS[args.preset]
    device = resolve_device(args.device)
    cfg = TaskConfig(name=f"bench_{args.preset}", patch_size=patch, num_classes=C, base_filters=n,
                     batch_size=B, amp=not args.no_amp, max_epoch=300).validate()
    if args.channels_last is not None:
        cfg.channels_last = args.channels_last == "on"
    torch.manual_seed(0)
    method = get_method(args.method)(cfg, device)
    method.finish_setup()
    method.train()
    opt = torch.optim.SGD(method.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=3e-5)
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    g = torch.Generator().manual_seed(0)
    bl = method.prepare_batch({"image": torch.rand(B, 1, *patch, generator=g),
                               "label": torch.randint(0, C, (B, *patch), generator=g)})
    bu = method.prepare_batch({"image": torch.rand(B, 1, *patch, generator=g)})

    def step():
        with torch.autocast(device.type, enabled=amp):
            loss, _ = method.train_step(bl, bu if method.uses_unlabeled else None)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        method.after_step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for i in range(args.iters + 1):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    result = {"bench": "train", "preset": args.preset, "method": args.method, "device": str(device),
              "base_filters": n, "num_classes": C, "batch": f"{B}+{B}", "patch": list(patch),
              "amp": amp, "channels_last": method.channels_last, "threads": torch.get_num_threads(), "iters": args.iters,
              "sec_per_iter": round(statistics.median(times[1:]), 3),
              "sec_first_iter": round(times[0], 3),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
        result["gpu"] = torch.cuda.get_device_name()
    print(json.dumps(result))
    return 0
