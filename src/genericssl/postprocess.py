"""Optional post-processing of label maps: keep the largest connected component per class.

LA and cardiac users apply it routinely (one atrium, one ventricle); it is not part
of the paper's evaluation, so it is off unless asked for. Voxels removed from a
class become background, as nnU-Net's post-processing does.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage


def parse_classes(text: str | None, num_classes: int) -> list[int]:
    """``"all"`` -> 1..C-1; ``"1,3"`` -> [1, 3]; None or ``""`` -> []."""
    if text is None or str(text).strip() == "":
        return []
    if str(text).strip().lower() == "all":
        return list(range(1, num_classes))
    try:
        out = sorted({int(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"expected 'all' or comma-separated class numbers, got {text!r}") from None
    bad = [c for c in out if not 1 <= c < num_classes]
    if bad:
        raise ValueError(f"classes {bad} are not foreground classes 1..{num_classes - 1}")
    return out


def largest_component(labels: np.ndarray, classes: Iterable[int], connectivity: int = 1) -> np.ndarray:
    """A copy of ``labels`` where each class in ``classes`` keeps only its largest connected component.

    ``connectivity`` 1 joins faces (6-neighbourhood in 3D), ``labels.ndim`` joins
    corners too (26-neighbourhood). Ties keep the component found first.
    """
    out = np.array(labels, copy=True)
    structure = ndimage.generate_binary_structure(out.ndim, connectivity)
    for c in classes:
        mask = out == c
        if not mask.any():
            continue
        comp, n = ndimage.label(mask, structure=structure)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        keep = 1 + int(np.argmax(sizes))
        out[mask & (comp != keep)] = 0
    return out


def removed_voxels(before: np.ndarray, after: np.ndarray, classes: Sequence[int]) -> dict[int, int]:
    """Voxels each class lost to the filter (for the report)."""
    return {int(c): int(((before == c) & (after != c)).sum()) for c in classes}
