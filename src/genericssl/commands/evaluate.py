"""`genericssl evaluate`: score label maps against ground truth, or aggregate runs.

    genericssl evaluate --pred PRED_DIR --gt GT_DIR [--num-classes C] [--json out.json]
    genericssl evaluate --pred PRED_DIR --gt DATA --split test --spacing mm --plots figs/
    genericssl evaluate --aggregate run1.json run2.json run3.json

Exit status: 0 when every case was scored, 1 when some were skipped (the
table says which and why), 2 when nothing could be scored.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UserError


def add_arguments(parser):
    parser.description = (
        "Score label maps: Dice (%), Jaccard (%), 95% Hausdorff distance and average surface distance "
        "per foreground class, as medpy computes them. A class absent from both prediction and ground "
        "truth scores a perfect 100/100/0/0 (--authors-empty-score gives the authors' 1/1/0/0); a class "
        "in only one of them scores 0/0/128/128.")
    parser.epilog = ("Exit status: 0 when every case was scored, 1 when some were skipped (listed with the "
                     "reason), 2 when nothing could be scored or the input is unusable.")
    parser.add_argument("--pred", type=Path, metavar="DIR",
                        help="predicted label maps: <id>.npy, <id>.nii.gz or <id>.nii")
    parser.add_argument("--gt", type=Path, metavar="DIR",
                        help="ground truth: <id>_label.npy, <id>.npy or <id>.nii.gz files, or a prepared "
                             "dataset folder (DATA/npy/<id>_label.npy)")
    parser.add_argument("--split", metavar="NAME|FILE",
                        help="score the ids of DATA/split_txts/NAME.txt (or of this list file)")
    parser.add_argument("--num-classes", type=int, metavar="C",
                        help="score classes 1..C-1 (default: num_classes of DATA/dataset.json, else the "
                             "largest ground-truth label + 1)")
    parser.add_argument("--spacing", choices=("voxel", "mm"), default="voxel",
                        help="distance unit: voxels (the paper's) or millimetres from NIfTI headers or "
                             "DATA/dataset.json (default: voxel)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="parallel processes (default: one per CPU)")
    parser.add_argument("--csv", type=Path, metavar="FILE",
                        help="per-case, per-class scores (default: PRED/metrics.csv)")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="write the summary (or, with --aggregate, the mean ± std) as JSON")
    parser.add_argument("--plots", type=Path, metavar="DIR",
                        help="write dice_boxplot.png and overlays.png (worst and best case) here")
    parser.add_argument("--images", type=Path, metavar="DIR",
                        help="images for the overlays: <id>_image.npy, <id>.npy or <id>.nii.gz "
                             "(default: the prepared <id>_image.npy beside the labels, if any)")
    parser.add_argument("--authors-empty-score", action="store_true",
                        help="score a class absent from both maps as Dice 1 / Jaccard 1, as the authors' "
                             "scripts do (reproduces their numbers; our default is 100)")
    parser.add_argument("--pad-gt", action="store_true",
                        help="zero-pad the ground truth symmetrically to a larger prediction, as the authors' "
                             "evaluation does for volumes smaller than the patch")
    parser.add_argument("--largest-component", metavar="all|CLASSES",
                        help="also score the maps after keeping the largest connected component of these "
                             "classes ('all' or e.g. 1,3); both tables are printed, the JSON/CSV hold the "
                             "post-processed scores and the plain means")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--aggregate", nargs="+", type=Path, metavar="JSON",
                        help="summaries of several runs (folds, seeds) to report as mean ± population std")


def main(args) -> int:
    from .. import evaluation

    if args.aggregate:
        if args.pred or args.gt:
            raise UserError("--aggregate takes summary JSON files; leave out --pred and --gt")
        return _aggregate(args, evaluation)
    if args.pred is None or args.gt is None:
        raise UserError("give --pred DIR and --gt DIR (or --aggregate run1.json run2.json ...)")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    summary = evaluation.evaluate_folder(
        args.pred, args.gt, split=args.split, num_classes=args.num_classes, spacing=args.spacing,
        workers=args.workers, authors_empty_score=args.authors_empty_score, pad_gt=args.pad_gt,
        progress=not args.no_progress)
    print(evaluation.format_table(summary))
    if not summary["cases"]:
        raise UserError("no case could be scored (see the reasons above)")
    if args.largest_component:
        plain_mean = summary["mean"]
        summary = evaluation.evaluate_folder(
            args.pred, args.gt, split=args.split, num_classes=args.num_classes, spacing=args.spacing,
            workers=args.workers, authors_empty_score=args.authors_empty_score, pad_gt=args.pad_gt,
            progress=not args.no_progress, largest_component=args.largest_component)
        summary["mean_without_postprocessing"] = plain_mean
        print(f"\nafter keeping the largest connected component of classes {args.largest_component}:")
        print(evaluation.format_table(summary))
    try:
        written = _write_outputs(args, summary, evaluation)
    except OSError as e:
        raise UserError(f"cannot write {e.filename or ''}: {e.strerror or e}") from e
    print("Wrote " + ", ".join(written))
    return 1 if summary["skipped"] else 0


def _write_outputs(args, summary, evaluation) -> list[str]:
    csv_path = args.csv or args.pred / "metrics.csv"
    evaluation.write_csv(summary, csv_path)
    written = [str(csv_path)]
    if args.json:
        evaluation.write_json(summary, args.json)
        written.append(str(args.json))
    if args.plots:
        evaluation.plot_dice_boxes(summary, args.plots / "dice_boxplot.png")
        for note in evaluation.plot_overlays(summary, args.plots / "overlays.png", args.images):
            print(f"Note: {note}")
        written += [str(args.plots / "dice_boxplot.png"), str(args.plots / "overlays.png")]
    return written


def _aggregate(args, evaluation) -> int:
    summaries = []
    for path in args.aggregate:
        try:
            summaries.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read a summary ({e})") from e
        if not isinstance(summaries[-1], dict) or not summaries[-1].get("mean"):
            raise UserError(f"{path}: not an evaluation summary with scores (no 'mean')")
    try:
        agg = evaluation.aggregate_runs(summaries, [str(p) for p in args.aggregate])
    except ValueError as e:
        raise UserError(f"cannot aggregate {', '.join(map(str, args.aggregate))}: {e}") from e
    if "warning" in agg:
        print(f"genericssl evaluate: warning: {agg['warning']}", file=sys.stderr)
    print(evaluation.format_runs_table(agg, "vox" if agg["spacing"] == "voxel" else "mm"))
    if args.json:
        evaluation.write_json(agg, args.json)
        print(f"Wrote {args.json}")
    return 0
