"""`genericssl predict`: segment new scans with a trained checkpoint.

    genericssl predict --checkpoint best_model.pth --task la_0.1 --input scan.nii.gz --output preds/
    genericssl predict --checkpoint ckpts/best_model.pth --input DATA/npy --output preds/ --mode whole

A NIfTI scan goes through its dataset's preparation (reorientation, resizing,
intensity handling), is segmented, and its label map is mapped back onto the
scan's own grid (nearest neighbour) and written as ``<name>_seg.nii.gz`` with the
scan's affine and header. A prepared ``.npy`` array (``<id>_image.npy``) is only
normalised; its label map is written as ``<id>.npy``, the name
``genericssl evaluate`` pairs with ``<id>_label.npy``.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import UserError
from ._common import positive_int
from ..prepare.common import resize_nearest  # noqa: F401  (re-exported: it was defined here and is imported from here)

SKIP_SUFFIXES = ("_label.npy",)  # prepared ground truth beside the images


def add_arguments(parser):
    parser.description = (
        "Segment scans with D_theta by the authors' sliding window (or one whole-volume pass). "
        "Inputs: a NIfTI scan, a prepared .npy array, or a folder of them.")
    parser.add_argument("--checkpoint", "-k", required=True, type=Path, metavar="FILE",
                        help="our checkpoint (carries its configuration) or the authors' best_model.pth "
                             "(then --task supplies classes, patch and filters)")
    parser.add_argument("--input", required=True, type=Path, metavar="PATH",
                        help="scan.nii.gz, array.npy, or a folder of them")
    parser.add_argument("--output", "-o", required=True, type=Path, metavar="DIR", help="folder for the label maps")
    g = parser.add_argument_group("model")
    g.add_argument("--task", "-t", help="the preset the checkpoint was trained with (la_0.1, synapse_0.2, ...)")
    g.add_argument("--config", help="YAML file of configuration fields (may name a preset with 'task:')")
    g.add_argument("--data-dir", help="the prepared dataset folder, whose dataset.json gives the array axes and, "
                                      "for a custom dataset, the orientation and resampling (default: the "
                                      "configuration's data_dir)")
    g.add_argument("--num-classes", type=positive_int, metavar="C",
                   help="classes, background included (default: the checkpoint's)")
    g.add_argument("--base-filters", type=positive_int, metavar="N",
                   help="filters of the first level (default: the checkpoint's; 32 in the paper)")
    g.add_argument("--patch", "--patch-size", dest="patch", metavar="DxHxW", help="sliding-window patch size")
    w = parser.add_argument_group("windows")
    w.add_argument("--mode", choices=("window", "whole"), default="window",
                   help="window: the paper's sliding window (default); whole: one pass over the volume "
                        "padded to a multiple of 16, ~40x less work than stride 16/4, not the paper's labels")
    w.add_argument("--stride-preset", choices=("fine", "medium", "coarse"),
                   help="strides xy/z: fine 16/4 (the paper's), medium 64/16, coarse 128/32")
    w.add_argument("--stride-xy", type=positive_int, metavar="N",
                   help="stride along the last two array axes (default: the preset's, 16)")
    w.add_argument("--stride-z", type=positive_int, metavar="N",
                   help="stride along the first array axis (default: the preset's, 4)")
    w.add_argument("--overlap", type=float, metavar="F",
                   help="window overlap fraction in [0, 1) instead of strides: stride = patch x (1 - F) per axis")
    w.add_argument("--batch-windows", type=positive_int, default=4, metavar="B", help="windows per forward pass")
    w.add_argument("--authors-padding", action="store_true",
                   help="keep the zero padding of a volume smaller than the patch in the label map, as the "
                        "authors do (.npy inputs only; a NIfTI label map must lie on the scan's grid)")
    d = parser.add_argument_group("data")
    d.add_argument("--no-normalize", action="store_true",
                   help="inputs are already normalised: skip the task's intensity clip and min-max scaling")
    d.add_argument("--no-prepare", action="store_true",
                   help="NIfTI inputs are already on the training grid: only reorder the axes")
    d.add_argument("--axes", choices=("xyz", "zyx"),
                   help="array order the model was trained on (default: dataset.json's, else zyx; LA xyz)")
    d.add_argument("--frame", metavar="T|all",
                   help="for a 4D (cine) NIfTI: predict frame T, or every frame ('all') into a 4D label map")
    d.add_argument("--suffix", default="_seg", help="appended to a NIfTI input's name (default _seg)")
    r = parser.add_argument_group("runtime")
    r.add_argument("--device", "-c", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps, "
                                                       "or a GPU number")
    r.add_argument("--no-amp", action="store_true", help="float32 on CUDA too (default: float16 autocast)")
    r.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads for PyTorch (default: torch's)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")


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
    from ..imageio import from_array_axes, to_array_axes
    from ..prepare.common import reorient, unorient

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
    from ..prepare import custom

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
    steps = ([f"reorient to {orientation}"] if orientation else []) + \
        ([f"resize to {'x'.join(map(str, resample))} (trilinear)"] if resample else [])
    return RawPreparation(", ".join(steps) or "axes only",
                          *_through(lambda image: custom.prepare_image(image, resample), custom.restore_label,
                                    axes, orientation))


def raw_preparation(cfg, axes: str, enabled: bool = True, data_dir=None) -> RawPreparation:
    """The preparation of ``cfg.dataset``'s training data that can run without a label
    (``data_dir``: the prepared folder, whose dataset.json a custom dataset's steps are read from)."""
    from ..imageio import from_array_axes, to_array_axes
    from ..prepare import la, mmwhs, mnms, synapse

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
    from ..imageio import kind_of

    if not path.exists():
        raise UserError(f"--input {path} does not exist")
    if path.is_file():
        if kind_of(path) is None:
            raise UserError(f"--input {path}: not a NIfTI (.nii, .nii.gz) or .npy file")
        return [path], []
    files, skipped = [], []
    for p in sorted(path.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir():
            skipped.append((p, "a folder (folders are not searched)"))
        elif kind_of(p) is None:
            skipped.append((p, "not a NIfTI or .npy file"))
        elif p.name.endswith(SKIP_SUFFIXES):
            skipped.append((p, "a prepared label array"))
        elif suffix and any(p.name.endswith(f"{suffix}{e}") for e in (".nii.gz", ".nii")):
            skipped.append((p, f"a label map written by predict (ends with {suffix})"))
        else:
            files.append(p)
    if not files:
        raise UserError(f"--input {path}: no NIfTI or .npy images in this folder")
    return files, skipped


def write_or_fail(out: Path, write) -> None:
    """Run ``write``; an OSError (a full disk, an unwritable folder) becomes a UserError naming
    ``out``, so that one scan that cannot be written is skipped like one that cannot be read."""
    try:
        write()
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None


def make_output_dir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file of that name, no permission, a read-only disk
        raise UserError(f"--output {folder}: cannot create the folder: {e.strerror or e}") from None


def skip_line(path: Path, why: str) -> str:
    """``name: why``, unless ``why`` already starts with the name or names the file in full."""
    return why if why.startswith(path.name) or str(path) in why else f"{path.name}: {why}"


def output_path(path: Path, out_dir: Path, suffix: str) -> Path:
    from ..imageio import kind_of, stem_of

    stem = stem_of(path)
    if kind_of(path) == "npy":
        return out_dir / f"{stem.removesuffix('_image') or stem}.npy"
    return out_dir / f"{stem}{suffix}.nii.gz"


# ------------------------------------------------------------------ the command
@dataclass
class Predictor:
    model: object
    cfg: object
    strides: tuple
    mode: str
    batch_windows: int
    authors_padding: bool
    normalize: bool
    prep: RawPreparation
    amp: bool | None
    progress: bool
    noted: bool = False

    def segment(self, array: np.ndarray, desc: str, authors_padding: bool = False) -> np.ndarray:
        from ..data.cases import normalize_intensity
        from ..inference import predict_volume

        if not np.all(np.isfinite(array)):
            raise UserError(f"{desc}: the image holds NaN or infinite values")
        image = normalize_intensity(array, self.cfg.intensity) if self.normalize else array.astype(np.float32)
        return predict_volume(self.model, image, self.cfg.patch_size, strides=self.strides, mode=self.mode,
                              batch_windows=self.batch_windows, authors_padding=authors_padding, amp=self.amp,
                              progress=self.progress, desc=desc)

    def predict_file(self, path: Path, out: Path, frame) -> str:
        from ..imageio import as_3d, read_volume, write_label_nifti, write_npy

        vol = read_volume(path)
        if vol.kind == "npy":
            arr = vol.data
            want = {self.cfg.spatial_dims, 3}
            if arr.ndim not in want:
                raise UserError(f"{path} is {arr.ndim}D with shape {tuple(arr.shape)}; expected a prepared "
                                f"{'2D or 3D' if self.cfg.spatial_dims == 2 else '3D'} array")
            labels = self.segment(arr, path.name, self.authors_padding)
            write_or_fail(out, lambda: write_npy(out, labels))
            return f"{tuple(arr.shape)} -> {tuple(labels.shape)}"
        if self.prep.note and not self.noted:
            print(f"note: {self.prep.note}")
            self.noted = True
        if frame == "all" and vol.data.ndim == 4:
            frames = [vol.data[..., t] for t in range(vol.data.shape[3])]
        else:
            frames = [as_3d(vol, None if frame in (None, "all") else int(frame))]
        maps = []
        for t, data in enumerate(frames):
            arr, ctx = self.prep.forward(data, vol.affine)
            desc = path.name if len(frames) == 1 else f"{path.name} t={t}"
            maps.append(self.prep.backward(self.segment(arr, desc), ctx))
        labels = maps[0] if len(maps) == 1 else np.stack(maps, axis=-1)
        write_or_fail(out, lambda: write_label_nifti(out, labels, vol, self.cfg.num_classes))
        return f"{tuple(vol.data.shape)} -> {out.name}"


def resolve_strides(args, cfg) -> tuple[int, ...]:
    from ..inference import STRIDE_PRESETS, axis_strides, overlap_strides

    xy, z = cfg.stride_xy, cfg.stride_z
    if args.stride_preset:
        xy, z = STRIDE_PRESETS[args.stride_preset]
    xy = xy if args.stride_xy is None else args.stride_xy
    z = z if args.stride_z is None else args.stride_z
    if args.overlap is not None:
        try:
            return overlap_strides(cfg.patch_size, args.overlap)
        except ValueError as e:
            raise UserError(f"--overlap: {e}") from None
    if xy < 1 or z < 1:
        raise UserError(f"strides must be at least 1 (got xy {xy}, z {z})")
    return axis_strides(cfg.spatial_dims, xy, z)


def load_predictor_model(args):
    """(model, cfg): our checkpoint's own configuration, or the task's for the authors' files."""
    from ..checkpoint import architecture_of, build_model, config_from_checkpoint, load_checkpoint
    from ..config import TaskConfig, load_config

    base = load_config(args.task, args.config) if (args.task or args.config) else None
    overrides = {"num_classes": args.num_classes, "base_filters": args.base_filters, "patch_size": args.patch}
    ckpt = load_checkpoint(args.checkpoint)
    if base is None and "config" not in ckpt and args.patch is None:
        print(f"warning: {args.checkpoint} carries no configuration and no --task was given: patch "
              f"{'x'.join(map(str, TaskConfig().patch_size))} and plain min-max intensity scaling are assumed; "
              f"pass the --task it was trained for", file=sys.stderr)
    if base is not None and "config" not in ckpt:
        # The authors' files say nothing of their task; a preset that disagrees with the weights is the wrong one.
        arch = architecture_of(ckpt["state_dict"])
        wrong = [f"{k}: checkpoint has {arch[k]}, task {base.name} has {getattr(base, k)}"
                 for k in ("num_classes", "base_filters", "spatial_dims")
                 if overrides.get(k) is None and arch[k] != getattr(base, k)]
        if wrong:
            raise UserError(f"{args.checkpoint} does not fit this task ({'; '.join(wrong)}); pass the task it "
                            f"was trained for, or override with --num-classes/--base-filters")
    cfg = config_from_checkpoint(ckpt, base, overrides, source=str(args.checkpoint)).validate()
    model = build_model(cfg, ckpt["state_dict"], source=str(args.checkpoint))
    return model.eval(), cfg


def main(args):
    import torch

    from ..imageio import dataset_axes
    from ..devices import resolve_device
    from ..inference import prepare_model
    from ._common import resolve_data_dir

    if args.frame not in (None, "all"):
        try:
            int(args.frame)
        except ValueError:
            raise UserError(f"--frame must be a frame number or 'all', got {args.frame!r}") from None
    if args.batch_windows < 1:
        raise UserError("--batch-windows must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    files, skipped = collect_inputs(args.input, args.suffix)
    model, cfg = load_predictor_model(args)
    strides = resolve_strides(args, cfg)
    model = prepare_model(model, device)
    data_dir = resolve_data_dir(args, cfg)
    axes = args.axes or dataset_axes(cfg.dataset, data_dir)
    prep = raw_preparation(cfg, axes, enabled=not args.no_prepare, data_dir=data_dir)
    pred = Predictor(model, cfg, strides, args.mode, args.batch_windows, args.authors_padding,
                     not args.no_normalize, prep, False if args.no_amp else None, not args.no_progress)
    how = (f"sliding window {'x'.join(map(str, cfg.patch_size))}, strides {'/'.join(map(str, strides))}, "
           f"{args.batch_windows} per pass" if args.mode == "window" else "whole volume, one pass")
    print(f"predict: {len(files)} file(s), {cfg.num_classes} classes, {how}, on {device}; "
          f"NIfTI arrays {axes}, preparation: {prep.name}")
    if args.authors_padding and any(f.name.endswith((".nii", ".nii.gz")) for f in files):
        print("note: --authors-padding applies to .npy inputs; NIfTI label maps are cropped to the scan's grid")

    make_output_dir(args.output)
    failed, written = [], {}
    for i, path in enumerate(files, 1):
        out = output_path(path, args.output, args.suffix)
        if out in written:
            failed.append((path, f"its label map {out.name} would overwrite that of {written[out].name}"))
            continue
        t0 = time.perf_counter()
        try:
            what = pred.predict_file(path, out, args.frame)
        except (UserError, ValueError, RuntimeError, MemoryError) as e:
            # One unusable scan (or one too large for memory) must not stop the others.
            failed.append((path, str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"))
            print(f"[{i}/{len(files)}] {path.name}: skipped", flush=True)
            continue
        written[out] = path
        print(f"[{i}/{len(files)}] {path.name}: {what} ({time.perf_counter() - t0:.1f} s)", flush=True)

    print(f"predict: {len(written)} label map(s) in {args.output}")
    if skipped or failed:
        print(f"skipped {len(skipped) + len(failed)}:")
        for path, why in skipped + failed:
            print(f"  {skip_line(path, why)}")
    if not written:
        raise UserError("no label map was written (see the skipped files above)")
    return 1 if failed else 0
