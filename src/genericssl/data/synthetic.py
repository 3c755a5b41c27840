"""Synthetic segmentation tasks, generated from a seed (no download).

Each case is a "body" (an ellipsoid of tissue in dark air) holding one deformed
ellipsoid per foreground class, painted large to small so the small ones stay
visible (and classes are imbalanced), plus unlabeled "distractor" blobs that look
like a large class. A :class:`DomainProfile` turns the label map into intensities
(per-class means, smooth tissue texture, fine per-class texture, bias field,
optional gamma map or contrast inversion, blur, noise, raw units, hot voxels), so
that one anatomy seen through several profiles gives the UDA and SemiDG settings.

The layout written is the prepared-data contract of :mod:`genericssl.data.cases`
(``npy/``, ``split_txts/``, ``dataset.json``), plus ``task.yaml`` (and
``tasks/<name>.yaml`` per task) holding TaskConfig fields for the generated data.

Settings (``SyntheticSpec.setting``):

- ``ssl``: all domains pooled; per training domain a seeded subset of the train
  cases is labeled. Splits ``labeled``, ``unlabeled``, ``eval``, ``test``,
  ``train_all`` (every train case, for a fully supervised reference).
- ``uda``: every non-test case of ``source`` labeled, ``target``'s train cases
  unlabeled, validated and tested on ``target``. Same split names, plus
  ``test_source``.
- ``semidg``: for each held-out domain X, ``to{X}_labeled`` / ``to{X}_unlabeled``
  from the other domains' train cases, ``to{X}_eval`` their eval cases (a
  held-out validation set, not the test domain), ``to{X}_test`` all of X's cases,
  ``to{X}_train_all``. One task per X.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from scipy import linalg, ndimage

from ..errors import UserError

ROLES = ("train", "eval", "test")
SETTINGS = ("ssl", "uda", "semidg")


@dataclass
class DomainProfile:
    """How one "scanner" renders the anatomy. Intensities are in [0, 1] before
    the raw-unit map ``x * raw_scale + raw_offset``.

    class_means: tissue (class 0 inside the body) then each foreground class;
        None takes the spec's default palette.
    class_texture: amplitude of fine texture per class (same indexing); None: 0.
    """
    name: str
    class_means: list[float] | None = None
    class_texture: list[float] | None = None
    air: float = 0.0
    texture: float = 0.05       # smooth tissue texture amplitude
    bias: float = 0.15          # multiplicative low-frequency bias field amplitude
    noise: float = 0.03         # Gaussian noise std
    blur: float = 0.0           # point-spread sigma in voxels (0: none)
    gamma: float = 1.0          # tissue intensities mapped by x ** gamma
    invert: bool = False        # tissue contrast inverted (air stays dark)
    mean_jitter: float = 0.03   # per-case shift of each class mean
    raw_scale: float = 1000.0
    raw_offset: float = 0.0
    outliers: float = 0.0       # fraction of hot voxels (clip percentiles to remove)


@dataclass
class SyntheticSpec:
    """A synthetic task. ``shape`` has 3 axes (volumes) or 2 (slices).

    structure_sizes: per foreground class, the radius as a fraction of each axis
        (None: geometric from 0.25 down to 0.08).
    counts: cases per domain and role (``{"A": {"train": 10, "eval": 2, "test": 3}}``);
        roles or domains not listed take ``default_counts``.
    labeled: a fraction in (0, 1) of each training domain's train cases
        (``ceil(n * fraction)``), or a total count spread over training domains.
    variation: how much the anatomy differs from case to case, 0..1. At 0 every
        case shares one layout up to ~1 voxel of jitter, so a domain differs from
        another in intensity only; at 1 each case moves the whole layout by up to
        8 % of the field of view, scales it by 0.85-1.15, stretches and turns each
        structure, and takes a body of its own size (a large one is cut by the
        field of view), drawn from a random stream of its own (0 leaves every
        case as it was).
    """
    name: str = "synthetic"
    setting: str = "ssl"
    shape: tuple[int, ...] = (48, 48, 48)
    patch_size: tuple[int, ...] | None = None
    num_classes: int = 4
    structure_sizes: tuple[float, ...] | None = None
    deformation: float = 0.25
    distractors: int = 3
    domains: list[DomainProfile] = field(default_factory=lambda: [DomainProfile("A")])
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    default_counts: dict[str, int] = field(default_factory=lambda: {"train": 20, "eval": 4, "test": 6})
    labeled: float | int = 0.2
    source: str | None = None
    target: str | None = None
    intensity: dict = field(default_factory=lambda: {"clip": None, "percentile": None})
    seed: int = 0
    variation: float = 0.0
    # How far a structure's centre may sit from the body's centre, as a fraction of the
    # axis, less the structure's radius. At 0.40 the small structures, which get the most
    # room and are placed last, can end up against the body's rim, half cut off and
    # bordering the air.
    spread: float = 0.40

    def validate(self) -> "SyntheticSpec":
        if self.setting not in SETTINGS:
            raise UserError(f"unknown synthetic setting {self.setting!r}; choose from {', '.join(SETTINGS)}")
        if len(self.shape) not in (2, 3) or min(self.shape) < 8:
            raise UserError(f"shape must have 2 or 3 axes of at least 8 voxels, got {list(self.shape)}")
        if not 2 <= self.num_classes <= 255:
            raise UserError(f"num_classes must be in 2..255, got {self.num_classes}")
        if self.structure_sizes is not None and len(self.structure_sizes) != self.num_classes - 1:
            raise UserError(f"structure_sizes needs one radius per foreground class "
                            f"({self.num_classes - 1}), got {len(self.structure_sizes)}")
        names = [d.name for d in self.domains]
        if not names or len(set(names)) != len(names):
            raise UserError(f"domains need distinct names, got {names}")
        for d in self.domains:
            for attr in ("class_means", "class_texture"):
                v = getattr(d, attr)
                if v is not None and len(v) != self.num_classes:
                    raise UserError(f"domain {d.name}: {attr} needs {self.num_classes} values "
                                    f"(tissue first), got {len(v)}")
        if self.setting == "uda" and len(names) < 2:
            raise UserError("the uda setting needs a source and a target domain")
        if self.setting == "semidg" and len(names) < 2:
            raise UserError("the semidg setting needs at least two domains")
        if not 0.0 < float(self.spread) <= 0.5:
            raise UserError(f"spread must be in (0, 0.5], got {self.spread}")
        if not 0.0 <= float(self.variation) <= 1.0:
            raise UserError(f"variation must be in 0..1, got {self.variation}")
        if self.patch_size is not None and len(self.patch_size) != len(self.shape):
            raise UserError(f"patch_size {list(self.patch_size)} and shape {list(self.shape)} differ in axes")
        return self

    def counts_for(self, domain: str) -> dict[str, int]:
        c = dict(self.default_counts)
        c.update(self.counts.get(domain, {}))
        return {r: int(c.get(r, 0)) for r in ROLES}

    def sizes(self) -> list[float]:
        if self.structure_sizes is not None:
            return [float(s) for s in self.structure_sizes]
        k = self.num_classes - 1
        return [float(s) for s in np.geomspace(0.25, 0.08, k)] if k > 1 else [0.25]

    def default_patch(self) -> tuple[int, ...]:
        """Multiple of 16 at most 0.8 x the axis (random crops then move), or the
        largest multiple of 16 that fits when that would fall below 32."""
        if self.patch_size is not None:
            return tuple(int(p) for p in self.patch_size)
        out = []
        for s in self.shape:
            p = 16 * int(0.8 * s // 16)
            if p < 32:
                p = max(16, 16 * (s // 16))
            out.append(p)
        return tuple(out)


# ---------------------------------------------------------------- anatomy
@dataclass
class _Structure:
    centre: np.ndarray    # fraction of each axis
    radii: np.ndarray     # fraction of each axis
    rotation: np.ndarray  # orthogonal matrix


def _random_rotation(rng, ndim):
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    return q * np.sign(np.diag(r))


def _anatomy(spec: SyntheticSpec) -> list[_Structure]:
    """Canonical layout shared by every case and domain: where each class sits."""
    rng = np.random.default_rng([spec.seed, 0xA7A])
    ndim = len(spec.shape)
    placed: list[_Structure] = []
    for r in spec.sizes():
        radii = r * rng.uniform(0.75, 1.25, ndim)
        rotation = _random_rotation(rng, ndim)
        room = np.maximum(spec.spread - radii.max(), 0.02)
        best, best_score = None, -np.inf
        for _ in range(200):
            c = 0.5 + rng.uniform(-room, room, ndim)
            # Keep structures from swallowing each other: the worst ratio of centre
            # distance to summed radii decides.
            score = min((np.linalg.norm(c - s.centre) / (r + s.radii.mean()) for s in placed),
                        default=np.inf)
            if score > best_score:
                best, best_score = c, score
            if score >= 0.9:
                break
        placed.append(_Structure(best, radii, rotation))
    return placed


def _default_means(num_classes: int) -> list[float]:
    """Tissue 0.4, then foreground classes alternating bright and dark; with many
    classes the levels repeat, so texture, shape and place must tell them apart."""
    levels = [0.72, 0.15, 0.92, 0.58, 0.25, 0.82]
    return [0.4] + [levels[k % len(levels)] for k in range(num_classes - 1)]


def _smooth_field(rng, shape, cells: int = 5) -> np.ndarray:
    """Low-frequency random field, zero mean, unit std: Gaussian-weighted
    interpolation of a ``cells``-per-axis random grid, applied one axis at a time
    (far cheaper than a spline zoom, which dominated generation time)."""
    f = rng.standard_normal([cells] * len(shape))
    for axis, s in enumerate(shape):
        x = np.linspace(0.0, 1.0, s)[:, None]
        centres = np.linspace(-0.1, 1.1, cells)[None, :]
        w = np.exp(-0.5 * ((x - centres) / (centres[0, 1] - centres[0, 0])) ** 2)
        w /= w.sum(axis=1, keepdims=True)
        f = np.moveaxis(np.tensordot(w, f, axes=([1], [axis])), 0, axis)
    return ((f - f.mean()) / (f.std() + 1e-8)).astype(np.float32)


def _fine_noise(rng, shape, sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return f / (f.std() + 1e-8)


def _ellipsoid(grid, centre_vox, radii_vox, rotation, wobble):
    """Mask of a rotated ellipsoid whose radius is scaled by ``1 + wobble``."""
    d = grid - centre_vox.reshape((-1,) + (1,) * (grid.ndim - 1))
    u = np.tensordot(rotation.T, d, axes=1)
    f = np.zeros(grid.shape[1:], dtype=np.float32)
    for k in range(len(radii_vox)):
        f += (u[k] / radii_vox[k]) ** 2
    return f < (1.0 + wobble) ** 2


def _small_rotation(rng, ndim, scale=0.15):
    s = rng.normal(0.0, scale, (ndim, ndim))
    return linalg.expm(s - s.T)


@dataclass
class _CaseVariation:
    """One case's departure from the canonical layout (``SyntheticSpec.variation``)."""
    shift: np.ndarray           # of the whole layout, fraction of each axis
    scale: float                # of the layout about the body's centre and of every radius
    body: np.ndarray            # body radii, fraction of each axis
    stretch: list[np.ndarray]   # per structure, per axis
    turn: list[np.ndarray]      # per structure, an extra rotation
    jitter: list[np.ndarray]    # per structure, centre offset

    @classmethod
    def draw(cls, vrng, v: float, n_structures: int, ndim: int) -> "_CaseVariation":
        return cls(shift=vrng.uniform(-0.08, 0.08, ndim) * v, scale=float(1 + vrng.uniform(-0.15, 0.15) * v),
                   body=vrng.uniform(0.46 - 0.06 * v, 0.46 + 0.08 * v, ndim),
                   stretch=[1 + vrng.uniform(-0.2, 0.2, ndim) * v for _ in range(n_structures)],
                   turn=[_small_rotation(vrng, ndim, 0.25 * v) for _ in range(n_structures)],
                   jitter=[vrng.normal(0, 0.03 * v, ndim) for _ in range(n_structures)])


def render_label(spec: SyntheticSpec, anatomy, rng, vrng=None) -> tuple[np.ndarray, np.ndarray, list]:
    """(label uint8, body mask, distractor masks with their class look-alike).

    ``vrng`` draws the case's anatomy variation (``spec.variation`` > 0) from a stream
    of its own, so that ``rng`` draws what it always drew."""
    shape = tuple(spec.shape)
    ndim = len(shape)
    size = np.asarray(shape, dtype=np.float32)
    grid = np.indices(shape, dtype=np.float32)
    var = None
    if spec.variation > 0:
        var = _CaseVariation.draw(vrng if vrng is not None else rng, float(spec.variation), len(anatomy), ndim)
    body_centre = 0.5 + rng.normal(0, 0.01, ndim)
    body_radii = rng.uniform(0.44, 0.48, ndim)
    if var is not None:
        body_centre, body_radii = body_centre + var.shift, var.body
    body = _ellipsoid(grid, body_centre * size, body_radii * size, np.eye(ndim),
                      0.05 * _smooth_field(rng, shape, 4))
    label = np.zeros(shape, dtype=np.uint8)
    distractors = []
    for _ in range(spec.distractors):
        r = rng.uniform(0.04, 0.07) * size * rng.uniform(0.8, 1.2, ndim)
        c = (0.5 + rng.uniform(-0.33, 0.33, ndim)) * size
        look_alike = int(rng.integers(1, min(3, spec.num_classes - 1) + 1))
        distractors.append((_ellipsoid(grid, c, r, _random_rotation(rng, ndim), 0.0) & body, look_alike))
    for k, s in enumerate(anatomy, start=1):
        centre = s.centre + rng.normal(0, 0.025, ndim)
        radii = s.radii * rng.uniform(0.85, 1.15)
        rotation = s.rotation
        if var is not None:
            i = k - 1
            centre = body_centre + var.scale * (centre - 0.5) + var.jitter[i]
            radii = radii * var.scale * var.stretch[i]
            rotation = rotation @ var.turn[i]
        centre, radii = centre * size, np.maximum(radii * size, 1.0)
        wobble = spec.deformation * _smooth_field(rng, shape, 5) * rng.uniform(0.5, 1.0)
        mask = _ellipsoid(grid, centre, radii, rotation @ _small_rotation(rng, ndim), wobble) & body
        if not mask.any():
            # A structure a voxel or two across can fall between grid points;
            # keep every class present in every case.
            mask[tuple(np.clip(np.round(centre).astype(int), 0, np.array(shape) - 1))] = True
        label[mask] = k
    return label, body, distractors


def render_image(spec: SyntheticSpec, domain: DomainProfile, label, body, distractors, rng):
    """Raw (un-normalised) float32 intensities of one case seen through ``domain``."""
    C = spec.num_classes
    shape = label.shape
    means = np.asarray(domain.class_means or _default_means(C), dtype=np.float32)
    means = means + rng.normal(0.0, domain.mean_jitter, C).astype(np.float32)
    textures = np.asarray(domain.class_texture or [0.0] * C, dtype=np.float32)
    tissue = means[label]
    for mask, look_alike in distractors:
        tissue[mask & (label == 0)] = means[look_alike]
    tissue += domain.texture * _fine_noise(rng, shape, 2.0)
    if textures.any():
        tissue += textures[label] * _fine_noise(rng, shape, 0.7)
    tissue = np.clip(tissue, 0.0, 1.0) ** domain.gamma
    if domain.invert:
        tissue = 1.0 - tissue
    image = np.where(body, tissue, np.float32(domain.air))
    image *= 1.0 + domain.bias * _smooth_field(rng, shape, 3)
    if domain.blur > 0:
        image = ndimage.gaussian_filter(image, domain.blur)
    image += domain.noise * rng.standard_normal(shape).astype(np.float32)
    if domain.outliers > 0:
        hot = rng.random(shape) < domain.outliers
        image[hot] = rng.uniform(1.5, 3.0, int(hot.sum())).astype(np.float32)
    return (image * domain.raw_scale + domain.raw_offset).astype(np.float32)


def make_case(spec: SyntheticSpec, domain_index: int, role: str, k: int, anatomy=None):
    """One case: (raw image float32, label uint8), a pure function of its place."""
    anatomy = _anatomy(spec) if anatomy is None else anatomy
    rng = np.random.default_rng([spec.seed, domain_index, ROLES.index(role), k])
    vrng = np.random.default_rng([spec.seed, domain_index, ROLES.index(role), k, 0x7A2])
    label, body, distractors = render_label(spec, anatomy, rng, vrng)
    image = render_image(spec, spec.domains[domain_index], label, body, distractors, rng)
    return image, label


# ---------------------------------------------------------------- splits
def _n_labeled(labeled, counts: dict[str, int]) -> dict[str, int]:
    if 0 < labeled < 1:
        return {d: min(n, math.ceil(n * labeled - 1e-9)) for d, n in counts.items()}
    total = int(labeled)
    pool = sum(counts.values())
    if total < 1 or total > pool:
        raise UserError(f"labeled must be a fraction in (0, 1) or a count in 1..{pool}, got {labeled}")
    # Largest remainder, so the count is spread over domains in proportion.
    exact = {d: total * n / pool for d, n in counts.items()}
    out = {d: int(v) for d, v in exact.items()}
    for d in sorted(exact, key=lambda d: exact[d] - out[d], reverse=True)[:total - sum(out.values())]:
        out[d] += 1
    return out


def _splits(spec: SyntheticSpec, ids: dict[str, dict[str, list[str]]]) -> tuple[dict, dict]:
    """(split name -> ids, task name -> role -> split name)."""
    names = [d.name for d in spec.domains]

    def labeled_part(domains):
        n = _n_labeled(spec.labeled, {d: len(ids[d]["train"]) for d in domains})
        lab, unl = [], []
        for d in domains:
            rng = np.random.default_rng([spec.seed, 0x5B1, names.index(d)])
            order = [ids[d]["train"][i] for i in rng.permutation(len(ids[d]["train"]))]
            lab += sorted(order[:n[d]])
            unl += sorted(order[n[d]:])
        return lab, unl

    def pooled(domains, role):
        return [i for d in domains for i in ids[d][role]]

    splits, tasks = {}, {}
    roles = {"labeled": "labeled", "unlabeled": "unlabeled", "eval": "eval", "test": "test"}
    if spec.setting == "ssl":
        lab, unl = labeled_part(names)
        splits.update(labeled=lab, unlabeled=unl, eval=pooled(names, "eval"),
                      test=pooled(names, "test"), train_all=pooled(names, "train"))
        tasks[spec.name] = roles
    elif spec.setting == "uda":
        src = spec.source or names[0]
        tgt = spec.target or next(n for n in names if n != src)
        for d in (src, tgt):
            if d not in names:
                raise UserError(f"uda domain {d!r} is not among the spec's domains {names}")
        splits.update(labeled=ids[src]["train"] + ids[src]["eval"], unlabeled=list(ids[tgt]["train"]),
                      eval=list(ids[tgt]["eval"]), test=list(ids[tgt]["test"]),
                      test_source=list(ids[src]["test"]))
        splits["train_all"] = splits["labeled"] + splits["unlabeled"]
        tasks[spec.name] = roles
    else:
        for held in names:
            train = [n for n in names if n != held]
            lab, unl = labeled_part(train)
            p = f"to{held}_"
            splits.update({p + "labeled": lab, p + "unlabeled": unl, p + "eval": pooled(train, "eval"),
                           p + "test": [i for r in ROLES for i in ids[held][r]],
                           p + "train_all": pooled(train, "train")})
            tasks[f"{spec.name}_to{held}"] = {r: p + r for r in roles}
    return splits, tasks


def _task_dict(spec: SyntheticSpec, name: str, data_dir: Path, splits: dict, roles: dict) -> dict:
    n_l, n_u = len(splits[roles["labeled"]]), len(splits[roles["unlabeled"]])
    return {
        "name": name,
        "dataset": "synthetic",
        "data_dir": str(data_dir),
        "num_classes": spec.num_classes,
        "spatial_dims": len(spec.shape),
        "patch_size": list(spec.default_patch()),
        "splits": dict(roles),
        "intensity": dict(spec.intensity),
        # The smaller set is the repeated one, as the paper's presets choose.
        "repeat": "labeled" if n_l <= n_u else "unlabeled",
    }


# ---------------------------------------------------------------- writing
def _prepare_dir(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        meta = out / "dataset.json"
        synthetic = False
        if meta.is_file():
            try:
                synthetic = "synthetic" in json.loads(meta.read_text())
            except json.JSONDecodeError:
                pass
        if not synthetic:
            raise UserError(f"{out} is not empty and holds no synthetic dataset; "
                            f"choose an empty or new folder")
        for sub in ("npy", "split_txts", "tasks"):
            shutil.rmtree(out / sub, ignore_errors=True)
    for sub in ("npy", "split_txts", "tasks"):
        (out / sub).mkdir(parents=True, exist_ok=True)


def make_synthetic_dataset(out_dir, spec: SyntheticSpec) -> dict:
    """Generate ``spec`` into ``out_dir`` (prepared layout) and return a summary.

    Summary keys: name, setting, data_dir, num_classes, spatial_dims, shape,
    patch_size, domains, cases ({domain: {role: n}}), splits ({split: n}),
    tasks ({task name: TaskConfig fields}) and task (the first of them). Each
    task is also written as ``tasks/<name>.yaml``, the first as ``task.yaml``;
    ``genericssl train --config DATA/task.yaml`` trains on it.
    """
    spec.validate()
    out = Path(out_dir).resolve()
    _prepare_dir(out)
    anatomy = _anatomy(spec)
    ids: dict[str, dict[str, list[str]]] = {}
    meta_cases = {}
    spacing = [1.0] * len(spec.shape)
    for di, domain in enumerate(spec.domains):
        ids[domain.name] = {}
        for role, n in spec.counts_for(domain.name).items():
            ids[domain.name][role] = []
            for k in range(n):
                case_id = f"{domain.name}_{role}_{k:03d}"
                image, label = make_case(spec, di, role, k, anatomy)
                np.save(out / "npy" / f"{case_id}_image.npy", image)
                np.save(out / "npy" / f"{case_id}_label.npy", label)
                ids[domain.name][role].append(case_id)
                meta_cases[case_id] = {"spacing": spacing, "domain": domain.name, "role": role}

    splits, tasks = _splits(spec, ids)
    for name, case_ids in splits.items():
        (out / "split_txts" / f"{name}.txt").write_text("".join(f"{i}\n" for i in case_ids))
    task_dicts = {name: _task_dict(spec, name, out, splits, roles) for name, roles in tasks.items()}
    for name, task in task_dicts.items():
        (out / "tasks" / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
    first = next(iter(task_dicts.values()))
    (out / "task.yaml").write_text(yaml.safe_dump(first, sort_keys=False))

    spec_dict = dataclasses.asdict(spec)
    (out / "dataset.json").write_text(json.dumps({
        "cases": meta_cases, "num_classes": spec.num_classes,
        "axes": "zyx"[-len(spec.shape):], "synthetic": spec_dict,
    }, indent=1))
    return {
        "name": spec.name, "setting": spec.setting, "data_dir": str(out),
        "num_classes": spec.num_classes, "spatial_dims": len(spec.shape),
        "shape": list(spec.shape), "patch_size": list(spec.default_patch()),
        "domains": [d.name for d in spec.domains],
        "cases": {d: {r: len(v) for r, v in roles.items()} for d, roles in ids.items()},
        "splits": {name: len(v) for name, v in splits.items()},
        "tasks": task_dicts, "task": first,
    }


# ---------------------------------------------------------------- named specs
def _cube(size: int, spatial_dims: int) -> tuple[int, ...]:
    return (int(size),) * spatial_dims


def _counts(names: Sequence[str], train: int, eval_: int, test: int) -> dict:
    return {n: {"train": train, "eval": eval_, "test": test} for n in names}


def demo_spec(seed: int = 0, size: int = 48, spatial_dims: int = 3) -> SyntheticSpec:
    """Two mildly different scanners, three foreground classes (one small):
    4 labeled, 16 unlabeled, 4 eval, 6 test cases, 48^3 volumes, 32^3 patches."""
    a = DomainProfile("A", noise=0.03, bias=0.12)
    b = DomainProfile("B", noise=0.045, bias=0.2, gamma=0.8, raw_scale=600.0, raw_offset=-100.0)
    return SyntheticSpec(name="demo", setting="ssl", shape=_cube(size, spatial_dims), num_classes=4,
                         structure_sizes=(0.26, 0.16, 0.09), domains=[a, b],
                         counts=_counts("AB", 10, 2, 3), labeled=4, seed=seed)


def ssl_spec(labeled: float = 0.1, seed: int = 0, size: int = 48, spatial_dims: int = 3,
             n_train: int = 40, n_eval: int = 4, n_test: int = 10) -> SyntheticSpec:
    """SSL (LA-like): one domain, a few percent of the train cases labeled."""
    return SyntheticSpec(name=f"ssl_{labeled:g}", setting="ssl", shape=_cube(size, spatial_dims),
                         num_classes=3, structure_sizes=(0.26, 0.12),
                         domains=[DomainProfile("A")], counts=_counts("A", n_train, n_eval, n_test),
                         labeled=labeled, seed=seed)


def ibssl_spec(labeled: float = 0.2, seed: int = 0, size: int = 48, spatial_dims: int = 3,
               num_classes: int = 8, n_train: int = 30, n_eval: int = 4, n_test: int = 8,
               largest: float = 0.24, smallest: float = 0.045,
               class_means: Sequence[float] | None = None) -> SyntheticSpec:
    """Class-imbalanced SSL (Synapse-like): many classes of very different sizes,
    down to a few voxels across; intensity levels repeat across classes and some
    carry fine texture, so size, place and texture must tell them apart.
    ``class_means``: tissue, then each foreground class (None: the default palette)."""
    k = num_classes - 1
    sizes = tuple(float(s) for s in np.geomspace(largest, smallest, k))
    textures = [0.0] + [0.08 if c % 3 == 2 else 0.0 for c in range(k)]
    domain = DomainProfile("A", class_texture=textures, noise=0.03,
                           class_means=None if class_means is None else [float(m) for m in class_means])
    return SyntheticSpec(name=f"ibssl_{labeled:g}", setting="ssl", shape=_cube(size, spatial_dims),
                         num_classes=num_classes, structure_sizes=sizes, domains=[domain],
                         counts=_counts("A", n_train, n_eval, n_test), labeled=labeled, seed=seed,
                         intensity={"clip": [0.0, 1000.0], "percentile": None})


def uda_domains() -> tuple[DomainProfile, DomainProfile]:
    """A CT-like source and an MR-like target: a non-monotone intensity map (class 2
    turns from darker than the surrounding tissue to brighter than class 1, as
    myocardium and blood pool change places between CT and MR; the other classes
    keep their order), 3x the bias field, 2x the noise, blur, other raw units,
    hot voxels.

    Calibrated on labeled-only training before any semi-supervised method ran on
    it: with the whole tissue contrast inverted every method, A&D included, scored
    under 1 % Dice on the target; with a monotone gamma map, training on the
    source alone (54 %) already matched training with target labels (56 %); with
    this map the source alone reaches 25 %, target labels 84 % (docs/benchmark.md).
    """
    source = DomainProfile("src", noise=0.03, bias=0.1, raw_scale=1000.0, raw_offset=-200.0)
    target = DomainProfile("tgt", class_means=[0.4, 0.72, 0.8, 0.95], noise=0.06, bias=0.3, blur=0.6,
                           raw_scale=350.0, outliers=2e-4)
    return source, target


def uda_spec(seed: int = 0, size: int = 48, spatial_dims: int = 3, n_source: int = 16,
             n_target: int = 16, n_eval: int = 3, n_test: int = 6) -> SyntheticSpec:
    """UDA (MMWHS-like): all source cases labeled, target unlabeled, tested on target."""
    source, target = uda_domains()
    counts = {"src": {"train": n_source, "eval": 0, "test": n_test},
              "tgt": {"train": n_target, "eval": n_eval, "test": n_test}}
    return SyntheticSpec(name="uda", setting="uda", shape=_cube(size, spatial_dims), num_classes=4,
                         structure_sizes=(0.24, 0.15, 0.1), domains=[source, target], counts=counts,
                         source="src", target="tgt", seed=seed,
                         intensity={"clip": None, "percentile": [0.5, 99.5]})


def semidg_domains() -> list[DomainProfile]:
    """Four "vendors" of one modality: different contrast curves, noise, blur,
    bias and raw units (none inverted: the held-out one stays reachable)."""
    return [
        DomainProfile("A", noise=0.03, bias=0.1, raw_scale=1000.0),
        DomainProfile("B", gamma=0.6, noise=0.05, bias=0.2, raw_scale=250.0, outliers=3e-4),
        DomainProfile("C", gamma=1.5, noise=0.04, bias=0.3, blur=0.8, raw_scale=4000.0),
        DomainProfile("D", gamma=0.75, noise=0.07, bias=0.15, blur=0.4, raw_scale=600.0,
                      class_means=[0.45, 0.8, 0.2, 0.95], outliers=3e-4),
    ]


def semidg_spec(labeled: float = 0.05, seed: int = 0, size: int = 48, spatial_dims: int = 3,
                n_train: int = 20, n_eval: int = 2, n_test: int = 4) -> SyntheticSpec:
    """SemiDG (M&Ms-like): four domains; train on three with few labels, test on the
    fourth (one task per held-out domain)."""
    domains = semidg_domains()
    return SyntheticSpec(name=f"semidg_{labeled:g}", setting="semidg", shape=_cube(size, spatial_dims),
                         num_classes=4, structure_sizes=(0.2, 0.14, 0.1), domains=domains,
                         counts=_counts([d.name for d in domains], n_train, n_eval, n_test),
                         labeled=labeled, seed=seed,
                         intensity={"clip": None, "percentile": [0.5, 99.5]})


NAMED_SPECS = {"demo": demo_spec, "ssl": ssl_spec, "ibssl": ibssl_spec, "uda": uda_spec,
               "semidg": semidg_spec}


def named_spec(name: str, **kwargs) -> SyntheticSpec:
    """A named spec (``demo``, ``ssl``, ``ibssl``, ``uda``, ``semidg``) with its
    builder's keyword arguments (seed, size, labeled, ...)."""
    if name not in NAMED_SPECS:
        raise UserError(f"unknown synthetic spec {name!r}; choose from {', '.join(NAMED_SPECS)}")
    return NAMED_SPECS[name](**kwargs)
