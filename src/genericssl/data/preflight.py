"""Check every case a training run will read, before its first iteration.

A bad case found by a DataLoader worker mid-epoch costs up to an epoch of work and
shows one problem at a time. This reads each file once (memory-mapped: no copy of
the volume is kept), checks what training would check (the file exists and loads,
image and label shapes agree, label values lie in 0..C-1, the image is finite) and
reports every bad case at once, each with its file and problem.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .cases import case_paths, check_channels, check_label, read_split, spatial_shape

# Beyond this many problems, the rest are counted, not listed.
MAX_LISTED = 50


def _open(path: Path):
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        # Truncated data fails the memory map; an object array needs pickle (never loaded).
        raise ValueError(f"{path} cannot be read as a .npy array ({e})") from None
    except OSError as e:
        raise ValueError(f"{path} cannot be read ({e.strerror or e})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path} is not a single .npy array")
    return arr


def check_case(data_dir, case_id: str, need_label: bool, num_classes: int, channels: int = 1) -> list[str]:
    """Problems of one prepared case (empty when it is usable)."""
    image_path, label_path = case_paths(data_dir, case_id)
    problems = []
    image = label = None
    try:
        image = _open(image_path)
        if image.dtype.kind not in "fiub":
            problems.append(f"{image_path}: image dtype {image.dtype} is not numeric")
            image = None
        elif image.dtype.kind == "f" and not np.isfinite(image).all():
            problems.append(f"{image_path}: image holds {int((~np.isfinite(image)).sum())} NaN or infinite values")
        if image is not None:
            check_channels(image.shape, channels, image_path)
    except UserError as e:
        problems.append(str(e))
        image = None
    except ValueError as e:
        problems.append(str(e))
    if need_label:
        try:
            label = _open(label_path)
            if image is not None and label.shape != spatial_shape(image.shape, channels):
                problems.append(f"{label_path}: label shape {list(label.shape)} differs from the image shape "
                                f"{list(image.shape)}")
            else:
                check_label(label, label_path, num_classes)   # what training's reader checks
        except UserError as e:
            problems.append(str(e))
        except ValueError as e:
            problems.append(str(e))
    return problems


def training_cases(cfg, data_dir, uses_unlabeled: bool) -> tuple[dict[str, tuple[list[str], bool]], list[str]]:
    """{role: (ids, needs a label)} of the cases a run reads, and the problems of its split lists."""
    roles, problems = {}, []
    wanted = [("labeled", True), ("eval", True)] + ([("unlabeled", False)] if uses_unlabeled else [])
    for role, need_label in wanted:
        try:
            roles[role] = (read_split(data_dir, cfg.splits[role]), need_label)
        except UserError as e:
            # Supervised training may run without an unlabeled list; the loaders say so themselves.
            problems.append(str(e))
    return roles, problems


def check_training_data(cfg, data_dir, uses_unlabeled: bool = True, progress: bool = True) -> int:
    """Check every case; raise one :class:`UserError` listing all problems. Returns the cases checked."""
    from tqdm import tqdm

    roles, problems = training_cases(cfg, data_dir, uses_unlabeled)
    todo: dict[str, bool] = {}
    for ids, need_label in roles.values():
        for case_id in ids:
            todo[case_id] = todo.get(case_id, False) or need_label
    bad_cases = 0
    for case_id, need_label in tqdm(todo.items(), total=len(todo), desc="checking cases", unit="case",
                                    disable=not progress or len(todo) < 20, leave=False):
        found = check_case(data_dir, case_id, need_label, cfg.num_classes, cfg.in_channels)
        bad_cases += bool(found)
        problems += found
    if problems:
        listed = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        head = (f"{bad_cases} of {len(todo)} training/validation cases in {data_dir} cannot be used"
                if bad_cases else f"the split lists of {data_dir} cannot be used")
        raise UserError(head + ":\n  - " + "\n  - ".join(listed) + more +
                        "\nfix or re-prepare these cases (or drop them from the split lists), then start again")
    return len(todo)
