"""`genericssl run`: train -> test -> evaluate in one command (the authors' train.sh).

``genericssl run -t la_0.05`` is ``bash train.sh -t la_0.05 -d true``;
``--no-train`` is ``-d false`` (test and evaluate an existing best_model.pth, ours
or the authors'). Presets with several seeds (Synapse: 0, 1, 666) run once per
seed and report mean ± std over the runs, as the paper does.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ._common import (add_nproc_argument, add_run_folder_arguments, add_task_arguments, config_from_args,
                      positive_int, print_config_requested, relaunched, resolve_data_dir)


def add_arguments(parser):
    add_task_arguments(parser)
    add_run_folder_arguments(parser)
    parser.add_argument("--no-train", action="store_true", help="only test and evaluate (train.sh -d false)")
    parser.add_argument("--checkpoint", "-k", metavar="FILE", help="with --no-train: the best_model.pth to test (e.g. the authors' "
                                             "released file); default: the run folder's")
    parser.add_argument("--seeds", metavar="S,S,...", help="comma-separated seeds (default: the preset's seeds)")
    parser.add_argument("--resume", action="store_true", help="resume each seed's training where it stopped")
    parser.add_argument("--stride-xy", type=positive_int, metavar="N",
                        help="sliding-window stride on the last two axes (default: the preset's, 16)")
    parser.add_argument("--stride-z", type=positive_int, metavar="N",
                        help="sliding-window stride on the first axis (default: the preset's, 4)")
    parser.add_argument("--authors-empty-score", action="store_true",
                        help="score a class absent from both maps as 1 (the authors' slip) instead of 100")
    parser.add_argument("--ensemble", action="store_true",
                        help="with several seeds: also test the seeds' best models as one ensemble (softmax "
                             "averaged), into <out>/ensemble beside the per-seed results")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_nproc_argument(parser)


def predict_split(model, cfg, data_dir: Path, split: str, out_dir: Path, device, progress: bool = True) -> list[str]:
    """Sliding-window predictions of every case of ``split`` as ``<id>.npy`` label maps."""
    import numpy as np
    from tqdm.auto import tqdm

    from ..data.loaders import EvalDataset
    from ..data.cases import read_split
    from ..inference import predict_volume

    from ..data.cases import read_dataset_json
    from ..prepare.scans import write_on_source

    out_dir.mkdir(parents=True, exist_ok=True)
    ids = read_split(data_dir, split)
    meta = read_dataset_json(data_dir) or {}
    on_scans = []
    ds = EvalDataset(data_dir, ids, cfg, crop=False, need_label=False, cache=False)
    for item in tqdm(ds, desc=f"testing on {split}", disable=not progress):
        image = item["image"].numpy()
        pred = predict_volume(model, image[0] if cfg.in_channels == 1 else image, cfg.patch_size,
                              stride_xy=cfg.stride_xy, stride_z=cfg.stride_z, device=device, progress=False)
        np.save(out_dir / f"{item['id']}.npy", pred.astype(np.uint8))
        # A dataset prepared from its scans' own layout: the label map on the original scan too.
        written = write_on_source(pred, meta.get("cases", {}).get(item["id"]), meta.get("preparation") or {},
                                  out_dir.parent / "predictions_on_scans", cfg.num_classes)
        if written is not None:
            on_scans.append(written)
    if on_scans:
        print(f"test predictions on the original scans (their grid, affine and format): "
              f"{on_scans[0].parent} ({len(on_scans)} files)")
    return ids


def train_one(args, cfg, data_dir: Path, out: Path, device) -> None:
    """Train one seed (in every process of a distributed job)."""
    from ..training import Trainer

    resume = out / "ckpts" / "last.pth" if args.resume and (out / "ckpts" / "last.pth").exists() else None
    Trainer(cfg, data_dir, out, device=str(device), resume=resume, overwrite=not args.resume,
            progress=not args.no_progress).fit()


def test_one(args, cfg, data_dir: Path, out: Path, device, checkpoints: list[Path] | None = None) -> dict:
    """Sliding-window test and evaluation of one seed's best model (or of an ensemble of ``checkpoints``)."""
    from ..checkpoint import load_model
    from ..evaluation import evaluate_folder, format_table, write_csv, write_json

    if checkpoints is None:
        checkpoints = [Path(args.checkpoint) if args.checkpoint else out / "ckpts" / "best_model.pth"]
    # The test-time fields (strides, splits, intensity) come from this command, not the file.
    models = [load_model(ck, base=cfg)[0].to(device) for ck in checkpoints]
    model = models[0] if len(models) == 1 else models
    pred_dir = out / "predictions"
    predict_split(model, cfg, data_dir, cfg.splits["test"], pred_dir, device, progress=not args.no_progress)
    summary = evaluate_folder(pred_dir, data_dir, split=cfg.splits["test"], num_classes=cfg.num_classes,
                              authors_empty_score=args.authors_empty_score, progress=not args.no_progress)
    write_json(summary, out / "test_metrics.json")
    write_csv(summary, out / "test_metrics.csv")
    print(format_table(summary))
    return summary


def main(args):
    from ..distributed import launched_rank
    from ..evaluation import aggregate_runs, format_runs_table, write_json
    from ..training import resolve_device
    from .train import default_out

    from ..config import apply_overrides

    cfg = config_from_args(args)
    strides = {k: getattr(args, k) for k in ("stride_xy", "stride_z") if getattr(args, k) is not None}
    cfg = apply_overrides(cfg, strides, source={k: "flag --" + k.replace("_", "-") for k in strides}).validate()
    if args.seeds:
        cfg = apply_overrides(cfg, {"seeds": args.seeds}, source="flag --seeds").validate()
    if print_config_requested(args, cfg):
        return 0
    code = relaunched(args, cfg)
    if code is not None:
        return code
    data_dir = resolve_data_dir(args, cfg)
    device = resolve_device(args.device)
    seeds = list(cfg.seeds)
    root = Path(args.out) if args.out else default_out(cfg, args.exp)
    runs = []
    for seed in seeds:
        run_cfg = cfg if len(seeds) == 1 and not args.seeds else apply_overrides(cfg, {"seed": seed},
                                                                                 source="flag --seeds")
        # One seed runs the configuration as it is, with its own `seed`.
        runs.append((run_cfg.seed, run_cfg, root if len(seeds) == 1 else root / f"seed{seed}"))
    # Every seed trains first, then rank 0 tests them all: in several processes the
    # others are done by then, instead of waiting in a collective through the tests.
    if not args.no_train:
        for seed, run_cfg, out in runs:
            if launched_rank() == 0:
                print(f"== {cfg.name} ({cfg.method}), seed {seed}: training in {out}")
            train_one(args, run_cfg, data_dir, out, device)
    if launched_rank() != 0:
        return 0
    summaries = []
    for seed, run_cfg, out in runs:
        print(f"== {cfg.name} ({cfg.method}), seed {seed}: testing {out}")
        summaries.append(test_one(args, run_cfg, data_dir, out, device))
    if len(summaries) > 1:
        agg = aggregate_runs(summaries, [f"seed {seed}" for seed, _, _ in runs])
        if "warning" in agg:
            print(f"genericssl run: warning: {agg['warning']}", file=sys.stderr)
        write_json(agg, root / "test_metrics_runs.json")
        print(format_runs_table(agg))
        if args.ensemble:
            print(f"== {cfg.name} ({cfg.method}): testing the ensemble of seeds "
                  f"{', '.join(str(seed) for seed, _, _ in runs)} in {root / 'ensemble'}")
            test_one(args, cfg, data_dir, root / "ensemble", device,
                     checkpoints=[out / "ckpts" / "best_model.pth" for _, _, out in runs])
    print(json.dumps({"out": str(root), "seeds": [seed for seed, _, _ in runs]}))
    return 0
