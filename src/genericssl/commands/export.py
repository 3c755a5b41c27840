"""`genericssl export`: D_theta as a TorchScript or ONNX file, with its preprocessing beside it."""
from __future__ import annotations

from pathlib import Path


def add_arguments(parser):
    from ..export import FORMATS

    parser.add_argument("--checkpoint", "-k", required=True, type=Path, metavar="FILE",
                        help="our checkpoint, or the authors' best_model.pth (then --task gives the rest)")
    parser.add_argument("--format", choices=FORMATS, default="torchscript",
                        help="torchscript (runs with torch alone) or onnx (needs genericssl[export])")
    parser.add_argument("--out", "-o", required=True, type=Path, metavar="FILE",
                        help="the file to write (model.pt, model.onnx); FILE.json records the preprocessing")
    parser.add_argument("--task", "-t", help="the preset the checkpoint was trained with (authors' checkpoints)")
    parser.add_argument("--config", metavar="FILE", help="YAML file of configuration fields")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="the prepared dataset, for the class names (default: the configuration's data_dir)")
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: torch's)")


def main(args) -> int:
    import warnings

    from ..checkpoint import load_model
    from ..config import load_config
    from ..export import export_model
    from ..labelfiles import class_names

    base = load_config(args.task, args.config) if (args.task or args.config) else None
    model, cfg = load_model(args.checkpoint, base=base)
    names = class_names(cfg.num_classes, args.data_dir or cfg.data_dir)
    with warnings.catch_warnings():
        # torch.jit and the TorchScript-based ONNX exporter announce their deprecation on every call.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        out, side = export_model(model, cfg, args.out, args.format, class_names=names,
                                 source=str(args.checkpoint), opset=args.opset)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, D_theta only) and {side}")
    return 0
