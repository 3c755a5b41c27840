"""Tiny fake raw datasets in the real download layouts, for the `prepare` tests.

Shapes are small so the whole prepare suite runs in well under a minute; the
formats (HDF5 datasets, NIfTI affines and axis order, label codes, folder
spellings, the M&Ms spreadsheet) are the real ones.
"""
from __future__ import annotations

import csv
import string
from pathlib import Path

import numpy as np

LA_SET = "2018LA_Seg_Training Set"


def la_id(i: int) -> str:
    """A 20-character upper-case id like the LA folder names."""
    rng = np.random.default_rng(i)
    return "".join(rng.choice(list(string.ascii_uppercase + string.digits), 20))


def make_la(root: Path, n_train: int = 5, n_test: int = 2, shape=(12, 10, 8)) -> dict[str, tuple]:
    root = Path(root)
    ids = [la_id(i) for i in range(n_train + n_test)]
    arrays = {}
    for i, cid in enumerate(ids):
        rng = np.random.default_rng(100 + i)
        image = rng.normal(size=shape).astype(np.float64)  # float64 on disk: stored as float32
        label = np.zeros(shape, np.uint8)
        label[2:-2, 3:-3, 1:-1] = 1
        write_la_case(root, cid, image, label)
        arrays[cid] = (image, label)
    (root / "train.list").write_text("".join(f"{c}\n" for c in ids[:n_train]))
    (root / "test.list").write_text("".join(f"{c}\n" for c in ids[n_train:]))
    return arrays


def write_la_case(root: Path, cid: str, image, label) -> Path:
    import h5py

    path = Path(root) / LA_SET / cid / "mri_norm2.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("label", data=label)
    return path


def save_nifti(path: Path, data, affine=None) -> Path:
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def synapse_volume(seed: int, shape=(24, 20, 10)):
    """(image, label) in NIfTI order (x, y, z), labels 0..13."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 100, size=shape).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    for k in range(1, 14):
        x, y, z = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3), rng.integers(0, shape[2] - 2)
        label[x:x + 3, y:y + 3, z:z + 2] = k
    return image, label


SYNAPSE_AFFINE = np.diag([0.8, 0.8, 3.0, 1.0])


def make_synapse(root: Path, n: int = 8, shape=(24, 20, 10)) -> list[str]:
    root = Path(root)
    ids = [f"{i:04d}" for i in range(1, n + 1)]
    for i, cid in enumerate(ids):
        image, label = synapse_volume(i, shape)
        save_nifti(root / "imagesTr" / f"img{cid}.nii.gz", image, SYNAPSE_AFFINE)
        save_nifti(root / "labelsTr" / f"label{cid}.nii.gz", label, SYNAPSE_AFFINE)
    return ids


# ------------------------------------------------------------------ MM-WHS
MMWHS_SHAPE = (20, 18, 16)  # x, y, z in the canonical (L, P, S) orientation


def mmwhs_volume(seed: int, shape=MMWHS_SHAPE):
    """(image, label) with axes pointing to L, P, S (ITK's RAI) and the real MM-WHS codes."""
    rng = np.random.default_rng(seed)
    image = rng.normal(-200, 300, size=shape).astype(np.float32)  # negative, CT-like air
    label = np.zeros(shape, np.int16)
    label[5:15, 4:14, 3:12] = 205
    label[6:9, 5:8, 4:7] = 420
    label[10:14, 9:13, 7:11] = 500
    label[7:10, 10:13, 9:11] = 820
    label[5:7, 4:6, 3:5] = 550     # right atrium, blood pool, pulmonary artery: background
    label[12:15, 4:6, 3:5] = 600
    label[5:7, 12:14, 9:12] = 850
    image[label > 0] += 400 + 0.5 * label[label > 0]
    image[0, 0, 0] = 5000  # a bright artefact the p98 clip removes
    return image, label


def lps_affine(spacing=(0.9, 0.8, 1.5), origin=(10.0, -20.0, 5.0)) -> np.ndarray:
    """RAS+ affine of an array whose axes point to L, P, S."""
    a = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    a[:3, 3] = origin
    return a


def turn(data: np.ndarray, affine: np.ndarray, flips=(), perm=(0, 1, 2)):
    """The same physical volume stored differently: axes flipped and permuted, affine to match."""
    data, affine = np.asarray(data), affine.copy()
    for ax in flips:
        data = np.flip(data, ax)
        affine[:3, 3] += affine[:3, ax] * (data.shape[ax] - 1)
        affine[:3, ax] *= -1
    data = np.ascontiguousarray(np.transpose(data, perm))
    affine[:3, :3] = affine[:3, list(perm)]
    return data, affine


TURNS = [((), (0, 1, 2)), ((0,), (0, 1, 2)), ((1, 2), (0, 1, 2)), ((0,), (2, 1, 0)), ((2,), (1, 0, 2))]


def write_mmwhs_case(root: Path, cid: str, image, label, affine, label_affine=None) -> None:
    mod = cid[:2].upper()
    save_nifti(Path(root) / mod / "imagesTr" / f"{cid}_image.nii.gz", image, affine)
    save_nifti(Path(root) / mod / "labelsTr" / f"{cid}_label.nii.gz", label,
               affine if label_affine is None else label_affine)


def make_mmwhs(root: Path, numbers=(1001, 1002, 1003, 1004), turned: bool = False) -> list[str]:
    """CT and MR cases; with ``turned`` each is stored in another orientation (same anatomy)."""
    ids = []
    for m, mod in enumerate(("ct", "mr")):
        for i, n in enumerate(numbers):
            cid = f"{mod}_train_{n}"
            image, label = mmwhs_volume(10 * m + i)
            flips, perm = TURNS[(i + m) % len(TURNS)] if turned else ((), (0, 1, 2))
            img, aff = turn(image, lps_affine(), flips, perm)
            lab, _ = turn(label, lps_affine(), flips, perm)
            write_mmwhs_case(root, cid, img, lab, aff)
            ids.append(cid)
    return ids


# ------------------------------------------------------------------ M&Ms
MNMS_SHAPE = (30, 24, 6, 5)   # x, y, z, t
LABELED_FRAMES = (0, 3)
LABELED_Z = (1, 4)            # first and last labeled slice


def mnms_subject(seed: int, shape=MNMS_SHAPE):
    """4D cine (x, y, z, t) and its label, non-empty on two frames only; the last
    labeled slice holds only class 3 (right ventricle), which tells inclusive and
    end-exclusive slice ranges apart."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 20, size=shape).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    z0, z1 = LABELED_Z
    for t in LABELED_FRAMES:
        label[10:20, 8:16, z0:z1, t] = 1
        label[12:14, 10:12, z0:z1, t] = 2
        label[11:19, 9:15, z1, t] = 3
    return image, label


def write_mnms_subject(folder: Path, sid: str, image, label, affine=None) -> None:
    affine = np.diag([1.3, 1.3, 9.0, 1.0]) if affine is None else affine
    save_nifti(Path(folder) / sid / f"{sid}_sa.nii.gz", image, affine)
    save_nifti(Path(folder) / sid / f"{sid}_sa_gt.nii.gz", label, affine)


VENDOR_DIRS = {"A": "VendorA", "B": "vendorB", "C": "VendorC", "D": "vendorD"}  # both spellings occur


def mnms_subject_id(vendor: str, i: int) -> str:
    return f"{vendor}{i}X{i}Y{i}"


def make_mnms(root: Path, per_vendor: int = 3) -> dict[str, list[str]]:
    """``root``/Labeled/Vendor{A..D}/<ID>/ as the sorted M&Ms release; returns vendor -> subjects."""
    out = {}
    for k, (v, folder) in enumerate(VENDOR_DIRS.items()):
        out[v] = []
        for i in range(per_vendor):
            sid = mnms_subject_id(v, i)
            write_mnms_subject(Path(root) / "Labeled" / folder, sid, *mnms_subject(10 * k + i))
            out[v].append(sid)
    return out


INFO_HEADER = ["", "External code", "VendorName", "Vendor", "Centre", "ED", "ES"]


def write_info_csv(path: Path, rows) -> Path:
    """rows: (code, vendor letter)."""
    names = {"A": "Siemens", "B": "Philips", "C": "GE", "D": "Canon"}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(INFO_HEADER)
        for i, (code, v) in enumerate(rows):
            w.writerow([i, code, names.get(v, "?"), v, 1, 0, 9])
    return Path(path)


def write_info_xls(path: Path, rows) -> Path:
    import xlwt

    book = xlwt.Workbook()
    sheet = book.add_sheet("mnms")
    for j, h in enumerate(INFO_HEADER):
        sheet.write(0, j, h)
    for i, (code, v) in enumerate(rows, start=1):
        for j, val in enumerate([i - 1, code, "x", v, 1, 0, 9]):
            sheet.write(i, j, val)
    book.save(str(path))
    return Path(path)
