"""M&Ms (cardiac cine MRI, vendors A-D) for SemiDG: 3D frames, and the 2D slice variant.

Every frame of a subject's 4D cine with a non-empty label becomes a case
``<ID>_sa_<t>``: its labeled slices first..last, the centre two thirds in plane
([s//2 - s//3, s//2 + s//3) on both axes), resized to 32x144x144 (nearest
neighbour). The slice range is inclusive; the authors' code drops the last
labeled slice, which ``authors_slice_range`` reproduces. The 2D variant makes a
case ``<ID>_sa_<t>_<d>`` of every labeled slice (all-zero images left out), same
in-plane crop, short side resized to 288 (bilinear image, nearest label).
Percentile clipping and min-max scaling happen at load time (the preset).
:func:`prepare_image`, :func:`prepare_image_2d` and :func:`restore_label` are the
image half, shared with ``genericssl predict`` (which, without a label, keeps
every slice).

Splits, per vendor: the subjects permuted (seeded), ceil(n r) of them labeled,
all frames of a subject together; "to X" pools the other three vendors and
tests on every frame of X. 2D and 3D draw the same subjects for a given seed.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import UserError
from .common import (CaseError, Restore, as_label, check_codes, check_pair, count_of, find_nifti, read_nifti,
                     read_split_dir, resize_label, resize_linear, restore_label, run_items, save_case,
                     seeded_permutation, summarize, write_dataset_json, write_splits, zoom_to)

LABELS = {0: "background", 1: "left ventricle", 2: "myocardium", 3: "right ventricle"}
VENDORS = "ABCD"
RATIOS = (0.02, 0.05)
SIZE = (32, 144, 144)
SHORT_SIDE = 288


def vendor_dirs(raw: Path) -> dict[str, Path]:
    """VendorA..D (any case) in ``raw`` or in ``raw``/Labeled."""
    raw = Path(raw)
    if not raw.is_dir():
        raise UserError(f"--raw {raw}: no such folder")
    bases = [raw] + [p for p in raw.iterdir() if p.is_dir() and p.name.lower() == "labeled"]
    for base in bases:
        found: dict[str, Path] = {}
        for p in sorted(base.iterdir()):
            m = re.fullmatch(r"vendor([a-d])", p.name, re.IGNORECASE)
            if m and p.is_dir():
                v = m.group(1).upper()
                if v in found:
                    raise UserError(f"{base}: both {found[v].name} and {p.name}; merge them into one vendor folder")
                found[v] = p
        if found:
            return found
    raise UserError(f"{raw}: no VendorA..VendorD folders here or under {raw}/Labeled; sort the released "
                    f"OpenDataset first: genericssl prepare mnms-sort --raw OpenDataset --out MNMs")


def _items(raw: Path) -> list[dict]:
    items = []
    for v, d in vendor_dirs(raw).items():
        for s in sorted(p for p in d.iterdir() if p.is_dir()):
            items.append({"key": s.name, "vendor": v,
                          "inputs": [str(find_nifti(s, f"{s.name}_sa")), str(find_nifti(s, f"{s.name}_sa_gt"))]})
    if not items:
        raise UserError(f"{raw}: the vendor folders hold no subject folders (<ID>/<ID>_sa.nii.gz)")
    return items


def _read_subject(item: dict):
    """Image and label as (t, z, y, x), voxel sizes as (z, y, x)."""
    sid, (img_path, lab_path) = item["key"], (Path(p) for p in item["inputs"])
    image, img_aff, zooms = read_nifti(img_path, "image")
    label, lab_aff, _ = read_nifti(lab_path, "label")
    label = as_label(label, lab_path)
    if image.ndim == 3 and label.ndim == 3:  # a single frame stored as 3D
        image, label = image[..., None], label[..., None]
    if image.ndim != 4:
        raise CaseError(f"{sid}: {img_path} is {image.ndim}D, expected a 4D cine (x, y, z, t)")
    check_pair(image, label, img_aff, lab_aff, f"{sid} ({img_path.name}, {lab_path.name})")
    check_codes(label, LABELS, f"{sid} ({lab_path})")
    return image.transpose(3, 2, 1, 0).astype(np.float32), label.transpose(3, 2, 1, 0), zooms[2::-1]


def crop_box(shape, z: slice = slice(None)) -> tuple[slice, slice, slice]:
    """Slices ``z`` and the central two thirds in plane, [s//2 - s//3, s//2 + s//3), of a (z, y, x) ``shape``."""
    h, w = shape[1:]
    return z, slice(h // 2 - h // 3, h // 2 + h // 3), slice(w // 2 - w // 3, w // 2 + w // 3)


def prepare_image(image: np.ndarray, z: slice = slice(None)) -> tuple[np.ndarray, Restore]:
    """One (z, y, x) frame -> (32, 144, 144) float32: slices ``z``, the central in-plane crop,
    order-0 resize; and how to map labels back (:func:`restore_label`)."""
    restore = Restore(image.shape, crop_box(image.shape, z))
    return zoom_to(image[restore.box].astype(np.float32, copy=False), SIZE), restore


def slice_size(h: int, w: int) -> tuple[int, int]:
    """(h, w) with the short side scaled to 288, the long side in proportion (truncated)."""
    return (SHORT_SIDE, int(SHORT_SIDE / h * w)) if h < w else (int(SHORT_SIDE / w * h), SHORT_SIDE)


def prepare_image_2d(image: np.ndarray, z: slice = slice(None)) -> tuple[np.ndarray, Restore]:
    """One (z, y, x) frame -> (slices, h, w) float32 for the 2D model: the same crop, every
    slice resized bilinearly to :func:`slice_size`; and how to map labels back."""
    restore = Restore(image.shape, crop_box(image.shape, z))
    crop = image[restore.box]
    size = slice_size(*crop.shape[1:])
    return np.stack([resize_linear(s, size) for s in crop]), restore


def _labeled_frames(label, authors: bool):
    """(t, slices first..last labeled) of every frame with a label."""
    for t in range(label.shape[0]):
        z = np.flatnonzero(label[t].any(axis=(1, 2)))
        if z.size:
            yield t, slice(int(z[0]), int(z[-1] if authors else z[-1] + 1))


def _meta(item, spacing, shape, **extra) -> dict:
    return {"spacing": [float(s) for s in spacing], "domain": item["vendor"], "source": item["inputs"][0],
            "shape": list(shape), "subject": item["key"], **extra}


def prepare_subject(item: dict) -> dict:
    image, label, zooms = _read_subject(item)
    cases, skipped = {}, []
    for t, z in _labeled_frames(label, item["authors_slice_range"]):
        cid = f"{item['key']}_sa_{t}"
        if z.stop == z.start:
            skipped.append([cid, "a single labeled slice, which the authors' slice range drops"])
            continue
        img, restore = prepare_image(image[t], z)
        try:
            save_case(item["npy_dir"], cid, img, zoom_to(label[t][restore.box], SIZE), len(LABELS))
        except CaseError as e:
            skipped.append([cid, str(e)])
            continue
        cases[cid] = _meta(item, [v * s / n for v, s, n in zip(zooms, restore.crop_shape, SIZE)], SIZE, frame=t)
    return {"cases": cases, "skipped": skipped}


def prepare_subject_2d(item: dict) -> dict:
    image, label, zooms = _read_subject(item)
    cases, skipped = {}, []
    for t, z in _labeled_frames(label, authors=False):
        slices, restore = prepare_image_2d(image[t], z)
        img3, lab3 = image[t][restore.box], label[t][restore.box]
        for d in range(img3.shape[0]):
            cid = f"{item['key']}_sa_{t}_{d}"
            if not np.isnan(img3[d]).any() and img3[d].sum() == 0:
                continue  # slices outside the field of view; the authors leave them out too
            img = slices[d]
            try:
                save_case(item["npy_dir"], cid, img, resize_label(lab3[d], img.shape), len(LABELS))
            except CaseError as e:
                skipped.append([cid, str(e)])
                continue
            spacing = [v * s / n for v, s, n in zip(zooms[1:], img3.shape[1:], img.shape)]
            cases[cid] = _meta(item, spacing, img.shape, frame=t, slice=d)
    return {"cases": cases, "skipped": skipped}


def make_splits(cases: dict, seed: int) -> dict[str, list[str]]:
    frames: dict[str, dict[str, list[str]]] = {v: {} for v in VENDORS}
    for cid, m in cases.items():
        frames[m["domain"]].setdefault(m["subject"], []).append(cid)
    out = {f"vendor{v}": sorted(f"{s}_sa" for s in frames[v]) for v in VENDORS}

    def pool(vendors, subjects):
        return sorted(c for v in vendors for s in subjects[v] for c in frames[v][s])

    for r in RATIOS:
        labeled, unlabeled = {}, {}
        for v in VENDORS:
            perm = seeded_permutation(frames[v], seed, f"mnms/{v}/{r}")
            k = count_of(len(perm), r, f"M&Ms vendor {v}", rounding="ceil")
            labeled[v], unlabeled[v] = perm[:k], perm[k:]
        for x in VENDORS:
            others = [v for v in VENDORS if v != x]
            out[f"train_to{x}_labeled_{r}"] = pool(others, labeled)
            out[f"train_to{x}_unlabeled_{r}"] = pool(others, unlabeled)
            out[f"eval_to{x}_{r}"] = out[f"train_to{x}_labeled_{r}"]  # the authors' choice
            out[f"test_to{x}_{r}"] = pool([x], {x: list(frames[x])})
    return out


def _prepare(raw, out, fn, name: str, axes: str, params: dict, *, seed, splits, workers, force,
             allow_skips=False, authors_slice_range=False) -> int:
    out = Path(out)
    supplied = read_split_dir(splits)
    items = [dict(it, authors_slice_range=authors_slice_range) for it in _items(Path(raw).absolute())]
    res = run_items(fn, items, out, params=params, workers=workers, force=force, desc=name)
    status = summarize(res, name, allow_skips)
    if status:
        return status
    write_dataset_json(out, "mnms", len(LABELS), LABELS, axes, res.cases, seed=seed)
    subjects = {f"{m['subject']}_sa" for m in res.cases.values()}
    write_splits(out, make_splits(res.cases, seed), supplied, res.cases,
                 subject_lists={f"vendor{v}": subjects for v in VENDORS}, supplied_dir=splits,
                 skipped_ids=res.skipped_ids)
    return 0


def prepare(raw, out, *, seed: int = 0, splits=None, workers: int = 1, force: bool = False,
            allow_skips: bool = False, authors_slice_range: bool = False) -> int:
    params = {"version": 1, "size": list(SIZE), "slice_range": "authors" if authors_slice_range else "inclusive"}
    return _prepare(raw, out, prepare_subject, "M&Ms", "zyx", params, seed=seed, splits=splits, workers=workers,
                    force=force, allow_skips=allow_skips, authors_slice_range=authors_slice_range)


def prepare_2d(raw, out, *, seed: int = 0, splits=None, workers: int = 1, force: bool = False,
               allow_skips: bool = False) -> int:
    params = {"version": 1, "short_side": SHORT_SIDE}
    return _prepare(raw, out, prepare_subject_2d, "M&Ms 2D", "yx", params, seed=seed, splits=splits,
                    workers=workers, force=force, allow_skips=allow_skips)
