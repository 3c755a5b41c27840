"""What every dataset's preparation shares: reading NIfTI with clear errors, atomic
writes, the resamplings and the way back from a prepared grid (:class:`Restore`,
which ``genericssl predict`` uses to put label maps onto a new scan), the parallel
loop over cases that skips finished work, split lists, and the closing summary.

A dataset module describes its work as *items* (dicts with a unique ``key``; one
case, or one M&Ms subject that yields several frame cases) and a module-level
function ``fn(item) -> {"cases": {id: meta}, "skipped": [[id, why], ...]}``.
``fn`` raises :class:`CaseError` when the whole item is unusable.

Every skipped case, whatever the dataset, reaches :func:`summarize`, which lists
it with its file and reason and decides the exit status: a dataset with skipped
cases is finished (dataset.json, split lists) only when the user says so
(``allow_skips``, the ``--allow-skips`` flag).
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..errors import UserError

RECORDS = ".prepare_records"


class CaseError(Exception):
    """One case cannot be prepared; the message names the file and the problem."""


# ---------------------------------------------------------------- atomic writes
def atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_npy(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr))


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=1) + "\n")


# ---------------------------------------------------------------- reading
def read_nifti(path: Path, what: str):
    """(array in file order x, y, z[, t], affine, voxel sizes) or CaseError."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise CaseError(f"{what} file missing: {path}")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # truncated gzip, bad header, ...: all mean "unreadable"
        raise CaseError(f"cannot read {what} {path}: {type(e).__name__}: {e}") from None
    return data, img.affine, tuple(float(z) for z in img.header.get_zooms())


def find_nifti(folder: Path, stem: str) -> Path:
    """``stem.nii.gz`` or ``stem.nii``; the .nii.gz path when neither exists (for the message)."""
    for ext in (".nii.gz", ".nii"):
        p = Path(folder) / f"{stem}{ext}"
        if p.is_file():
            return p
    return Path(folder) / f"{stem}.nii.gz"


def pair_items(images: dict, labels: dict, image_for, label_for) -> list[dict]:
    """One item per case id found among ``images`` or ``labels`` (id -> path), sorted by id.

    A case with only one of its two files still becomes an item, with the path where the
    other was expected (``image_for(id)``, ``label_for(id)``): :func:`read_nifti` then
    reports that file as missing, where building items from the images alone would drop
    a case whose image is missing without a word."""
    return [{"key": cid, "inputs": [str(images.get(cid) or image_for(cid)), str(labels.get(cid) or label_for(cid))]}
            for cid in sorted(set(images) | set(labels))]


def nifti_stem(name: str) -> str | None:
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return None


def as_label(data: np.ndarray, path) -> np.ndarray:
    """Integer label array; float files are accepted only when they hold whole numbers."""
    if np.issubdtype(data.dtype, np.integer):
        return data
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.round(data)):
        raise CaseError(f"label {path} holds non-integer values")
    return data.astype(np.int32)


def label_codes(label: np.ndarray) -> list[int]:
    lo, hi = int(label.min()), int(label.max())
    if lo >= 0 and hi < 1 << 16:  # bincount is linear time, np.unique sorts
        return np.flatnonzero(np.bincount(label.ravel())).tolist()
    return np.unique(label).tolist()


def check_codes(label: np.ndarray, known, where) -> None:
    bad = sorted(set(label_codes(label)) - set(known))
    if bad:
        raise CaseError(f"{where}: label codes {bad} are not among the known codes {sorted(known)}")


def affines_match(a: np.ndarray, b: np.ndarray, shape) -> bool:
    """True when both affines put every corner of the volume within half a voxel."""
    corners = np.array(np.meshgrid(*[[0, max(s - 1, 0)] for s in shape[:3]], indexing="ij")).reshape(3, -1)
    corners = np.vstack([corners, np.ones(corners.shape[1])])
    dist = np.linalg.norm((a @ corners - b @ corners)[:3], axis=0).max()
    voxel = np.linalg.norm(a[:3, :3], axis=0).min()
    return bool(dist <= 0.5 * voxel)


def reorient(data: np.ndarray, affine: np.ndarray, axcodes) -> tuple[np.ndarray, np.ndarray]:
    """``data`` (x, y, z) turned so its axes point to ``axcodes`` (nibabel's RAS+ letters),
    and the affine that goes with it."""
    from nibabel import orientations as o

    tr = o.ornt_transform(o.io_orientation(affine), o.axcodes2ornt(tuple(axcodes)))
    return o.apply_orientation(data, tr), affine @ o.inv_ornt_aff(tr, data.shape[:3])


def unorient(data: np.ndarray, affine: np.ndarray, axcodes) -> np.ndarray:
    """Inverse of :func:`reorient`: ``data`` whose axes point to ``axcodes`` turned back onto
    the grid of the volume whose affine is ``affine``."""
    from nibabel import orientations as o

    return o.apply_orientation(data, o.ornt_transform(o.axcodes2ornt(tuple(axcodes)), o.io_orientation(affine)))


def resize_linear(image: np.ndarray, size) -> np.ndarray:
    """float32 ``image`` (2D or 3D) resized to ``size``, bi/trilinear without corner alignment
    (torch's ``interpolate``, the authors' Synapse and M&Ms 2D image resize)."""
    import torch
    import torch.nn.functional as F

    mode = "trilinear" if image.ndim == 3 else "bilinear"
    with torch.no_grad():
        out = F.interpolate(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None],
                            size=tuple(size), mode=mode, align_corners=False)
    return out[0, 0].numpy()


def resize_label(label: np.ndarray, size) -> np.ndarray:
    """uint8 ``label`` (2D or 3D) resized to ``size`` by torch's 'nearest' (the authors' label resize)."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        out = F.interpolate(torch.from_numpy(label.astype(np.float32))[None, None], size=tuple(size),
                            mode="nearest")
    return out[0, 0].numpy().astype(np.uint8)


def zoom_to(array: np.ndarray, shape) -> np.ndarray:
    """``array`` resized to ``shape`` by scipy's order-0 zoom (the MM-WHS and M&Ms resize)."""
    from scipy.ndimage import zoom

    return zoom(array, [n / s for n, s in zip(shape, array.shape)], order=0)


def resize_nearest(labels: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour resampling to ``shape`` (source index floor(i * in / out), as torch's 'nearest')."""
    idx = [np.minimum((np.arange(n) * (s / n)).astype(np.int64), s - 1) for s, n in zip(labels.shape, shape)]
    return labels[np.ix_(*idx)]


@dataclass(frozen=True)
class Restore:
    """How a prepared array maps back: the input array's ``shape`` (prepared axis order) and the
    ``box`` of it that was resized to the prepared array."""
    shape: tuple
    box: tuple

    @classmethod
    def whole(cls, shape) -> "Restore":
        return cls(tuple(shape), tuple(slice(0, n) for n in shape))

    @property
    def crop_shape(self) -> tuple:
        return tuple(len(range(*b.indices(n))) for b, n in zip(self.box, self.shape))


def restore_label(labels: np.ndarray, restore: Restore) -> np.ndarray:
    """A label map on the prepared grid -> the input array's grid (``restore.shape``, same axis
    order): resized into the box by nearest neighbour, background outside it."""
    full = np.zeros(restore.shape, labels.dtype)
    full[restore.box] = resize_nearest(labels, restore.crop_shape)
    return full


def check_pair(image, label, img_affine, lab_affine, where) -> None:
    if image.shape != label.shape:
        raise CaseError(f"{where}: image shape {image.shape} differs from label shape {label.shape}")
    if not affines_match(img_affine, lab_affine, image.shape):
        raise CaseError(f"{where}: image and label affines differ (the label would not lie on the image)")


def check_image(image: np.ndarray, where) -> None:
    if not np.all(np.isfinite(image)):
        raise CaseError(f"{where}: image contains NaN or infinite values")
    if image.size == 0 or image.min() == image.max():
        raise CaseError(f"{where}: image is constant ({image.min() if image.size else 'empty'}), nothing to learn")


def save_case(npy_dir: Path, case_id: str, image: np.ndarray, label: np.ndarray, num_classes: int) -> None:
    """``image`` (*S), or (K, *S) with K channels first; ``label`` (*S)."""
    channels = image.ndim == label.ndim + 1
    for k, c in enumerate(image if channels else [image]):
        check_image(c, f"{case_id} channel {k}" if channels else case_id)
    if label.shape != (image.shape[1:] if channels else image.shape):
        raise CaseError(f"{case_id}: label shape {label.shape} differs from image shape {image.shape}")
    if label.min() < 0 or label.max() >= num_classes:
        raise CaseError(f"{case_id}: label values {label_codes(label)} outside 0..{num_classes - 1}")
    save_npy(Path(npy_dir) / f"{case_id}_image.npy", np.ascontiguousarray(image, dtype=np.float32))
    save_npy(Path(npy_dir) / f"{case_id}_label.npy", np.ascontiguousarray(label, dtype=np.uint8))


def case_files_exist(npy_dir: Path, case_id: str) -> bool:
    return all((Path(npy_dir) / f"{case_id}_{k}.npy").is_file() for k in ("image", "label"))


# ---------------------------------------------------------------- the parallel loop
@dataclass
class Results:
    cases: dict = field(default_factory=dict)      # id -> meta, in item order
    failed: list = field(default_factory=list)     # (item key, why): whole item skipped
    skipped: list = field(default_factory=list)    # (case id, why): part of an item skipped
    reused: int = 0
    prepared: int = 0
    seconds: float = 0.0
    inputs: dict = field(default_factory=dict)     # item key or case id -> its item's input files

    @property
    def skipped_ids(self) -> list[str]:
        """Every case or item left out, for the messages about split lists that name them."""
        return [key for key, _ in self.failed + self.skipped]


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def _stamp(item) -> list:
    """Size and mtime of the item's inputs: a changed raw file invalidates its record."""
    out = []
    for p in item.get("inputs", []):
        try:
            st = os.stat(p)
            out.append([str(p), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(p), None, None])
    return out


def _load_record(path: Path, params: dict, stamp: list, npy_dir: Path):
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("params") != params or rec.get("stamp") != stamp:
        return None
    if not all(case_files_exist(npy_dir, cid) for cid in rec.get("cases", {})):
        return None
    return rec


def _call(fn, item):
    try:
        return fn(item), None
    except CaseError as e:
        return None, str(e)
    except Exception as e:  # one unreadable or malformed case must not stop the others
        return None, f"{item['key']}: {type(e).__name__}: {e}"


def _init_worker():
    # Workers run side by side; one thread each keeps them from oversubscribing the CPU.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


def run_items(fn, items: list[dict], out: Path, *, params: dict, workers: int, force: bool,
              desc: str) -> Results:
    """Run ``fn`` over ``items``, reusing finished items (unless ``force``), in ``workers``
    processes (inline when 1), with a progress bar; never raises for a bad item."""
    from tqdm import tqdm

    out = Path(out)
    npy_dir, rec_dir = out / "npy", out / RECORDS
    npy_dir.mkdir(parents=True, exist_ok=True)
    res, by_key, todo = Results(), {}, []
    keys = [it["key"] for it in items]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise UserError(f"case names occur twice: {', '.join(dup)}")
    for it in items:
        res.inputs[it["key"]] = list(it.get("inputs", []))
        it = dict(it, npy_dir=str(npy_dir), stamp=_stamp(it))
        rec = None if force else _load_record(rec_dir / f"{it['key']}.json", params, it["stamp"], npy_dir)
        if rec is not None:
            by_key[it["key"]] = rec
            res.reused += 1
        else:
            todo.append(it)

    def handle(it, result, err):
        if err is not None:
            res.failed.append((it["key"], err))
            (rec_dir / f"{it['key']}.json").unlink(missing_ok=True)
            return
        rec = {"params": params, "stamp": it["stamp"], **result}
        write_json(rec_dir / f"{it['key']}.json", rec)
        by_key[it["key"]] = rec
        res.prepared += 1

    t0 = time.perf_counter()
    with tqdm(total=len(items), initial=res.reused, desc=desc, unit="item", file=sys.stderr) as bar:
        if workers <= 1 or len(todo) <= 1:
            for it in todo:
                handle(it, *_call(fn, it))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=get_context("spawn"),
                                     initializer=_init_worker) as ex:
                futures = {ex.submit(_call, fn, it): it for it in todo}
                for f in as_completed(futures):
                    try:
                        outcome = f.result()
                    except Exception as e:  # a worker killed (out of memory?): the rest still finish or fail
                        outcome = None, f"{futures[f]['key']}: worker process failed: {type(e).__name__}: {e}"
                    handle(futures[f], *outcome)
                    bar.update()
    res.seconds = time.perf_counter() - t0
    for key in keys:  # item order, whatever order the workers finished in
        rec = by_key.get(key)
        if rec is not None:
            res.cases.update(rec.get("cases", {}))
            for cid, why in rec.get("skipped", []):
                res.skipped.append((cid, why))
                res.inputs.setdefault(cid, res.inputs[key])  # a frame or slice: its subject's files
    return res


# ---------------------------------------------------------------- splits
def seeded_permutation(ids, seed: int, tag: str) -> list[str]:
    """Sorted ``ids`` permuted by a generator drawn from (seed, tag): independent draws
    per tag, the same draw on every machine and run."""
    ids = sorted(ids)
    rng = np.random.default_rng([int(seed), zlib.crc32(tag.encode())])
    return [ids[i] for i in rng.permutation(len(ids))]


def count_of(n: int, ratio: float, what: str, rounding: str = "floor") -> int:
    """int(n r) (or ceil) as the authors round, but never 0 cases out of n > 0."""
    # The epsilon keeps 0.29 * 100 = 28.999... from losing a case to float error.
    k = math.ceil(n * ratio - 1e-9) if rounding == "ceil" else int(n * ratio + 1e-9)
    if k == 0 and n > 0:
        print(f"note: {what}: a ratio of {ratio} of {n} cases rounds to 0; taking 1 case")
        k = 1
    return min(k, n)


def read_split_dir(folder) -> dict[str, list[str]]:
    """The ``<split>.txt`` lists of a user's folder (e.g. the authors' published lists)."""
    if folder is None:
        return {}
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--splits {folder}: no such folder")
    lists = {}
    for p in sorted(folder.glob("*.txt")):
        ids = [line.strip() for line in p.read_text().splitlines() if line.strip()]
        if not ids:
            raise UserError(f"split file {p} is empty")
        lists[p.stem] = ids
    if not lists:
        raise UserError(f"--splits {folder}: no <split>.txt files in it")
    return lists


def write_splits(out: Path, generated: dict[str, list[str]], supplied: dict[str, list[str]],
                 case_ids, subject_lists: dict[str, set] | None = None, supplied_dir=None,
                 skipped_ids=()) -> None:
    """Write ``generated`` with ``supplied`` lists replacing those of the same name.

    ``subject_lists`` names lists whose entries are subjects, not cases (M&Ms vendorX),
    with the valid subject ids."""
    case_ids, subject_lists, skipped_ids = set(case_ids), subject_lists or {}, set(skipped_ids)
    for name, ids in supplied.items():
        valid = subject_lists.get(name, case_ids)
        missing = [i for i in ids if i not in valid]
        if missing:
            gone = [i for i in missing if i in skipped_ids]
            why = f" ({', '.join(gone[:5])} skipped as bad cases, see above)" if gone else ""
            raise UserError(f"split file {Path(supplied_dir or '.') / (name + '.txt')}: {len(missing)} id(s) "
                            f"not among the prepared cases: {', '.join(missing[:8])}"
                            f"{' ...' if len(missing) > 8 else ''}{why}")
    final = {**generated, **supplied}
    empty = [n for n, ids in final.items() if not ids]
    if empty:
        raise UserError(f"split list(s) {', '.join(empty)} would be empty: too few usable cases "
                        f"(see the skipped cases above) or a ratio too small for this dataset")
    for name, ids in final.items():
        write_text(Path(out) / "split_txts" / f"{name}.txt", "".join(f"{i}\n" for i in ids))
    if supplied:
        print(f"split lists from {supplied_dir}: {', '.join(sorted(supplied))} (replacing the generated ones)")


# ---------------------------------------------------------------- closing
def write_dataset_json(out: Path, dataset: str, num_classes: int, labels: dict, axes: str, cases: dict,
                       **extra) -> None:
    for meta in cases.values():  # float32 voxel sizes print as 0.10000000149
        if meta.get("spacing") is not None:
            meta["spacing"] = [round(float(s), 6) for s in meta["spacing"]]
    write_json(Path(out) / "dataset.json", {
        "dataset": dataset, "num_classes": num_classes,
        "labels": {str(k): v for k, v in labels.items()}, "axes": axes, **extra, "cases": cases})


def skip_line(key: str, why: str, files=()) -> str:
    """``key: why``, with the case's input files added when ``why`` names none of them
    (a worker that crashed, a frame dropped for its content): every line says where to look."""
    text = why if why.startswith(key) else f"{key}: {why}"
    if files and not any(str(f) in why or Path(f).name in why for f in files):
        text += f" (input: {', '.join(map(str, files))})"
    return text


def summarize(res: Results, what: str, allow_skips: bool = False) -> int:
    """Print how many cases were written and each skipped case with its file and reason.

    Returns the exit status; the caller finishes the dataset only on 0. It is 1 when nothing
    was prepared, or when anything was skipped without ``allow_skips``, so that a dataset
    missing cases is never finished (and trained on) unnoticed."""
    bad = res.failed + res.skipped
    per = f", {res.seconds / res.prepared:.2f} s per item" if res.prepared else ""
    print(f"{what}: {len(res.cases)} cases written, {len(bad)} skipped ({res.prepared} items prepared in "
          f"{res.seconds:.1f} s{per}, {res.reused} reused from an earlier run)")
    if bad:
        print(f"skipped {len(bad)}:")
        for key, why in bad:
            print(f"  {skip_line(key, why, res.inputs.get(key, ()))}")
    if not res.cases:
        print(f"{what}: nothing could be prepared", file=sys.stderr)
        return 1
    if bad and not allow_skips:
        print(f"{what}: {len(bad)} case(s) skipped (listed above), so dataset.json and the split lists were "
              f"not written; fix or remove those files and run again (finished cases are reused), or pass "
              f"--allow-skips to finish the dataset without them", file=sys.stderr)
        return 1
    if bad:
        print(f"--allow-skips: the {len(bad)} skipped case(s) are left out of the split lists")
    return 0
