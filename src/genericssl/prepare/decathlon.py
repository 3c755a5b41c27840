"""A Medical Segmentation Decathlon dataset, or a MONAI datalist, read as it is:
``genericssl prepare decathlon --raw Task01_BrainTumour``.

The layout (the MSD release; MONAI's ``load_decathlon_datalist`` reads the same file)::

    TaskXX/dataset.json   modality {"0": "FLAIR", ...} (or channel_names), labels {"0": "background", ...},
                          training [{"image": "./imagesTr/a.nii.gz", "label": "./labelsTr/a.nii.gz"}, ...],
                          validation [...] (MONAI datalists; optional), test ["./imagesTs/b.nii.gz", ...]
    TaskXX/imagesTr/      one file per case: 3D, or 4D with the channels on the last axis (BraTS)

An entry's "image" may also be a list of channel files. Paths are relative to the
folder of dataset.json (``--datalist FILE`` names another file). Training entries
with a label are labeled, those without are unlabeled, validation entries are the
eval split, test entries with a label are the test split (without one they are
not prepared: predict them with ``genericssl predict``). ``--unlabeled DIR`` adds
every scan of a folder as unlabeled. The rest is :mod:`genericssl.prepare.scans`.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..imageio import kind_of, stem_of
from .scans import Scan, class_labels, prepare_scans, read_layout_json


def read_datalist(raw: Path, datalist=None) -> tuple[dict, Path]:
    path = Path(datalist) if datalist else raw / "dataset.json"
    desc = read_layout_json(path, f"{path}: no such file; a Decathlon dataset has dataset.json with 'training' "
                                  f"entries (for an nnU-Net v2 dataset use `genericssl prepare nnunet`)")
    if not isinstance(desc.get("training"), list) or not desc["training"]:
        raise UserError(f"{path}: no 'training' list of {{'image': ..., 'label': ...}} entries")
    if "labels" not in desc:
        raise UserError(f"{path}: no 'labels' entry naming the classes")
    return desc, path


def _entry(entry, base: Path, where: str, index: int) -> tuple[list[Path], Path | None]:
    if isinstance(entry, str):
        entry = {"image": entry}
    if not isinstance(entry, dict) or "image" not in entry:
        raise UserError(f"{where}: entry {index} has no 'image'")
    images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
    label = entry.get("label")
    return [(base / p).resolve() for p in images], ((base / label).resolve() if label else None)


def find_scans(desc: dict, path: Path, unlabeled_dirs=()) -> list[Scan]:
    base = path.parent
    scans = []
    for key, role in (("training", None), ("validation", "eval"), ("test", "test")):
        for i, entry in enumerate(desc.get(key) or []):
            images, label = _entry(entry, base, f"{path} {key}", i)
            if role == "test" and label is None:
                continue
            scans.append(Scan(stem_of(images[0]), images, label,
                              role="unlabeled" if role is None and label is None else role))
    for folder in map(Path, unlabeled_dirs):
        if not folder.is_dir():
            raise UserError(f"--unlabeled {folder}: no such folder")
        for p in sorted(folder.iterdir()):
            if kind_of(p) not in (None, "npy") and not p.name.startswith("."):
                scans.append(Scan(stem_of(p), [p], None, role="unlabeled"))
    return scans


def prepare(raw, out, *, unlabeled=(), datalist=None, **kwargs) -> int:
    raw = Path(raw).absolute()
    if not raw.is_dir() and not datalist:
        raise UserError(f"--raw {raw}: no such folder")
    desc, path = read_datalist(raw, datalist)
    num_classes, labels = class_labels(desc["labels"], path)
    names = desc.get("channel_names") or desc.get("modality") or {"0": "image"}
    if isinstance(names, list):
        names = dict(enumerate(names))
    channel_names = [str(names[k]) for k in sorted(names, key=int)]
    scans = find_scans(desc, path, unlabeled)
    return prepare_scans(scans, out, layout="decathlon", name=kwargs.pop("name", None) or desc.get("name") or raw.name,
                         num_classes=num_classes, labels=labels, channel_names=channel_names, raw=raw, **kwargs)
