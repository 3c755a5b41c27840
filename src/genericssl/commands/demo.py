"""`genericssl demo`: A&D and the supervised baseline on a synthetic task, on a CPU.

It shows the whole pipeline working (generate -> train -> validate -> test ->
score -> pictures) in minutes. It is not evidence that A&D beats supervised
training: the settings are tiny and the data synthetic (see `bench accuracy`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

DEMO_SETTINGS = {
    # Small enough for 2 CPU cores in minutes: 100 epochs of 8 iterations (16 unlabeled
    # cases, batch 2); the ramp-up covers the first third.
    "base_filters": 8, "batch_size": 2, "max_epoch": 99, "iters_per_epoch": None, "lr": 0.01,
    "unsup_weight": 10.0, "rampup_epochs": 33, "patience": 1000, "num_workers": 0,
}


def add_arguments(parser):
    parser.add_argument("--out", "-o", default="demo_out", help="output folder")
    parser.add_argument("--methods", default="ad,supervised", help="comma-separated methods to train")
    parser.add_argument("--device", "-c", default="auto", help="auto, cpu, cuda, cuda:1, mps (the demo is sized for a CPU)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the data and the training")
    parser.add_argument("--size", type=int, default=48, help="volume edge in voxels (default 48)")
    parser.add_argument("--max-epoch", "-n", type=int, default=DEMO_SETTINGS["max_epoch"],
                        help="last epoch, inclusive (epochs 0..N)")
    parser.add_argument("--iters-per-epoch", type=int, default=None,
                        help="cap on iterations per epoch (default: all, 8)")
    parser.add_argument("--base-filters", type=int, default=DEMO_SETTINGS["base_filters"],
                        help="filters of the V-Net's first level")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def test_method(ckpt: Path, data_dir: Path, cfg, device, ids):
    """Whole-volume predictions and per-class Dice on the test split."""
    import numpy as np
    import torch

    from ..checkpoint import load_model
    from ..data.loaders import EvalDataset
    from ..inference import predict_volume
    from ..metrics import case_scores

    model, _ = load_model(ckpt)
    model.to(device)
    preds, dice = {}, {}
    for item in EvalDataset(data_dir, ids, cfg, crop=False):
        image = item["image"][0].numpy()
        pred = predict_volume(model, image, cfg.patch_size, stride_xy=16, stride_z=16, device=device)
        gt = item["label"].numpy()
        preds[item["id"]] = (image, gt, pred)
        dice[item["id"]] = case_scores(pred.astype(np.uint8), gt.astype(np.uint8), cfg.num_classes)["dice"]
    del model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return preds, dice


def main(args):
    import numpy as np
    import torch

    from ..config import TaskConfig, apply_overrides
    from ..data.cases import read_split
    from ..data.synthetic import make_synthetic_dataset, named_spec
    from ..methods import get_method
    from ..plots import plot_curves, plot_overlays
    from ..training import Trainer, resolve_device

    t_start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        get_method(m)  # unknown names fail before any work
    device = resolve_device(args.device)
    print(f"generating the synthetic demo task (seed {args.seed}) in {out / 'data'} ...")
    summary = make_synthetic_dataset(out / "data", named_spec("demo", seed=args.seed, size=args.size))
    data_dir = Path(summary["data_dir"])
    base = apply_overrides(TaskConfig.from_dict(summary["task"]), {
        **DEMO_SETTINGS, "seed": args.seed, "max_epoch": args.max_epoch,
        "iters_per_epoch": args.iters_per_epoch, "base_filters": args.base_filters}).validate()
    counts = {k: summary["splits"][v] for k, v in base.splits.items()}
    print(f"cases: {counts}; volumes {summary['shape']}, patch {list(base.patch_size)}, "
          f"{base.num_classes} classes, {base.base_filters} filters, device {device}")

    test_ids = read_split(data_dir, base.splits["test"])
    results, histories, predictions = {}, {}, {}
    for m in methods:
        cfg = apply_overrides(base, {"method": m})
        print(f"\n== training {m}: {cfg.max_epoch + 1} epochs")
        t0 = time.time()
        trainer = Trainer(cfg, data_dir, out / m, device=str(device), overwrite=True,
                          progress=not args.no_progress)
        fit = trainer.fit()
        train_s = time.time() - t0
        preds, dice = test_method(Path(fit["best_checkpoint"]), data_dir, cfg, device, test_ids)
        # Fractions in [0, 1] (the metrics module reports %).
        per_class = (np.mean([d for d in dice.values()], axis=0) / 100).tolist()
        results[m] = {"mean_dice": float(np.mean(per_class)), "per_class_dice": per_class,
                      "per_case_dice": {k: [v / 100 for v in d] for k, d in dice.items()}, "best_val_dice": fit["best_dice"],
                      "best_epoch": fit["best_epoch"], "iterations": trainer.iterations_run,
                      "train_seconds": round(train_s, 1), "checkpoint": fit["best_checkpoint"]}
        histories[m] = trainer.history
        predictions[m] = preds

    names = [f"class {c}" for c in range(1, base.num_classes)]
    print(f"\nTest Dice (0-1) on {len(test_ids)} held-out synthetic volumes (D_theta, best checkpoint):")
    print(f"{'method':<12}" + "".join(f"{n:>10}" for n in names) + f"{'mean':>10}{'train s':>10}{'iters':>8}")
    for m, r in results.items():
        print(f"{m:<12}" + "".join(f"{d:>10.3f}" for d in r["per_class_dice"])
              + f"{r['mean_dice']:>10.3f}{r['train_seconds']:>10.0f}{r['iterations']:>8}")

    case = test_ids[0]
    image, gt, _ = predictions[methods[0]][case]
    labels = {"ground truth": gt, **{m: predictions[m][case][2] for m in methods}}
    plot_overlays(image, labels, out / "overlays.png", base.num_classes,
                  title=f"synthetic test case {case}")
    plot_curves([], out / "curves.png", title="demo: training curves", series=histories)
    wall = time.time() - t_start
    (out / "results.json").write_text(json.dumps(
        {"task": "synthetic demo", "seed": args.seed, "settings": base.to_dict(), "wall_seconds": round(wall, 1),
         "methods": results}, indent=1))
    print(f"\nwrote {out / 'results.json'}, {out / 'overlays.png'}, {out / 'curves.png'} "
          f"(TensorBoard: tensorboard --logdir {out})")
    print(f"demo wall time: {wall / 60:.1f} min. Synthetic data and small settings: this shows the "
          f"pipeline working, not which method is better (see 'genericssl bench accuracy').")
    return 0
