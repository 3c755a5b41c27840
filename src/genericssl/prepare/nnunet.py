"""An nnU-Net v2 raw dataset, read as it is: ``genericssl prepare nnunet --raw Dataset123_Name``.

The layout (nnU-Net's documentation, "Dataset format")::

    Dataset123_Name/dataset.json       channel_names {"0": "T2", "1": "ADC"}, labels {"background": 0, ...},
                                       file_ending ".nii.gz" (or .nrrd, .mha, ...)
    Dataset123_Name/imagesTr/<case>_0000<file_ending>, <case>_0001..., one file per channel
    Dataset123_Name/labelsTr/<case><file_ending>
    Dataset123_Name/imagesTs/...       optional; with labelsTs/ it is the test split
    Dataset123_Name/imagesUnlabeled/   optional, ours: images without labels, same naming

``--raw`` may also be the bare dataset name when ``$nnUNet_raw`` points at the folder
holding it. Cases of imagesTr without a label file, imagesUnlabeled/ and every
``--unlabeled DIR`` are unlabeled. imagesTs without labelsTs is not prepared (nothing
to score it against); predict it with ``genericssl predict``. The rest is
:mod:`genericssl.prepare.scans`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import UserError
from .scans import Scan, class_labels, prepare_scans, read_layout_json


def locate(raw) -> Path:
    raw = Path(raw)
    if raw.is_dir():
        return raw.absolute()
    base = os.environ.get("nnUNet_raw")
    if base and (Path(base) / raw).is_dir():
        return (Path(base) / raw).absolute()
    hint = "" if base else " (nnUNet_raw is not set, so a bare dataset name cannot be looked up)"
    raise UserError(f"--raw {raw}: no such folder{hint}")


def read_dataset_json(raw: Path) -> dict:
    path = raw / "dataset.json"
    desc = read_layout_json(path, f"{raw}: no dataset.json; an nnU-Net raw dataset has dataset.json, imagesTr/ and "
                                  f"labelsTr/ (for a Decathlon-style one use `genericssl prepare decathlon`)")
    for key in ("labels", "file_ending"):
        if key not in desc:
            raise UserError(f"{path}: no {key!r} entry (nnU-Net v2 needs channel_names, labels and file_ending)")
    if "channel_names" not in desc and "modality" not in desc:
        raise UserError(f"{path}: no 'channel_names' entry (nnU-Net v2) or 'modality' (v1)")
    return desc


def channel_files(folder: Path, ending: str, channels: int) -> dict[str, list[Path]]:
    """{case: [channel files in order]} of a folder named ``<case>_XXXX<ending>``; a case with
    missing channel files keeps the paths where they were expected (its preparation says so)."""
    found: dict[str, dict[int, Path]] = {}
    if not folder.is_dir():
        return {}
    pattern = re.compile(rf"(.+)_(\d{{4}}){re.escape(ending)}$")
    for p in sorted(folder.iterdir()):
        m = pattern.match(p.name)
        if m:
            found.setdefault(m.group(1), {})[int(m.group(2))] = p
    return {case: [chans.get(k, folder / f"{case}_{k:04d}{ending}") for k in range(channels)]
            for case, chans in found.items()}


def find_scans(raw: Path, desc: dict, unlabeled_dirs=()) -> list[Scan]:
    ending = desc["file_ending"]
    names = desc.get("channel_names") or desc.get("modality")
    channels = len(names)
    scans = []
    images = channel_files(raw / "imagesTr", ending, channels)
    if not images:
        raise UserError(f"{raw / 'imagesTr'}: no images named <case>_0000{ending}")
    labels_dir = raw / "labelsTr"
    for case, files in images.items():
        label = labels_dir / f"{case}{ending}"
        scans.append(Scan(case, files, label if label.is_file() else None))
    for p in sorted(labels_dir.glob(f"*{ending}")) if labels_dir.is_dir() else []:
        case = p.name[: -len(ending)]
        if case not in images:  # a label without its image: fails with the image file named
            scans.append(Scan(case, [raw / "imagesTr" / f"{case}_{k:04d}{ending}" for k in range(channels)], p))
    labels_ts = raw / "labelsTs"
    if labels_ts.is_dir():
        for case, files in channel_files(raw / "imagesTs", ending, channels).items():
            label = labels_ts / f"{case}{ending}"
            if label.is_file():
                scans.append(Scan(case, files, label, role="test"))
    extra = [raw / "imagesUnlabeled"] + [Path(d) for d in unlabeled_dirs]
    for folder in extra:
        if folder != raw / "imagesUnlabeled" and not folder.is_dir():
            raise UserError(f"--unlabeled {folder}: no such folder")
        for case, files in channel_files(folder, ending, channels).items():
            scans.append(Scan(case, files, None, role="unlabeled"))
    return scans


def prepare(raw, out, *, unlabeled=(), **kwargs) -> int:
    raw = locate(raw)
    desc = read_dataset_json(raw)
    num_classes, labels = class_labels(desc["labels"], raw / "dataset.json")
    names = desc.get("channel_names") or desc.get("modality")
    channel_names = [str(names[k]) for k in sorted(names, key=int)]
    scans = find_scans(raw, desc, unlabeled)
    return prepare_scans(scans, out, layout="nnunet", name=kwargs.pop("name", None) or raw.name,
                         num_classes=num_classes, labels=labels, channel_names=channel_names, raw=raw, **kwargs)
