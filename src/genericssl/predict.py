"""Segment new scans with trained checkpoints: what `genericssl predict` does, as a library.

A NIfTI scan goes through its dataset's preparation (reorientation, resizing,
intensity handling), is segmented, and its label map is mapped back onto the
scan's own grid (nearest neighbour) and written as ``<name>_seg.nii.gz`` with the
scan's affine and header. A prepared ``.npy`` array (``<id>_image.npy``) is only
normalised; its label map is written as ``<id>.npy``, the name
``genericssl evaluate`` pairs with ``<id>_label.npy``.

Options beyond the paper's prediction (:class:`PredictOptions`): several
checkpoints (an ensemble, softmax averaged), mirror test-time augmentation,
Gaussian window blending, the averaged softmax written beside the labels
(float16 ``.npz``, on the scan's own grid), the largest connected component per
class, and a PNG overlay per scan. Every output folder also gets the viewers'
label files (ITK-SNAP, 3D Slicer) with the dataset's class names.

    from genericssl.predict import PredictOptions, load_predictor, predict_paths
    predictor = load_predictor(["seed0/best_model.pth", "seed1/best_model.pth"],
                               options=PredictOptions(tta="mirror"))
    summary = predict_paths(predictor, "scans/", "seg/")
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import UserError
from .prepare.common import resize_nearest  # noqa: F401  (re-exported: callers import it from here)

SKIP_SUFFIXES = ("_label.npy",)  # prepared ground truth beside the images
PROB_SUFFIX = "_probs.npz"


# ------------------------------------------------------------------ raw scans
@dataclass
class RawPreparation:
    """How a new NIfTI scan reaches the training grid, and how its labels come back.

    ``forward(data_xyz, affine) -> (array in the model's axes, context)``;
    ``backward(labels, context) -> labels (x, y, z)`` on the scan's grid.
    """
    name: str
    forward: Callable
    backward: Callable
    note: str | None = None


def _through(prepare_image, restore_label, axes: str, orientation=None) -> tuple[Callable, Callable]:
    """forward/backward around a dataset's own ``prepare_image``/``restore_label`` (prepare/*.py),
    which work on arrays in the model's order: the NIfTI axes and, where the dataset has one,
    its orientation are turned on the way in and back on the way out."""
    from .imageio import from_array_axes, to_array_axes
    from .prepare.common import reorient, unorient

    def forward(data, affine):
        if orientation:
            data, _ = reorient(data, affine, orientation)
        arr, restore = prepare_image(to_array_axes(data, axes))
        return arr, (restore, affine)

    def backward(labels, ctx):
        restore, affine = ctx
        out = from_array_axes(restore_label(labels, restore), axes)
        return unorient(out, affine, orientation) if orientation else out

    return forward, backward


def _custom_preparation(axes: str, data_dir) -> RawPreparation:
    """A custom dataset's reorientation and resampling, as its dataset.json recorded them."""
    from .prepare import custom

    path = Path(data_dir) / "dataset.json" if data_dir is not None else None
    try:
        recorded = json.loads(path.read_text()).get("preparation") if path and path.is_file() else None
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        where = path if path is not None else "the prepared dataset"
        return RawPreparation(
            "axes only", *_through(custom.prepare_image, custom.restore_label, axes),
            f"{where} records no orientation or resampling (missing, or prepared by an older genericssl): "
            f"the scan is only reordered to the model's axes; give --data-dir the prepared folder, or re-run "
            f"`genericssl prepare custom`")
    orientation, resample = recorded.get("orientation"), recorded.get("resample")
    if recorded.get("spacing") is not None:
        return _spacing_preparation(orientation, recorded["spacing"])
    steps = ([f"reorient to {orientation}"] if orientation else []) + \
        ([f"resize to {'x'.join(map(str, resample))} (trilinear)"] if resample else [])
    return RawPreparation(", ".join(steps) or "axes only",
                          *_through(lambda image: custom.prepare_image(image, resample), custom.restore_label,
                                    axes, orientation))


def _spacing_preparation(orientation, spacing) -> RawPreparation:
    """A dataset prepared from its scans' own layout (``prepare nnunet``/``decathlon``): the scan is
    reoriented and resampled to the dataset's spacing; its labels come back by nearest neighbour."""
    from .prepare import scans

    steps = ([f"reorient to {orientation}"] if orientation else []) + \
        [f"resample to {'x'.join(f'{v:g}' for v in spacing)} mm (z, y, x; cubic spline)"]
    return RawPreparation(", ".join(steps), lambda data, affine: scans.scan_to_grid([data], affine, orientation,
                                                                                      spacing),
                          scans.labels_to_scan)


def raw_preparation(cfg, axes: str, enabled: bool = True, data_dir=None) -> RawPreparation:
    """The preparation of ``cfg.dataset``'s training data that can run without a label
    (``data_dir``: the prepared folder, whose dataset.json a custom dataset's steps are read from)."""
    from .imageio import from_array_axes, to_array_axes
    from .prepare import la, mmwhs, mnms, synapse

    if enabled and cfg.dataset == "custom":
        return _custom_preparation(axes, data_dir)
    if not enabled or cfg.dataset not in ("synapse", "mmwhs", "mnms", "la"):
        return RawPreparation("axes only", lambda data, affine: (to_array_axes(data, axes), None),
                              lambda labels, ctx: from_array_axes(labels, axes))
    if cfg.dataset == "synapse":
        return RawPreparation(f"resize to {'x'.join(map(str, synapse.SIZE))} (trilinear)",
                              *_through(synapse.prepare_image, synapse.restore_label, axes))
    if cfg.dataset == "mmwhs":
        note = ("MMWHS training volumes were cropped to the heart's bounding box, which needs a label: a new "
                "scan is segmented over its whole field of view (clip and z-score from the whole volume), "
                "so expect lower accuracy than on prepared cases")
        return RawPreparation(f"reorient to RAI, clip to [0, p98], z-score, resize to {mmwhs.SIZE}^3",
                              *_through(mmwhs.prepare_image, mmwhs.restore_label, axes, mmwhs.RAI), note)
    if cfg.dataset == "mnms":
        note = ("M&Ms training frames kept only the labeled slices, which needs a label: a new scan is "
                "segmented on all its slices")
        if cfg.spatial_dims == 3:
            return RawPreparation(f"central in-plane crop, resize to {'x'.join(map(str, mnms.SIZE))}",
                                  *_through(mnms.prepare_image, mnms.restore_label, axes), note)
        return RawPreparation(f"central in-plane crop, slices resized to short side {mnms.SHORT_SIDE}",
                              *_through(mnms.prepare_image_2d, mnms.restore_label, axes), note)
    return RawPreparation("axes only", *_through(la.prepare_image, la.restore_label, axes))


# ------------------------------------------------------------------ inputs
def collect_inputs(path: Path, suffix: str) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files to predict, and (file, why) for those of a folder that are left out."""
    from .imageio import SCAN_EXTS, kind_of

    if not path.exists():
        raise UserError(f"--input {path} does not exist")
    if path.is_file():
        if kind_of(path) is None:
            raise UserError(f"--input {path}: not a scan (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) or .npy file")
        return [path], []
    files, skipped = [], []
    for p in sorted(path.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            skipped.append((p, "a folder (folders are not searched)"))
        elif kind_of(p) is None:
            skipped.append((p, "not a scan or .npy file"))
        elif p.name.endswith(SKIP_SUFFIXES):
            skipped.append((p, "a prepared label array"))
        elif suffix and any(p.name.lower().endswith(f"{suffix}{e}") for e in SCAN_EXTS):
            skipped.append((p, f"a label map written by predict (ends with {suffix})"))
        elif p.name.lower().endswith(".raw") or p.name.lower().endswith(".zraw"):
            skipped.append((p, "the voxel data of an .mhd header"))
        else:
            files.append(p)
    if not files:
        raise UserError(f"--input {path}: no scans (NIfTI, NRRD, MHA) or .npy images in this folder")
    return files, skipped


CHANNEL_FILE = r"(.+)_(\d{4})$"


def group_channels(files: list[Path], channels: int) -> tuple[list, list[tuple[Path, str]]]:
    """Inputs for a model of ``channels`` channels: nnU-Net's one file per channel
    (``<case>_0000.nii.gz``, ``<case>_0001.nii.gz``...) becomes one input, a list of paths in
    channel order; any other file is an input of its own (a 4D file may hold the channels).
    With one channel every file is its own input. Returns (inputs, (file, why) left out)."""
    import re

    from .imageio import kind_of, stem_of

    if channels <= 1:
        return list(files), []
    groups: dict[tuple, dict[int, Path]] = {}
    inputs, bad = [], []
    for f in files:
        m = re.match(CHANNEL_FILE, stem_of(f))
        if m and kind_of(f) != "npy":
            groups.setdefault((f.parent, m.group(1), kind_of(f)), {})[int(m.group(2))] = f
        else:
            inputs.append(f)
    for (_, case, _), chans in sorted(groups.items(), key=lambda kv: kv[0][1]):
        if sorted(chans) != list(range(channels)):
            for f in chans.values():
                bad.append((f, f"case {case} has channel file(s) {sorted(chans)}; the model needs exactly "
                               f"{channels}: _0000 ... _{channels - 1:04d}"))
            continue
        inputs.append([chans[k] for k in range(channels)])
    return sorted(inputs, key=lambda i: str(i[0] if isinstance(i, list) else i)), bad


def channel_case(files: list[Path]) -> str:
    """The case name of a group of channel files: ``ab_0000.nii.gz``, ... -> ``ab``."""
    import re

    from .imageio import stem_of

    return re.match(CHANNEL_FILE, stem_of(files[0])).group(1)


def input_name(inp) -> str:
    """A printable name of an input (a file, or a case of channel files)."""
    return f"{channel_case(inp)} ({len(inp)} channel files)" if isinstance(inp, list) else inp.name


def write_or_fail(out: Path, write) -> None:
    """Run ``write``; an OSError (a full disk, an unwritable folder) becomes a UserError naming
    ``out``, so that one scan that cannot be written is skipped like one that cannot be read."""
    try:
        write()
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None


def skip_line(path, why: str) -> str:
    """``name: why``, unless ``why`` already starts with the name or names the file in full."""
    if isinstance(path, list):
        name = input_name(path)
        return why if any(str(p) in why for p in path) else f"{name}: {why}"
    return why if why.startswith(path.name) or str(path) in why else f"{path.name}: {why}"


def output_path(path, out_dir: Path, suffix: str, output_format: str = "nifti") -> Path:
    """Where the label map of ``path`` (a file, or a case's channel files) goes; ``output_format``
    "same" keeps the scan's format (NIfTI, NRRD, MHA), else "nifti", "nrrd" or "mha"."""
    from .imageio import kind_of, output_extension, stem_of

    if isinstance(path, list):
        stem, path = channel_case(path), path[0]
    else:
        stem = stem_of(path)
    if kind_of(path) == "npy":
        return out_dir / f"{stem.removesuffix('_image') or stem}.npy"
    return out_dir / f"{stem}{suffix}{output_extension(path, output_format)}"


# ------------------------------------------------------------------ the predictor
@dataclass
class PredictOptions:
    """How to predict. The defaults are the paper's: one model, uniform windows, no TTA."""
    mode: str = "window"                 # "window" (the paper's) or "whole" (one pass)
    strides: tuple | None = None         # per axis; None: the configuration's stride_xy/stride_z
    batch_windows: int = 4
    authors_padding: bool = False
    normalize: bool = True
    prepare: bool = True                 # NIfTI inputs through the dataset's preparation
    axes: str | None = None              # array axes of the model; None: dataset.json's
    frame: int | str | None = None       # 4D inputs: a frame number or "all"
    suffix: str = "_seg"
    output_format: str = "same"          # label maps as the scan's own format, or "nifti"/"nrrd"/"mha"
    amp: bool | None = None
    tta: str = "none"                    # or "mirror"
    blend: str = "uniform"               # or "gaussian"
    save_probabilities: bool = False
    largest_component: str | None = None  # "all" or "1,3"
    overlay: bool = False
    progress: bool = True


@dataclass
class Predictor:
    models: list
    cfg: object
    strides: tuple
    prep: "RawPreparation"
    options: PredictOptions
    lcc_classes: list = field(default_factory=list)
    noted: bool = False

    def probabilities(self, array: np.ndarray, desc: str, authors_padding: bool = False):
        """The averaged softmax (C, *S) of one prepared array, as a CPU float32 tensor."""
        import torch

        from .data.cases import normalize_channels, normalize_intensity
        from .inference import predict_probs

        if not np.all(np.isfinite(array)):
            raise UserError(f"{desc}: the image holds NaN or infinite values")
        o = self.options
        if not o.normalize:
            image = array.astype(np.float32)
        elif self.cfg.in_channels > 1:  # each sequence on its own scale, as training read it
            image = normalize_channels(array, self.cfg.intensity)
        else:
            image = normalize_intensity(array, self.cfg.intensity)
        models = self.models if len(self.models) > 1 else self.models[0]
        kw = dict(strides=self.strides, mode=o.mode, batch_windows=o.batch_windows,
                  authors_padding=authors_padding, amp=o.amp, blend=o.blend, tta=o.tta)
        if len(self.cfg.patch_size) == 2 and image.ndim == 3 and self.cfg.in_channels == 1:
            # A 2D model predicts slice by slice along the first axis.
            probs = [predict_probs(models, image[k], self.cfg.patch_size, **kw).cpu() for k in range(len(image))]
            return torch.stack(probs, dim=1)
        return predict_probs(models, image, self.cfg.patch_size, progress=o.progress, desc=desc, **kw).cpu()

    def labels(self, probs) -> np.ndarray:
        from .inference import labels_from_probs
        from .postprocess import largest_component

        labels = labels_from_probs(probs)
        return largest_component(labels, self.lcc_classes) if self.lcc_classes else labels

    def channel_frames(self, paths: list[Path]) -> tuple:
        """(volume whose grid the labels take, [frames]): each frame a list of the model's channels,
        3D arrays (x, y, z). A wrong number of channels is refused with the file named."""
        from .imageio import as_3d, read_volume
        from .prepare.common import affines_match

        o, k = self.options, self.cfg.in_channels
        vols = [read_volume(p) for p in paths]
        vol = vols[0]
        if k == 1:
            if len(vols) > 1:
                raise UserError(f"{paths[0]}: the model takes one channel, not {len(vols)} files")
            if o.frame == "all" and vol.data.ndim == 4:
                return vol, [[vol.data[..., t]] for t in range(vol.data.shape[3])]
            return vol, [[as_3d(vol, None if o.frame in (None, "all") else int(o.frame))]]
        if len(vols) == 1:
            data = vol.data
            while data.ndim > 4 and data.shape[-1] == 1:
                data = data[..., 0]
            if data.ndim != 4 or data.shape[3] != k:
                raise UserError(f"{vol.path} has shape {tuple(data.shape)}: the model was trained on {k} channels, "
                                f"so a scan is {k} files <case>_0000 ... _{k - 1:04d} or one 4D file with {k} "
                                f"channels on its last axis")
            return vol, [[data[..., c] for c in range(k)]]
        chans = []
        for v in vols:
            d = as_3d(v)
            if d.shape != vol.data.shape[:3] or not affines_match(v.affine, vol.affine, d.shape):
                raise UserError(f"{v.path} is not on the grid of {vol.path} (shape {d.shape} vs "
                                f"{vol.data.shape[:3]}, or another affine): a case's channels must share one grid")
            chans.append(d)
        return vol, [chans]

    def forward(self, channels: list, affine) -> tuple:
        """The preparation of each channel, stacked channels first when there are several."""
        arrays, ctx = [], None
        for c in channels:
            arr, ctx = self.prep.forward(c, affine)
            arrays.append(arr)
        return (arrays[0] if len(arrays) == 1 else np.stack(arrays)), ctx

    def predict_file(self, path, out: Path) -> str:
        from .imageio import read_volume, write_label_map, write_npy

        o = self.options
        paths = path if isinstance(path, list) else [path]
        path = paths[0]
        vol = read_volume(path) if len(paths) == 1 else None
        if vol is not None and vol.kind == "npy":
            arr = vol.data
            k = self.cfg.in_channels
            want = {self.cfg.spatial_dims + (k > 1), 3 + (k > 1)}
            if arr.ndim not in want or (k > 1 and arr.shape[0] != k):
                raise UserError(f"{path} is {arr.ndim}D with shape {tuple(arr.shape)}; expected a prepared "
                                f"{'2D or 3D' if self.cfg.spatial_dims == 2 else '3D'} array"
                                + (f" with {k} channels first" if k > 1 else ""))
            probs = self.probabilities(arr, path.name, o.authors_padding)
            labels = self.labels(probs)
            write_or_fail(out, lambda: write_npy(out, labels))
            if o.save_probabilities:
                self._write_probs(out, probs.numpy())
            if o.overlay:
                self._overlay(out, arr, labels)
            return f"{tuple(arr.shape)} -> {tuple(labels.shape)}"
        if self.prep.note and not self.noted:
            print(f"note: {self.prep.note}")
            self.noted = True
        vol, frames = self.channel_frames(paths)
        maps, prob_maps = [], []
        for t, data in enumerate(frames):
            arr, ctx = self.forward(data, vol.affine)
            desc = path.name if len(frames) == 1 else f"{path.name} t={t}"
            probs = self.probabilities(arr, desc)
            maps.append(self.prep.backward(self.labels(probs), ctx))
            if o.save_probabilities:
                prob_maps.append(self._probs_back(probs.numpy(), ctx))
        labels = maps[0] if len(maps) == 1 else np.stack(maps, axis=-1)
        write_or_fail(out, lambda: write_label_map(out, labels, vol, self.cfg.num_classes))
        if o.save_probabilities:
            self._write_probs(out, prob_maps[0] if len(prob_maps) == 1 else np.stack(prob_maps, axis=-1),
                              affine=vol.affine)
        if o.overlay:
            self._overlay(out, frames[0][0], maps[0])
        return f"{tuple(vol.data.shape)}{f' x {len(paths)} channels' if len(paths) > 1 else ''} -> {out.name}"

    def _probs_back(self, probs: np.ndarray, ctx) -> np.ndarray:
        """Class probabilities on the scan's grid: each foreground channel through the same
        nearest-neighbour way back as the labels; background is the rest, so that outside the
        prepared box (background in the label map) it is 1 and every voxel sums to 1."""
        fg = [self.prep.backward(p, ctx).astype(np.float32) for p in probs[1:]]
        return np.stack([1.0 - np.sum(fg, axis=0)] + fg)

    def _write_probs(self, out: Path, probs: np.ndarray, affine=None) -> None:
        path = probability_path(out, self.options.suffix)
        extra = {} if affine is None else {"affine": np.asarray(affine, np.float64)}

        def write():
            tmp = path.with_name(path.name + ".tmp.npz")
            np.savez_compressed(tmp, probabilities=probs.astype(np.float16), **extra)
            tmp.replace(path)
        write_or_fail(path, write)

    def _overlay(self, out: Path, image: np.ndarray, labels: np.ndarray) -> None:
        from .plots import plot_overlays

        png = out.with_name(out.name.split(".")[0] + "_overlay.png")
        image = np.asarray(image, np.float32)
        if image.ndim == 4:  # channels first: show the first
            image = image[0]
        write_or_fail(png, lambda: plot_overlays(image, {"prediction": labels}, png, self.cfg.num_classes,
                                                 title=out.name))


def probability_path(label_path: Path, suffix: str = "_seg") -> Path:
    """``scan_seg.nii.gz`` (or .nrrd, .mha) -> ``scan_probs.npz``; ``case7.npy`` -> ``case7_probs.npz``."""
    from .imageio import SCAN_EXTS

    stem = label_path.name.split(".")[0]
    is_scan = label_path.name.lower().endswith(SCAN_EXTS)
    stem = stem.removesuffix(suffix) if suffix and is_scan else stem
    return label_path.with_name(stem + PROB_SUFFIX)


def resolve_strides(cfg, stride_xy: int | None = None, stride_z: int | None = None,
                    preset: str | None = None, overlap: float | None = None) -> tuple[int, ...]:
    """Per-axis strides: the configuration's, a preset (fine/medium/coarse), explicit ones, or an overlap."""
    from .inference import STRIDE_PRESETS, axis_strides, overlap_strides

    xy, z = cfg.stride_xy, cfg.stride_z
    if preset:
        xy, z = STRIDE_PRESETS[preset]
    xy = xy if stride_xy is None else stride_xy
    z = z if stride_z is None else stride_z
    if overlap is not None:
        try:
            return overlap_strides(cfg.patch_size, overlap)
        except ValueError as e:
            raise UserError(f"--overlap: {e}") from None
    if xy < 1 or z < 1:
        raise UserError(f"strides must be at least 1 (got xy {xy}, z {z})")
    return axis_strides(cfg.spatial_dims, xy, z)


def load_checkpoint_model(checkpoint, base=None, overrides: dict | None = None):
    """(model, cfg): our checkpoint's own configuration, or the task's (``base``) for the authors' files."""
    from .checkpoint import architecture_of, build_model, config_from_checkpoint, load_checkpoint
    from .config import TaskConfig

    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    ckpt = load_checkpoint(checkpoint)
    if base is None and "config" not in ckpt and "patch_size" not in overrides:
        print(f"warning: {checkpoint} carries no configuration and no --task was given: patch "
              f"{'x'.join(map(str, TaskConfig().patch_size))} and plain min-max intensity scaling are assumed; "
              f"pass the --task it was trained for", file=sys.stderr)
    if base is not None and "config" not in ckpt:
        # The authors' files say nothing of their task; a preset that disagrees with the weights is the wrong one.
        arch = architecture_of(ckpt["state_dict"])
        wrong = [f"{k}: checkpoint has {arch[k]}, task {base.name} has {getattr(base, k)}"
                 for k in ("num_classes", "base_filters", "spatial_dims")
                 if overrides.get(k) is None and arch[k] != getattr(base, k)]
        if wrong:
            raise UserError(f"{checkpoint} does not fit this task ({'; '.join(wrong)}); pass the task it "
                            f"was trained for, or override with --num-classes/--base-filters")
    cfg = config_from_checkpoint(ckpt, base, overrides, source=str(checkpoint)).validate()
    model = build_model(cfg, ckpt["state_dict"], source=str(checkpoint))
    return model.eval(), cfg


# What every member of an ensemble must share with the first: its outputs are averaged voxel by voxel.
_ENSEMBLE_FIELDS = ("num_classes", "in_channels", "spatial_dims", "patch_size", "intensity", "dataset")


def load_predictor(checkpoints: Sequence, *, base=None, overrides: dict | None = None,
                   options: PredictOptions | None = None, device="auto", data_dir=None,
                   strides: tuple | None = None) -> Predictor:
    """A :class:`Predictor` for one checkpoint or an ensemble of several (same task)."""
    from .config import data_path
    from .devices import resolve_device
    from .imageio import dataset_axes
    from .inference import prepare_model
    from .postprocess import parse_classes

    options = options or PredictOptions()
    checkpoints = [checkpoints] if isinstance(checkpoints, (str, Path)) else list(checkpoints)
    if not checkpoints:
        raise UserError("no checkpoint given")
    dev = resolve_device(device)
    models, cfg = [], None
    for ck in checkpoints:
        model, c = load_checkpoint_model(ck, base, overrides)
        if cfg is None:
            cfg = c
        else:
            wrong = [f"{k}: {getattr(c, k)} vs {getattr(cfg, k)}" for k in _ENSEMBLE_FIELDS
                     if getattr(c, k) != getattr(cfg, k)]
            if wrong:
                raise UserError(f"{ck} cannot join an ensemble with {checkpoints[0]} ({'; '.join(wrong)})")
        models.append(prepare_model(model, dev))
    try:
        lcc = parse_classes(options.largest_component, cfg.num_classes)
    except ValueError as e:
        raise UserError(f"--largest-component: {e}") from None
    data_dir = data_path(cfg, data_dir)
    axes = options.axes or dataset_axes(cfg.dataset, data_dir)
    options.axes = axes
    prep = raw_preparation(cfg, axes, enabled=options.prepare, data_dir=data_dir)
    strides = tuple(strides) if strides is not None else resolve_strides(cfg)
    pred = Predictor(models, cfg, strides, prep, options, lcc)
    pred.device, pred.data_dir = dev, data_dir
    return pred


def describe(pred: Predictor, n_files: int) -> str:
    o, cfg = pred.options, pred.cfg
    how = (f"sliding window {'x'.join(map(str, cfg.patch_size))}, strides {'/'.join(map(str, pred.strides))}, "
           f"{o.batch_windows} per pass" + (", Gaussian blending" if o.blend == "gaussian" else "")
           if o.mode == "window" else "whole volume, one pass")
    extras = [f"ensemble of {len(pred.models)}"] if len(pred.models) > 1 else []
    if o.tta == "mirror":
        extras.append(f"mirror TTA ({2 ** cfg.spatial_dims} passes)")
    if pred.lcc_classes:
        extras.append(f"largest component of classes {','.join(map(str, pred.lcc_classes))}")
    return (f"predict: {n_files} file(s), {cfg.num_classes} classes, {how}"
            f"{'; ' + ', '.join(extras) if extras else ''}; on {getattr(pred, 'device', 'cpu')}; "
            f"NIfTI arrays {o.axes}, preparation: {pred.prep.name}")


def predict_paths(pred: Predictor, inputs, output) -> dict:
    """Segment every file of ``inputs`` (a file or a folder) into ``output``.

    One scan that cannot be read, segmented or written is reported and skipped; the
    others go on. Returns ``{"written": {out: input}, "skipped": [(path, why)],
    "failed": [(path, why)], "seconds": total, "label_files": [...]}``.
    """
    from .labelfiles import class_names, write_label_files
    from .runlock import ensure_writable_dir

    inputs, output = Path(inputs), Path(output)
    files, skipped = collect_inputs(inputs, pred.options.suffix)
    files, mismatched = group_channels(files, pred.cfg.in_channels)
    print(describe(pred, len(files)))
    if pred.options.authors_padding and any(isinstance(f, list) or f.suffix != ".npy" for f in files):
        print("note: --authors-padding applies to .npy inputs; NIfTI label maps are cropped to the scan's grid")
    ensure_writable_dir(output, "--output")
    failed, written = list(mismatched), {}
    start = time.perf_counter()
    for i, path in enumerate(files, 1):
        out = output_path(path, output, pred.options.suffix, pred.options.output_format)
        name = input_name(path)
        if out in written:
            failed.append((path, f"its label map {out.name} would overwrite that of {input_name(written[out])}"))
            continue
        t0 = time.perf_counter()
        try:
            what = pred.predict_file(path, out)
        except (UserError, ValueError, RuntimeError, MemoryError) as e:
            # One unusable scan (or one too large for memory) must not stop the others.
            failed.append((path, str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"))
            print(f"[{i}/{len(files)}] {name}: skipped", flush=True)
            continue
        written[out] = path
        print(f"[{i}/{len(files)}] {name}: {what} ({time.perf_counter() - t0:.1f} s)", flush=True)
    label_files = []
    if written:
        try:
            label_files = write_label_files(output, class_names(pred.cfg.num_classes, pred.data_dir))
        except OSError as e:
            failed.append((output, f"cannot write the label description files: {e.strerror or e}"))
    return {"written": written, "skipped": skipped, "failed": failed,
            "seconds": time.perf_counter() - start, "label_files": label_files}
