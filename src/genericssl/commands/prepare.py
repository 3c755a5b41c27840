"""`genericssl prepare DATASET --raw DIR --out DIR`: downloaded files -> arrays and split lists.

`genericssl prepare synthetic --setting demo|ssl|ibssl|uda|semidg --out DIR` generates a dataset
instead (the demo's or a `bench accuracy` setting's) and DIR/task.yaml, so that
`genericssl train --config DIR/task.yaml --out RUN` trains on it.

Writes OUT/npy/<id>_image.npy (float32) and <id>_label.npy (uint8), OUT/split_txts/<split>.txt
and OUT/dataset.json. Re-running skips finished cases (--force redoes them); every file is
written atomically. Splits are drawn from --seed (the authors' were unseeded); --splits DIR
replaces any of them with your own <split>.txt lists, e.g. the authors' published ones.

A case that cannot be prepared (a file missing, unreadable, or not matching its partner) is
skipped and listed with its file and the reason. Exit status 1 when any case was skipped: the
cases that worked are kept, but dataset.json and the split lists are written only with
--allow-skips (then the exit status is 0 and the skipped cases are left out).
"""
from __future__ import annotations

import argparse
import importlib
import os

DATASETS = {
    # name: (module, function, default --out, help)
    "la": ("la", "prepare", "LA_data", "LA (UA-MT's HDF5 release: '2018LA_Seg_Training Set', train.list, test.list)"),
    "synapse": ("synapse", "prepare", "Synapse_data", "Synapse multi-organ CT (imagesTr/img0001.nii.gz, labelsTr/)"),
    "mmwhs": ("mmwhs", "prepare", "MMWHS_data", "MM-WHS CT and MR (CT/imagesTr, CT/labelsTr, MR/...)"),
    "mnms": ("mnms", "prepare", "MNMS_data", "M&Ms 3D frames (MNMs or MNMs/Labeled with VendorA..D)"),
    "mnms2d": ("mnms", "prepare_2d", "MNMS2D_data", "M&Ms 2D slices, for the mnms2d_* presets"),
    "mnms-sort": ("mnms_sort", "sort_dataset", None, "sort the released M&Ms OpenDataset into vendor folders"),
    "nnunet": ("nnunet", "prepare", None, "an nnU-Net v2 raw dataset as it is (dataset.json, imagesTr/<case>_0000, "
                                          "labelsTr/); any number of channels, NIfTI/NRRD/MHA, varying spacings"),
    "decathlon": ("decathlon", "prepare", None, "a Medical Segmentation Decathlon dataset or MONAI datalist as it is "
                                                "(dataset.json with training/validation/test entries)"),
    "custom": ("custom", "prepare", None, "your own NIfTI data, described by a YAML/JSON file"),
    "synthetic": ("synthetic", "prepare", None, "a generated synthetic dataset (the demo's or a benchmark "
                                                "setting's) and OUT/task.yaml to train on it"),
}


def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..prepare.common import default_workers

    data_root = os.environ.get("GENERICSSL_DATA", ".")
    parser.description = __doc__
    from ..cli import HelpFormatter, RawDescriptionHelpFormatter

    parser.formatter_class = RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name, (_, _, out, help_text) in DATASETS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if name == "synthetic":
            _add_synthetic_arguments(p)
            continue
        p.add_argument("--raw", required=True, help="the downloaded dataset's folder")
        p.add_argument("--out", "-o", required=out is None, default=out and os.path.join(data_root, out),
                       help="output folder" + (f" (default: {out} under $GENERICSSL_DATA or the current folder, "
                                               f"where the presets look for it)" if out else ""))
        p.add_argument("--force", action="store_true", help="redo cases already prepared")
        if name == "mnms-sort":
            p.add_argument("--info", help="the dataset information spreadsheet (.xls or .csv; "
                                          "default: the one inside --raw)")
            p.add_argument("--mode", choices=("link", "copy", "move"), default="link",
                           help="hard-link (default; copies where links fail), copy, or move the files")
            continue
        p.add_argument("--seed", type=int, default=0, help="seed of the random splits (default 0)")
        p.add_argument("--splits", metavar="DIR", help="folder of <split>.txt lists that replace the generated ones")
        p.add_argument("--workers", type=_positive, default=default_workers(),
                       help=f"parallel processes (default {default_workers()})")
        p.add_argument("--allow-skips", action="store_true",
                       help="finish the dataset without the cases that could not be prepared (exit status 0); "
                            "by default any skipped case leaves the split lists unwritten and exits with 1")
        if name == "mnms":
            p.add_argument("--authors-slice-range", action="store_true",
                           help="drop each frame's last labeled slice, as the authors' code does")
        if name == "custom":
            p.add_argument("--description", metavar="FILE",
                           help="the dataset description (default: genericssl.yaml inside --raw)")
        if name in LAYOUTS:
            _add_layout_arguments(p, name)


LAYOUTS = ("nnunet", "decathlon")


def _fraction(text: str) -> float:
    v = float(text)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError("must be in (0, 1]")
    return v


def _add_layout_arguments(p: argparse.ArgumentParser, name: str) -> None:
    from ..prepare.scans import DEFAULT_ORIENTATION

    p.add_argument("--unlabeled", "-u", action="append", default=[], metavar="DIR",
                   help="a folder of unlabeled scans (repeatable)" +
                        (", named like imagesTr (<case>_0000...); imagesUnlabeled/ inside --raw is read anyway"
                         if name == "nnunet" else ""))
    if name == "decathlon":
        p.add_argument("--datalist", metavar="FILE",
                       help="the datalist JSON (default: dataset.json inside --raw); its paths are relative to it")
    p.add_argument("--spacing", nargs=3, type=float, metavar=("Z", "Y", "X"),
                   help="target voxel size in mm (default: the median spacing of the labeled training cases)")
    p.add_argument("--orientation", default=DEFAULT_ORIENTATION,
                   help="turn every scan to these axis codes (nibabel's, e.g. RAS or LPS); 'none' keeps each "
                        "scan's own axes")
    p.add_argument("--labeled-fraction", type=_fraction, default=1.0,
                   help="keep this seeded fraction of the labeled training cases labeled; the rest train as "
                        "unlabeled (for experiments)")
    p.add_argument("--eval-fraction", type=_fraction, default=0.2,
                   help="of the labeled cases, the seeded fraction held out for validation (unless the layout "
                        "names validation cases)")
    p.add_argument("--test-fraction", type=_fraction, default=0.2,
                   help="of the labeled cases, the seeded fraction held out for testing (unless the layout "
                        "names labeled test cases)")
    p.add_argument("--split-frames", action="store_true",
                   help="a 4D scan with one declared channel is a time series: prepare each frame as a case")
    p.add_argument("--clip", nargs=2, type=float, metavar=("LO", "HI"),
                   help="clip intensities to [LO, HI] before min-max scaling (CT windows); default: each "
                        "volume's 0.5-99.5 percentiles")
    p.add_argument("--patch-size", nargs=3, type=int, metavar=("Z", "Y", "X"),
                   help="training patch (default: from the smallest case, multiples of 16, at most 128)")
    p.add_argument("--name", help="task name in task.yaml (default: the dataset's)")


def _add_synthetic_arguments(p: argparse.ArgumentParser) -> None:
    from ..prepare.synthetic import DEFAULT_SIZE, MIN_SIZE, setting_names

    p.add_argument("--setting", required=True, choices=setting_names(),
                   help="demo: the demo's task and training settings; the others: the settings of "
                        "`genericssl bench accuracy` (ssl is its 10 %% column, ssl5 the 5 %% one)")
    p.add_argument("--out", "-o", required=True, help="output folder (new, empty, or an earlier synthetic dataset)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data and of training (default 0)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help=f"volume edge in voxels (default {DEFAULT_SIZE}, at least {MIN_SIZE})")


def main(args: argparse.Namespace) -> int:
    module, function, _, _ = DATASETS[args.dataset]
    fn = getattr(importlib.import_module(f"genericssl.prepare.{module}"), function)
    if args.dataset == "synthetic":
        return fn(args.out, setting=args.setting, seed=args.seed, size=args.size)
    if args.dataset == "mnms-sort":
        return fn(args.raw, args.out, info=args.info, mode=args.mode, force=args.force)
    extra = {}
    if args.dataset == "mnms":
        extra["authors_slice_range"] = args.authors_slice_range
    if args.dataset == "custom":
        extra["description"] = args.description
    if args.dataset in LAYOUTS:
        extra.update(unlabeled=args.unlabeled, spacing=args.spacing, orientation=args.orientation,
                     labeled_fraction=args.labeled_fraction, eval_fraction=args.eval_fraction,
                     test_fraction=args.test_fraction, split_frames=args.split_frames, name=args.name,
                     intensity={"clip": list(args.clip), "percentile": None} if args.clip else None,
                     patch_size=args.patch_size)
        if args.dataset == "decathlon":
            extra["datalist"] = args.datalist
    return fn(args.raw, args.out, seed=args.seed, splits=args.splits, workers=args.workers, force=args.force,
              allow_skips=args.allow_skips, **extra)
