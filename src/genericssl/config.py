"""Task configuration: the paper's presets (``presets/tasks.yaml``) plus overrides.

A :class:`TaskConfig` is plain data. It is built from a named preset, then updated
from an optional YAML file, then from command-line overrides; nothing in the code
branches on a task's name.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


from .errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration that cannot run; the message says what to change."""


@dataclass
class TaskConfig:
    name: str = "custom"
    dataset: str = "custom"
    data_dir: str = "."
    patch_size: tuple[int, ...] = (112, 112, 80)
    num_classes: int = 2
    in_channels: int = 1
    base_filters: int = 32
    spatial_dims: int = 3
    batch_size: int = 4
    patience: int = 50
    max_epoch: int = 300
    rampup_epochs: int | None = None
    lr: float = 0.01
    unsup_weight: float = 10.0
    ema_m: float = 0.99
    seed: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    method: str = "ad"
    repeat: str = "labeled"
    crop_pad_extra: int = 1
    stride_xy: int = 16
    stride_z: int = 4
    intensity: dict = field(default_factory=lambda: {"clip": None, "percentile": None})
    num_workers: int = 2
    splits: dict = field(default_factory=lambda: {"labeled": "labeled", "unlabeled": "unlabeled",
                                                  "eval": "eval", "test": "test"})
    eval_is_train_warning: str | None = None
    vendor: str | None = None
    ratio: float | None = None
    # Run-time knobs, not part of the paper's presets.
    iters_per_epoch: int | None = None   # cap on iterations per epoch (small demos)
    eval_every: int = 1
    amp: bool = True                     # mixed precision, used on CUDA only
    sampler_eval_mode: bool = False      # the authors sample pseudo labels in train mode
    channels_last: bool | None = None    # None: channels-last 3D on the CPU only where it measures faster
    sync_bn: bool = True                 # several processes: BatchNorm statistics of the global batch

    # ------------------------------------------------------------------ helpers
    @property
    def rampup_length(self) -> int:
        return self.max_epoch if self.rampup_epochs is None else self.rampup_epochs

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TaskConfig":
        cfg = cls()
        return apply_overrides(cfg, d)

    def validate(self) -> "TaskConfig":
        if len(self.patch_size) != self.spatial_dims:
            raise ConfigError(f"patch_size {list(self.patch_size)} has {len(self.patch_size)} axes "
                              f"but spatial_dims is {self.spatial_dims}")
        # The V-Net halves the size four times.
        bad = [p for p in self.patch_size if p % 16]
        if bad:
            raise ConfigError(f"every patch size must be a multiple of 16 (the V-Net downsamples 4 times); "
                              f"got {list(self.patch_size)}")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2 (background + one class), got {self.num_classes}")
        if self.repeat not in ("labeled", "unlabeled"):
            raise ConfigError(f"repeat must be 'labeled' or 'unlabeled', got {self.repeat!r}")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
        return self


_FIELDS = {f.name: f for f in dataclasses.fields(TaskConfig)}


def _coerce(name: str, value: Any) -> Any:
    if name == "patch_size" and value is not None:
        if isinstance(value, str):
            value = [int(v) for v in value.replace("x", ",").split(",") if v]
        return tuple(int(v) for v in value)
    if name == "seeds" and isinstance(value, str):
        return [int(v) for v in value.split(",") if v]
    return value


def apply_overrides(cfg: TaskConfig, overrides: dict | None) -> TaskConfig:
    """Return a copy of ``cfg`` with ``overrides`` applied (unknown keys are an error).

    ``None`` values in ``overrides`` mean "not given" and are skipped, except for
    fields whose preset value may legitimately be None.
    """
    cfg = copy.deepcopy(cfg)
    for key, value in (overrides or {}).items():
        key = key.replace("-", "_")
        if key not in _FIELDS:
            raise ConfigError(f"unknown configuration field {key!r}; valid fields: {', '.join(sorted(_FIELDS))}")
        if key in ("splits", "intensity") and isinstance(value, dict):
            merged = dict(getattr(cfg, key) or {})
            merged.update(value)
            value = merged
        setattr(cfg, key, _coerce(key, value))
    return cfg


def _preset_table() -> dict:
    text = resources.files("genericssl.presets").joinpath("tasks.yaml").read_text()
    return yaml.safe_load(text)


def preset_names() -> list[str]:
    return list(_preset_table()["tasks"])


def _format_strings(obj: Any, fields: dict) -> Any:
    if isinstance(obj, str):
        try:
            return obj.format(**fields)
        except (KeyError, IndexError):
            return obj
    if isinstance(obj, dict):
        return {k: _format_strings(v, fields) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_format_strings(v, fields) for v in obj]
    return obj


def load_preset(name: str) -> TaskConfig:
    table = _preset_table()
    tasks = table["tasks"]
    if name not in tasks:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(tasks)} "
                          f"(or pass --config FILE.yaml for your own data)")
    task = dict(tasks[name])
    merged: dict = dict(table["defaults"])
    merged.update(table["dataset_defaults"].get(task.get("dataset"), {}))
    for tmpl in task.pop("extends", []):
        merged.update(table["templates"][tmpl])
    merged.update(task)
    merged["name"] = name
    merged = _format_strings(merged, merged)
    return apply_overrides(TaskConfig(), merged)


def load_config(task: str | None = None, config_file: str | Path | None = None,
                overrides: dict | None = None) -> TaskConfig:
    """Preset ``task`` (or the plain defaults), then ``config_file``, then ``overrides``.

    A YAML config file may itself name a preset with ``task: la_0.05``.
    """
    file_fields: dict = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            file_fields = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(file_fields, dict):
            raise ConfigError(f"config file {path} must hold a mapping of field: value")
        task = file_fields.pop("task", None) or task
    cfg = load_preset(task) if task else TaskConfig()
    cfg = apply_overrides(cfg, file_fields)
    cfg = apply_overrides(cfg, {k: v for k, v in (overrides or {}).items() if v is not None})
    return cfg.validate()
