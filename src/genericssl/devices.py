"""Which device to run on."""
from __future__ import annotations

import torch

from .errors import UserError


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto``: CUDA, then Apple's MPS, then the CPU. Asking for one that is absent is an error."""
    name = str(name or "auto").strip().lower()
    if name.isdigit():
        name = f"cuda:{name}"   # the authors' train.sh -c 0
    if name.endswith((".pth", ".pt", ".ckpt")):
        raise UserError(f"--device {name}: that is a file; -c is the device in every command, "
                        f"the checkpoint is --checkpoint / -k")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device is visible to PyTorch (use --device cpu)")
    if name == "mps" and not _mps_available():
        raise UserError("--device mps: Apple's MPS backend is not available (use --device cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a device name (auto, cpu, cuda, cuda:1, mps)") from None
