"""Score folders of label maps against ground truth; summaries, tables, runs, plots.

Files are paired by case id:

- predictions: ``PRED/<id>.npy``, ``<id>.nii.gz`` or ``<id>.nii``;
- ground truth: a folder of ``<id>_label.npy`` (the prepared layout; when
  present, other files there are images and are ignored), or ``<id>.npy``,
  ``<id>.nii.gz``, ``<id>.nii``; or a prepared dataset folder ``DATA`` with
  ``DATA/npy/<id>_label.npy`` and, with ``split``, the ids of
  ``DATA/split_txts/<split>.txt`` (``split`` may also be a path to a list).

Axis order: ``.npy`` arrays are taken as they are. A NIfTI compared with a
NIfTI is read in nibabel's (i, j, k) order; a NIfTI compared with a ``.npy``
is read in SimpleITK's reversed (k, j, i) order, the order in which the
authors' scripts write and read their prediction NIfTIs.

Spacing (``spacing="mm"``) comes from ``dataset.json`` next to the ground
truth (``{"cases": {id: {"spacing": [...]}}}``, one value per array axis) or
else from the ground-truth NIfTI header; a case whose spacing is unknown is
skipped with that reason.

A case with bad input (no prediction, unreadable file, 4D volume, shape
mismatch, non-integer or out-of-range labels) is skipped; the summary's
``skipped`` says which file and why, and the other cases are scored.
Averages run over cases, then classes, as the paper's scripts do.
"""
from __future__ import annotations

import concurrent.futures as cf
import csv
import json
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import metrics
from .errors import UserError
from .imageio import load_npy

PRED_SUFFIXES = (".npy", ".nii.gz", ".nii")
GT_SUFFIXES = (".npy", ".nii.gz", ".nii")
PREPARED_LABEL = "_label.npy"
IMAGE_SUFFIXES = ("_image.npy", ".npy", ".nii.gz", ".nii")
SPLIT_DIRS = ("split_txts", "splits_txts")  # the authors' MMWHS release spells it splits_txts


class CaseError(Exception):
    """One case cannot be scored; the message names the file and the problem."""


@dataclass(frozen=True)
class Case:
    id: str
    pred: Path
    gt: Path
    spacing: tuple[float, ...] | None = None  # from dataset.json


def _strip_suffix(name: str, suffixes: Sequence[str]) -> str | None:
    for s in suffixes:
        if name.endswith(s) and len(name) > len(s):
            return name[: -len(s)]
    return None


def _index_folder(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """id -> file; when one id has several files, the earlier suffix wins."""
    found: dict[str, Path] = {}
    for suffix in reversed(suffixes):
        for path in sorted(folder.glob("*" + suffix)):
            case_id = _strip_suffix(path.name, (suffix,))
            if case_id and path.is_file():
                found[case_id] = path
    return found


def read_split(path: Path) -> list[str]:
    """Case ids of a split list: one per line; blank lines and '#' comments skipped."""
    ids = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ids.append(line)
    return ids


def _resolve_gt(gt: Path, split: str | None) -> tuple[dict[str, Path], list[str] | None, Path]:
    """Ground-truth files by id, the split's ids (or None) and the folder searched for dataset.json."""
    if not gt.is_dir():
        raise UserError(f"ground truth {gt} is not a folder")
    label_dir = gt
    if (gt / "npy").is_dir() and not any(gt.glob("*" + PREPARED_LABEL)):
        label_dir = gt / "npy"
    prepared = {i: p for i, p in ((_strip_suffix(p.name, (PREPARED_LABEL,)), p)
                                  for p in sorted(label_dir.glob("*" + PREPARED_LABEL))) if i}
    files = prepared or _index_folder(label_dir, GT_SUFFIXES)
    ids = None
    if split is not None:
        candidates = [gt / d / f"{split}.txt" for d in SPLIT_DIRS] + [Path(split)]
        split_file = next((c for c in candidates if c.is_file()), None)
        if split_file is None:
            raise UserError(
                f"split '{split}': no such list; looked for {', '.join(str(c) for c in candidates)}")
        ids = read_split(split_file)
        if not ids:
            raise UserError(f"split list {split_file} holds no case ids")
    elif not files:
        raise UserError(
            f"no ground truth in {label_dir}: expected <id>{PREPARED_LABEL}, <id>.npy or <id>.nii.gz files")
    meta_dir = gt.parent if label_dir == gt and gt.name == "npy" else gt
    return files, ids, meta_dir


def _dataset_meta(meta_dir: Path) -> tuple[dict[str, tuple[float, ...]], int | None]:
    """Case spacings and the class count from ``dataset.json``, where there is one."""
    path = meta_dir / "dataset.json"
    if not path.is_file():
        return {}, None
    try:
        meta = json.loads(path.read_text())
        cases = meta.get("cases", {})
        spacings = {k: tuple(float(x) for x in v["spacing"]) for k, v in cases.items() if "spacing" in v}
        num_classes = meta.get("num_classes")
        return spacings, None if num_classes is None else int(num_classes)
    except (ValueError, AttributeError, TypeError, KeyError) as e:
        raise UserError(f"{path}: cannot read case spacings or num_classes ({e})") from e


def find_cases(pred_dir, gt, split: str | None = None) -> tuple[list[Case], dict[str, str], list[str], int | None]:
    """Pair predictions with ground truth.

    Returns (cases, skipped {id: reason}, notes, num_classes of dataset.json or None)."""
    pred_dir, gt = Path(pred_dir), Path(gt)
    if not pred_dir.is_dir():
        raise UserError(f"prediction folder {pred_dir} does not exist")
    gt_files, ids, meta_dir = _resolve_gt(gt, split)
    preds = _index_folder(pred_dir, PRED_SUFFIXES)
    spacings, dataset_classes = _dataset_meta(meta_dir)
    notes: list[str] = []
    if ids is None:
        ids = sorted(gt_files)
        extra = sorted(set(preds) - set(gt_files))
        if extra:
            notes.append(f"{len(extra)} prediction(s) without ground truth, not scored: "
                         + ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else ""))
    cases, skipped = [], {}
    for case_id in ids:
        if case_id not in gt_files:
            skipped[case_id] = f"no ground truth for '{case_id}' in {gt}"
        elif case_id not in preds:
            looked = ", ".join(case_id + s for s in PRED_SUFFIXES)
            skipped[case_id] = f"no prediction: none of {looked} in {pred_dir}"
        else:
            cases.append(Case(case_id, preds[case_id], gt_files[case_id], spacings.get(case_id)))
    return cases, skipped, notes, dataset_classes


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def read_label_map(path: Path, reverse_nifti_axes: bool = False) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """An integer label map and its voxel spacing (NIfTI only), or CaseError naming the file."""
    path = Path(path)
    try:
        if _is_nifti(path):
            import nibabel as nib
            img = nib.load(str(path))
            arr = np.asanyarray(img.dataobj)
            zooms = tuple(float(z) for z in img.header.get_zooms())
            while arr.ndim > 3 and arr.shape[-1] == 1:   # (x, y, z, 1) is still one volume
                arr = arr[..., 0]
            if arr.ndim > 3:
                raise CaseError(f"{path}: a {arr.ndim}D volume of shape {arr.shape}; expected a 3D label map "
                                "(one time frame or channel per file)")
            spacing = zooms[: arr.ndim]
            if reverse_nifti_axes:
                arr, spacing = arr.transpose(), spacing[::-1]
        else:
            arr, spacing = load_npy(path), None
    except CaseError:
        raise
    except UserError as e:  # load_npy's message names the file and the problem
        raise CaseError(str(e)) from None
    except Exception as e:  # a truncated gzip, a bad header: "cannot read"
        raise CaseError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
    return _as_labels(np.asarray(arr), path), spacing


def _as_labels(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype.kind == "b":
        return arr.astype(np.uint8)
    if arr.dtype.kind == "f":
        nonfinite = np.count_nonzero(~np.isfinite(arr))
        if nonfinite:
            raise CaseError(f"{path}: {nonfinite} NaN or infinite value(s); expected a label map of class indices")
        bad = arr != np.round(arr)
        if bad.any():
            raise CaseError(f"{path}: non-integer values (e.g. {arr[bad].flat[0].item()!r}); expected a label map")
        return arr.astype(np.int32)
    if arr.dtype.kind not in "iu":
        raise CaseError(f"{path}: values of type {arr.dtype}; expected an integer label map")
    return arr


def _check_range(arr: np.ndarray, path: Path, num_classes: int | None) -> int:
    """The largest label, after checking all labels lie in 0..num_classes-1."""
    if arr.size == 0:
        raise CaseError(f"{path}: empty array of shape {arr.shape}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise CaseError(f"{path}: negative label {lo}")
    if num_classes is not None and hi >= num_classes:
        raise CaseError(f"{path}: label {hi} is outside 0..{num_classes - 1} (num_classes {num_classes})")
    return hi


def _pad_like_authors(gt: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """GT zero-padded symmetrically to `shape`, as the authors pad volumes smaller than the patch."""
    diff = np.subtract(shape, gt.shape)
    if len(shape) != gt.ndim or np.any(diff < 0) or np.any(diff % 2):
        return None
    return np.pad(gt, [(d // 2, d // 2) for d in diff])


def evaluate_arrays(pred, gt, num_classes: int, spacing=None, *, authors_empty_score: bool = False,
                    missing_distance: float = metrics.MISSING_DISTANCE, connectivity: int = 1,
                    names: tuple[str, str] = ("prediction", "ground truth")) -> dict[str, list[float]]:
    """Scores of one case: ``{"dice": [...], "jaccard": [...], "hd95": [...], "asd": [...]}``.

    ``pred``, ``gt``: integer label maps of one shape, (H, W) or (D, H, W);
    one list entry per foreground class 1..num_classes-1. Raises CaseError on
    a shape mismatch or labels outside 0..num_classes-1.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        hint = " (the reverse of the ground truth's: NIfTI axis order?)" if pred.shape == gt.shape[::-1] else ""
        raise CaseError(f"{names[0]}: shape {pred.shape} differs from {names[1]} shape {gt.shape}{hint}")
    pred = _as_labels(pred, Path(names[0]))
    gt = _as_labels(gt, Path(names[1]))
    _check_range(pred, Path(names[0]), num_classes)
    _check_range(gt, Path(names[1]), num_classes)
    return metrics.case_scores(pred, gt, num_classes, spacing, authors_empty_score=authors_empty_score,
                               missing_distance=missing_distance, connectivity=connectivity)


def load_case(case: Case, spacing_mode: str | Sequence[float] | None = None, pad_gt: bool = False):
    """(pred, gt, spacing) of one case, read and checked for shape; CaseError otherwise."""
    pred_nifti, gt_nifti = _is_nifti(case.pred), _is_nifti(case.gt)
    gt, gt_spacing = read_label_map(case.gt, reverse_nifti_axes=gt_nifti and not pred_nifti)
    pred, _ = read_label_map(case.pred, reverse_nifti_axes=pred_nifti and not gt_nifti)
    if pred.shape != gt.shape and pad_gt:
        padded = _pad_like_authors(gt, pred.shape)
        gt = gt if padded is None else padded
    if pred.shape != gt.shape:
        hint = " (the reverse of the ground truth's: NIfTI axis order?)" if pred.shape == gt.shape[::-1] else ""
        raise CaseError(f"{case.pred}: shape {pred.shape} differs from ground truth {case.gt} "
                        f"shape {gt.shape}{hint}")
    if spacing_mode in (None, "voxel"):
        spacing = None
    elif spacing_mode == "mm":
        spacing = case.spacing or gt_spacing
        if spacing is None:
            raise CaseError(f"{case.gt}: no spacing known for '{case.id}' (no NIfTI header, no entry in "
                            "dataset.json); use spacing 'voxel'")
        if len(spacing) != gt.ndim:
            raise CaseError(f"{case.id}: spacing {list(spacing)} does not fit a {gt.ndim}D array")
    else:
        spacing = tuple(float(s) for s in spacing_mode)
    return pred, gt, spacing


def _score_case(case: Case, num_classes: int | None, spacing_mode, authors_empty_score: bool,
                pad_gt: bool, largest_component: str | None = None) -> tuple[str, dict | str, int, int]:
    """Worker: (id, scores or skip reason, gt max label, pred max label)."""
    try:
        pred, gt, spacing = load_case(case, spacing_mode, pad_gt)
        pred_max = _check_range(pred, case.pred, num_classes)
        gt_max = _check_range(gt, case.gt, num_classes)
        # Without num_classes, score what this case holds; the caller pads to the final count.
        n = num_classes or max(gt_max, pred_max, 1) + 1
        if largest_component:
            from .postprocess import largest_component as keep_largest, parse_classes
            # Classes were checked against num_classes by the caller; a case's own count may be smaller.
            named = parse_classes(largest_component, 2 ** 15) if largest_component != "all" else range(1, n)
            pred = keep_largest(pred, [c for c in named if c < n])
        scores = metrics.case_scores(pred, gt, n, spacing, authors_empty_score=authors_empty_score)
        return case.id, scores, gt_max, pred_max
    except CaseError as e:
        return case.id, str(e), -1, -1


def default_workers(n_cases: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, n_cases))


def _map_cases(cases: list[Case], args: tuple, workers: int, progress: bool) -> Iterable[tuple]:
    from tqdm import tqdm
    bar = tqdm(total=len(cases), desc="evaluate", unit="case", disable=not progress)
    try:
        if workers <= 1 or len(cases) <= 1:
            for case in cases:
                yield _score_case(case, *args)
                bar.update()
            return
        # fork on Linux: no re-import of the caller's script (spawn would run an unguarded
        # script again) and no start-up cost; the workers use neither torch nor OpenMP, so a
        # parent that trained with them forks safely.
        ctx = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(_score_case, case, *args) for case in cases]
            for fut in cf.as_completed(futures):
                yield fut.result()
                bar.update()
    finally:
        bar.close()


def _empty_class(authors_empty_score: bool) -> dict[str, float]:
    return metrics.empty_scores(False, False, authors_empty_score=authors_empty_score)


def evaluate_folder(pred_dir, gt, split: str | None = None, num_classes: int | None = None,
                    spacing: str | Sequence[float] | None = None, workers: int | None = None,
                    authors_empty_score: bool = False, pad_gt: bool = False,
                    progress: bool = True, largest_component: str | None = None) -> dict:
    """Score every case of ``pred_dir`` against ``gt`` (see the module docstring for layouts).

    ``num_classes``: classes 1..num_classes-1 are scored; None takes it from
    ``dataset.json`` beside the ground truth, else the largest ground-truth
    label + 1. ``spacing``: None or "voxel" (voxel
    units), "mm" (headers or dataset.json), or one value per axis for all
    cases. ``workers``: processes (default: one per CPU, at most one per case).
    ``pad_gt``: zero-pad the ground truth symmetrically to a larger
    prediction's shape (the authors' predictions of volumes smaller than the
    patch stay padded).

    Returns ``{"cases": {id: {"dice": [...], "jaccard": [...], "hd95": [...],
    "asd": [...]}}, "mean": {"dice": [...], ..., "dice_avg": x, ...},
    "skipped": {id: reason}, "num_classes", "spacing", "authors_empty_score",
    "notes": [...], "files": {id: {"pred", "gt"}}}``; ``mean`` is None when no
    case could be scored.
    """
    if num_classes is not None and num_classes < 2:
        raise UserError(f"num_classes must be at least 2, got {num_classes}")
    if isinstance(spacing, str) and spacing not in ("voxel", "mm"):
        raise UserError(f"spacing must be 'voxel', 'mm' or numbers, got '{spacing}'")
    cases, skipped, notes, dataset_classes = find_cases(pred_dir, gt, split)
    if num_classes is None and dataset_classes is not None:
        num_classes = dataset_classes
        notes.append(f"num_classes {num_classes} from dataset.json (give --num-classes to change it)")
    by_id = {c.id: c for c in cases}
    workers = default_workers(len(cases)) if workers is None else max(1, int(workers))
    if largest_component:
        from .postprocess import parse_classes
        try:
            parse_classes(largest_component, num_classes or 2 ** 15)
        except ValueError as e:
            raise UserError(f"largest component: {e}") from None
        notes.append(f"scored after keeping the largest connected component of classes {largest_component}")
    args = (num_classes, spacing, authors_empty_score, pad_gt, largest_component)
    results = {}
    for case_id, scores, gt_max, pred_max in _map_cases(cases, args, workers, progress):
        if isinstance(scores, str):
            skipped[case_id] = scores
        else:
            results[case_id] = (scores, gt_max, pred_max)
    if num_classes is None and results:
        num_classes = max(max(g for _, g, _ in results.values()) + 1, 2)
        notes.append(f"num_classes {num_classes} taken from the largest ground-truth label "
                     "(give --num-classes to fix it)")
        results = _fit_to_classes(results, num_classes, by_id, skipped, authors_empty_score)
    scored = {k: results[k][0] for k in sorted(results)}
    return {
        "num_classes": num_classes,
        "spacing": "voxel" if spacing in (None, "voxel") else spacing if isinstance(spacing, str) else list(spacing),
        "authors_empty_score": authors_empty_score,
        "largest_component": largest_component,
        "cases": scored,
        "mean": metrics.mean_scores(list(scored.values())) if scored else None,
        "skipped": dict(sorted(skipped.items())),
        "notes": notes,
        "files": {k: {"pred": str(by_id[k].pred), "gt": str(by_id[k].gt)} for k in scored},
    }


def _fit_to_classes(results: dict, num_classes: int, by_id: dict, skipped: dict, authors_empty_score: bool):
    """Pad each case's scores to the inferred class count; drop predictions with labels beyond it."""
    fill = _empty_class(authors_empty_score)
    out = {}
    for case_id, (scores, gt_max, pred_max) in results.items():
        if pred_max >= num_classes:
            skipped[case_id] = (f"{by_id[case_id].pred}: label {pred_max} is outside 0..{num_classes - 1} "
                                "(classes taken from the ground truth; give --num-classes)")
            continue
        missing = num_classes - 1 - len(scores["dice"])
        out[case_id] = ({m: scores[m] + [fill[m]] * missing for m in metrics.METRICS}, gt_max, pred_max)
    return out


def case_mismatch(summaries: Sequence[dict], names: Sequence[str]) -> str | None:
    """A warning when the runs scored different sets of cases (a case skipped in one run, another
    test list): their mean ± std then mixes test sets. None when they agree, or when a summary
    does not list its cases."""
    sets = [s.get("cases") for s in summaries]
    if any(not isinstance(c, dict) for c in sets) or len({frozenset(c) for c in sets}) <= 1:
        return None
    common = set.intersection(*(set(c) for c in sets))
    counts = ", ".join(f"{n} {len(c)}" for n, c in zip(names, sets))
    return (f"the runs scored different sets of cases ({counts}; {len(common)} scored by every run), so "
            f"their mean ± std compares different test sets; check each run's skipped cases")


def aggregate_runs(summaries: Sequence[dict], names: Sequence[str] | None = None) -> dict:
    """Mean ± population std over runs (folds, seeds), as the paper reports Synapse.

    Each run's per-class means and class averages enter once; the std is
    numpy's default (ddof=0) over the runs, as the authors' evaluate.py.
    ``names`` label the runs in the warning (default "run 1", "run 2", ...).
    Returns ``{"runs": n, "spacing": "voxel"|"mm", "mean": {"dice": [...],
    "dice_avg": x, ...}, "std": {same keys}, "cases_per_run": [n or None, ...]}``,
    plus ``"warning"`` when the runs scored different sets of cases.
    """
    names = list(names) if names is not None else [f"run {i + 1}" for i in range(len(summaries))]
    scored = [(s, n) for s, n in zip(summaries, names) if s.get("mean")]
    means = [s["mean"] for s, _ in scored]
    if not means:
        raise ValueError("no run has scores to aggregate")
    n_classes = {len(m["dice"]) for m in means}
    if len(n_classes) > 1:
        raise ValueError(f"runs score different numbers of classes: {sorted(n_classes)}")
    units = {"voxel" if s.get("spacing", "voxel") == "voxel" else "mm" for s in summaries if s.get("mean")}
    if len(units) > 1:
        raise ValueError("runs mix voxel and millimetre distances")
    out = {"runs": len(means), "spacing": units.pop(), "mean": {}, "std": {}}
    for m in metrics.METRICS:
        for key in (m, f"{m}_avg"):
            values = np.asarray([r[key] for r in means], dtype=np.float64)
            mean, std = values.mean(axis=0), values.std(axis=0)
            out["mean"][key] = mean.tolist() if mean.ndim else float(mean)
            out["std"][key] = std.tolist() if std.ndim else float(std)
    out["cases_per_run"] = [len(s["cases"]) if isinstance(s.get("cases"), dict) else None for s, _ in scored]
    warning = case_mismatch([s for s, _ in scored], [n for _, n in scored])
    if warning:
        out["warning"] = warning
    return out


HEADERS = {"dice": "Dice (%)", "jaccard": "Jaccard (%)", "hd95": "95HD", "asd": "ASD"}


def _unit(spacing) -> str:
    return "vox" if spacing in (None, "voxel") else "mm"


def format_table(summary: dict) -> str:
    """Per-class and mean scores, then skipped cases and notes, as text."""
    unit = _unit(summary.get("spacing"))
    head = ["class"] + [HEADERS[m] + (f" ({unit})" if m in ("hd95", "asd") else "") for m in metrics.METRICS]
    lines = [f"Scored {len(summary['cases'])} case(s), skipped {len(summary['skipped'])}."]
    mean = summary.get("mean")
    if mean:
        rows = [[str(c + 1)] + [f"{mean[m][c]:.2f}" for m in metrics.METRICS] for c in range(len(mean["dice"]))]
        rows.append(["mean"] + [f"{mean[m + '_avg']:.2f}" for m in metrics.METRICS])
        lines += _columns([head] + rows)
    lines += _skipped_and_notes(summary)
    return "\n".join(lines)


def format_runs_table(agg: dict, unit: str = "vox") -> str:
    head = ["class"] + [HEADERS[m] + (f" ({unit})" if m in ("hd95", "asd") else "") for m in metrics.METRICS]
    mean, std = agg["mean"], agg["std"]
    rows = [[str(c + 1)] + [f"{mean[m][c]:.2f} ± {std[m][c]:.2f}" for m in metrics.METRICS]
            for c in range(len(mean["dice"]))]
    rows.append(["mean"] + [f"{mean[m + '_avg']:.2f} ± {std[m + '_avg']:.2f}" for m in metrics.METRICS])
    return "\n".join([f"{agg['runs']} run(s), mean ± population std over runs"] + _columns([head] + rows))


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
            for r in rows]


def _skipped_and_notes(summary: dict) -> list[str]:
    lines = []
    if summary["skipped"]:
        lines.append("Skipped:")
        lines += [f"  {k}: {v}" for k, v in summary["skipped"].items()]
    lines += [f"Note: {n}" for n in summary.get("notes", [])]
    return lines


def write_csv(summary: dict, path) -> None:
    """One row per case and class: case, class, dice, jaccard, hd95, asd."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "class", *metrics.METRICS])
        for case_id, s in summary["cases"].items():
            for c in range(len(s["dice"])):
                w.writerow([case_id, c + 1, *(repr(float(s[m][c])) for m in metrics.METRICS)])


def write_json(data: dict, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def plot_dice_boxes(summary: dict, path) -> None:
    """Box plot of the per-case Dice of each class."""
    values = np.asarray([s["dice"] for s in summary["cases"].values()], dtype=np.float64)
    n = values.shape[1]
    fig = _figure((max(4.0, 0.6 * n + 2), 4))
    ax = fig.subplots()
    ax.boxplot([values[:, c] for c in range(n)], showfliers=False)
    # The cases themselves, jittered sideways: with few cases a box alone hides them.
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, values.shape[0])
    for c in range(n):
        ax.plot(c + 1 + jitter, values[:, c], "o", ms=3, alpha=0.6, color="tab:blue")
    ax.set_xticks(range(1, n + 1), [str(c) for c in range(1, n + 1)])
    ax.set_xlabel("class")
    ax.set_ylabel("Dice (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"Dice per class over {values.shape[0]} case(s)")
    fig.tight_layout()
    _save(fig, path)


def worst_and_best(summary: dict) -> list[tuple[str, str]]:
    """[("worst", id), ("best", id)] by the case's Dice averaged over classes (one entry for one case)."""
    ranked = sorted(summary["cases"], key=lambda k: (float(np.mean(summary["cases"][k]["dice"])), k))
    if not ranked:
        return []
    return [("worst", ranked[0])] + ([("best", ranked[-1])] if len(ranked) > 1 else [])


def pick_slice(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    """(axis, index): the shortest axis (the slice axis of most scans), at the slice where the
    ground truth (else the prediction) has the most foreground."""
    axis = int(np.argmin(gt.shape))
    for labels in (gt, pred):
        area = np.count_nonzero(labels, axis=tuple(a for a in range(labels.ndim) if a != axis))
        if area.any():
            return axis, int(np.argmax(area))
    return axis, gt.shape[axis] // 2


def _find_image(case_id: str, gt_path: Path, image_dir: Path | None) -> Path | None:
    if image_dir is None:
        # The prepared layout keeps <id>_image.npy beside <id>_label.npy.
        if gt_path.name.endswith(PREPARED_LABEL):
            candidate = gt_path.with_name(case_id + "_image.npy")
            return candidate if candidate.is_file() else None
        return None
    return next((image_dir / (case_id + s) for s in IMAGE_SUFFIXES if (image_dir / (case_id + s)).is_file()), None)


def _read_image(path: Path, shape: tuple[int, ...], gt_path: Path) -> np.ndarray | None:
    """The image for an overlay, or None when it cannot be read or does not fit the label map."""
    try:
        if _is_nifti(path):
            import nibabel as nib
            img = np.asanyarray(nib.load(str(path)).dataobj)
            if not _is_nifti(gt_path):
                img = img.transpose()
        else:
            img = np.load(path, allow_pickle=False)
    except Exception:
        return None
    img = np.squeeze(img)
    return img if img.shape == tuple(shape) else None


def plot_overlays(summary: dict, path, image_dir=None) -> list[str]:
    """PNG of the worst and best cases: image (when found) in grey, prediction filled,
    ground truth as contour lines of the same colour. Returns notes on what was left out."""
    import matplotlib
    picks = worst_and_best(summary)
    if not picks:
        return ["no scored case to draw"]
    notes = []
    image_dir = Path(image_dir) if image_dir else None
    fig = _figure((5 * len(picks), 5))
    axes = fig.subplots(1, len(picks), squeeze=False)
    cmap = matplotlib.colormaps["tab10" if summary["num_classes"] <= 11 else "tab20"]
    colors = [cmap(c % cmap.N) for c in range(1, summary["num_classes"])]
    for ax, (label, case_id) in zip(axes[0], picks):
        files = summary["files"][case_id]
        case = Case(case_id, Path(files["pred"]), Path(files["gt"]))
        pred, gt, _ = load_case(case, None, pad_gt=True)
        img = None
        img_path = _find_image(case_id, case.gt, image_dir)
        if img_path is not None:
            img = _read_image(img_path, gt.shape, case.gt)
            if img is None:
                notes.append(f"{img_path}: unreadable or not the label map's shape; drawn without image")
        if gt.ndim == 3:
            axis, index = pick_slice(gt, pred)
            g, p = np.take(gt, index, axis=axis), np.take(pred, index, axis=axis)
            img = None if img is None else np.take(img, index, axis=axis)
            where = f"axis {axis}, slice {index}"
        else:
            g, p, where = gt, pred, "2D"
        ax.imshow(np.zeros(g.shape) if img is None else img, cmap="gray")
        fill = np.zeros(p.shape + (4,))
        for c, color in enumerate(colors, start=1):
            fill[p == c] = (*color[:3], 0.45)
            if np.any(g == c):
                ax.contour(g == c, levels=[0.5], colors=[color], linewidths=1.2)
        ax.imshow(fill)
        dice = float(np.mean(summary["cases"][case_id]["dice"]))
        ax.set_title(f"{label}: {case_id}, mean Dice {dice:.1f}\n{where}", fontsize=9)
        ax.axis("off")
    fig.suptitle("filled: prediction, line: ground truth", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return notes


def _figure(size):
    # A bare Figure draws with Agg and leaves pyplot's global state (and backend) alone.
    from matplotlib.figure import Figure
    return Figure(figsize=size)


def _save(fig, path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
