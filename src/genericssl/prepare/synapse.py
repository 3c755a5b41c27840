"""Synapse multi-organ CT (BTCV): resize every (z, y, x) volume to 80x160x160.

The image is resized trilinearly without corner alignment and the label by
nearest neighbour, both with torch's ``interpolate`` as the authors do; the CT
clip to [-75, 275] and min-max scaling happen at load time (the preset's
``intensity``). :func:`prepare_image` and :func:`restore_label` are the image half,
which ``genericssl predict`` runs on new scans. Splits, seeded: 80% train+eval / 20% test, eval the last sixth of
train+eval, 20% of train labeled.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
import numpy as np

from .common import (CaseError, Restore, as_label, check_codes, check_pair, count_of, find_nifti, nifti_stem,
                     pair_items, read_nifti, read_split_dir, resize_label, resize_linear, restore_label, run_items,
                     save_case, seeded_permutation, summarize, write_dataset_json, write_splits)

LABELS = {0: "background", 1: "spleen", 2: "right kidney", 3: "left kidney", 4: "gallbladder",
          5: "esophagus", 6: "liver", 7: "stomach", 8: "aorta", 9: "inferior vena cava",
          10: "portal and splenic veins", 11: "pancreas", 12: "right adrenal gland", 13: "left adrenal gland"}
SIZE = (80, 160, 160)  # 1.25 x the 64x128x128 patch
LABELED_RATIO = 0.2


def _layout(raw: Path) -> tuple[Path, Path]:
    # imagesTr/labelsTr as the authors' README has it; img/label as the Synapse download (RawData/Training).
    for images, labels in (("imagesTr", "labelsTr"), ("img", "label")):
        if (raw / images).is_dir():
            return raw / images, raw / labels
    raise UserError(f"{raw}: expected imagesTr/img0001.nii.gz and labelsTr/label0001.nii.gz "
                    f"(or img/ and label/ as in the Synapse download)")


def prepare_image(image: np.ndarray) -> tuple[np.ndarray, Restore]:
    """(z, y, x) CT, any size -> (80, 160, 160) float32 and how to map labels back
    (:func:`restore_label`). Training cases and new scans both go through here."""
    return resize_linear(image, SIZE), Restore.whole(image.shape)


def prepare_case(item: dict) -> dict:
    cid = item["key"]
    img_path, lab_path = (Path(p) for p in item["inputs"])
    image, img_aff, zooms = read_nifti(img_path, "image")
    label, lab_aff, _ = read_nifti(lab_path, "label")
    label = as_label(label, lab_path)
    if image.ndim != 3:
        raise CaseError(f"{cid}: {img_path} is {image.ndim}D, expected a 3D volume")
    check_pair(image, label, img_aff, lab_aff, f"{cid} ({img_path.name}, {lab_path.name})")
    check_codes(label, LABELS, f"{cid} ({lab_path})")
    # nibabel reads (x, y, z); the authors' SimpleITK arrays are (z, y, x).
    image, label = image.transpose(2, 1, 0), label.transpose(2, 1, 0)
    old = image.shape
    image, _ = prepare_image(image)
    label = resize_label(label, SIZE)
    spacing = [z * o / n for z, o, n in zip(zooms[2::-1], old, SIZE)]
    save_case(item["npy_dir"], cid, image, label, len(LABELS))
    return {"cases": {cid: {"spacing": spacing, "domain": None, "source": str(img_path), "shape": list(SIZE)}}}


def make_splits(ids: list[str], seed: int) -> dict[str, list[str]]:
    """int() rounding as the authors': 30 cases give 20 train (4 labeled), 4 eval, 6 test."""
    perm = seeded_permutation(ids, seed, "synapse/test")
    n_trval = int(len(perm) * 0.8)
    trval, test = perm[:n_trval], perm[n_trval:]
    n_train = int(len(trval) * 5 / 6)
    train, evals = sorted(trval[:n_train]), sorted(trval[n_train:])
    k = count_of(len(train), LABELED_RATIO, f"Synapse labeled_{LABELED_RATIO}")
    shuffled = seeded_permutation(train, seed, "synapse/labeled")
    return {"train": train, "eval": evals, "test": sorted(test),
            f"labeled_{LABELED_RATIO}": sorted(shuffled[:k]), f"unlabeled_{LABELED_RATIO}": sorted(shuffled[k:])}


def _by_id(folder: Path, prefix: str) -> dict[str, Path]:
    """<prefix><ID>.nii.gz files of ``folder`` by ID."""
    found = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        stem = nifti_stem(p.name)
        if stem and stem.startswith(prefix):
            found[stem[len(prefix):]] = p
    return found


def prepare(raw, out, *, seed: int = 0, splits=None, workers: int = 1, force: bool = False,
            allow_skips: bool = False) -> int:
    raw, out = Path(raw).absolute(), Path(out)
    supplied = read_split_dir(splits)
    images, labels = _layout(raw)
    image_files = _by_id(images, "img")
    if not image_files:
        raise UserError(f"{images}: no img<ID>.nii.gz files")
    items = pair_items(image_files, _by_id(labels, "label"), lambda cid: find_nifti(images, f"img{cid}"),
                       lambda cid: find_nifti(labels, f"label{cid}"))
    res = run_items(prepare_case, items, out, params={"version": 1, "size": list(SIZE)}, workers=workers,
                    force=force, desc="Synapse")
    status = summarize(res, "Synapse", allow_skips)
    if status:
        return status
    write_dataset_json(out, "synapse", len(LABELS), LABELS, "zyx", res.cases, seed=seed)
    generated = make_splits(list(res.cases), seed)
    write_splits(out, generated, supplied, res.cases, supplied_dir=splits, skipped_ids=res.skipped_ids)
    return 0
