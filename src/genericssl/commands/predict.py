"""`genericssl predict`: segment new scans with trained checkpoints.

    genericssl predict --checkpoint best_model.pth --task la_0.1 --input scan.nii.gz --output preds/
    genericssl predict --checkpoint ckpts/best_model.pth --input DATA/npy --output preds/ --mode whole

What happens to a scan and what is written: ``genericssl.predict``, which does the work.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ._common import positive_int


def add_arguments(parser):
    parser.description = (
        "Segment scans with D_theta by the authors' sliding window (or one whole-volume pass). "
        "Inputs: a scan (NIfTI, NRRD, MHA/MHD), a prepared .npy array, or a folder of them; for a model of K "
        "channels, nnU-Net's <case>_0000 ... files of one case are one input, or one 4D file holds the K channels.")
    parser.add_argument("--checkpoint", "-k", required=True, type=Path, metavar="FILE", nargs="+",
                        help="our checkpoint (carries its configuration) or the authors' best_model.pth "
                             "(then --task supplies classes, patch and filters); several files (the seeds of "
                             "a run, folds) are an ensemble: their softmax is averaged")
    parser.add_argument("--input", required=True, type=Path, metavar="PATH",
                        help="scan.nii.gz (.nrrd, .mha), array.npy, or a folder of them")
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
    w.add_argument("--blend", choices=("uniform", "gaussian"), default="uniform",
                   help="window weighting: uniform (the paper's) or gaussian (nnU-Net/MONAI's, no seams at window "
                        "borders)")
    w.add_argument("--tta", choices=("none", "mirror"), default="none",
                   help="test-time augmentation: none (the paper's) or mirror (softmax averaged over the 2^D axis "
                        "flips, nnU-Net's default; 2^D times the work; only for a model trained with mirrored "
                        "images: A&D's augmentation has no flips, and on the demo mirror TTA lowers Dice)")
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
    d.add_argument("--suffix", default="_seg", help="appended to a scan's name (default _seg)")
    d.add_argument("--output-format", choices=("same", "nifti", "nrrd", "mha"), default="same",
                   help="label maps in the scan's own format (same: .nii.gz, .nrrd or .mha) or the one named")
    o = parser.add_argument_group("outputs")
    o.add_argument("--save-probabilities", action="store_true",
                   help="also write the averaged softmax per class as <name>_probs.npz (float16, key "
                        "'probabilities', classes first; on the scan's own grid for NIfTI inputs)")
    o.add_argument("--largest-component", metavar="all|CLASSES",
                   help="keep only the largest connected component of these classes ('all' or e.g. 1,3)")
    o.add_argument("--overlay", action="store_true",
                   help="write <name>_overlay.png: the slice with the most foreground, labels overlaid")
    r = parser.add_argument_group("runtime")
    r.add_argument("--device", "-c", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps, "
                                                       "or a GPU number")
    r.add_argument("--no-amp", action="store_true", help="float32 on CUDA too (default: float16 autocast)")
    r.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads for PyTorch (default: torch's)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args):
    import torch

    from ..config import load_config
    from ..predict import PredictOptions, load_predictor, predict_paths, resolve_strides, skip_line

    if args.frame not in (None, "all"):
        try:
            int(args.frame)
        except ValueError:
            raise UserError(f"--frame must be a frame number or 'all', got {args.frame!r}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    options = PredictOptions(
        mode=args.mode, batch_windows=args.batch_windows, authors_padding=args.authors_padding,
        normalize=not args.no_normalize, prepare=not args.no_prepare, axes=args.axes, frame=args.frame,
        suffix=args.suffix, output_format=args.output_format, amp=False if args.no_amp else None, tta=args.tta, blend=args.blend,
        save_probabilities=args.save_probabilities, largest_component=args.largest_component,
        overlay=args.overlay, progress=not args.no_progress)
    base = load_config(args.task, args.config) if (args.task or args.config) else None
    overrides = {"num_classes": args.num_classes, "base_filters": args.base_filters, "patch_size": args.patch}
    pred = load_predictor(args.checkpoint, base=base, overrides=overrides, options=options, device=args.device,
                          data_dir=args.data_dir)
    pred.strides = resolve_strides(pred.cfg, args.stride_xy, args.stride_z, args.stride_preset, args.overlap)
    result = predict_paths(pred, args.input, args.output)
    written, skipped, failed = result["written"], result["skipped"], result["failed"]
    print(f"predict: {len(written)} label map(s) in {args.output} ({result['seconds']:.1f} s)")
    if skipped or failed:
        print(f"skipped {len(skipped) + len(failed)}:")
        for path, why in skipped + failed:
            print(f"  {skip_line(path, why)}")
    if not written:
        raise UserError("no label map was written (see the skipped files above)")
    return 1 if failed else 0
