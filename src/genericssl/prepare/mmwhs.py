"""MM-WHS (whole heart, CT and MR), as SIFA's release arranges it, for UDA.

Per case: reorient to ITK's "RAI" (identity direction), keep the four structures
(205 myocardium, 420 left atrium, 500 LV cavity, 820 ascending aorta) and send
every other code to background, crop to the label's bounding box (4 voxels
before, 3 after), clip to [0, p98 of the crop], z-score, and resize to 144^3
(nearest neighbour). The clip and z-score are part of preparation here, unlike
the other datasets. Arrays are (z, y, x).

:func:`prepare_image` (crop, clip, z-score, resize) and :func:`restore_label` are
shared with ``genericssl predict``, which has no label to crop around and so
passes the whole volume as the box.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import UserError
from .common import (CaseError, Restore, as_label, check_codes, check_image, check_pair, find_nifti, pair_items,
                     read_nifti, read_split_dir, reorient, restore_label, run_items, save_case, seeded_permutation,
                     summarize, write_dataset_json, write_splits, zoom_to)

LABELS = {0: "background", 1: "myocardium", 2: "left atrium", 3: "left ventricle cavity", 4: "ascending aorta"}
CODES = {205: 1, 420: 2, 500: 3, 820: 4}
# Background and the seven MM-WHS structures (550 RA, 600 RV, 850 PA become background);
# 421, reported in some MM-WHS label files beside 420, becomes background too, as in the authors' code.
KNOWN = {0, 205, 420, 421, 500, 550, 600, 820, 850}
TEST = {"mr": ["mr_train_1007", "mr_train_1009", "mr_train_1018", "mr_train_1019"],
        "ct": ["ct_train_1003", "ct_train_1008", "ct_train_1014", "ct_train_1019"]}
SIZE = 144
# ITK's "RAI" is the identity direction in its LPS world: in nibabel's RAS+ axis codes, L, P, S.
RAI = ("L", "P", "S")


def bbox_crop(label: np.ndarray) -> tuple[slice, ...]:
    out = []
    for ax in range(3):
        idx = np.flatnonzero(label.any(axis=tuple(a for a in range(3) if a != ax)))
        out.append(slice(max(idx[0] - 4, 0), min(idx[-1] + 4, label.shape[ax])))
    return tuple(out)


def prepare_image(image: np.ndarray, box: tuple[slice, ...] | None = None) -> tuple[np.ndarray, Restore]:
    """(z, y, x) image already in RAI -> (144, 144, 144) float32: cropped to ``box`` (default the
    whole volume), clipped to [0, p98 of the crop], z-scored, resized; and how to map labels back
    (:func:`restore_label`)."""
    restore = Restore(image.shape, box) if box is not None else Restore.whole(image.shape)
    crop = image[restore.box].astype(np.float32)
    crop = crop.clip(0, float(np.percentile(crop, 98)))
    crop = (crop - crop.mean()) / (crop.std() + 1e-8)
    return zoom_to(crop, (SIZE,) * 3), restore


def prepare_case(item: dict) -> dict:
    cid, (img_path, lab_path) = item["key"], (Path(p) for p in item["inputs"])
    image, img_aff, _ = read_nifti(img_path, "image")
    label, lab_aff, _ = read_nifti(lab_path, "label")
    label = as_label(label, lab_path)
    if image.ndim != 3:
        raise CaseError(f"{cid}: {img_path} is {image.ndim}D, expected a 3D volume")
    check_codes(label, KNOWN, f"{cid} ({lab_path})")
    check_image(image, f"{cid} ({img_path})")
    image, img_aff = reorient(image, img_aff, RAI)
    label, lab_aff = reorient(label, lab_aff, RAI)
    check_pair(image, label, img_aff, lab_aff, f"{cid} ({img_path.name}, {lab_path.name})")
    spacing = np.linalg.norm(img_aff[:3, :3], axis=0)[::-1]
    image = image.transpose(2, 1, 0)
    kept = np.zeros(label.shape[::-1], np.uint8)
    label = label.transpose(2, 1, 0)
    for code, cls in CODES.items():
        kept[label == code] = cls
    if cid == "mr_train_1002":  # the authors blank stray labels at this volume's borders
        kept[0:4], kept[:, -10:-1], kept[:, :, 0:4] = 0, 0, 0
    if not kept.any():
        raise CaseError(f"{cid}: {lab_path} holds none of the codes {sorted(CODES)}; nothing to crop around")
    box = bbox_crop(kept)
    if image[box].min() == image[box].max():
        raise CaseError(f"{cid}: image is constant inside the heart's bounding box")
    image, restore = prepare_image(image, box)
    kept = zoom_to(kept[box], image.shape)
    save_case(item["npy_dir"], cid, image, kept, len(LABELS))
    return {"cases": {cid: {"spacing": [float(s) * c / SIZE for s, c in zip(spacing, restore.crop_shape)],
                            "domain": cid[:2], "source": str(img_path), "shape": list(image.shape)}}}


def _by_id(folder: Path, mod: str, kind: str) -> dict[str, Path]:
    """<mod>_train_<n>_<kind>.nii[.gz] files of ``folder`` by case id."""
    found = {}
    for p in sorted(folder.glob(f"{mod}_train_*_{kind}.nii*")):
        m = re.fullmatch(rf"({mod}_train_\d+)_{kind}\.nii(\.gz)?", p.name)
        if m:
            found[m.group(1)] = p
    return found


def _items(raw: Path) -> list[dict]:
    items = []
    for mod in ("ct", "mr"):
        for d in sorted(p for p in raw.iterdir() if p.is_dir()):
            # SIFA's CT/imagesTr + CT/labelsTr, or the challenge's ct_train/ with both files side by side.
            if d.name.lower() == mod:
                images, labels = d / "imagesTr", d / "labelsTr"
            elif d.name.lower() == f"{mod}_train":
                images = labels = d
            else:
                continue
            items += pair_items(_by_id(images, mod, "image"), _by_id(labels, mod, "label"),
                                lambda cid: find_nifti(images, f"{cid}_image"),
                                lambda cid: find_nifti(labels, f"{cid}_label"))
    if not any(Path(it["inputs"][0]).is_file() for it in items):
        raise UserError(f"{raw}: no MM-WHS images found; expected CT/imagesTr/ct_train_1001_image.nii.gz, "
                        f"CT/labelsTr/ct_train_1001_label.nii.gz and the same under MR/")
    return items


def _test_ids(ids: list[str], mod: str, seed: int) -> list[str]:
    fixed = [i for i in TEST[mod] if i in ids]
    if len(fixed) == len(TEST[mod]):
        return fixed
    n = len(TEST[mod]) if len(ids) >= 20 else max(1, round(0.2 * len(ids)))
    rest = seeded_permutation([i for i in ids if i not in fixed], seed, f"mmwhs/test/{mod}")
    chosen = sorted(fixed + rest[:max(0, n - len(fixed))])
    print(f"note: {mod.upper()}: the authors' test cases {', '.join(i for i in TEST[mod] if i not in ids)} are "
          f"absent; test cases chosen from seed {seed}: {', '.join(chosen)}")
    return chosen


def make_splits(ids: list[str], seed: int) -> dict[str, list[str]]:
    parts = {}
    for mod in ("ct", "mr"):
        mine = sorted(i for i in ids if i.startswith(mod))
        test = _test_ids(mine, mod, seed) if mine else []
        rest = seeded_permutation([i for i in mine if i not in test], seed, f"mmwhs/train/{mod}")
        n_train = round(0.8 * len(rest))
        if n_train == len(rest) >= 2:  # keep at least one target case for validation
            n_train -= 1
        parts[mod] = {"test": test, "all": sorted(rest), "train": sorted(rest[:n_train]),
                      "eval": sorted(rest[n_train:])}
    out = {}
    for src, tgt in (("ct", "mr"), ("mr", "ct")):
        out.update({f"train_{src}2{tgt}_labeled": parts[src]["all"],
                    f"train_{src}2{tgt}_unlabeled": parts[tgt]["train"],
                    f"eval_{src}2{tgt}": parts[tgt]["eval"], f"test_{tgt}": parts[tgt]["test"]})
    return out


def prepare(raw, out, *, seed: int = 0, splits=None, workers: int = 1, force: bool = False,
            allow_skips: bool = False) -> int:
    raw, out = Path(raw).absolute(), Path(out)
    supplied = read_split_dir(splits)
    if not raw.is_dir():
        raise UserError(f"--raw {raw}: no such folder")
    res = run_items(prepare_case, _items(raw), out, params={"version": 1, "size": SIZE}, workers=workers,
                    force=force, desc="MMWHS")
    status = summarize(res, "MMWHS", allow_skips)
    if status:
        return status
    write_dataset_json(out, "mmwhs", len(LABELS), LABELS, "zyx", res.cases, seed=seed)
    write_splits(out, make_splits(list(res.cases), seed), supplied, res.cases, supplied_dir=splits,
                 skipped_ids=res.skipped_ids)
    return 0
