"""Small datasets in the layouts users already have: nnU-Net v2 raw and the Medical Segmentation
Decathlon, with two channels, anisotropic voxels whose size varies from scan to scan, oblique
(non-diagonal) affines, and NIfTI and NRRD files.

Every scan shows the same physical structure (a ball of radius 9 mm, label 1, with a core of
radius 4 mm, label 2) at a random position, so a label map predicted on any scan's own grid can
be scored against the structure itself (:func:`structure_labels`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

RADII = (9.0, 4.0)  # mm: label 1 within the first, label 2 within the second


def oblique_affine(spacing_xyz, angle_deg: float, origin) -> np.ndarray:
    """A RAS affine: a rotation about z (orthonormal, so SimpleITK takes it) times the voxel sizes."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing_xyz)
    aff[:3, 3] = origin
    return aff


def structure_labels(affine: np.ndarray, shape, centre_mm) -> np.ndarray:
    """(x, y, z) labels of the structure on the grid of ``affine``."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    mm = idx @ affine[:3, :3].T + affine[:3, 3]
    d = np.linalg.norm(mm - np.asarray(centre_mm), axis=1).reshape(shape)
    return (d < RADII[0]).astype(np.uint8) + (d < RADII[1]).astype(np.uint8)


def make_scan(rng, shape=(24, 24, 12)):
    spacing = (float(rng.uniform(1.6, 2.0)), float(rng.uniform(1.6, 2.0)), float(rng.uniform(3.0, 4.0)))
    affine = oblique_affine(spacing, float(rng.uniform(-20, 20)), rng.uniform(-5, 5, 3))
    extent = affine[:3, :3] @ (np.array(shape) - 1)
    centre = affine[:3, 3] + extent * rng.uniform(0.4, 0.6, 3)
    label = structure_labels(affine, shape, centre)
    noise = rng.normal(0, 12, (2,) + shape)
    ch0 = 40 + 60 * (label > 0) + 40 * (label == 2) + noise[0]          # "T2": bright ball
    ch1 = 200 - 80 * (label > 0) + noise[1]                              # "ADC": dark ball
    return [ch0.astype(np.float32), ch1.astype(np.float32)], label, affine, centre


def write(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if name.endswith((".nii.gz", ".nii")):
        import nibabel as nib
        nib.save(nib.Nifti1Image(data, affine), str(path))
        return
    import SimpleITK as sitk

    from genericssl.imageio import sitk_geometry
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    spacing, origin, direction = sitk_geometry(affine)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    sitk.WriteImage(img, str(path))


def write_nnunet(root: Path, n_labeled=6, n_unlabeled=3, ending=".nii.gz", seed=0, extra_test=None) -> dict:
    """Dataset001_Toy in nnU-Net v2's raw layout; returns {case: (affine, shape, centre)}."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    truth = {}
    for i in range(n_labeled + n_unlabeled):
        case = f"toy_{i:03d}"
        chans, label, affine, centre = make_scan(rng)
        folder = "imagesTr" if i < n_labeled else "imagesUnlabeled"
        for k, c in enumerate(chans):
            write(root / folder / f"{case}_{k:04d}{ending}", c, affine)
        if i < n_labeled:
            write(root / "labelsTr" / f"{case}{ending}", label, affine)
        truth[case] = (affine, label.shape, centre)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "ball": 1, "core": 2},
        "numTraining": n_labeled, "file_ending": ending}))
    return truth


def write_decathlon(root: Path, n_labeled=6, n_unlabeled=2, n_validation=1, seed=1) -> dict:
    """Task99_Toy in the MSD layout: 4D NIfTI images with the two channels on the last axis,
    plus a validation entry and unlabeled training entries (a MONAI datalist)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    truth, training, validation = {}, [], []
    for i in range(n_labeled + n_unlabeled + n_validation):
        case = f"toy_{i:03d}"
        chans, label, affine, centre = make_scan(rng)
        write(root / "imagesTr" / f"{case}.nii.gz", np.stack(chans, -1), affine)
        entry = {"image": f"./imagesTr/{case}.nii.gz"}
        if i < n_labeled or i >= n_labeled + n_unlabeled:
            write(root / "labelsTr" / f"{case}.nii.gz", label, affine)
            entry["label"] = f"./labelsTr/{case}.nii.gz"
        (validation if i >= n_labeled + n_unlabeled else training).append(entry)
        truth[case] = (affine, label.shape, centre)
    (root / "dataset.json").write_text(json.dumps({
        "name": "Toy", "modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "ball", "2": "core"},
        "numTraining": len(training), "training": training, "validation": validation, "test": []}))
    return truth
