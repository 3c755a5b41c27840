"""`genericssl run`: train -> test -> evaluate in one command (the authors' train.sh).

``genericssl run -t la_0.05`` is ``bash train.sh -t la_0.05 -d true``;
``--no-train`` is ``-d false`` (test and evaluate an existing best_model.pth, ours
or the authors'). Presets with several seeds (Synapse: 0, 1, 666) run once per
seed and report mean ± std over the runs, as the paper does.
"""
from __future__ import annotations

import json
from pathlib import Path

from ._common import add_nproc_argument, add_task_arguments, config_from_args, relaunched, resolve_data_dir


def add_arguments(parser):
    add_task_arguments(parser)
    parser.add_argument("--exp", "-i", default="", help="experiment name (run folder runs/<task>_<method>_<exp>)")
    parser.add_argument("--out", help="run folder (default runs/<task>_<method>[_<exp>])")
    parser.add_argument("--device", "-c", default="auto")
    parser.add_argument("--no-train", action="store_true", help="only test and evaluate (train.sh -d false)")
    parser.add_argument("--checkpoint", help="with --no-train: the best_model.pth to test (e.g. the authors' "
                                             "released file); default: the run folder's")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the preset's)")
    parser.add_argument("--resume", action="store_true", help="resume each seed's training where it stopped")
    parser.add_argument("--stride-xy", type=int, help="sliding-window stride on the last two axes (default 16)")
    parser.add_argument("--stride-z", type=int, help="sliding-window stride on the first axis (default 4)")
    parser.add_argument("--authors-empty-score", action="store_true",
                        help="score a class absent from both maps as 1 (the authors' slip) instead of 100")
    parser.add_argument("--no-progress", action="store_true")
    add_nproc_argument(parser)


def predict_split(model, cfg, data_dir: Path, split: str, out_dir: Path, device, progress: bool = True) -> list[str]:
    """Sliding-window predictions of every case of ``split`` as ``<id>.npy`` label maps."""
    import numpy as np
    from tqdm.auto import tqdm

    from ..data.loaders import EvalDataset
    from ..data.cases import read_split
    from ..inference import predict_volume

    out_dir.mkdir(parents=True, exist_ok=True)
    ids = read_split(data_dir, split)
    ds = EvalDataset(data_dir, ids, cfg, crop=False, need_label=False, cache=False)
    for item in tqdm(ds, desc=f"testing on {split}", disable=not progress):
        pred = predict_volume(model, item["image"][0].numpy(), cfg.patch_size, stride_xy=cfg.stride_xy,
                              stride_z=cfg.stride_z, device=device, progress=False)
        np.save(out_dir / f"{item['id']}.npy", pred.astype(np.uint8))
    return ids


def train_one(args, cfg, data_dir: Path, out: Path, device) -> None:
    """Train one seed (in every process of a distributed job)."""
    from ..training import Trainer

    resume = out / "ckpts" / "last.pth" if args.resume and (out / "ckpts" / "last.pth").exists() else None
    Trainer(cfg, data_dir, out, device=str(device), resume=resume, overwrite=not args.resume,
            progress=not args.no_progress).fit()


def test_one(args, cfg, data_dir: Path, out: Path, device) -> dict:
    """Sliding-window test and evaluation of one seed's best model."""
    from ..checkpoint import load_model
    from ..evaluation import evaluate_folder, format_table, write_csv, write_json

    ckpt = Path(args.checkpoint) if args.checkpoint else out / "ckpts" / "best_model.pth"
    model, cfg_ckpt = load_model(ckpt, base=cfg)
    # The test-time fields (strides, splits, intensity) come from this command, not the file.
    model.to(device)
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

    cfg = config_from_args(args)
    code = relaunched(args, cfg)
    if code is not None:
        return code
    if args.stride_xy:
        cfg.stride_xy = args.stride_xy
    if args.stride_z:
        cfg.stride_z = args.stride_z
    data_dir = resolve_data_dir(args, cfg)
    device = resolve_device(args.device)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(cfg.seeds)
    root = Path(args.out) if args.out else default_out(cfg, args.exp)
    runs = []
    for seed in seeds:
        run_cfg = cfg if len(seeds) == 1 else type(cfg).from_dict({**cfg.to_dict(), "seed": seed})
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
        agg = aggregate_runs(summaries)
        write_json(agg, root / "test_metrics_runs.json")
        print(format_runs_table(agg))
    print(json.dumps({"out": str(root), "seeds": [seed for seed, _, _ in runs]}))
    return 0
