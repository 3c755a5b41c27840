"""Segment a volume with D_theta: the authors' sliding window, or one whole-volume pass.

Sliding window (METHOD.md, "Testing and evaluation"), as the authors' test code
places it, so that their checkpoints give their label maps:

- strides: the "z" stride runs along the FIRST array axis, the "xy" stride along
  the others (2D: both axes take "xy"). For LA, whose arrays are (x, y, z), the
  small stride therefore runs along x, exactly as in the authors' runs.
- padding: if any axis is strictly smaller than the patch, EVERY axis is
  zero-padded by ``max((p - s) // 2 + 1, 0)`` on both sides (an axis equal to the
  patch gets 1).
- windows: along an axis of size s (after padding), patch p, stride d, the
  windows start at ``min(k d, s - p)`` for k = 0 .. ceil((s - p) / d), visited in
  C order (first axis outermost), like the authors' three nested loops.
- the softmax of every window is summed with equal weight and divided by the
  number of windows covering the voxel; argmax, first class on ties.

Equivalence with the authors' test loop (three nested loops over the window
starts, first axis outermost, each window's float32 softmax added into a score
map and a count map, then score / count and argmax): the same windows in the
same order, the same float32 additions per voxel, the same division. Only the
convolutions' own rounding differs between machines and layouts. Their runs
were float32 on a GPU: on CUDA, pass ``amp=False`` (``--no-amp``) for that.

The authors keep the label map padded; we crop it back to the input's shape
(``authors_padding=True`` returns the padded map, for exact reproduction).
MONAI's ``sliding_window_inference`` places its windows like the authors' loop when
the overlap is chosen per axis as 1 - (stride + 0.5) / patch (``--blend gaussian`` uses
it so), but pads a volume smaller than the patch differently, so it cannot reproduce
the authors' maps; hence this module for the paper's uniform average.

What is faster than the authors' loop without changing the computation: several
windows per forward pass, one running sum of probabilities (the coverage count
is the product of per-axis counts, never accumulated), no host copies inside
the loop, and on CPU the channels-last 3D memory layout (oneDNN's fast path for
3D convolutions; 25-35 % less CPU time per window here). Layout and batch size
change only the floating-point rounding inside a convolution: a voxel whose two
best classes are within ~1e-7 can flip, nothing else.

``mode="whole"`` is the fast alternative: the network is fully convolutional, so
one pass over the volume zero-padded to a multiple of 16 replaces the ~40
overlapping windows the paper's 16/4 stride computes per voxel. Its labels are
not the paper's (no averaging, different borders); ``genericssl bench infer``
reports how far they are.
"""
from __future__ import annotations

import itertools
import math
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# The V-Net halves every axis four times.
DIVISOR = 16

STRIDE_PRESETS = {"fine": (16, 4), "medium": (64, 16), "coarse": (128, 32)}  # (xy, z)


# ------------------------------------------------------------------ window placement
def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start of every window along one axis: ``min(k * stride, size - patch)``, k = 0..ceil((size-patch)/stride)."""
    if size < patch:
        raise ValueError(f"axis of size {size} is smaller than the patch {patch}; pad it first")
    if stride < 1:
        raise ValueError(f"stride must be at least 1, got {stride}")
    last = size - patch
    return [min(k * stride, last) for k in range(math.ceil(last / stride) + 1)]


def axis_strides(spatial_dims: int, stride_xy: int, stride_z: int) -> tuple[int, ...]:
    """Per-axis strides from the authors' pair: "z" on the first axis, "xy" on the rest (2D: xy, xy)."""
    if spatial_dims == 3:
        return (int(stride_z), int(stride_xy), int(stride_xy))
    if spatial_dims == 2:
        return (int(stride_xy), int(stride_xy))
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def overlap_strides(patch: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Per-axis strides for a fractional window overlap: stride = round(patch * (1 - overlap)), at least 1."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    return tuple(max(1, int(round(p * (1.0 - overlap)))) for p in patch)


def authors_pad(shape: Sequence[int], patch: Sequence[int]) -> tuple[int, ...]:
    """Zero padding per axis (both sides) the authors apply before the sliding window."""
    if all(s >= p for s, p in zip(shape, patch)):
        return (0,) * len(shape)
    return tuple(max((p - s) // 2 + 1, 0) for s, p in zip(shape, patch))


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of one volume go. Shapes are spatial only."""
    shape: tuple[int, ...]          # the input's
    pad: tuple[int, ...]            # added on both sides of each axis
    padded_shape: tuple[int, ...]
    patch: tuple[int, ...]
    strides: tuple[int, ...]
    starts: tuple[tuple[int, ...], ...]  # per axis

    @property
    def num_windows(self) -> int:
        return math.prod(len(s) for s in self.starts)

    def windows(self):
        """Window corners in the authors' visiting order (first axis outermost)."""
        return itertools.product(*self.starts)

    def axis_counts(self) -> list[np.ndarray]:
        """How many windows cover each index, per axis; the coverage of a voxel is their product."""
        out = []
        for size, p, starts in zip(self.padded_shape, self.patch, self.starts):
            c = np.zeros(size, np.float32)
            for s in starts:
                c[s:s + p] += 1
            out.append(c)
        return out


def plan_windows(shape: Sequence[int], patch: Sequence[int], strides: Sequence[int]) -> WindowPlan:
    shape, patch, strides = tuple(map(int, shape)), tuple(map(int, patch)), tuple(map(int, strides))
    if not len(shape) == len(patch) == len(strides):
        raise ValueError(f"volume {shape}, patch {patch} and strides {strides} must have as many axes")
    pad = authors_pad(shape, patch)
    padded = tuple(s + 2 * q for s, q in zip(shape, pad))
    starts = tuple(tuple(window_starts(s, p, d)) for s, p, d in zip(padded, patch, strides))
    return WindowPlan(shape, pad, padded, patch, strides, starts)


def whole_pad(shape: Sequence[int], divisor: int = DIVISOR) -> list[tuple[int, int]]:
    """(before, after) zero padding that brings every axis to a multiple of ``divisor``."""
    out = []
    for s in shape:
        extra = -int(s) % divisor
        out.append((extra // 2, extra - extra // 2))
    return out


# ------------------------------------------------------------------ the test model
def prepare_model(model: torch.nn.Module, device: torch.device | str | None = None,
                  channels_last: bool | None = None) -> torch.nn.Module:
    """The test model, in place: eval mode, on ``device``, channels-last 3D weights where faster.

    ``channels_last=None`` picks it for 3D models on the CPU, where it measured
    faster for nearly every layer of this network (the full-resolution and the
    transposed convolutions most) and changes results only by rounding. The
    weights must be converted (not just the input): with a one-channel input the
    layout does not propagate from the image.
    """
    if device is not None:
        model = model.to(torch.device(device))
    model = model.eval()
    if channels_last is None:
        channels_last = _model_device(model).type == "cpu" and getattr(model, "spatial_dims", 3) == 3
    if channels_last and not _channels_last(model):
        model = model.to(memory_format=torch.channels_last_3d)
    elif channels_last is False and _channels_last(model):
        model = model.to(memory_format=torch.contiguous_format)
    return model


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _channels_last(model: torch.nn.Module) -> bool:
    # The first weight with more than one input channel tells the layout prepare_model chose.
    for p in model.parameters():
        if p.dim() == 5 and p.shape[1] > 1:
            return p.is_contiguous(memory_format=torch.channels_last_3d) and not p.is_contiguous()
    return False


def _autocast(device: torch.device, amp: bool | None):
    if amp is None:
        amp = device.type == "cuda"
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, enabled=False)


def _progress(total: int, desc: str | None, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc or "windows", unit="win", file=sys.stderr, disable=not enabled,
                leave=False, dynamic_ncols=True)


# ------------------------------------------------------------------ the two modes
def _as_input(image, spatial_dims: int, device: torch.device) -> torch.Tensor:
    """(K, *S) float32 tensor on ``device`` from a (*S) or (K, *S) array or tensor."""
    x = torch.as_tensor(np.asarray(image, dtype=np.float32) if not torch.is_tensor(image) else image)
    x = x.to(device=device, dtype=torch.float32)
    if x.dim() == spatial_dims:
        x = x[None]
    if x.dim() != spatial_dims + 1:
        raise ValueError(f"expected a {spatial_dims}D volume (optionally with a channel axis first), "
                         f"got shape {tuple(x.shape)}")
    return x


def _forward_probs(model, batch: torch.Tensor, amp: bool | None, channels_last: bool) -> torch.Tensor:
    if channels_last and batch.dim() == 5:
        batch = batch.contiguous(memory_format=torch.channels_last_3d)
    with _autocast(batch.device, amp):
        logits = model(batch)
    return torch.softmax(logits.float(), dim=1)


def sliding_window_probs(model: torch.nn.Module, image, patch: Sequence[int], strides: Sequence[int], *,
                         batch_windows: int = 4, amp: bool | None = None, progress: bool = False,
                         desc: str | None = None) -> tuple[torch.Tensor, WindowPlan]:
    """Window-averaged softmax (C, *padded S) on the model's device, and the plan that placed the windows.

    ``image``: (*S) or (K, *S). Memory stays at one probability sum plus one
    batch of windows, whatever the number of windows.
    """
    device = _model_device(model)
    spatial_dims = len(patch)
    x = _as_input(image, spatial_dims, device)
    plan = plan_windows(x.shape[1:], patch, strides)
    if any(plan.pad):
        x = F.pad(x, [q for q in reversed(plan.pad) for _ in (0, 1)])
    batch_windows = max(1, int(batch_windows))
    channels_last = _channels_last(model)
    prob_sum = None
    corners = list(plan.windows())
    with torch.inference_mode(), _progress(len(corners), desc, progress) as bar:
        for i in range(0, len(corners), batch_windows):
            chunk = corners[i:i + batch_windows]
            regions = [tuple(slice(c, c + p) for c, p in zip(corner, patch)) for corner in chunk]
            batch = torch.stack([x[(slice(None),) + r] for r in regions])
            probs = _forward_probs(model, batch, amp, channels_last)
            if prob_sum is None:
                prob_sum = torch.zeros((probs.shape[1],) + plan.padded_shape, dtype=torch.float32, device=device)
            # One window at a time, in the authors' order: the same float sums as their loop.
            for j, r in enumerate(regions):
                prob_sum[(slice(None),) + r] += probs[j]
            bar.update(len(chunk))
        counts = plan.axis_counts()
        cover = torch.from_numpy(counts[0]).to(device)
        for c in counts[1:]:
            cover = cover[..., None] * torch.from_numpy(c).to(device)
        prob_sum /= cover
    return prob_sum, plan


def whole_volume_probs(model: torch.nn.Module, image, spatial_dims: int = 3, *, amp: bool | None = None
                       ) -> torch.Tensor:
    """Softmax (C, *S) of one pass over the volume zero-padded to a multiple of 16, cropped back."""
    device = _model_device(model)
    x = _as_input(image, spatial_dims, device)
    pads = whole_pad(x.shape[1:])
    x = F.pad(x, [q for before_after in reversed(pads) for q in before_after])
    with torch.inference_mode():
        probs = _forward_probs(model, x[None], amp, _channels_last(model))[0]
    crop = tuple(slice(lo, x.shape[1 + i] - hi) for i, (lo, hi) in enumerate(pads))
    return probs[(slice(None),) + crop]


def predict_volume(model, image, patch_size: Sequence[int], *,
                   stride_xy: int = 16, stride_z: int = 4, strides: Sequence[int] | None = None,
                   mode: str = "window", batch_windows: int = 4, authors_padding: bool = False,
                   amp: bool | None = None, progress: bool = False, desc: str | None = None,
                   device: torch.device | str | None = None, channels_last: bool | None = None,
                   blend: str = "uniform", tta: str = "none") -> np.ndarray:
    """Label map (uint8) of one volume with D_theta.

    Args:
        model: a DiffVNet, or a list of them (an ensemble: their softmax is averaged).
            It is put in eval mode, moved to ``device`` when one is
            given and, unless ``channels_last=False``, given channels-last weights
            on the CPU (:func:`prepare_model`; in place, results change only by rounding).
        image: (*S) or (K, *S) array, already normalised; S has the model's
            spatial_dims axes, or one more for a 2D model, which then predicts
            slice by slice along the first axis.
        patch_size: the window, one size per spatial axis.
        stride_xy, stride_z: the authors' strides (z on the first axis); ignored
            when ``strides`` gives one stride per axis (e.g. :func:`overlap_strides`).
        mode: ``"window"`` (the paper's sliding window) or ``"whole"`` (one pass).
        batch_windows: windows per forward pass.
        authors_padding: return the padded map of a volume smaller than the patch,
            as the authors do (default: crop back to the input's shape).
        amp: float16 autocast; None means on for CUDA only.
        progress: a progress bar (windows, or slices for a 2D model) on stderr.
        device: where to run (default: where the model is).
        blend: ``"uniform"`` (the paper's: every window's softmax counts the same) or
            ``"gaussian"`` (nnU-Net/MONAI importance weighting, through MONAI's
            ``sliding_window_inference`` with the same window starts).
        tta: ``"none"`` (the paper's) or ``"mirror"`` (softmax averaged over the
            2^D axis flips, nnU-Net's default; 2^D times the work).

    Returns:
        (*S) uint8 labels (padded when ``authors_padding`` and padding was needed).
    """
    spatial_dims = len(patch_size)
    models = _model_list(model)
    models = [prepare_model(m, device, channels_last) for m in models]
    arr = image if torch.is_tensor(image) else np.asarray(image)
    if spatial_dims == 2 and arr.ndim == 3 and getattr(models[0], "in_channels", 1) == 1:
        slices = []
        from tqdm import tqdm
        for k in tqdm(range(arr.shape[0]), desc=desc or "slices", unit="slice", file=sys.stderr,
                      disable=not progress, leave=False):
            slices.append(predict_volume(models if len(models) > 1 else models[0], arr[k], patch_size,
                                         stride_xy=stride_xy, stride_z=stride_z,
                                         strides=strides, mode=mode, batch_windows=batch_windows,
                                         authors_padding=authors_padding, amp=amp, blend=blend, tta=tta))
        return np.stack(slices)
    probs = predict_probs(models if len(models) > 1 else models[0], arr, patch_size, stride_xy=stride_xy,
                          stride_z=stride_z, strides=strides, mode=mode, batch_windows=batch_windows,
                          authors_padding=authors_padding, amp=amp, progress=progress, desc=desc,
                          channels_last=channels_last, blend=blend, tta=tta)
    return labels_from_probs(probs)


def labels_from_probs(probs: torch.Tensor) -> np.ndarray:
    """Argmax over the class axis (first class on ties), as uint8 (int16 beyond 256 classes)."""
    labels = torch.argmax(probs, dim=0)
    dtype = np.uint8 if probs.shape[0] <= 256 else np.int16
    return labels.to(torch.int16 if dtype == np.int16 else torch.uint8).cpu().numpy()


BLENDS = ("uniform", "gaussian")
TTAS = ("none", "mirror")


def _model_list(model) -> list:
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ValueError("no model given")
    return models


def mirror_flips(spatial_dims: int, tta: str = "mirror") -> list[tuple[int, ...]]:
    """The spatial axes each test-time pass flips: () alone for ``tta="none"``, all 2^D subsets for mirror."""
    if tta == "none":
        return [()]
    if tta != "mirror":
        raise ValueError(f"tta must be one of {', '.join(TTAS)}, got {tta!r}")
    axes = range(spatial_dims)
    return [c for k in range(spatial_dims + 1) for c in itertools.combinations(axes, k)]


def predict_probs(model, image, patch_size: Sequence[int], *, stride_xy: int = 16,
                  stride_z: int = 4, strides: Sequence[int] | None = None, mode: str = "window",
                  batch_windows: int = 4, authors_padding: bool = False, amp: bool | None = None,
                  progress: bool = False, desc: str | None = None, device: torch.device | str | None = None,
                  channels_last: bool | None = None, blend: str = "uniform", tta: str = "none") -> torch.Tensor:
    """The averaged softmax (C, *S) behind :func:`predict_volume` (same arguments), on the model's device.

    With several models (an ensemble) and/or mirror TTA, the softmax of every
    (model, flip) pass is averaged with equal weight; one model without TTA is the
    single pass itself, bit for bit.
    """
    spatial_dims = len(patch_size)
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    flips = mirror_flips(spatial_dims, tta)
    models = [prepare_model(m, device, channels_last) for m in _model_list(model)]
    if strides is None:
        strides = axis_strides(spatial_dims, stride_xy, stride_z)
    total, passes = None, 0
    for k, m in enumerate(models):
        x = _as_input(image, spatial_dims, _model_device(m))
        for flip in flips:
            dims = [1 + a for a in flip]
            name = desc
            if len(models) * len(flips) > 1:
                name = f"{desc or 'windows'} [{'model %d ' % (k + 1) if len(models) > 1 else ''}" \
                       f"{'flip ' + ''.join(map(str, flip)) if flip else 'no flip'}]"
            probs = _single_pass_probs(m, torch.flip(x, dims) if dims else x, patch_size, strides, mode=mode,
                                       batch_windows=batch_windows, authors_padding=authors_padding, amp=amp,
                                       progress=progress, desc=name, blend=blend)
            if dims:
                probs = torch.flip(probs, dims)
            if total is None:
                total = probs
            else:
                if probs.shape != total.shape:
                    raise ValueError(f"the models disagree on the output: {tuple(total.shape)} vs "
                                     f"{tuple(probs.shape)} (different numbers of classes?)")
                with torch.inference_mode():
                    total += probs.to(total.device)
            passes += 1
    if passes == 1:
        return total
    with torch.inference_mode():
        return total / passes


def _single_pass_probs(model, image, patch_size, strides, *, mode, batch_windows, authors_padding, amp,
                       progress, desc, blend) -> torch.Tensor:
    spatial_dims = len(patch_size)
    if mode == "whole":
        return whole_volume_probs(model, image, spatial_dims, amp=amp)
    if mode != "window":
        raise ValueError(f"mode must be 'window' or 'whole', got {mode!r}")
    if blend == "gaussian":
        return gaussian_window_probs(model, image, patch_size, strides, batch_windows=batch_windows, amp=amp,
                                     progress=progress)
    probs, plan = sliding_window_probs(model, image, patch_size, strides, batch_windows=batch_windows, amp=amp,
                                       progress=progress, desc=desc)
    if authors_padding or not any(plan.pad):
        return probs
    crop = tuple(slice(q, q + s) for q, s in zip(plan.pad, plan.shape))
    return probs[(slice(None),) + crop]


def gaussian_window_probs(model: torch.nn.Module, image, patch: Sequence[int], strides: Sequence[int], *,
                          batch_windows: int = 4, amp: bool | None = None, progress: bool = False) -> torch.Tensor:
    """Softmax (C, *S) with Gaussian importance weighting of each window (nnU-Net's, sigma = patch / 8).

    MONAI's ``sliding_window_inference`` does the blending. Its window interval is
    ``int(patch * (1 - overlap))``, so the overlap ``1 - (stride + 0.5) / patch`` per
    axis puts the windows where our strides do (and the last one flush with the
    end); only padding differs (MONAI pads a short axis to the patch, symmetric,
    and crops back).
    """
    from monai.inferers import sliding_window_inference

    device = _model_device(model)
    x = _as_input(image, len(patch), device)[None]
    overlap = [min(max(0.0, 1.0 - (s + 0.5) / p), 0.999) for s, p in zip(strides, patch)]
    channels_last = _channels_last(model)
    with torch.inference_mode():
        out = sliding_window_inference(
            x, roi_size=list(patch), sw_batch_size=max(1, int(batch_windows)),
            predictor=lambda b: _forward_probs(model, b, amp, channels_last), overlap=overlap,
            mode="gaussian", sigma_scale=0.125, padding_mode="constant", cval=0.0, progress=progress)
    return out[0].float()
