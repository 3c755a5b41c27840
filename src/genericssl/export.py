"""Export D_theta (the released prediction path) for serving: TorchScript or ONNX.

Only the image stem, the shared encoder and decoder D_theta are kept (D_psi and the
denoising decoder do not take part in prediction), so the file is smaller than the
checkpoint. A JSON file beside it records what a caller must do around the network:
the input layout, the intensity handling, the window and strides, the classes.
The network is fully convolutional: any spatial size that is a multiple of 16 runs.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .errors import UserError

FORMATS = ("torchscript", "onnx")


class ThetaNet(nn.Module):
    """D_theta alone: ``logits = decoder_theta(encoder(stem(image)))``, weights shared with ``model``."""

    def __init__(self, model):
        super().__init__()
        self.embedding = model.embedding
        self.encoder = model.encoder
        self.decoder_theta = model.decoder_theta

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x1, _ = self.embedding(image)
        return self.decoder_theta(self.encoder(x1))


def _sidecar(cfg, fmt: str, example_shape, class_names: dict | None, source: str) -> dict:
    return {
        "format": fmt, "source_checkpoint": source, "network": "D_theta of the Diffusion V-Net",
        "input": {"layout": "N, C, *spatial (float32)", "channels": cfg.in_channels,
                  "spatial_dims": cfg.spatial_dims, "example_shape": list(example_shape),
                  "spatial_multiple_of": 16},
        "output": "logits N, num_classes, *spatial; softmax over axis 1, argmax for labels",
        "num_classes": cfg.num_classes,
        "class_names": {str(k): v for k, v in (class_names or {}).items()},
        "preprocessing": {"intensity": cfg.intensity,
                          "then": "min-max scaling of each volume to [0, 1] (after the clip/percentile)"},
        "sliding_window": {"patch_size": list(cfg.patch_size), "stride_xy": cfg.stride_xy,
                           "stride_z": cfg.stride_z,
                           "note": "z stride on the first array axis; softmax of the windows averaged"},
    }


def export_model(model, cfg, out: str | Path, fmt: str = "torchscript", *, class_names: dict | None = None,
                 source: str = "", opset: int | None = None) -> tuple[Path, Path]:
    """Write ``out`` (the network) and ``out`` + ``.json`` (its preprocessing); returns both paths."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    net = ThetaNet(model.float().eval()).eval()
    example = torch.rand((1, cfg.in_channels) + tuple(cfg.patch_size))
    with torch.no_grad():
        if fmt == "torchscript":
            traced = torch.jit.trace(net, example, check_trace=False)
            traced.save(str(out))
        else:
            _export_onnx(net, example, out, opset)
    side = out.with_name(out.name + ".json")
    side.write_text(json.dumps(_sidecar(cfg, fmt, example.shape, class_names, source), indent=1) + "\n")
    return out, side


def _export_onnx(net, example, out: Path, opset: int | None) -> None:
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install 'genericssl[export]' "
                        "(or pip install onnx onnxscript)") from None
    spatial = {i: f"s{i - 2}" for i in range(2, example.dim())}
    kwargs = {"input_names": ["image"], "output_names": ["logits"],
              "dynamic_axes": {"image": {0: "batch", **spatial}, "logits": {0: "batch", **spatial}}}
    if opset is not None:
        kwargs["opset_version"] = opset
    try:
        torch.onnx.export(net, (example,), str(out), dynamo=False, **kwargs)
    except TypeError:  # a torch without the dynamo switch
        torch.onnx.export(net, (example,), str(out), **kwargs)


def load_exported(path: str | Path):
    """A callable ``f(numpy or tensor (N, C, *S)) -> logits`` for an exported file (TorchScript or ONNX)."""
    path = Path(path)
    if path.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("running an ONNX file needs onnxruntime: pip install onnxruntime") from None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(x):
            x = x.numpy() if torch.is_tensor(x) else x
            return torch.from_numpy(sess.run(["logits"], {"image": x.astype("float32")})[0])
        return run
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)   # torch.jit announces its successor
        mod = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x):
        with torch.no_grad():
            return mod(torch.as_tensor(x, dtype=torch.float32))
    return run
