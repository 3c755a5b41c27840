"""LA (2018 Atrial Segmentation Challenge, as UA-MT's HDF5 release ships it).

Arrays are stored as the HDF5 holds them, (x, y, z), the image as float32 and
nothing else. Splits: the sorted train list, its first int(80 r) cases labeled;
``eval_r`` equals ``labeled_r`` (the authors' choice, kept for reproduction) and
``heldout_eval_r`` offers as many cases drawn (seeded) from the unlabeled ones:
their labels are never used for training, so model selection on them is honest.
:func:`prepare_image` and :func:`restore_label` are the image half, shared with
``genericssl predict``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..optional import require
from .common import (CaseError, Restore, as_label, check_codes, count_of, read_split_dir, restore_label, run_items,
                     save_case, seeded_permutation, summarize, write_dataset_json, write_splits)

LABELS = {0: "background", 1: "left atrium"}
SET_DIR = "2018LA_Seg_Training Set"
RATIOS = (0.05, 0.1)
# The challenge's volumes are 0.625 mm isotropic; the HDF5 files carry no spacing.
SPACING = [0.625, 0.625, 0.625]
HDF5 = "reading the LA release's HDF5 volumes"


def _read_list(raw: Path, name: str) -> list[str]:
    p = raw / f"{name}.list"
    if not p.is_file():
        raise UserError(f"{p} is missing: LA needs train.list and test.list next to '{SET_DIR}' "
                        f"(the data/ folder of UA-MT's release)")
    return [line.strip() for line in p.read_text().splitlines() if line.strip()]


def prepare_image(image: np.ndarray) -> tuple[np.ndarray, Restore]:
    """(x, y, z) MRI -> the same array as float32 (UA-MT's HDF5 volumes are already cropped and
    normalised); labels come back unchanged through :func:`restore_label`."""
    return np.asarray(image, dtype=np.float32), Restore.whole(image.shape)


def prepare_case(item: dict) -> dict:
    h5py = require("h5py", HDF5)

    cid, path = item["key"], Path(item["inputs"][0])
    if not path.is_file():
        raise CaseError(f"{cid}: file missing: {path}")
    try:
        with h5py.File(path, "r") as f:
            image, label = f["image"][:], f["label"][:]
    except KeyError:
        raise CaseError(f"{cid}: {path} lacks the HDF5 dataset 'image' or 'label'") from None
    except Exception as e:
        raise CaseError(f"{cid}: cannot read {path}: {type(e).__name__}: {e}") from None
    label = as_label(label, path)
    check_codes(label, LABELS, f"{cid} ({path})")
    if image.shape != label.shape:
        raise CaseError(f"{cid}: image shape {image.shape} differs from label shape {label.shape} in {path}")
    image, _ = prepare_image(image)
    save_case(item["npy_dir"], cid, image, label, len(LABELS))
    return {"cases": {cid: {"spacing": SPACING, "domain": None, "source": str(path), "shape": list(image.shape)}}}


def prepare(raw, out, *, seed: int = 0, splits=None, workers: int = 1, force: bool = False,
            allow_skips: bool = False) -> int:
    raw, out = Path(raw).absolute(), Path(out)
    supplied = read_split_dir(splits)
    train_list, test_list = _read_list(raw, "train"), _read_list(raw, "test")
    require("h5py", HDF5)  # here, once: inside prepare_case it would fail every case on its own
    items = [{"key": cid, "inputs": [str(raw / SET_DIR / cid / "mri_norm2.h5")]}
             for cid in dict.fromkeys(train_list + test_list)]
    res = run_items(prepare_case, items, out, params={"version": 1}, workers=workers, force=force, desc="LA")
    status = summarize(res, "LA", allow_skips)
    if status:
        return status
    write_dataset_json(out, "la", len(LABELS), LABELS, "xyz", res.cases, seed=seed)
    train = sorted(i for i in dict.fromkeys(train_list) if i in res.cases)
    generated = {"train": train, "test": sorted(i for i in dict.fromkeys(test_list) if i in res.cases)}
    for r in RATIOS:
        k = count_of(len(train), r, f"LA labeled_{r}")
        labeled, unlabeled = train[:k], train[k:]
        generated.update({f"labeled_{r}": labeled, f"unlabeled_{r}": unlabeled, f"eval_{r}": labeled,
                          f"heldout_eval_{r}": sorted(seeded_permutation(unlabeled, seed, f"la/heldout/{r}")[:k])})
    write_splits(out, generated, supplied, res.cases, supplied_dir=splits,
                 skipped_ids=res.skipped_ids)
    print("note: eval_<r> equals labeled_<r> (the authors' validation); heldout_eval_<r> is a held-out "
          "alternative drawn from the unlabeled cases")
    return 0
