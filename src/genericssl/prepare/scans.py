"""Scans as users have them -> prepared cases: several channels, any of the usual formats,
voxel spacings that vary from scan to scan.

What ``prepare nnunet`` and ``prepare decathlon`` share; each of those only finds the
cases of its layout (a :class:`Scan` per case) and which of them carry labels.

One case, in order (:func:`prepare_scan`):

1. Read every channel's file (NIfTI with nibabel; NRRD and MHA/MHD with SimpleITK,
   ``imageio.read_volume``) and the label. One file holding a 4th axis is K channels
   when the layout declares K > 1 (the Decathlon's 4D BraTS images); with one declared
   channel it is a time axis: split into frames (``split_frames``, one case
   ``<id>_t<T>`` per frame, as ``prepare mnms`` does for cine MRI) or refused with a
   message that says how.
2. Check: channels and label on one grid (shape and affine), label values among the
   declared classes, finite non-constant images.
3. Reorient to one orientation (RAS by default) with nibabel's orientation tools: exact
   axis flips and permutations, no interpolation, so scans written with different
   axis orders end up with the same anatomy along the same array axes.
4. Resample to the target spacing (z, y, x mm): the given one, or the median spacing of
   the labeled training cases (nnU-Net's plan). Images: cubic spline; labels: each
   label's mask interpolated linearly and kept where >= 0.5, the rule our augmentation
   uses (nnU-Net v2 does the same). Both with ``scipy.ndimage.affine_transform`` on
   voxel centres (a grid edge stays an edge): after step 3 the only change of grid is a
   per-axis zoom, for which MONAI's ``Spacing`` would add MetaTensors and torch without
   computing anything else, and SimpleITK would need the arrays back as images.
   A case already at the target spacing is not interpolated.
5. Save ``(K, z, y, x)`` float32 images (``(z, y, x)`` for one channel) and
   ``(z, y, x)`` uint8 labels, and record the case's source files and geometry (affine,
   shape, format, frame) in dataset.json, so that predictions can be written back
   onto the original scans.

``genericssl predict`` brings a new scan through steps 3-4 (:func:`scan_to_grid`) and
its labels back (:func:`labels_to_scan`): nearest neighbour onto the reoriented grid,
then the inverse reorientation onto the scan's own grid and affine.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .common import (CaseError, affines_match, as_label, check_codes, count_of, read_split_dir, reorient,
                     run_items, save_case, seeded_permutation, summarize, unorient, write_dataset_json,
                     write_splits, write_text)

ROLES = ("labeled", "unlabeled", "eval", "test")
DEFAULT_ORIENTATION = "RAS"
DEFAULT_INTENSITY = {"clip": None, "percentile": [0.5, 99.5]}


@dataclass
class Scan:
    """One case of a layout: its channel files (one file may hold every channel), its
    label file when it has one, and the split the layout itself assigns (Decathlon
    "validation", nnU-Net's labelsTs), if any."""
    id: str
    images: list
    label: Path | None = None
    role: str | None = None
    domain: str | None = None


# ---------------------------------------------------------------- geometry
def read_geometry(path: Path) -> tuple[np.ndarray, tuple]:
    """(RAS affine, shape x, y, z[, ...]) from a scan's header only, without its voxels."""
    from ..imageio import kind_of, sitk_affine

    path = Path(path)
    if not path.is_file():
        raise CaseError(f"file missing: {path}")
    try:
        if kind_of(path) in ("nrrd", "mha"):
            from ..optional import require

            sitk = require("SimpleITK", "reading NRRD and MHA/MHD scans")
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            size = tuple(reader.GetSize())
            if reader.GetNumberOfComponents() > 1:
                size += (reader.GetNumberOfComponents(),)
            return sitk_affine(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()), size
        import nibabel as nib

        img = nib.load(str(path))
        return img.affine, tuple(img.shape)
    except UserError:
        raise
    except Exception as e:  # a bad header: the case is skipped with its file named
        raise CaseError(f"cannot read the header of {path}: {type(e).__name__}: {e}") from None


def orientation_transform(affine: np.ndarray, orientation: str | None):
    from nibabel import orientations as o

    if not orientation:
        return None
    return o.ornt_transform(o.io_orientation(affine), o.axcodes2ornt(tuple(orientation)))


def reoriented_affine(affine: np.ndarray, shape, orientation: str | None) -> np.ndarray:
    from nibabel import orientations as o

    tr = orientation_transform(affine, orientation)
    return affine if tr is None else affine @ o.inv_ornt_aff(tr, tuple(shape[:3]))


def spacing_zyx(affine: np.ndarray, shape, orientation: str | None) -> np.ndarray:
    """Voxel size (z, y, x) of the scan after reorientation."""
    return np.linalg.norm(reoriented_affine(affine, shape, orientation)[:3, :3], axis=0)[::-1]


def target_shape(shape_zyx, spacing, target) -> tuple:
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape_zyx, spacing, target))


# ---------------------------------------------------------------- resampling
def _zoom(array: np.ndarray, shape, order: int) -> np.ndarray:
    """``array`` resampled onto ``shape`` voxels over the same extent (voxel centres map as
    (o + 0.5) in / out - 0.5), edges continued, not zero."""
    from scipy import ndimage

    ratio = np.array(array.shape, np.float64) / np.array(shape, np.float64)
    return ndimage.affine_transform(array, ratio, offset=0.5 * ratio - 0.5, output_shape=tuple(shape),
                                    order=order, mode="nearest", prefilter=order > 1)


def resample_image(image: np.ndarray, shape) -> np.ndarray:
    """float32 cubic-spline resampling (no change when the shape is already ``shape``)."""
    if tuple(image.shape) == tuple(shape):
        return image.astype(np.float32, copy=False)
    return _zoom(image.astype(np.float32, copy=False), shape, 3).astype(np.float32, copy=False)


def resample_label(label: np.ndarray, shape) -> np.ndarray:
    """Each label's mask linearly interpolated, kept where >= 0.5 (later labels win)."""
    if tuple(label.shape) == tuple(shape):
        return label.astype(np.uint8, copy=False)
    out = np.zeros(tuple(shape), np.uint8)
    for value in np.unique(label):
        if value:
            out[_zoom((label == value).astype(np.float32), shape, 1) >= 0.5] = value
    return out


def resample_nearest(array: np.ndarray, shape) -> np.ndarray:
    """Nearest neighbour on voxel centres (labels and probabilities on their way back)."""
    if tuple(array.shape) == tuple(shape):
        return array
    return _zoom(array, shape, 0).astype(array.dtype, copy=False)


# ---------------------------------------------------------------- one scan <-> the grid
def scan_to_grid(channels_xyz: list, affine: np.ndarray, orientation: str | None, spacing) -> tuple:
    """Channel arrays (x, y, z) of one scan -> (array (z, y, x) or (K, z, y, x), context for the
    way back). ``spacing`` (z, y, x) None keeps the scan's own voxel size."""
    arrays = []
    for data in channels_xyz:
        if orientation:
            data, _ = reorient(data, affine, orientation)
        arrays.append(np.asarray(data, np.float32).transpose(2, 1, 0))
    grid = arrays[0].shape
    own = spacing_zyx(affine, channels_xyz[0].shape, orientation)
    shape = grid if spacing is None else target_shape(grid, own, spacing)
    arrays = [resample_image(a, shape) for a in arrays]
    out = arrays[0] if len(arrays) == 1 else np.stack(arrays)
    return out, {"grid": tuple(grid), "affine": affine, "orientation": orientation}


def labels_to_scan(labels: np.ndarray, ctx: dict) -> np.ndarray:
    """A map (z, y, x) on the prepared grid -> (x, y, z) on the scan's own grid."""
    back = resample_nearest(labels, ctx["grid"]).transpose(2, 1, 0)
    return unorient(back, ctx["affine"], ctx["orientation"]) if ctx["orientation"] else back


def source_context(geometry: dict, orientation: str | None) -> dict:
    """The way back (:func:`labels_to_scan`) onto a prepared case's source scan, from the geometry
    dataset.json recorded for it."""
    from nibabel import orientations as o

    affine, shape = np.array(geometry["affine"], np.float64), tuple(geometry["shape"])
    tr = orientation_transform(affine, orientation)
    view = np.broadcast_to(np.zeros((), bool), shape)  # a zero-stride view: the shape without the voxels
    grid = (o.apply_orientation(view, tr) if tr is not None else view).shape
    return {"grid": tuple(grid[::-1]), "affine": affine, "orientation": orientation}


def write_on_source(labels: np.ndarray, case: dict, preparation: dict, out_dir: Path, num_classes: int,
                    suffix: str = "_seg") -> Path | None:
    """A prediction on a prepared case's grid written onto its source scan (its grid, affine and
    format), as ``out_dir/<scan>_seg.<ext>``; None for a case without recorded geometry or a frame
    of a time series."""
    from ..imageio import Volume, kind_of, output_extension, stem_of, write_label_map

    geometry = (case or {}).get("geometry")
    if not geometry or geometry.get("frame") is not None:
        return None
    ctx = source_context(geometry, preparation.get("orientation"))
    back = labels_to_scan(labels, ctx)
    source = Path(geometry["files"][0])
    stem = stem_of(source)
    if preparation.get("layout") == "nnunet" and stem.endswith("_0000"):
        stem = stem[:-5]
    header = image_class = None
    if kind_of(source) == "nifti" and source.is_file():  # keep the scan's header (lazy: no voxels read)
        import nibabel as nib
        img = nib.load(str(source))
        header, image_class = img.header, type(img)
    like = Volume(source, kind_of(source) or "nifti", np.broadcast_to(np.zeros((), np.uint8), back.shape),
                  ctx["affine"], header, image_class)
    out = Path(out_dir) / f"{stem}{suffix}{output_extension(source)}"
    write_label_map(out, back, like, num_classes)
    return out


# ---------------------------------------------------------------- reading one case
def _squeeze(data: np.ndarray) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data


def read_channels(paths: list, channels: int, split_frames: bool, where: str) -> tuple[list, np.ndarray, str]:
    """(frames, affine, format): each frame a list of ``channels`` arrays (x, y, z)."""
    from ..imageio import read_volume

    vols = []
    for p in paths:
        try:
            vols.append(read_volume(p))
        except UserError as e:
            raise CaseError(str(e)) from None
    first = vols[0]
    datas = [_squeeze(v.data) for v in vols]
    if len(datas) == 1 and channels > 1:
        d = datas[0]
        if d.ndim != 4 or d.shape[3] != channels:
            raise CaseError(f"{where}: {first.path} has shape {tuple(d.shape)}; the dataset declares {channels} "
                            f"channels, so a single image file must be 4D with {channels} on its last axis "
                            f"(or give one file per channel, <case>_0000 ... _{channels - 1:04d})")
        return [[d[..., k] for k in range(channels)]], first.affine, first.kind
    if len(datas) != channels:
        raise CaseError(f"{where}: {len(datas)} channel file(s) but the dataset declares {channels} channels")
    for v, d in zip(vols, datas):
        if d.ndim == 4 and channels > 1:
            raise CaseError(f"{where}: {v.path} is 4D {tuple(d.shape)}; each channel file must be 3D")
        if d.ndim not in (3, 4):
            raise CaseError(f"{where}: {v.path} has shape {tuple(d.shape)}; expected a 3D volume")
        if d.shape[:3] != datas[0].shape[:3] or not affines_match(v.affine, first.affine, d.shape):
            raise CaseError(f"{where}: channel {v.path.name} is not on the grid of {first.path.name} "
                            f"(shape {tuple(d.shape[:3])} vs {tuple(datas[0].shape[:3])}, or another affine); "
                            f"the channels of a case must be co-registered on one grid")
    if datas[0].ndim == 4:
        if not split_frames:
            raise CaseError(f"{where}: {first.path} is 4D with {datas[0].shape[3]} frames on its last axis (a "
                            f"time series such as cine MRI); pass --split-frames to prepare each frame as a "
                            f"case (a 4D label file gives each frame's label), or give 3D files")
        return [[d[..., t]] for t in range(datas[0].shape[3]) for d in datas], first.affine, first.kind
    return [datas], first.affine, first.kind


def read_label(path: Path, n_frames: int, shape, affine, where: str) -> list:
    from ..imageio import read_volume

    try:
        vol = read_volume(path)
    except UserError as e:
        raise CaseError(str(e)) from None
    data = as_label(_squeeze(vol.data), path)
    frames = [data] if data.ndim == 3 else [data[..., t] for t in range(data.shape[3])]
    if len(frames) != n_frames:
        raise CaseError(f"{where}: label {path} has {len(frames)} frame(s) but the image has {n_frames}")
    if data.shape[:3] != tuple(shape[:3]):
        raise CaseError(f"{where}: image shape {tuple(shape[:3])} differs from label shape {data.shape[:3]} "
                        f"({path.name})")
    if not affines_match(vol.affine, affine, data.shape):
        raise CaseError(f"{where}: image and label affines differ ({path.name} would not lie on the image)")
    return frames


def prepare_scan(item: dict) -> dict:
    """One case (or one subject's frames): steps 1-5 of the module docstring."""
    spec, cid = item["spec"], item["key"]
    paths = [Path(p) for p in item["images"]]
    frames, affine, fmt = read_channels(paths, spec["channels"], spec["split_frames"], cid)
    labels = None
    if item.get("label"):
        labels = read_label(Path(item["label"]), len(frames), frames[0][0].shape, affine, cid)
    cases, skipped = {}, []
    for t, chans in enumerate(frames):
        case_id = cid if len(frames) == 1 else f"{cid}_t{t:02d}"
        image, ctx = scan_to_grid(chans, affine, spec["orientation"], spec["spacing"])
        shape = image.shape[-3:]
        if labels is not None:
            label = labels[t]
            check_codes(label, range(spec["num_classes"]), f"{case_id} ({item['label']})")
            if spec["orientation"]:
                label, _ = reorient(label, affine, spec["orientation"])
            label = resample_label(label.transpose(2, 1, 0), shape)
        else:
            label = np.zeros(shape, np.uint8)
        # A frame without a label in a labeled cine is an unlabeled frame (M&Ms' rule).
        has_label = labels is not None and (len(frames) == 1 or bool(labels[t].any()))
        try:
            save_case(item["npy_dir"], case_id, image, label, spec["num_classes"])
        except CaseError as e:
            if len(frames) == 1:
                raise
            skipped.append([case_id, str(e)])
            continue
        own = spacing_zyx(affine, chans[0].shape, spec["orientation"])
        cases[case_id] = {
            "spacing": [float(s) for s in (spec["spacing"] if spec["spacing"] is not None else own)],
            "source_spacing": [round(float(s), 6) for s in own], "domain": item.get("domain"),
            "subject": cid, "labeled": has_label, "shape": [int(s) for s in shape],
            "geometry": {"files": [str(p) for p in paths], "label": item.get("label"), "format": fmt,
                         "affine": np.round(affine, 6).tolist(), "shape": [int(s) for s in chans[0].shape],
                         "frame": t if len(frames) > 1 else None}}
    return {"cases": cases, "skipped": skipped}


# ---------------------------------------------------------------- the dataset
def median_spacing(scans: list[Scan], orientation: str | None) -> list[float]:
    """Median (z, y, x) spacing of ``scans`` after reorientation, from their headers."""
    spacings = []
    for s in scans:
        try:
            affine, shape = read_geometry(Path(s.images[0]))
        except CaseError:
            continue  # the case fails later, with its message, in the summary
        spacings.append(spacing_zyx(affine, shape, orientation))
    if not spacings:
        raise UserError("no readable labeled scan to plan the target spacing from")
    return [round(float(v), 6) for v in np.median(np.array(spacings), axis=0)]


def assign_roles(scans: list[Scan], *, seed: int, eval_fraction: float, test_fraction: float,
                 labeled_fraction: float, tag: str) -> dict[str, list[str]]:
    """{role: subject ids}. Labeled scans not given a role by the layout are drawn (seeded) into
    test, then eval, then labeled; of the labeled, ``labeled_fraction`` keep their labels and
    the rest join the unlabeled (their label files unread). Scans without labels are unlabeled."""
    roles = {r: [s.id for s in scans if s.role == r] for r in ROLES}
    pool = [s.id for s in scans if s.label is not None and s.role is None]
    roles["unlabeled"] += [s.id for s in scans if s.label is None and s.role is None]
    for role, fraction in (("test", test_fraction), ("eval", eval_fraction)):
        if not roles[role]:
            if len(pool) < 2:
                raise UserError(f"{len(pool) + sum(len(roles[r]) for r in ('eval', 'test'))} labeled case(s): too "
                                f"few to hold out an {role} split and keep a labeled one; add labeled cases or "
                                f"give the {role} cases yourself (--splits DIR with {role}.txt)")
            k = min(count_of(len(pool), fraction, f"{role} fraction"), len(pool) - 1)
            drawn = seeded_permutation(pool, seed, f"{tag}/{role}")[:k]
            roles[role] = sorted(drawn)
            pool = [c for c in pool if c not in drawn]
    if not pool:
        raise UserError("no labeled case left to train on after the eval and test splits")
    if labeled_fraction < 1:
        k = count_of(len(pool), labeled_fraction, "--labeled-fraction")
        kept = set(seeded_permutation(pool, seed, f"{tag}/labeled")[:k])
        roles["unlabeled"] += sorted(set(pool) - kept)
        pool = sorted(kept)
    roles["labeled"] += pool
    return {r: sorted(set(ids)) for r, ids in roles.items()}


def _splits_from_cases(roles: dict, cases: dict) -> dict[str, list[str]]:
    """Subject roles -> case lists: a subject's frames follow it; its frames without a
    label are unlabeled, and held-out splits list labeled frames only."""
    by_subject: dict[str, list] = {}
    for cid, meta in cases.items():
        by_subject.setdefault(meta.get("subject", cid), []).append(cid)
    out = {r: [] for r in ROLES}
    for role, subjects in roles.items():
        for s in subjects:
            for cid in by_subject.get(s, []):
                labeled = cases[cid]["labeled"]
                if role == "labeled":
                    out["labeled" if labeled else "unlabeled"].append(cid)
                elif role == "unlabeled" or labeled:
                    out[role].append(cid)
    return out


def prepare_scans(scans: list[Scan], out, *, layout: str, name: str, num_classes: int, labels: dict,
                  channel_names: list[str], raw, seed: int = 0, spacing=None, orientation=DEFAULT_ORIENTATION,
                  split_frames: bool = False, eval_fraction: float = 0.2, test_fraction: float = 0.2,
                  labeled_fraction: float = 1.0, intensity=None, patch_size=None, task=None, splits=None,
                  workers: int = 1, force: bool = False, allow_skips: bool = False) -> int:
    """Prepare ``scans`` into ``out`` (npy/, split_txts/, dataset.json, task.yaml); the exit status."""
    import yaml

    out = Path(out)
    if not scans:
        raise UserError(f"{raw}: no cases found")
    dup = sorted(i for i, n in Counter(s.id for s in scans).items() if n > 1)
    if dup:  # before the splits are drawn: two scans of one name would share one prepared case
        raise UserError(f"{raw}: case names occur twice (two folders or two entries): {', '.join(dup[:8])}")
    supplied = read_split_dir(splits)
    orientation = None if orientation in (None, "", "none") else str(orientation).upper()
    roles = assign_roles(scans, seed=seed, eval_fraction=eval_fraction, test_fraction=test_fraction,
                         labeled_fraction=labeled_fraction, tag=layout)
    hidden = set(roles["unlabeled"])
    if spacing is None:
        planned = [s for s in scans if s.id in set(roles["labeled"])]
        spacing = median_spacing(planned, orientation)
        print(f"target spacing (z, y, x): {spacing} mm, the median of the {len(planned)} labeled training cases")
    spacing = parse_spacing(spacing)
    task_fields = _task_fields(out, name, num_classes, len(channel_names), intensity, patch_size or [16, 16, 16],
                               task)
    spec = {"channels": len(channel_names), "num_classes": num_classes, "orientation": orientation,
            "spacing": spacing, "split_frames": split_frames}
    items = [{"key": s.id, "images": [str(p) for p in s.images], "domain": s.domain, "spec": spec,
              "label": None if s.label is None or s.id in hidden else str(s.label),
              "inputs": [str(p) for p in s.images] + ([str(s.label)] if s.label is not None else [])}
             for s in scans]
    params = {"version": 1, **spec, "hidden": sorted(hidden)}
    res = run_items(prepare_scan, items, out, params=params, workers=workers, force=force, desc=layout)
    status = summarize(res, layout, allow_skips)
    if status:
        return status
    generated = _splits_from_cases(roles, res.cases)
    if not generated["unlabeled"]:
        del generated["unlabeled"]
        print("note: no unlabeled cases: supervised training works as it is; the semi-supervised methods need "
              "some (--unlabeled DIR, an imagesUnlabeled/ folder, or --labeled-fraction)")
    preparation = {"layout": layout, "raw": str(Path(raw).absolute()), "orientation": orientation,
                   "spacing": spacing, "channels": len(channel_names), "channel_names": list(channel_names),
                   "interpolation": {"image": "cubic spline", "label": "per-label linear >= 0.5",
                                     "back": "nearest neighbour"}}
    write_dataset_json(out, "custom", num_classes, labels, "zyx", res.cases, seed=seed, preparation=preparation,
                       splits={**generated, **supplied})
    write_splits(out, generated, supplied, res.cases, supplied_dir=splits, skipped_ids=res.skipped_ids)
    from .custom import default_patch

    patch = patch_size or default_patch([m["shape"] for m in res.cases.values()])
    task_fields["patch_size"] = list(patch)
    write_text(out / "task.yaml", yaml.safe_dump(task_fields, sort_keys=False))
    counts = ", ".join(f"{r} {len(generated.get(r, []))}" for r in ROLES)
    print(f"splits: {counts}; {len(channel_names)} channel(s) ({', '.join(channel_names)}), {num_classes} classes")
    print(f"task config: {out / 'task.yaml'} (patch {'x'.join(map(str, patch))}); "
          f"train with: genericssl train --config {out / 'task.yaml'}")
    return 0


def _task_fields(out: Path, name, num_classes, channels, intensity, patch, task) -> dict:
    from ..config import TaskConfig, apply_overrides

    fields = {"name": name or out.resolve().name, "dataset": "custom", "data_dir": str(out.resolve()),
              "num_classes": num_classes, "in_channels": channels, "patch_size": list(patch), "spatial_dims": 3,
              "intensity": intensity or dict(DEFAULT_INTENSITY), "splits": {r: r for r in ROLES},
              **(task or {})}
    apply_overrides(TaskConfig(), fields).validate()
    return fields


def read_layout_json(path: Path, missing: str) -> dict:
    """A layout's dataset.json as a mapping; ``missing`` says what the file should have been."""
    if not path.is_file():
        raise UserError(missing)
    try:
        desc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if not isinstance(desc, dict):
        raise UserError(f"{path}: expected a JSON object of key: value entries, got a {type(desc).__name__}")
    return desc


def class_labels(labels: dict, where) -> tuple[int, dict]:
    """(num_classes, {index: name}) from a labels mapping either way round (nnU-Net's name -> int,
    the Decathlon's "int" -> name); the classes must be 0..C-1."""
    out = {}
    for k, v in (labels or {}).items():
        if isinstance(v, (list, tuple)):
            raise UserError(f"{where}: label {k!r} is a region {v} (nnU-Net region-based training); only "
                            f"one integer per class is supported")
        try:
            index, label_name = (int(v), str(k)) if isinstance(v, int) or str(v).isdigit() else (int(k), str(v))
        except ValueError:
            raise UserError(f"{where}: labels must map names to integers or integers to names, got "
                            f"{k!r}: {v!r}") from None
        out[index] = label_name
    if len(out) < 2 or sorted(out) != list(range(len(out))):
        raise UserError(f"{where}: labels must name the classes 0..C-1 (background 0 included), got {sorted(out)}")
    return len(out), dict(sorted(out.items()))


def parse_spacing(text) -> list[float] | None:
    """``--spacing`` as "Z Y X" / "Z,Y,X" (mm); None for the median."""
    if text is None:
        return None
    parts = text if isinstance(text, (list, tuple)) else str(text).replace(",", " ").split()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise UserError(f"--spacing must be three positive voxel sizes in mm (z y x), got {text!r}")
    return values
