"""Task configuration: the paper's presets (``presets/tasks.yaml``) plus overrides.

A :class:`TaskConfig` is plain data. It is built from a named preset, then updated
from an optional YAML file, then from command-line overrides; nothing in the code
branches on a task's name.

Every field carries a :class:`Spec` (kind, allowed range, one-line description).
Values are coerced where the intent is plain (YAML reads ``1e-3`` as a string) and
otherwise rejected; every value remembers where it came from (the preset, a file, a
flag), so that a rejection can say which to change. The checks are a table here,
not a library: what a user needs from a message is the field, the value, what is
allowed and the source, and the source is ours to track whichever validator runs.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration that cannot run; the message says what to change."""


@dataclass(frozen=True)
class Spec:
    """What a field may hold. ``kind``: int, float, bool, str, ints (a tuple), intlist, mapping."""
    kind: str
    help: str
    optional: bool = False
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    keys: tuple | None = None          # a mapping's keys (all of them, each optional)

    def allowed(self) -> str:
        text = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
                "ints": "a list of integers (or DxHxW)", "intlist": "a list of integers (or 0,1,2)",
                "mapping": "a mapping"}[self.kind]
        if self.choices:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        bounds = []
        if self.gt is not None:
            bounds.append(f"> {self.gt:g}")
        if self.ge is not None:
            bounds.append(f">= {self.ge:g}")
        if self.lt is not None:
            bounds.append(f"< {self.lt:g}")
        if self.le is not None:
            bounds.append(f"<= {self.le:g}")
        if bounds:
            text += (" with each value " if self.kind in ("ints", "intlist") else " ") + " and ".join(bounds)
        if self.keys:
            text += " with keys " + ", ".join(self.keys)
        return ("null or " + text) if self.optional else text


def _f(default, help: str, kind: str, **spec):
    factory = {"default_factory": (lambda: copy.deepcopy(default))} if isinstance(default, (list, dict)) \
        else {"default": default}
    return field(metadata={"spec": Spec(kind, help, **spec)}, **factory)


@dataclass
class TaskConfig:
    name: str = _f("custom", "name of the task (the preset's name, or your own)", "str")
    dataset: str = _f("custom", "which dataset's preparation and conventions the task follows", "str")
    data_dir: str = _f(".", "prepared dataset folder (relative paths are under $GENERICSSL_DATA)", "str")
    patch_size: tuple[int, ...] = _f((112, 112, 80), "training crop and sliding-window size per axis, "
                                     "multiples of 16", "ints", ge=16)
    num_classes: int = _f(2, "classes, background included", "int", ge=2)
    in_channels: int = _f(1, "image channels (MRI sequences) per voxel", "int", ge=1)
    base_filters: int = _f(32, "filters of the V-Net's first level (32 in the paper)", "int", ge=1)
    spatial_dims: int = _f(3, "3 for volumes, 2 for slices", "int", choices=(2, 3))
    batch_size: int = _f(4, "global batch of labeled (and of unlabeled) crops per iteration", "int", ge=1)
    patience: int = _f(50, "epochs without a validation gain before training stops", "int", ge=1)
    max_epoch: int = _f(300, "last epoch: epochs run 0..max_epoch inclusive (the authors' convention)",
                        "int", ge=0)
    rampup_epochs: int | None = _f(None, "epochs of the unsupervised weight's sigmoid ramp-up "
                                   "(null: max_epoch)", "int", optional=True, ge=0)
    lr: float = _f(0.01, "base learning rate of the poly schedule (SGD)", "float", gt=0)
    unsup_weight: float = _f(10.0, "weight of the unsupervised loss after the ramp-up", "float", ge=0)
    ema_m: float = _f(0.99, "EMA momentum of the teacher / D_psi' weights", "float", gt=0, lt=1)
    seed: int = _f(0, "seed of the training run", "int", ge=0, lt=2 ** 32)
    seeds: list[int] = _f([0], "seeds `genericssl run` trains and averages over", "intlist", ge=0, lt=2 ** 32)
    method: str = _f("ad", "training method (`genericssl train --help` lists them)", "str")
    repeat: str = _f("labeled", "which loader repeats to match the other's case count", "str",
                     choices=("labeled", "unlabeled"))
    crop_pad_extra: int = _f(1, "the random crop pads an axis by (p - s) // 2 + this", "int", ge=0)
    stride_xy: int = _f(16, "sliding-window stride on the last two array axes", "int", ge=1)
    stride_z: int = _f(4, "sliding-window stride on the first array axis", "int", ge=1)
    intensity: dict = _f({"clip": None, "percentile": None},
                         "intensity clip [lo, hi] or percentile [lo, hi] before min-max scaling", "mapping",
                         keys=("clip", "percentile"))
    num_workers: int = _f(2, "DataLoader worker processes per loader", "int", ge=0)
    splits: dict = _f({"labeled": "labeled", "unlabeled": "unlabeled", "eval": "eval", "test": "test"},
                      "split list (name of <data_dir>/<name>.txt) for each role", "mapping",
                      keys=("labeled", "unlabeled", "eval", "test"))
    eval_is_train_warning: str | None = _f(None, "printed when validation cases are training cases",
                                           "str", optional=True)
    vendor: str | None = _f(None, "M&Ms: the held-out vendor", "str", optional=True)
    ratio: float | None = _f(None, "M&Ms: the labeled fraction", "float", optional=True, gt=0, le=1)
    # Run-time knobs, not part of the paper's presets.
    iters_per_epoch: int | None = _f(None, "cap on iterations per epoch (small demos; null: no cap)", "int",
                                     optional=True, ge=1)
    eval_every: int = _f(1, "validate every N epochs (and at the last)", "int", ge=1)
    amp: bool = _f(True, "float16 autocast on CUDA (ignored on the CPU)", "bool")
    sampler_eval_mode: bool = _f(False, "sample pseudo labels with the networks in eval mode "
                                 "(the authors sample in train mode)", "bool")
    channels_last: bool | None = _f(None, "channels-last 3D memory format (null: on the CPU only, where it "
                                    "measures faster)", "bool", optional=True)
    sync_bn: bool = _f(True, "several processes: BatchNorm statistics of the global batch", "bool")
    checkpoint_levels: int = _f(2, "activation checkpointing: recompute the top N resolution levels' "
                                "activations in the backward pass instead of keeping them (0: off, 1: full "
                                "resolution, 5: all); the same result bit for bit, less memory, more "
                                "arithmetic", "int", ge=0, le=5)

    # ------------------------------------------------------------------ helpers
    @property
    def rampup_length(self) -> int:
        return self.max_epoch if self.rampup_epochs is None else self.rampup_epochs

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["patch_size"] = list(self.patch_size)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str = "a saved configuration") -> "TaskConfig":
        return apply_overrides(cls(), d, source=source)

    def source_of(self, name: str) -> str:
        """Where a field's value came from: 'default', 'preset la_0.05', 'file x.yaml', 'flag --lr', ..."""
        return self.__dict__.get("_sources", {}).get(name, "default")

    def validate(self, _earlier: list[tuple[str, str]] = ()) -> "TaskConfig":
        """Check every field and the rules between fields; all problems in one message."""
        problems = [text for _, text in _earlier]
        rejected = {name for name, _ in _earlier}
        for name, spec in SPECS.items():
            if name in rejected:
                continue
            try:
                setattr(self, name, _coerce(spec, getattr(self, name)))
            except _Bad as bad:
                problems.append(_describe(self, name, getattr(self, name), bad))
        if not problems:
            problems += self._cross_field_problems()
        if problems:
            raise ConfigError(_join(problems))
        return self

    def _cross_field_problems(self) -> list[str]:
        out = []

        def bad(fields: tuple[str, ...], text: str):
            where = "; ".join(f"{f} from {self.source_of(f)}" for f in fields)
            out.append(f"{text} ({where})")

        if len(self.patch_size) != self.spatial_dims:
            bad(("patch_size", "spatial_dims"),
                f"patch_size {list(self.patch_size)} has {len(self.patch_size)} axes but spatial_dims is "
                f"{self.spatial_dims}")
        if any(p % 16 for p in self.patch_size):
            # The V-Net halves the size four times.
            bad(("patch_size",), f"every patch size must be a multiple of 16 (the V-Net downsamples 4 times); "
                                 f"got {list(self.patch_size)}")
        known = method_names_light()
        if known and self.method not in known:
            bad(("method",), f"unknown method {self.method!r}; valid methods: {', '.join(known)}")
        for key in ("clip", "percentile"):
            pair = self.intensity.get(key)
            if pair is None:
                continue
            if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
                    or not pair[0] < pair[1]):
                bad(("intensity",), f"intensity.{key} must be null or [lo, hi] with lo < hi, got {pair!r}")
            elif key == "percentile" and not (0 <= pair[0] and pair[1] <= 100):
                bad(("intensity",), f"intensity.percentile must lie in [0, 100], got {list(pair)}")
        for role in ("labeled", "unlabeled", "eval", "test"):
            value = self.splits.get(role)
            if not isinstance(value, str) or not value:
                bad(("splits",), f"splits.{role} must name a split list, got {value!r}")
        return out


SPECS: dict[str, Spec] = {f.name: f.metadata["spec"] for f in dataclasses.fields(TaskConfig)}


def describe_fields() -> list[tuple[str, str, str]]:
    """(field, allowed values, description) for every configuration field."""
    return [(name, spec.allowed(), spec.help) for name, spec in SPECS.items()]


def method_names_light() -> list[str]:
    """Method names from the methods package's files, without importing torch.

    Each method lives in ``methods/<name>.py`` and registers itself under that name
    (tests/test_config.py checks the two agree)."""
    import importlib.util
    import pkgutil

    spec = importlib.util.find_spec("genericssl.methods")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)
                  if m.name not in ("base", "ramps", "difficulty") and not m.name.startswith("_"))


# ------------------------------------------------------------------ coercion
class _Bad(Exception):
    pass


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise _Bad("is not a number")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            raise _Bad("is not a number") from None
    else:
        raise _Bad("is not a number")
    if not math.isfinite(out):
        raise _Bad("is not a finite number")
    return out


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    try:
        x = _number(value)
    except _Bad:
        raise _Bad("is not an integer") from None
    if not x.is_integer():
        raise _Bad("is not an integer")
    return int(x)


def _in_range(spec: Spec, x) -> None:
    if ((spec.ge is not None and not x >= spec.ge) or (spec.gt is not None and not x > spec.gt)
            or (spec.le is not None and not x <= spec.le) or (spec.lt is not None and not x < spec.lt)):
        raise _Bad("is out of range")


def _coerce(spec: Spec, value: Any) -> Any:
    if value is None:
        if spec.optional:
            return None
        raise _Bad("must be given")
    kind = spec.kind
    if kind == "int":
        out = _integer(value)
        _in_range(spec, out)
    elif kind == "float":
        out = _number(value)
        _in_range(spec, out)
    elif kind == "bool":
        if isinstance(value, bool):
            out = value
        elif isinstance(value, (str, int)) and str(value).strip().lower() in _TRUE | _FALSE:
            out = str(value).strip().lower() in _TRUE
        else:
            raise _Bad("is not true or false")
    elif kind == "str":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _Bad("is not a string")
        out = str(value)
    elif kind in ("ints", "intlist"):
        if isinstance(value, str):
            parts = [v for v in value.replace("x", ",").replace(" ", ",").split(",") if v]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        elif kind == "intlist" and not isinstance(value, (dict, bool)):
            parts = [value]
        else:
            raise _Bad("is not a list of integers")
        if not parts:
            raise _Bad("is empty")
        out = [_integer(v) for v in parts]
        for v in out:
            _in_range(spec, v)
        out = tuple(out) if kind == "ints" else out
    elif kind == "mapping":
        if not isinstance(value, dict):
            raise _Bad("is not a mapping")
        unknown = sorted(set(value) - set(spec.keys or ()))
        if unknown:
            raise _Bad(f"has unknown keys {', '.join(map(str, unknown))}")
        out = dict(value)
    else:  # pragma: no cover - a Spec with a kind this table does not know
        raise AssertionError(kind)
    if spec.choices and out not in spec.choices:
        raise _Bad("is not allowed")
    return out


def _describe(cfg: "TaskConfig | None", name: str, value: Any, bad: _Bad, source: str | None = None) -> str:
    spec = SPECS[name]
    source = source or (cfg.source_of(name) if cfg is not None else "default")
    return (f"{name} = {value!r} {bad}: allowed {spec.allowed()} ({spec.help}); "
            f"the value came from {source}")


def _join(problems: list[str]) -> str:
    if len(problems) == 1:
        return "configuration: " + problems[0]
    return "configuration has %d problems:\n  - " % len(problems) + "\n  - ".join(problems)


def unknown_field_message(key: str, source: str) -> str:
    close = difflib.get_close_matches(key, list(SPECS), n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else f"; valid fields: {', '.join(SPECS)}"
    return f"unknown field {key!r} (from {source}){hint}"


def apply_overrides(cfg: TaskConfig, overrides: dict | None, source: str | dict = "an override") -> TaskConfig:
    """Return a copy of ``cfg`` with ``overrides`` applied, each value coerced to its field's kind.

    ``source`` says where the values came from ('preset la_0.05', 'file task.yaml',
    'flag --lr'); it may also be a dict key -> source. Unknown keys and values of the
    wrong kind are errors, all reported at once; ranges and cross-field rules are
    checked by :meth:`TaskConfig.validate`.
    """
    cfg, problems = _apply(cfg, overrides, source)
    if problems:
        raise ConfigError(_join([p for _, p in problems]))
    return cfg


def _apply(cfg: TaskConfig, overrides: dict | None, source) -> tuple[TaskConfig, list[tuple[str, str]]]:
    cfg = copy.deepcopy(cfg)
    sources = dict(cfg.__dict__.get("_sources", {}))
    problems = []
    for key, value in (overrides or {}).items():
        key = str(key).replace("-", "_")
        where = source.get(key, "an override") if isinstance(source, dict) else source
        if key not in SPECS:
            problems.append((key, unknown_field_message(key, where)))
            continue
        if key in ("splits", "intensity") and isinstance(value, dict):
            merged = dict(getattr(cfg, key) or {})
            merged.update(value)
            value = merged
        try:
            value = _coerce_kind(SPECS[key], value)
        except _Bad as bad:
            problems.append((key, _describe(None, key, value, bad, where)))
            continue
        setattr(cfg, key, value)
        sources[key] = where
    cfg.__dict__["_sources"] = sources
    return cfg, problems


def _coerce_kind(spec: Spec, value: Any) -> Any:
    # Kinds at assignment, ranges at validate(): a preset may pass through an
    # out-of-range value that a later override corrects.
    return _coerce(dataclasses.replace(spec, ge=None, gt=None, le=None, lt=None, choices=None), value)


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
        close = difflib.get_close_matches(str(name), list(tasks), n=3)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown task {name!r}{hint}; known tasks: {', '.join(tasks)} "
                          f"(`genericssl presets` describes them; or pass --config FILE.yaml for your own data)")
    task = dict(tasks[name])
    merged: dict = dict(table["defaults"])
    merged.update(table["dataset_defaults"].get(task.get("dataset"), {}))
    for tmpl in task.pop("extends", []):
        merged.update(table["templates"][tmpl])
    merged.update(task)
    merged["name"] = name
    merged = _format_strings(merged, merged)
    return apply_overrides(TaskConfig(), merged, source=f"preset {name}")


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        fields = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read: {e}") from None
    if not isinstance(fields, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field: value")
    return fields


def load_config(task: str | None = None, config_file: str | Path | None = None,
                overrides: dict | None = None, sources: dict | str | None = None) -> TaskConfig:
    """Preset ``task`` (or the plain defaults), then ``config_file``, then ``overrides``; validated.

    A YAML config file may itself name a preset with ``task: la_0.05``. ``sources``
    names where each override came from (a dict field -> 'flag --lr', or one string).
    """
    file_fields: dict = {}
    if config_file is not None:
        file_fields = read_config_file(config_file)
        task = file_fields.pop("task", None) or task
    cfg = load_preset(task) if task else TaskConfig()
    # Every layer's problems together: one message, not one per attempt.
    cfg, problems = _apply(cfg, file_fields, f"file {config_file}")
    cfg, more = _apply(cfg, overrides, sources or "an override")
    return cfg.validate(problems + more)


def data_path(cfg: TaskConfig, given: str | Path | None = None) -> Path:
    """The prepared dataset folder: ``given``, else ``cfg.data_dir`` (a relative one under $GENERICSSL_DATA)."""
    import os

    if given:
        return Path(given)
    path = Path(cfg.data_dir)
    return path if path.is_absolute() else Path(os.environ.get("GENERICSSL_DATA", ".")) / path


def format_config(cfg: TaskConfig) -> str:
    """The resolved configuration as YAML, each field with its source and description."""
    lines = []
    for name, value in cfg.to_dict().items():
        text = yaml.safe_dump({name: value}, default_flow_style=True, width=10 ** 6, sort_keys=False).strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1]
        lines.append(f"{text:<60s} # {cfg.source_of(name)}: {SPECS[name].help}")
    return "\n".join(lines)
