"""Your own data: NIfTI image/label pairs plus unlabeled images, described by a small
YAML or JSON file, prepared into the same layout as the paper's datasets plus a
``task.yaml`` for ``genericssl train --config OUT/task.yaml``.

The description (``genericssl.yaml`` in --raw, or --description FILE)::

    name: liver_ssl                      # task name (default: the output folder's name)
    labels: {0: background, 1: liver, 2: tumour}   # or a list; num_classes follows
    num_classes: 3                       # optional when labels are given
    image_dir: imagesTr                  # default: images, else imagesTr
    label_dir: labelsTr                  # default: labels, else labelsTr
    intensity: {clip: [-100, 200]}       # or {percentile: [0.5, 99.5]}; applied at load time,
                                         # then every volume is min-max scaled to [0, 1]
    orientation: LPS                     # optional: turn every volume to these axis codes
    label_map: {205: 1, 500: 2}          # optional: raw label code -> class (0 stays 0)
    resample: [96, 160, 160]             # optional target shape (z, y, x)
    patch_size: [64, 128, 128]           # optional (default: from the smallest case)
    cases:
      labeled: [case01, case02]
      unlabeled: [case07, case08]        # optional: default every image not listed elsewhere
      eval: [case03]
      test: [case04, case05]
    domains: {case01: siteA, case07: siteB}   # optional domain tag per case
    task: {batch_size: 2, max_epoch: 100}     # optional: any other training field

A case id is the file name without ``.nii.gz`` (and without nnU-Net's ``_0000``).
Unlabeled cases without a label file get an all-zero label array (the loaders
read one for every case); dataset.json marks them ``"labeled": false``.
Arrays are (z, y, x). :func:`prepare_image` and :func:`restore_label` are the image half.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from ..errors import UserError
from .common import (CaseError, Restore, as_label, check_codes, check_pair, nifti_stem, read_nifti, read_split_dir,
                     reorient, resize_label, resize_linear, restore_label, run_items, save_case, summarize,
                     write_dataset_json, write_splits, write_text)

KEYS = {"name", "labels", "num_classes", "image_dir", "label_dir", "intensity", "orientation", "label_map",
        "resample", "patch_size", "cases", "domains", "task"}
ROLES = ("labeled", "unlabeled", "eval", "test")
DESCRIPTION_NAMES = ("genericssl.yaml", "genericssl.yml", "genericssl.json")


def load_description(raw: Path, path=None) -> tuple[dict, Path]:
    if path is None:
        path = next((raw / n for n in DESCRIPTION_NAMES if (raw / n).is_file()), None)
        if path is None:
            raise UserError(f"{raw}: no description file ({', '.join(DESCRIPTION_NAMES)}); pass --description FILE "
                            f"(see `genericssl prepare custom --help`)")
    path = Path(path)
    try:
        text = path.read_text()
        desc = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise UserError(f"cannot read the description {path}: {e}") from None
    if not isinstance(desc, dict):
        raise UserError(f"description {path} must be a mapping of key: value")
    unknown = sorted(set(desc) - KEYS)
    if unknown:
        raise UserError(f"description {path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(KEYS))}")
    return desc, path


def _pair(value, what, where, lo=None, hi=None):
    if value is None:
        return None
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) for v in value) or value[0] >= value[1]):
        raise UserError(f"{where}: {what} must be [low, high] with low < high, got {value!r}")
    if lo is not None and (value[0] < lo or value[1] > hi):
        raise UserError(f"{where}: {what} must lie within [{lo}, {hi}], got {value!r}")
    return [float(v) for v in value]


def check_description(desc: dict, where) -> dict:
    """The description with defaults filled in and every field checked."""
    labels = desc.get("labels")
    if isinstance(labels, list):
        labels = dict(enumerate(labels))
    labels = {int(k): str(v) for k, v in (labels or {}).items()}
    n = desc.get("num_classes", len(labels) or None)
    if not isinstance(n, int) or n < 2:
        raise UserError(f"{where}: num_classes (or labels) must give at least 2 classes, got {n!r}")
    if labels and sorted(labels) != list(range(n)):
        raise UserError(f"{where}: labels must name the classes 0..{n - 1}, got {sorted(labels)}")
    labels = labels or {i: ("background" if i == 0 else f"class {i}") for i in range(n)}
    intensity = dict(desc.get("intensity") or {})
    if set(intensity) - {"clip", "percentile"}:
        raise UserError(f"{where}: intensity takes clip and/or percentile, got {sorted(intensity)}")
    intensity = {"clip": _pair(intensity.get("clip"), "intensity.clip", where),
                 "percentile": _pair(intensity.get("percentile"), "intensity.percentile", where, 0, 100)}
    orientation = desc.get("orientation")
    if orientation is not None:
        from nibabel.orientations import axcodes2ornt
        try:
            axcodes2ornt(tuple(str(orientation).upper()))
        except ValueError:
            raise UserError(f"{where}: orientation must be three axis codes such as LPS or RAS, "
                            f"got {orientation!r}") from None
        orientation = str(orientation).upper()
    label_map = {int(k): int(v) for k, v in (desc.get("label_map") or {}).items()}
    if any(not 0 <= v < n for v in label_map.values()):
        raise UserError(f"{where}: label_map sends a code outside the classes 0..{n - 1}")
    shapes = {}
    for key in ("resample", "patch_size"):
        v = desc.get(key)
        if v is not None and (not isinstance(v, list) or len(v) != 3
                              or not all(isinstance(s, int) and s > 0 for s in v)):
            raise UserError(f"{where}: {key} must be three positive integers (z, y, x), got {v!r}")
        shapes[key] = v
    cases = desc.get("cases") or {}
    if not isinstance(cases, dict) or set(cases) - set(ROLES):
        raise UserError(f"{where}: cases must map {', '.join(ROLES)} to lists of case ids")
    for role in ("labeled", "eval", "test"):
        if not cases.get(role):
            raise UserError(f"{where}: cases.{role} must list at least one case")
    return {"name": desc.get("name"), "num_classes": n, "labels": labels, "intensity": intensity,
            "orientation": orientation, "label_map": label_map, **shapes,
            "cases": {r: [str(c) for c in cases.get(r) or []] for r in ROLES},
            "domains": {str(k): str(v) for k, v in (desc.get("domains") or {}).items()},
            "task": dict(desc.get("task") or {}),
            "image_dir": desc.get("image_dir"), "label_dir": desc.get("label_dir")}


def _files(folder: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        stem = nifti_stem(p.name)
        if stem:
            out[stem[:-5] if stem.endswith("_0000") else stem] = p
    return out


def _folder(raw: Path, given, defaults) -> Path:
    if given:
        return raw / given
    return next((raw / d for d in defaults if (raw / d).is_dir()), raw / defaults[0])


def _squeeze3d(data, path):
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise CaseError(f"{path} has shape {data.shape}; expected a 3D volume")
    return data


def prepare_image(image: np.ndarray, resample=None) -> tuple[np.ndarray, Restore]:
    """(z, y, x) image, already turned to the description's orientation -> float32, resized
    trilinearly to ``resample`` (z, y, x) when given; labels go back with :func:`restore_label`."""
    if resample:
        return resize_linear(image, resample), Restore.whole(image.shape)
    return image.astype(np.float32), Restore.whole(image.shape)


def prepare_case(item: dict) -> dict:
    cid, spec = item["key"], item["spec"]
    img_path = Path(item["inputs"][0])
    image, img_aff, _ = read_nifti(img_path, "image")
    image = _squeeze3d(image, img_path)
    if spec["orientation"]:
        image, img_aff = reorient(image, img_aff, spec["orientation"])
    if len(item["inputs"]) > 1:
        lab_path = Path(item["inputs"][1])
        label, lab_aff, _ = read_nifti(lab_path, "label")
        label = _squeeze3d(as_label(label, lab_path), lab_path)
        if spec["orientation"]:
            label, lab_aff = reorient(label, lab_aff, spec["orientation"])
        check_pair(image, label, img_aff, lab_aff, f"{cid} ({img_path.name}, {lab_path.name})")
        if spec["label_map"]:
            codes = {0: 0, **{int(k): v for k, v in spec["label_map"].items()}}
            check_codes(label, codes, f"{cid} ({lab_path}), label_map")
            lut = np.zeros(max(codes) + 1, np.uint8)
            lut[list(codes)] = list(codes.values())
            label = lut[label]
        else:
            check_codes(label, range(spec["num_classes"]), f"{cid} ({lab_path})")
    else:
        label = np.zeros(image.shape, np.uint8)
    spacing = np.linalg.norm(img_aff[:3, :3], axis=0)[::-1]
    image, label = image.transpose(2, 1, 0), label.transpose(2, 1, 0)
    if spec["resample"]:
        spacing = spacing * np.array(image.shape) / np.array(spec["resample"])
        label = resize_label(label, spec["resample"])
    image, _ = prepare_image(image, spec["resample"])
    save_case(item["npy_dir"], cid, image, label, spec["num_classes"])
    return {"cases": {cid: {"spacing": [float(s) for s in spacing], "domain": item["domain"],
                            "source": str(img_path), "shape": list(image.shape), "labeled": len(item["inputs"]) > 1}}}


def default_patch(shapes) -> list[int]:
    """Per axis the largest multiple of 16 not above the smallest case, at most 128 (at least 16)."""
    smallest = np.min(np.array(shapes), axis=0)
    return [int(min(128, max(16, s // 16 * 16))) for s in smallest]


def _task_yaml(out: Path, spec: dict, patch, where) -> dict:
    from ..config import TaskConfig, apply_overrides

    fields = {"name": spec["name"] or out.resolve().name, "dataset": "custom", "data_dir": str(out.resolve()),
              "num_classes": spec["num_classes"], "patch_size": list(patch), "spatial_dims": 3,
              "intensity": spec["intensity"], "splits": {r: r for r in ROLES}, **spec["task"]}
    try:
        apply_overrides(TaskConfig(), fields).validate()
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return fields


def prepare(raw, out, *, seed: int = 0, splits=None, workers: int = 1, force: bool = False,
            allow_skips: bool = False, description=None) -> int:
    raw, out = Path(raw).absolute(), Path(out)
    if not raw.is_dir():
        raise UserError(f"--raw {raw}: no such folder")
    desc, where = load_description(raw, description)
    spec = check_description(desc, where)
    supplied = read_split_dir(splits)
    _task_yaml(out, spec, spec["patch_size"] or [16, 16, 16], where)  # bad training fields fail before the work
    image_dir = _folder(raw, spec["image_dir"], ("images", "imagesTr"))
    label_dir = _folder(raw, spec["label_dir"], ("labels", "labelsTr"))
    images, labels = _files(image_dir), _files(label_dir)
    if not images:
        raise UserError(f"{where}: no NIfTI images in {image_dir}")
    roles = spec["cases"]
    listed = {c for r in ROLES for c in roles[r]}
    if not roles["unlabeled"]:
        roles["unlabeled"] = sorted(set(images) - listed)
        listed |= set(roles["unlabeled"])
    missing = sorted(listed - set(images))
    if missing:
        raise UserError(f"{where}: no image file for case(s) {', '.join(missing[:10])}")
    need_label = {c for r in ("labeled", "eval", "test") for c in roles[r]}
    items = []
    for cid in sorted(listed):
        inputs = [str(images[cid])]
        if cid in labels:
            inputs.append(str(labels[cid]))
        elif cid in need_label:
            inputs.append(str(label_dir / f"{cid}.nii.gz"))
        items.append({"key": cid, "inputs": inputs, "domain": spec["domains"].get(cid), "spec": spec})
    for cid in sorted(set(labels) - set(images)):
        # A label whose image is missing: an item that fails on the image, so the summary names it.
        items.append({"key": cid, "inputs": [str(image_dir / f"{cid}.nii.gz"), str(labels[cid])],
                      "domain": spec["domains"].get(cid), "spec": spec})
    params = {"version": 1, **{k: spec[k] for k in ("num_classes", "orientation", "label_map", "resample")}}
    params["label_map"] = {str(k): v for k, v in params["label_map"].items()}  # as JSON stores it
    res = run_items(prepare_case, items, out, params=params, workers=workers, force=force, desc="custom")
    status = summarize(res, "custom", allow_skips)
    if status:
        return status
    # `genericssl predict` reads "preparation" to bring a new scan onto the same grid.
    write_dataset_json(out, "custom", spec["num_classes"], spec["labels"], "zyx", res.cases, seed=seed,
                       preparation={"orientation": spec["orientation"], "resample": spec["resample"]})
    generated = {r: [c for c in roles[r] if c in res.cases] for r in ROLES}
    write_splits(out, generated, supplied, res.cases, supplied_dir=splits, skipped_ids=res.skipped_ids)
    patch = spec["patch_size"] or default_patch([m["shape"] for m in res.cases.values()])
    write_text(out / "task.yaml", yaml.safe_dump(_task_yaml(out, spec, patch, where), sort_keys=False))
    print(f"task config: {out / 'task.yaml'} (patch {'x'.join(map(str, patch))}); "
          f"train with: genericssl train --config {out / 'task.yaml'}")
    return 0
