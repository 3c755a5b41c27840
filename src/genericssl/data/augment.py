"""The strong augmentation of A&D (METHOD.md, "Strong augmentation"), 2D and 3D.

One sample at a time, on NumPy arrays: the image is a float32 array of the spatial
shape, or (K, *spatial) for K channels (MRI sequences), the label an integer array
of the spatial shape (all zero for unlabeled cases). Every random draw comes from
the ``numpy.random.Generator`` passed in, so a sample is reproducible from its seed.

Several channels: the crop, rotation and scaling move every channel and the label
with the same draw (one anatomy); blur, brightness, contrast and gamma draw anew
for each channel in turn (each sequence has its own intensities), as nnU-Net's
per-channel intensity transforms do. A one-channel image takes exactly the draws
it took before channels existed.

Why scipy.ndimage and not MONAI: MONAI's transforms do not compute these
definitions. ``RandRotate``/``RandAffine`` resample labels by nearest neighbour
(here: linear interpolation of each label value's mask thresholded at 0.5, the
authors' batchgenerators rule); ``RandZoom`` resizes the array instead of scaling
sampling coordinates about the centre; ``RandAdjustContrast`` and
``RandScaleIntensityFixedMean`` draw their factor from one interval, not the
two-sided U(0.7, 1) / U(1, 1.3) draw; ``RandGaussianSmooth`` pads with zeros
rather than reflecting. scipy.ndimage's ``affine_transform`` and
``gaussian_filter`` are the routines the authors' pipeline itself ends in.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from scipy import ndimage

TRANSFORM_NAMES = ("rotation", "scaling", "blur", "brightness", "contrast", "gamma")


# ---------------------------------------------------------------- cropping
def crop_padding(shape: Sequence[int], patch: Sequence[int], pad_extra: int = 1) -> list[int]:
    """Zero padding per axis (both sides) before cropping ``patch`` from ``shape``.

    When any axis has ``s <= p``, each axis gets ``max((p - s)//2 + pad_extra, 0)``,
    the authors' formula: with ``pad_extra = 1`` exactly the axes with ``s <= p``
    are padded, by ``(p - s)//2 + 1``; with the 2D preset's 2 an axis one or two
    voxels longer than the patch also gets 1. Afterwards every axis exceeds the
    patch (for ``pad_extra >= 1``), so a crop start can always be drawn.
    """
    if not any(s <= p for s, p in zip(shape, patch)):
        return [0] * len(shape)
    return [max((p - s) // 2 + pad_extra, 0) for s, p in zip(shape, patch)]


def _pad(image, label, pads):
    if not any(pads):
        return image, label
    width = [(q, q) for q in pads]
    image = np.pad(image, [(0, 0)] * (image.ndim - len(pads)) + width, mode="constant", constant_values=0)
    if label is not None:
        label = np.pad(label, width, mode="constant", constant_values=0)
    return image, label


def _crop(image, label, starts, patch):
    window = tuple(slice(a, a + p) for a, p in zip(starts, patch))
    lead = (slice(None),) * (image.ndim - len(patch))
    return image[lead + window], (None if label is None else label[window])


def _check_dims(image, patch) -> tuple:
    """The spatial shape of ``image``: all its axes, or all but a leading channel axis."""
    if image.ndim not in (len(patch), len(patch) + 1):
        raise ValueError(f"image has {image.ndim} axes but the patch size {list(patch)} has "
                         f"{len(patch)}; spatial_dims must match the prepared data")
    return image.shape[image.ndim - len(patch):]


def random_crop(image: np.ndarray, label: np.ndarray | None, patch: Sequence[int],
                pad_extra: int, rng: np.random.Generator):
    """Random ``patch``-sized window, padding as :func:`crop_padding` says.

    The start along an axis is uniform in ``[0, s - p)`` after padding (the
    authors' ``randint(0, s - p)``: the last position is never drawn); an axis
    with ``s == p`` (only possible with ``pad_extra <= 0``) starts at 0.
    """
    image, label = _pad(image, label, crop_padding(_check_dims(image, patch), patch, pad_extra))
    shape = _check_dims(image, patch)
    if any(s < p for s, p in zip(shape, patch)):
        raise ValueError(f"cannot crop {list(patch)} from {list(shape)} with pad_extra={pad_extra}")
    starts = [int(rng.integers(0, s - p)) if s - p > 0 else 0 for s, p in zip(shape, patch)]
    return _crop(image, label, starts, patch)


def center_crop(image: np.ndarray, label: np.ndarray | None, patch: Sequence[int],
                pad_extra: int = 1):
    """The centre ``patch`` window used for validation: start ``round((s - p) / 2)``
    (Python's round, as the authors' code), padding as for the random crop."""
    image, label = _pad(image, label, crop_padding(_check_dims(image, patch), patch, pad_extra))
    shape = _check_dims(image, patch)
    if any(s < p for s, p in zip(shape, patch)):
        raise ValueError(f"cannot crop {list(patch)} from {list(shape)} with pad_extra={pad_extra}")
    starts = [int(round((s - p) / 2.0)) for s, p in zip(shape, patch)]
    return _crop(image, label, starts, patch)


# ---------------------------------------------------------------- resampling
def resample(image: np.ndarray, label: np.ndarray | None, matrix: np.ndarray, offset: np.ndarray):
    """Sample both arrays at ``matrix @ o + offset`` for every output index ``o``.

    Image: cubic spline, zero outside. Label: for each non-zero value, the linear
    interpolation of its mask thresholded at ``>= 0.5`` (later values win where
    two pass), zero outside. Unlike nearest neighbour this thins corners and thin
    structures the way the authors' batchgenerators pipeline does. Background needs
    no pass: the output starts at zero.
    """
    out = ndimage.affine_transform(image.astype(np.float32, copy=False), matrix, offset,
                                   order=3, mode="constant", cval=0.0)
    if label is None or not label.any():
        return out, (None if label is None else np.zeros_like(label))
    new_label = np.zeros_like(label)
    mask = np.empty(label.shape, dtype=np.float32)
    # affine_transform computes each output coordinate from matrix/offset in C, so
    # no coordinate grid is materialised, neither for the image nor per label value.
    for value in np.unique(label):
        if value == 0:
            continue
        np.equal(label, value, out=mask, casting="unsafe")
        moved = ndimage.affine_transform(mask, matrix, offset, order=1, mode="constant", cval=0.0)
        new_label[moved >= 0.5] = value
    return out, new_label


def _about_centre(matrix: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """Offset so that ``matrix`` acts about the array centre ((s - 1) / 2)."""
    centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    return matrix, centre - matrix @ centre


def rotation_matrix(angle: float, ndim: int) -> np.ndarray:
    """Input-from-output sampling matrix of a rotation by ``angle`` (radians) in
    the plane of the last two axes, i.e. about the first array axis in 3D.

    batchgenerators maps centred output coordinates c to ``c @ R`` with
    ``R = [[cos, -sin], [sin, cos]]`` on the rotated pair, i.e. ``R.T @ c``.
    """
    c, s = math.cos(angle), math.sin(angle)
    m = np.eye(ndim)
    m[-2:, -2:] = np.array([[c, -s], [s, c]]).T
    return m


def rotate(image, label, rng: np.random.Generator, max_degrees: float = 15.0):
    angle = rng.uniform(-max_degrees, max_degrees) / 180.0 * math.pi
    matrix, offset = _about_centre(rotation_matrix(angle, image.ndim), image.shape)
    return resample(image, label, matrix, offset)


def _one_or_other_side(rng: np.random.Generator, low: float, high: float) -> float:
    """batchgenerators' two-sided draw: U(low, 1) or U(1, high) at equal odds."""
    if rng.random() < 0.5 and low < 1:
        return float(rng.uniform(low, 1.0))
    return float(rng.uniform(max(low, 1.0), high))


def scale(image, label, rng: np.random.Generator, low: float = 0.7, high: float = 1.0):
    factor = _one_or_other_side(rng, low, high)
    if factor == 1.0:
        # Resampling at the grid points reproduces the arrays (the spline
        # interpolates, the label masks are 0/1 there); skip the work.
        return image, label
    matrix, offset = _about_centre(np.eye(image.ndim) * factor, image.shape)
    return resample(image, label, matrix, offset)


# ---------------------------------------------------------------- intensity
def blur(image, label, rng: np.random.Generator, sigma=(0.7, 1.3)):
    s = rng.uniform(*sigma)
    return ndimage.gaussian_filter(image, s, order=0, mode="reflect").astype(np.float32, copy=False), label


def brightness(image, label, rng: np.random.Generator, multiplier=(0.7, 1.3)):
    return (image * np.float32(rng.uniform(*multiplier))).astype(np.float32, copy=False), label


def contrast(image, label, rng: np.random.Generator, contrast_range=(0.7, 1.3)):
    factor = _one_or_other_side(rng, *contrast_range)
    mean, lo, hi = image.mean(), image.min(), image.max()
    out = (image - mean) * factor + mean
    return np.clip(out, lo, hi).astype(np.float32, copy=False), label


def gamma(image, label, rng: np.random.Generator, gamma_range=(0.7, 1.3), eps: float = 1e-7):
    mean, std = image.mean(), image.std()
    g = _one_or_other_side(rng, *gamma_range)
    lo = image.min()
    span = image.max() - lo
    out = np.power((image - lo) / (span + eps), g) * span + lo
    out = out - out.mean()
    out = out / (out.std() + 1e-8) * std + mean
    return out.astype(np.float32, copy=False), label


SPATIAL = ("rotation", "scaling")


def per_channel(fn: Callable, name: str, image: np.ndarray, label, rng: np.random.Generator):
    """``fn`` on a (K, *S) image: a spatial transform replays channel 0's draw on every other
    channel (so the channels stay aligned with each other and with the label, which is
    moved once); an intensity transform draws for each channel in turn."""
    if name not in SPATIAL:
        return np.stack([fn(c, None, rng)[0] for c in image]), label
    before = rng.bit_generator.state
    first, label = fn(image[0], label, rng)
    out = [first]
    for c in image[1:]:
        replay = np.random.Generator(type(rng.bit_generator)())
        replay.bit_generator.state = before
        out.append(fn(c, None, replay)[0])
    return np.stack(out), label


TRANSFORMS: dict[str, Callable] = {
    "rotation": rotate, "scaling": scale, "blur": blur,
    "brightness": brightness, "contrast": contrast, "gamma": gamma,
}


class StrongAugment:
    """Random crop to ``patch_size``, then ``num_transforms`` distinct transforms of
    the six in random order, each applied with probability ``prob``.

    ``aug(image, label, rng) -> (image float32, label uint8)`` for one sample;
    ``label`` may be None (returned as None). Works for 2D and 3D arrays, with or
    without a leading channel axis (see :func:`per_channel`).
    """

    def __init__(self, patch_size: Sequence[int], pad_extra: int = 1, num_transforms: int = 3,
                 prob: float = 0.7, transforms: Sequence[str] = TRANSFORM_NAMES):
        unknown = [t for t in transforms if t not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown transforms {unknown}; choose from {list(TRANSFORMS)}")
        if not 0 <= num_transforms <= len(transforms):
            raise ValueError(f"num_transforms must be in 0..{len(transforms)}")
        self.patch_size = tuple(int(p) for p in patch_size)
        self.pad_extra = int(pad_extra)
        self.num_transforms = num_transforms
        self.prob = prob
        self.transforms = tuple(transforms)

    def __call__(self, image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator):
        image, label = random_crop(image, label, self.patch_size, self.pad_extra, rng)
        image = np.ascontiguousarray(image, dtype=np.float32)
        channels = image.ndim > len(self.patch_size)
        chosen = rng.choice(len(self.transforms), size=self.num_transforms, replace=False)
        for k in chosen:
            if rng.random() < self.prob:
                name = self.transforms[k]
                if channels:
                    image, label = per_channel(TRANSFORMS[name], name, image, label, rng)
                else:
                    image, label = TRANSFORMS[name](image, label, rng)
        if label is not None:
            label = np.ascontiguousarray(label, dtype=np.uint8)
        return np.ascontiguousarray(image, dtype=np.float32), label

    def __repr__(self):
        return (f"StrongAugment(patch_size={self.patch_size}, pad_extra={self.pad_extra}, "
                f"{self.num_transforms} of {list(self.transforms)}, p={self.prob})")
