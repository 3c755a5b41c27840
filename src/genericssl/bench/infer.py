"""`genericssl bench infer`: seconds per volume for sliding-window (or whole-volume) inference.

A random-weight Diffusion V-Net (32 filters, 2 classes by default) segments one
synthetic 160x160x96 volume with a 112x112x80 patch, as the authors' LA test
does; one JSON line reports the time, the number of windows and the peak
resident memory. The batch norms are first calibrated on the volume (a train-mode
pass over one crop), so that the random network's labels vary over the volume;
with default-initialised statistics every voxel gets the same class and label
comparisons say nothing. Even so, agreement figures from random weights are a
weak check: a trained network is more confident, so fewer voxels sit near a tie.

``--blend``, ``--tta`` and ``--ensemble N`` time one prediction option (as ``predict``
computes it); ``--options`` times each of them, one at a time, after the main run and
reports its seconds and its cost relative to that run.

``--checkpoint F --data-dir DIR`` measures on a *trained* model instead (e.g. the demo's
``demo_out/ad/ckpts/best_model.pth`` and ``demo_out/data``): every case of ``--split``
is predicted by the paper's sliding window at the checkpoint's strides, by one
whole-volume pass, and (with ``--options``) with each option, and each is scored
against the ground truth (Dice per class) with its seconds per volume.

``--mode whole`` also runs the paper's 16/4 sliding window on the same model and
reports the fraction of voxels whose labels agree; ``--check-labels`` runs the
authors' way (one window per pass, contiguous memory layout) and reports the
fraction our batched, channels-last run reproduces.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time

from .. import allocator


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.lower().replace(",", "x").split("x") if v)
    except ValueError:
        raise ValueError(f"expected sizes like 160x160x96, got {text!r}") from None


def add_infer_arguments(p) -> None:
    p.add_argument("--mode", choices=("window", "whole"), default="window",
                   help="the paper's sliding window, or one whole-volume pass")
    p.add_argument("--stride-xy", type=int, default=16, help="stride on the last two axes (default 16)")
    p.add_argument("--stride-z", type=int, default=4, help="stride on the first axis (default 4)")
    p.add_argument("--batch-windows", type=int, default=4, help="windows per forward pass (default 4)")
    p.add_argument("--base-filters", type=int, default=32, help="filters of the V-Net's first level")
    p.add_argument("--num-classes", type=int, default=2, help="classes, background included")
    p.add_argument("--patch", type=_shape, default=(112, 112, 80), metavar="DxHxW", help="window size")
    p.add_argument("--shape", type=_shape, default=(160, 160, 96), metavar="DxHxW", help="volume size")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--device", "-c", default="cpu", help="cpu (default), cuda, cuda:1, mps or auto")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="memory layout of the 3D convolutions (auto: on for the CPU)")
    p.add_argument("--no-amp", action="store_true", help="float32 on CUDA too")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and volume")
    p.add_argument("--no-agreement", action="store_true",
                   help="whole mode: skip the 16/4 sliding-window run it is compared with")
    p.add_argument("--check-labels", action="store_true",
                   help="also run one window per pass in the contiguous layout (the authors' loop) and "
                        "report the fraction of equal labels")
    p.add_argument("--blend", choices=("uniform", "gaussian"), default="uniform",
                   help="window weighting (predict --blend)")
    p.add_argument("--tta", choices=("none", "mirror"), default="none", help="test-time augmentation (predict --tta)")
    p.add_argument("--ensemble", type=int, default=1, metavar="N",
                   help="an ensemble of N random-weight models (predict -k with N files)")
    p.add_argument("--options", action="store_true",
                   help="also time --blend gaussian, --tta mirror and an ensemble of 2 on the same volume, each "
                        "against the main run")
    p.add_argument("--checkpoint", "-k", metavar="FILE",
                   help="a trained checkpoint: score each way of predicting on --data-dir's --split cases "
                        "against their labels instead of timing random weights")
    p.add_argument("--data-dir", metavar="DIR", help="with --checkpoint: the prepared dataset (default: the "
                                                    "checkpoint's data_dir)")
    p.add_argument("--split", default="test", help="with --checkpoint: the split role or list name (default test)")
    p.add_argument("--progress", action="store_true", help="progress bar on stderr")


def synthetic_volume(shape, seed: int):
    """Smooth blobs plus noise in [0, 1]: more structure for the network than white noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*[torch.linspace(0, 1, s) for s in shape], indexing="ij")
    vol = 0.1 * torch.rand(shape, generator=g)
    for _ in range(6):
        centre = torch.rand(len(shape), generator=g)
        radius = 0.05 + 0.15 * torch.rand(1, generator=g)
        d2 = sum((x - c) ** 2 for x, c in zip(grids, centre))
        vol += torch.exp(-d2 / (2 * radius ** 2))
    return ((vol - vol.min()) / (vol.max() - vol.min())).numpy()


def calibrate_batchnorm(model, image, crop) -> None:
    """Batch-norm statistics from one train-mode pass over a central crop (cumulative average)."""
    import torch

    from ..inference import DIVISOR

    size = [max(DIVISOR, min(c, s) // DIVISOR * DIVISOR) for c, s in zip(crop, image.shape)]
    lo = [(s - c) // 2 for s, c in zip(image.shape, size)]
    x = torch.from_numpy(image[tuple(slice(a, a + c) for a, c in zip(lo, size))].copy())[None, None]
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(x)
        model.decoder_theta.out_conv.bias.zero_()
    model.eval()


def _class_fractions(labels, num_classes: int) -> list[float]:
    import numpy as np

    counts = np.bincount(labels.ravel(), minlength=num_classes)
    return [round(float(c) / labels.size, 4) for c in counts]


def _dice(a, b) -> float | None:
    total = int(a.sum()) + int(b.sum())
    return round(200.0 * int((a & b).sum()) / total, 2) if total else None


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def trained_comparison(args) -> dict:
    """Dice against the ground truth and seconds per volume of each way of predicting, on a trained model."""
    import numpy as np
    import torch

    from ..config import data_path
    from ..data.cases import read_split
    from ..data.loaders import EvalDataset
    from ..devices import resolve_device
    from ..inference import axis_strides, predict_volume, prepare_model
    from ..predict import load_checkpoint_model

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, cfg = load_checkpoint_model(args.checkpoint)
    model = prepare_model(model, device)
    data_dir = data_path(cfg, args.data_dir)
    ids = read_split(data_dir, cfg.splits.get(args.split, args.split))
    cases = list(EvalDataset(data_dir, ids, cfg, crop=False))
    paper = axis_strides(cfg.spatial_dims, cfg.stride_xy, cfg.stride_z)
    ways = {f"window {cfg.stride_xy}/{cfg.stride_z} (paper)": {"mode": "window"}, "whole volume": {"mode": "whole"}}
    if args.options:
        ways.update({"window + blend gaussian": {"mode": "window", "blend": "gaussian"},
                     "window + tta mirror": {"mode": "window", "tta": "mirror"},
                     "whole + tta mirror": {"mode": "whole", "tta": "mirror"}})
    result = {"bench": "infer_trained", "checkpoint": str(args.checkpoint), "data_dir": str(data_dir),
              "split": args.split, "cases": len(cases), "patch": list(cfg.patch_size), "device": str(device),
              "threads": args.threads, "ways": {}}
    first = None
    for name, kw in ways.items():
        if cases:  # untimed: the first call of a way pays its imports (MONAI) and allocations
            warm = cases[0]["image"].numpy()
            predict_volume(model, warm[0] if cfg.in_channels == 1 else warm, cfg.patch_size, strides=paper,
                           batch_windows=args.batch_windows, progress=False, **kw)
        dice, seconds, labels = [], 0.0, []
        for item in cases:
            image = item["image"].numpy()
            image = image[0] if cfg.in_channels == 1 else image
            pred, sec, _ = _timed(lambda: predict_volume(model, image, cfg.patch_size, strides=paper,
                                                         batch_windows=args.batch_windows, progress=False, **kw))
            seconds += sec
            gt = item["label"].numpy()
            dice.append([_dice(pred == c, gt == c) for c in range(1, cfg.num_classes)])
            labels.append(pred)
        per_class = [round(float(np.mean([d[c] for d in dice if d[c] is not None])), 2)
                     for c in range(cfg.num_classes - 1)]
        entry = {"mean_dice": round(float(np.mean(per_class)), 2), "dice_per_class": per_class,
                 "sec_per_volume": round(seconds / max(len(cases), 1), 2)}
        if first is None:
            first = (labels, seconds)
        else:
            entry["relative_cost"] = round(seconds / first[1], 2)
            entry["labels_equal_to_paper"] = round(float(np.mean([np.mean(a == b) for a, b in zip(labels, first[0])])), 5)
        result["ways"][name] = entry
    return result


def main_infer(args) -> int:
    import numpy as np
    import torch

    from ..errors import UserError
    from ..devices import resolve_device
    from ..inference import axis_strides, plan_windows, predict_volume, prepare_model
    from ..models.diff_vnet import DiffVNet

    if args.checkpoint:
        print(json.dumps(trained_comparison(args)), flush=True)
        return 0
    if len(args.patch) != len(args.shape) or len(args.patch) not in (2, 3):
        raise UserError(f"--patch {args.patch} and --shape {args.shape} need the same number (2 or 3) of axes")
    if any(p % 16 for p in args.patch):
        raise UserError(f"every patch size must be a multiple of 16, got {args.patch}")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    load_start = os.getloadavg()[0]
    torch.manual_seed(args.seed)
    spatial_dims = len(args.patch)
    image = synthetic_volume(args.shape, args.seed)
    cl = {"auto": None, "on": True, "off": False}[args.channels_last]
    if args.ensemble < 1:
        raise UserError(f"--ensemble must be at least 1, got {args.ensemble}")

    def random_model():
        m = DiffVNet(1, args.num_classes, args.base_filters, spatial_dims, has_dropout=False)
        calibrate_batchnorm(m, image, [min(p, 64) for p in args.patch])
        return prepare_model(m, device, cl)

    members = [random_model() for _ in range(max(args.ensemble, 2 if args.options else 1))]
    model = members[0]
    channels_last = any(p.dim() == 5 and p.shape[1] > 1 and not p.is_contiguous()
                        for p in model.parameters())
    amp = False if args.no_amp else None
    strides = axis_strides(spatial_dims, args.stride_xy, args.stride_z)

    def run(mode, strides, batch, blend=args.blend, tta=args.tta, n=args.ensemble):
        return predict_volume(members[0] if n == 1 else members[:n], image, args.patch, strides=strides, mode=mode,
                              batch_windows=batch, amp=amp, progress=args.progress, desc=mode, blend=blend, tta=tta)

    labels, wall, cpu = _timed(lambda: run(args.mode, strides, args.batch_windows))
    windows = plan_windows(args.shape, args.patch, strides).num_windows if args.mode == "window" else 1
    result = {
        "bench": "infer", "mode": args.mode, "shape": list(args.shape), "patch": list(args.patch),
        "base_filters": args.base_filters, "num_classes": args.num_classes,
        "strides_xy_z": [args.stride_xy, args.stride_z] if args.mode == "window" else None,
        "windows": windows, "batch_windows": args.batch_windows if args.mode == "window" else None,
        "sec_per_volume": round(wall, 2), "sec_per_window": round(wall / windows, 3),
        "cpu_sec_per_volume": round(cpu, 2), "peak_rss_mb": None,
        "device": str(device), "threads": args.threads, "channels_last": channels_last,
        "amp": device.type == "cuda" and not args.no_amp, "torch": torch.__version__,
        "class_fractions": _class_fractions(labels, args.num_classes),
        "blend": args.blend, "tta": args.tta, "ensemble": args.ensemble,
    }
    if args.options:
        options = {"blend gaussian": {"blend": "gaussian"}, "tta mirror": {"tta": "mirror"},
                   "ensemble of 2": {"n": 2}}
        result["options"] = {}
        run(args.mode, strides, args.batch_windows, blend="gaussian")  # untimed: MONAI's import
        for name, kw in options.items():
            got, sec, _ = _timed(lambda: run(args.mode, strides, args.batch_windows, **kw))
            result["options"][name] = {"sec_per_volume": round(sec, 2), "relative_cost": round(sec / wall, 2),
                                       "labels_equal_to_main_run": round(float(np.mean(got == labels)), 5)}
    if args.mode == "whole" and not args.no_agreement:
        ref_strides = axis_strides(spatial_dims, 16, 4)
        ref, ref_wall, ref_cpu = _timed(lambda: run("window", ref_strides, args.batch_windows))
        result["agreement_with_16_4"] = round(float(np.mean(ref == labels)), 5)
        result["dice_vs_16_4"] = [_dice(labels == c, ref == c) for c in range(1, args.num_classes)]
        result["reference_16_4_sec"] = round(ref_wall, 1)
        result["reference_16_4_cpu_sec"] = round(ref_cpu, 1)
        result["reference_class_fractions"] = _class_fractions(ref, args.num_classes)
    if args.check_labels and args.mode == "window":
        prepare_model(model, channels_last=False)
        ref, ref_wall, ref_cpu = _timed(lambda: run("window", strides, 1))
        result["authors_loop_sec"] = round(ref_wall, 1)
        result["authors_loop_cpu_sec"] = round(ref_cpu, 1)
        result["labels_equal_to_authors_loop"] = round(float(np.mean(ref == labels)), 7)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["process_kernel_sec"], result["process_minor_faults"] = round(usage.ru_stime, 2), usage.ru_minflt
    result["malloc"] = allocator.state()
    result["loadavg_1min_start_end"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    if device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    print(json.dumps(result), flush=True)
    sys.stdout.flush()
    return 0
