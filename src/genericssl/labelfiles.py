"""Class names beside label maps, in the files viewers read.

ITK-SNAP reads a "label description file" (Segmentation -> Import label
descriptions); 3D Slicer reads a colour table (``.ctbl``, "index name R G B A").
Both take the class names from the dataset (``dataset.json`` ``labels``), so a map
opens with "left atrium", not "Label 1".
"""
from __future__ import annotations

import json
from pathlib import Path

# Distinct colours for up to 20 classes (then they repeat); background is transparent.
_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
            (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
            (0, 0, 128), (128, 128, 128)]


def class_names(num_classes: int, data_dir: str | Path | None = None, names: dict | None = None) -> dict[int, str]:
    """Names 0..C-1: given ``names``, else ``data_dir/dataset.json``'s ``labels``, else "background", "class k"."""
    found: dict = dict(names or {})
    if not found and data_dir is not None:
        path = Path(data_dir) / "dataset.json"
        try:
            found = json.loads(path.read_text()).get("labels") or {}
        except (OSError, ValueError):
            found = {}
        if isinstance(found, list):
            found = dict(enumerate(found))
        # nnU-Net's dataset.json maps name -> value; ours maps value -> name.
        if found and all(isinstance(v, int) for v in found.values()):
            found = {v: k for k, v in found.items()}
    out = {}
    for c in range(num_classes):
        out[c] = str(found.get(str(c), found.get(c, "background" if c == 0 else f"class {c}")))
    return out


def colour(c: int) -> tuple[int, int, int]:
    return (0, 0, 0) if c == 0 else _PALETTE[(c - 1) % len(_PALETTE)]


def itksnap_text(names: dict[int, str]) -> str:
    lines = ["################################################",
             "# ITK-SnAP Label Description File (written by genericssl)",
             "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
             "################################################"]
    for c, name in sorted(names.items()):
        r, g, b = colour(c)
        alpha, vis = (0, 0) if c == 0 else (1, 1)
        label = "Clear Label" if c == 0 else name.replace('"', "'")
        lines.append(f"{c:5d} {r:5d} {g:4d} {b:4d} {alpha:8d} {vis:2d} {vis:2d}    \"{label}\"")
    return "\n".join(lines) + "\n"


def slicer_text(names: dict[int, str]) -> str:
    lines = ["# Color table file written by genericssl", f"# {len(names)} values"]
    for c, name in sorted(names.items()):
        r, g, b = colour(c)
        lines.append(f"{c} {name.replace(' ', '_')} {r} {g} {b} {0 if c == 0 else 255}")
    return "\n".join(lines) + "\n"


def write_label_files(folder: str | Path, names: dict[int, str]) -> list[Path]:
    """``labels.itksnap.txt`` and ``labels.ctbl`` in ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = [folder / "labels.itksnap.txt", folder / "labels.ctbl"]
    out[0].write_text(itksnap_text(names))
    out[1].write_text(slicer_text(names))
    return out
