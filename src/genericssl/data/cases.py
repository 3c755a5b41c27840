"""Prepared cases on disk: split lists, volumes, intensity normalisation.

The prepared layout (what ``genericssl prepare`` and the synthetic generator write)::

    DATA/npy/<id>_image.npy      float32, un-normalised; (*S), or (K, *S) for K > 1 channels
    DATA/npy/<id>_label.npy      uint8, values 0..C-1
    DATA/split_txts/<split>.txt  one case id per line
    DATA/dataset.json            optional: {"cases": {id: {"spacing", "domain"}}, "num_classes", "axes"}

Images are stored un-normalised so that a task's intensity rule (METHOD.md,
"Intensity") can change without preparing the data again; every reader
(training, validation, inference on raw scans) goes through
:func:`normalize_intensity`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..imageio import load_npy

# The authors' MMWHS release spells the folder "splits_txts"; accept it so their
# published lists drop in unchanged.
SPLIT_DIRS = ("split_txts", "splits_txts")


def split_path(data_dir, split: str) -> Path:
    """Path of ``<split>.txt`` (the first of :data:`SPLIT_DIRS` that holds it)."""
    data_dir = Path(data_dir)
    for folder in SPLIT_DIRS:
        path = data_dir / folder / f"{split}.txt"
        if path.is_file():
            return path
    return data_dir / SPLIT_DIRS[0] / f"{split}.txt"


def read_split(data_dir, split: str) -> list[str]:
    """Case ids listed in ``DATA/split_txts/<split>.txt``, in file order.

    Blank lines and surrounding whitespace are ignored. A missing or empty list
    is a :class:`UserError` naming the file.
    """
    path = split_path(data_dir, split)
    if not path.is_file():
        available = sorted(p.stem for folder in SPLIT_DIRS
                           for p in (Path(data_dir) / folder).glob("*.txt"))
        hint = (f"; lists there: {', '.join(available)}" if available
                else "; run `genericssl prepare` first or point data_dir at prepared data")
        raise UserError(f"split list {path} does not exist{hint}")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise UserError(f"split list {path} is empty; it must list one case id per line")
    return ids


def read_dataset_json(data_dir) -> dict | None:
    """The optional ``DATA/dataset.json`` (None when absent)."""
    path = Path(data_dir) / "dataset.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None


def case_paths(data_dir, case_id: str) -> tuple[Path, Path]:
    npy = Path(data_dir) / "npy"
    return npy / f"{case_id}_image.npy", npy / f"{case_id}_label.npy"


def normalize_intensity(image: np.ndarray, intensity: dict | None) -> np.ndarray:
    """The task's intensity rule, then min-max to [0, 1] per volume (float32).

    ``intensity['clip'] = [lo, hi]`` clips to fixed values (Synapse: HU window);
    otherwise ``intensity['percentile'] = [lo, hi]`` clips to those percentiles of
    this volume (M&Ms: 0.5, 99.5). A constant image becomes zeros rather than NaN.
    """
    intensity = intensity or {}
    image = np.asarray(image, dtype=np.float32)
    clip = intensity.get("clip")
    pct = intensity.get("percentile")
    if clip is not None:
        image = np.clip(image, float(clip[0]), float(clip[1]))
    elif pct is not None:
        lo, hi = np.percentile(image, [float(pct[0]), float(pct[1])])
        image = np.clip(image, lo, hi)
    lo, hi = float(image.min()), float(image.max())
    if hi > lo:
        out = (image - lo) / (hi - lo)
    else:
        out = np.zeros_like(image)
    return out.astype(np.float32, copy=False)


def normalize_channels(image: np.ndarray, intensity: dict | None) -> np.ndarray:
    """:func:`normalize_intensity` per channel of a (K, *S) image: each MRI sequence has its own
    scale, so each is clipped and min-max scaled on its own."""
    return np.stack([normalize_intensity(c, intensity) for c in image])


def spatial_shape(image_shape, channels: int) -> tuple:
    """The spatial shape of a prepared image: (*S) for one channel, (K, *S) for K > 1."""
    return tuple(image_shape[1:] if channels > 1 else image_shape)


def check_channels(image_shape, channels: int, path) -> None:
    """A prepared image must hold ``channels`` channels first when there are several."""
    if channels > 1 and (len(image_shape) < 3 or image_shape[0] != channels):
        got = f"{image_shape[0]} channels first" if len(image_shape) >= 3 else "no channel axis"
        raise UserError(f"{path}: image shape {list(image_shape)} has {got}, but the task has in_channels = "
                        f"{channels} (a multi-channel image is stored as (channels, *spatial)); prepare the "
                        f"data with all its channels or set in_channels")


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"case file {path} does not exist; is the case id listed in a split "
                        f"but not prepared?")
    return load_npy(path)


def check_label(label: np.ndarray, path, num_classes: int | None) -> np.ndarray:
    """Label as uint8 after checking its values lie in 0..num_classes-1."""
    if not (np.issubdtype(label.dtype, np.integer) or np.issubdtype(label.dtype, np.bool_)):
        if not np.all(np.isfinite(label)) or not np.all(label == np.round(label)):
            raise UserError(f"{path}: label holds non-integer values (dtype {label.dtype}); "
                            f"labels must be class indices")
    lo, hi = (int(label.min()), int(label.max())) if label.size else (0, 0)
    top = 255 if num_classes is None else num_classes - 1
    if lo < 0 or hi > top:
        values = np.unique(label)
        bad = values[(values < 0) | (values > top)][:10].tolist()
        want = f"0..{top} (num_classes = {num_classes})" if num_classes is not None else "0..255"
        raise UserError(f"{path}: label values {bad} are outside {want}; "
                        f"fix the labels or set num_classes")
    return label.astype(np.uint8, copy=False)


def load_case(data_dir, case_id: str, intensity: dict | None, num_classes: int | None = None,
              need_label: bool = True, channels: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one prepared case: (normalised float32 image, uint8 label or None).

    With ``channels`` K > 1 the image is (K, *S), each channel normalised on its own,
    and the label is (*S).

    With ``need_label=False`` the label is not read (unlabeled cases need not have
    one) and None is returned in its place. Every problem (missing file, NaN or
    infinite intensities, image/label shape mismatch, label values outside
    0..num_classes-1) is a :class:`UserError` naming the file.
    """
    image_path, label_path = case_paths(data_dir, case_id)
    image = _load_npy(image_path)
    if image.dtype.kind not in "fiub":
        raise UserError(f"{image_path}: image dtype {image.dtype} is not numeric")
    if not np.all(np.isfinite(image)):
        n_bad = int(np.count_nonzero(~np.isfinite(image)))
        raise UserError(f"{image_path}: image holds {n_bad} NaN or infinite values; "
                        f"fix or re-prepare this case")
    check_channels(image.shape, channels, image_path)
    label = None
    if need_label:
        label = _load_npy(label_path)
        if label.shape != spatial_shape(image.shape, channels):
            raise UserError(f"{label_path}: label shape {list(label.shape)} differs from the "
                            f"image shape {list(image.shape)} ({image_path.name})")
        label = check_label(label, label_path, num_classes)
    if channels > 1:
        return normalize_channels(image, intensity), label
    return normalize_intensity(image, intensity), label
