"""Checkpoints: written atomically, read without executing pickled code.

Our files are dicts with ``state_dict`` (the DiffVNet, as the authors store it),
``config`` (the TaskConfig as plain data) and, in ``last.pth``, everything needed
to resume. The authors' ``best_model.pth`` holds only ``state_dict``; the task
preset supplies the rest, and the architecture is read off the weights.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import torch

from .config import TaskConfig, apply_overrides
from .errors import UserError
from .models.diff_vnet import DiffVNet


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def save_checkpoint(payload: dict, path: str | Path) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a file.

    The file gets the permissions of any other output (0666 less the umask; mkstemp's
    are 0600). A full disk or an unwritable folder is a :class:`UserError` that says
    the previous file of that name is intact.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        full = isinstance(e, OSError) and e.errno == errno.ENOSPC or \
            (isinstance(e, RuntimeError) and ("No space left" in str(e) or "unexpected pos" in str(e)))
        if full:
            raise UserError(f"no space left on {_mount_point(path.parent)} while writing {path}; the previous "
                            f"checkpoint is intact; free space and --resume") from None
        if isinstance(e, OSError):
            raise UserError(f"cannot write {path}: {e.strerror or e}; the previous checkpoint is intact") from None
        raise


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files a killed :func:`save_checkpoint` left in ``folder``; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(folder.glob(".*.pth.*.tmp"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt file, or one that would need pickled code
        raise UserError(f"checkpoint {path} cannot be read safely (weights_only): {e}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"checkpoint {path} has no 'state_dict' (expected our format or the authors' "
                        f"{{'state_dict': ...}})")
    state = ckpt["state_dict"]
    if any(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        ckpt["state_dict"] = {k.removeprefix("module."): v for k, v in state.items()}
    return ckpt


def architecture_of(state_dict: dict) -> dict:
    """in_channels, num_classes, base_filters and spatial_dims, read off the weights."""
    try:
        stem = state_dict["embedding.emb.ops.0.conv.weight"]
        out = state_dict["decoder_theta.out_conv.weight"]
    except KeyError as e:
        raise UserError(f"not a Diffusion V-Net state_dict: missing {e.args[0]!r}") from None
    return {"in_channels": int(stem.shape[1]), "base_filters": int(stem.shape[0]),
            "num_classes": int(out.shape[0]), "spatial_dims": stem.dim() - 2}


def check_architecture(state_dict: dict, cfg: TaskConfig, source: str) -> None:
    arch = architecture_of(state_dict)
    wrong = [f"{k}: checkpoint has {v}, configuration says {getattr(cfg, k)}"
             for k, v in arch.items() if getattr(cfg, k) != v]
    if wrong:
        raise UserError(f"{source} does not fit this model ({'; '.join(wrong)}). "
                        f"Use the task/--num-classes/--base-filters that the checkpoint was trained with.")


def config_from_checkpoint(ckpt: dict, base: TaskConfig | None = None, overrides: dict | None = None,
                           source: str = "checkpoint") -> TaskConfig:
    """Our checkpoints carry their config; the authors' take it from ``base`` (a preset)
    with the architecture read off the weights. Explicit ``overrides`` win, and must
    still fit the weights."""
    if "config" in ckpt:
        cfg = TaskConfig.from_dict(ckpt["config"])
    else:
        cfg = apply_overrides(base or TaskConfig(), architecture_of(ckpt["state_dict"]))
    cfg = apply_overrides(cfg, {k: v for k, v in (overrides or {}).items() if v is not None})
    check_architecture(ckpt["state_dict"], cfg, source)
    return cfg


def build_model(cfg: TaskConfig, state_dict: dict | None = None, source: str = "checkpoint") -> DiffVNet:
    """The test model: dropout off; weights loaded with strict key matching."""
    model = DiffVNet(cfg.in_channels, cfg.num_classes, cfg.base_filters, cfg.spatial_dims, has_dropout=False)
    if state_dict is not None:
        check_architecture(state_dict, cfg, source)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise UserError(f"{source} does not match the Diffusion V-Net layout: {str(e)[:500]}") from None
    return model


def load_model(path: str | Path, base: TaskConfig | None = None, overrides: dict | None = None,
               map_location="cpu") -> tuple[DiffVNet, TaskConfig]:
    """Model (eval mode) and config from one of our checkpoints or an authors' ``best_model.pth``."""
    ckpt = load_checkpoint(path, map_location)
    cfg = config_from_checkpoint(ckpt, base, overrides, source=str(path))
    model = build_model(cfg, ckpt["state_dict"], source=str(path))
    return model.eval(), cfg
