"""One cell of `genericssl bench accuracy`: its data, its key, its training and its test.

A cell is one (setting, method, seed). Its key hashes the code that computes it (the
package version, the sources of ``CODE_FILES`` and of its method's files, and the
functions in ``CELL_FUNCTIONS``) and its settings, so that a cell computed by other
code or settings is rerun, never mixed in. ``run_cell`` trains through the Trainer's
public callbacks and tests the released network at the chosen epochs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import UserError
from .settings import ATTRIBUTION, ATTRIBUTION_LABELS, DEFAULTS, METHOD_LABELS, METHODS, BenchSetting

# Variants: a method with a few TaskConfig fields changed, reported as a row of its
# own. The overrides go into the cell's config and so into its cache key; the
# method's own cells keep theirs.
#   ad_eval_sampler: A&D sampling its pseudo labels in eval mode (METHOD.md's
#   optional departure), so that the 10 no-gradient denoising passes per
#   iteration stop dominating the encoder's BatchNorm running statistics that
#   D_theta is tested with (docs/benchmark.md has the diagnosis).
#   ad_full_ramp: A&D with the unlabeled weight ramped up over the whole run (the paper's
#   schedule) instead of the benchmark's first third; "rampup_fraction" is a budget
#   field, turned into the cell's rampup_epochs by ``plan_cells``.
VARIANTS = {"ad_eval_sampler": ("ad", {"sampler_eval_mode": True}),
            "ad_full_ramp": ("ad", {"rampup_fraction": 1.0})}
VARIANT_LABELS = {"ad_eval_sampler": "A&D, eval-mode sampler"}
# Rows read off another method's cells (no training of their own): name -> that method.
# Every cell whose test model is A&D's D_theta is tested a second time with its BatchNorm
# statistics recomputed, so that the ramp and pseudo-label attribution rows can be compared
# without the running statistics' test-to-test wobble (docs/benchmark.md, round 9).
DERIVED = {"ad_bn": "ad", "ad_full_ramp_bn": "ad_full_ramp", "ad_psi_bn": "ad_psi",
           "ad_encoder_no_u_bn": "ad_encoder_no_u", "ad_encoder_no_deno_bn": "ad_encoder_no_deno"}
ALL_METHODS = (METHODS[:-1] + tuple(VARIANTS) + tuple(m for m in ATTRIBUTION if m not in VARIANTS)
               + METHODS[-1:])  # the reference row stays last
LABELS = {**METHOD_LABELS, **VARIANT_LABELS, **ATTRIBUTION_LABELS}

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# Sources a cell's numbers depend on (relative to the package). The benchmark's
# own report code is hashed by function (see ``CELL_FUNCTIONS``) so that a change
# to a table or a plot does not throw away hours of finished cells.
# bench/settings.py is not among them: what a cell takes from it (spec, data, budget,
# config, stride) is in the cell's key itself, so a new setting reruns nothing else.
# Of methods/, a cell hashes the interface and the files of its own method (see
# ``method_files``), so a change to one baseline reruns that baseline only.
CODE_FILES = ("models/*.py", "data/*.py", "losses.py", "diffusion.py", "training.py",
              "config.py", "metrics.py", "inference.py", "checkpoint.py")
SHARED_METHOD_FILES = ("methods/__init__.py", "methods/base.py", "methods/ramps.py")
# The data generator enters a cell's key through the bytes of the data it made
# (``data_fingerprint``), not its source: a change to one setting's data reruns
# that setting's cells only.
CODE_EXCLUDE = ("data/synthetic.py",)


# ---------------------------------------------------------------- arguments
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def base_method(method: str) -> str:
    """The method a variant (or a derived row) runs (a method is its own)."""
    method = DERIVED.get(method, method)
    return VARIANTS.get(method, (method,))[0]


def method_files(method: str) -> list[str]:
    """The files of methods/ that a method's cells run: its class's modules and, transitively,
    the modules of methods/ they take names from (A&D: ad.py, difficulty.py; UA-MT: uamt.py,
    mean_teacher.py), plus the interface every method shares."""
    import types

    from .. import methods as methods_pkg

    base = base_method(method)
    cls = methods_pkg.get_method("supervised" if base == "full" else base)
    prefix = methods_pkg.__name__ + "."
    todo = [c.__module__ for c in cls.__mro__ if c.__module__.startswith(prefix)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for value in vars(sys.modules[name]).values():
            dep = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
            if isinstance(dep, str) and dep.startswith(prefix) and dep not in seen:
                todo.append(dep)
    own = {f"methods/{name[len(prefix):]}.py" for name in seen}
    return sorted(own | set(SHARED_METHOD_FILES))


def code_version(method: str | None = None) -> dict:
    """Package version plus one hash over the sources that compute a cell of ``method``
    (every method's sources when None)."""
    h = hashlib.sha256()
    files = []
    for pattern in CODE_FILES + (("methods/*.py",) if method is None else ()):
        files += [str(p.relative_to(PACKAGE_DIR)) for p in sorted(PACKAGE_DIR.glob(pattern))]
    if method is not None:
        files += method_files(method)
    for rel in files:
        if rel in CODE_EXCLUDE:
            continue
        h.update(rel.encode())
        h.update((PACKAGE_DIR / rel).read_bytes())
    for fn in CELL_FUNCTIONS:
        h.update(inspect.getsource(fn).encode())
    return {"package": __version__, "sources": h.hexdigest()[:16]}


def _hash_json(obj) -> str:
    return _sha(json.dumps(obj, sort_keys=True, default=str).encode())


# ---------------------------------------------------------------- data
def data_fingerprint(data_dir: Path) -> str:
    """Hash of what a cell reads: the arrays, the split lists and dataset.json (not the paths)."""
    from ..data.cases import SPLIT_DIRS

    h = hashlib.sha256()
    for sub in ("npy",) + SPLIT_DIRS:
        if not (data_dir / sub).is_dir():
            continue
        for path in sorted((data_dir / sub).iterdir()):
            h.update(f"{sub}/{path.name}".encode())
            with open(path, "rb") as f:  # a real dataset's volumes: read in blocks, not whole
                for block in iter(lambda: f.read(1 << 24), b""):
                    h.update(block)
    if (data_dir / "dataset.json").is_file():
        h.update((data_dir / "dataset.json").read_bytes())
    return h.hexdigest()[:16]


def prepare_setting(setting: BenchSetting, out: Path, size: int, data_seed: int, log=print) -> dict:
    """Generate (or reuse) the setting's synthetic data for one data seed; returns the
    generator's summary. A user's dataset (``setting.task_file``) is read, not generated."""
    if setting.task_file:
        return user_data_summary(setting.task_file)
    from ..data.synthetic import make_synthetic_dataset

    spec = setting.make_spec(data_seed, size)
    gen_src = (PACKAGE_DIR / "data" / "synthetic.py").read_bytes()
    key = _hash_json({"spec": dataclasses.asdict(spec), "generator": _sha(gen_src)})
    data_dir = out / "data" / f"{setting.name}-s{data_seed}-{key[:10]}"
    marker = data_dir / "bench_summary.json"
    if marker.is_file():
        try:
            summary = json.loads(marker.read_text())
            if summary.get("bench_key") == key:
                # Recomputed each time (tens of ms): files edited by hand change the key too.
                summary["data_sha"] = data_fingerprint(data_dir)
                return summary
        except json.JSONDecodeError:
            pass
    log(f"generating the {setting.name} data (seed {data_seed}, {size}^3) in {data_dir} ...")
    summary = make_synthetic_dataset(data_dir, spec)
    summary["bench_key"] = key
    summary["spec"] = dataclasses.asdict(spec)
    summary["data_sha"] = data_fingerprint(data_dir)
    _write_json(marker, summary)
    return summary


def user_data_summary(task_file: str) -> dict:
    """A prepared dataset named by its task file, in the shape of the generator's summary:
    one task (the file's fields), the size of each split, and a fingerprint of the data."""
    from ..config import ConfigError, data_path, load_config
    from ..data.cases import read_split

    cfg = load_config(config_file=task_file)
    data_dir = data_path(cfg).resolve()
    splits = {}
    for role in ("labeled", "unlabeled", "test"):
        name = cfg.splits.get(role)
        try:
            splits[name] = len(read_split(data_dir, name))
        except (UserError, OSError) as e:
            raise ConfigError(f"{task_file}: the {role} split {name!r} of {data_dir} cannot be read ({e}); "
                              f"bench accuracy --data needs labeled, unlabeled and test splits") from None
        if splits[name] == 0:
            raise ConfigError(f"{task_file}: the {role} split {name!r} of {data_dir} is empty")
    task = {**cfg.to_dict(), "data_dir": str(data_dir)}
    return {"tasks": {cfg.name: task}, "splits": splits, "spec": None,
            "data_sha": data_fingerprint(data_dir), "data_dir": str(data_dir)}


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


# ---------------------------------------------------------------- the budget
def epoch_iterations(task: dict, splits: dict, batch_size: int) -> int:
    """Iterations per epoch of a semi-supervised method on ``task`` (the repeat rule of the loaders)."""
    n_l = splits[task["splits"]["labeled"]]
    n_u = splits[task["splits"]["unlabeled"]]
    length = n_u if task["repeat"] == "labeled" else n_l
    return length // batch_size


def budget_for(task: dict, splits: dict, iters: int, batch_size: int, rampup_fraction: float,
               test_points: int, last_k: int = DEFAULTS["last_k"]) -> dict:
    """Epochs, iterations per epoch, ramp-up and test epochs shared by every method of a task.

    Tests: about ``test_points`` spread over the run (the curve), plus the last
    ``last_k`` epochs spaced by ~1/30 of the run, whose mean is the reported Dice
    (close to the end, since the runs are still improving there).
    """
    natural = epoch_iterations(task, splits, batch_size)
    if natural < 1:
        raise UserError(f"task {task['name']}: fewer cases than one batch of {batch_size}")
    per_epoch = max(1, min(natural, iters))
    epochs = max(1, round(iters / per_epoch))
    max_epoch = epochs - 1  # epochs run 0..max_epoch inclusive
    every = max(1, round(epochs / max(1, test_points)))
    gap = max(1, round(epochs / 30))
    tail = {max_epoch - k * gap for k in range(last_k)}
    test_epochs = sorted({e for e in range(max_epoch, -1, -every)} | {e for e in tail if e >= 0})
    return {"iters_per_epoch": per_epoch, "epochs": epochs, "max_epoch": max_epoch,
            "iterations": epochs * per_epoch, "rampup_epochs": max(1, round(epochs * rampup_fraction)),
            "test_every": every, "test_epochs": test_epochs}


def cell_config(task: dict, method: str, seed: int, budget: dict, base_filters: int, batch_size: int,
                lr: float, weights: dict) -> dict:
    """TaskConfig fields of one cell (``full`` is ``supervised`` on every training case)."""
    cfg = {k: v for k, v in task.items() if k != "name"}
    # checkpoint_levels 0: the cells' networks are tiny, and checkpointing (bit-exact) would
    # only add its ~10 % of recomputation.
    cfg.update(name=f"{task['name']}_{method}_s{seed}", method="supervised" if method == "full" else method,
               seed=seed, base_filters=base_filters, batch_size=batch_size, lr=lr,
               max_epoch=budget["max_epoch"], iters_per_epoch=budget["iters_per_epoch"],
               rampup_epochs=budget["rampup_epochs"], unsup_weight=float(weights.get(method, 0.0)),
               patience=10 ** 9, eval_every=budget["test_every"], num_workers=0, checkpoint_levels=0)
    if method == "full":
        labeled = task["splits"]["labeled"]
        # Every train case labeled; repeating the unlabeled set keeps all of them in each epoch.
        cfg["splits"] = {**task["splits"], "labeled": labeled[: -len("labeled")] + "train_all"}
        cfg["repeat"] = "unlabeled"
    return cfg


# ---------------------------------------------------------------- one cell
def _predict(net, image, patch, stride, device):
    """Label map of one volume: the sliding window when ``inference`` provides it, else one
    whole-volume pass (padded to a multiple of 16)."""
    import torch
    import torch.nn.functional as F

    try:
        from ..inference import predict_volume
    except ImportError:
        predict_volume = None
    if predict_volume is not None:
        xy, z = (stride, stride) if isinstance(stride, int) else stride
        kwargs = {"stride_xy": xy, "stride_z": z}
        if "device" in inspect.signature(predict_volume).parameters:
            kwargs["device"] = device
        return np.asarray(predict_volume(net, image, tuple(patch), **kwargs))
    x = torch.as_tensor(image, dtype=torch.float32, device=device)[None, None]
    pads = [(-s % 16) for s in x.shape[2:]]
    x = F.pad(x, [q for p in reversed(pads) for q in (p // 2, p - p // 2)])
    with torch.no_grad():
        labels = net(x).argmax(1)[0]
    crop = tuple(slice(p // 2, p // 2 + s) for p, s in zip(pads, image.shape))
    return labels[crop].cpu().numpy().astype(np.uint8)


def _test_scores(net, cases, num_classes: int, patch, stride: int, device) -> dict:
    from ..metrics import case_scores

    net.eval()
    dice, asd = [], []
    for image, label in cases:
        pred = _predict(net, image, patch, stride, device)
        s = case_scores(pred, label, num_classes)
        dice.append(s["dice"])
        asd.append(s["asd"])
    dice_c, asd_c = np.mean(dice, axis=0), np.mean(asd, axis=0)
    # Per case too: the spread of a setting's Dice over seeds holds the test set's own sampling
    # noise (a few cases), which the per-case scores measure (report.calibration).
    return {"dice": float(dice_c.mean()), "dice_per_class": dice_c.tolist(),
            "asd": float(asd_c.mean()), "asd_per_class": asd_c.tolist(),
            "dice_per_case": np.mean(dice, axis=1).tolist()}


def recompute_batchnorm(net, images, patch, seed: int, batch: int = 4, passes: int = 2):
    """A copy of ``net`` whose BatchNorm statistics are the plain average over image-path
    forward passes of random ``patch`` crops of ``images`` (BatchNorm in training mode,
    dropout off), instead of the running averages training left, which A&D's ten
    no-gradient denoising passes per iteration dominate. ``torch.optim.swa_utils.update_bn``
    does the same with dropout on."""
    import copy

    import torch

    net = copy.deepcopy(net)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.eval()
    for m in bns:
        m.train()
    rng = np.random.default_rng(seed)
    device = next(net.parameters()).device
    crops = []
    for _ in range(passes):
        for image in images:
            starts = [int(rng.integers(0, max(0, s - p) + 1)) for s, p in zip(image.shape[1:], patch)]
            crops.append(image[(slice(None),) + tuple(slice(a, a + p) for a, p in zip(starts, patch))])
    groups = [crops[i:i + batch] for i in range(0, len(crops), batch)]
    if len(groups) > 1 and len(groups[-1]) == 1:  # one crop alone can leave 1 value per channel at the bottom
        groups[-2] += groups.pop()
    with torch.no_grad():
        for part in groups:
            shape = np.max([c.shape for c in part], axis=0)
            if any(tuple(c.shape) != tuple(shape) for c in part):  # volumes smaller than the patch
                part = [c for c in part if tuple(c.shape) == tuple(part[0].shape)]
            net(torch.as_tensor(np.stack(part), device=device))
    net.eval()
    return net


def _bench_callback_class():
    from ..training import Callback

    class BenchCallback(Callback):
        """A test-set evaluation of the predictor at chosen epochs, through the trainer's public hooks.

        The scores go into the epoch's record (and so into the history and the resume
        checkpoint), with the training seconds up to that epoch.
        """

        def __init__(self, cases, test_epochs, stride, bn_images=None):
            self.cases, self.test_epochs, self.stride = cases, set(test_epochs), stride
            self.bn_images = bn_images  # for the ad_bn row: training images whose statistics it uses
            self.c0 = self.c_last = 0.0

        # CPU seconds of the training itself (first to last optimizer step): with one thread
        # this measures the work, whatever else shares the machine; the wall clock does not.
        def on_epoch_start(self, trainer, epoch):
            self.c0 = self.c_last = time.process_time()

        def on_iteration_end(self, trainer, epoch, iteration, logs):
            self.c_last = time.process_time()

        def on_epoch_end(self, trainer, record):
            record["cpu_seconds"] = self.c_last - self.c0
            if record["epoch"] in self.test_epochs:
                so_far = trainer.history + [record]
                record["train_seconds"] = float(sum(r["seconds"] for r in so_far))
                record["train_cpu_seconds"] = float(sum(r.get("cpu_seconds", 0.0) for r in so_far))
                cfg = trainer.cfg
                record["test"] = _test_scores(trainer.method.predictor(), self.cases, cfg.num_classes,
                                              cfg.patch_size, self.stride, trainer.device)
                if self.bn_images is not None:
                    net = recompute_batchnorm(trainer.method.predictor(), self.bn_images, cfg.patch_size,
                                              seed=cfg.seed + record["epoch"])
                    record["test_bn"] = _test_scores(net, self.cases, cfg.num_classes, cfg.patch_size,
                                                     self.stride, trainer.device)
                trainer.method.train()

    return BenchCallback


def run_cell(job: dict) -> dict:
    """Train and test one cell; write its JSON; return it. Runs in a worker process too."""
    import torch

    from ..config import TaskConfig, apply_overrides
    from ..data.cases import read_split
    from ..data.loaders import EvalDataset

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    t0 = time.time()
    cfg = apply_overrides(TaskConfig(), job["cfg"]).validate()
    run_dir = Path(job["run_dir"])
    last = run_dir / "ckpts" / "last.pth"
    ids = read_split(cfg.data_dir, cfg.splits["test"])
    cases = [(item["image"][0].numpy(), item["label"].numpy())
             for item in EvalDataset(cfg.data_dir, ids, cfg, crop=False)]
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(run_dir / "train.log", "a")

    def log(msg):
        print(msg, file=log_file, flush=True)

    from ..training import Trainer

    bn_images = None
    if job["method"] in DERIVED.values():  # its *_bn row: the same predictor with recomputed statistics
        train_ids = read_split(cfg.data_dir, cfg.splits["labeled"]) + read_split(cfg.data_dir, cfg.splits["unlabeled"])
        bn_images = [item["image"].numpy() for item in EvalDataset(cfg.data_dir, train_ids, cfg, crop=False,
                                                                   need_label=False)]
    bench = _bench_callback_class()(cases, job["budget"]["test_epochs"], job["stride"], bn_images)
    trainer = Trainer(cfg, cfg.data_dir, run_dir, job["device"], resume=last if last.is_file() else None,
                      progress=False, tensorboard=False, overwrite=True, log=log, callbacks=[bench])
    trainer.fit()
    log_file.close()

    per_epoch = job["budget"]["iters_per_epoch"]
    curve = [{"epoch": r["epoch"], "iteration": (r["epoch"] + 1) * per_epoch, "train_seconds": r["train_seconds"],
              "train_cpu_seconds": r.get("train_cpu_seconds"), **r["test"]}
             for r in trainer.history if "test" in r]
    tail = curve[-job["last_k"]:]
    dice_c = np.mean([c["dice_per_class"] for c in tail], axis=0)
    asd_c = np.mean([c["asd_per_class"] for c in tail], axis=0)
    result = {
        "key": job["key"], "code": job["code"], "setting": job["setting"], "method": job["method"],
        "seed": job["seed"], "task": job["task"],
        "dice": float(dice_c.mean()), "dice_per_class": dice_c.tolist(),
        "asd": float(asd_c.mean()), "asd_per_class": asd_c.tolist(),
        "dice_per_case": np.mean([c["dice_per_case"] for c in tail], axis=0).tolist(),
        "dice_last": curve[-1]["dice"], "reported_over_epochs": [c["epoch"] for c in tail],
        "iterations": len(trainer.history) * per_epoch, "epochs": len(trainer.history),
        "train_seconds": float(sum(r["seconds"] for r in trainer.history)),
        "train_cpu_seconds": float(sum(r.get("cpu_seconds", 0.0) for r in trainer.history)),
        "wall_seconds": time.time() - t0, "resumed": bool(trainer.start_epoch),
        "threads": torch.get_num_threads(), "device": str(trainer.device), "curve": curve,
        "val_dice": [r.get("val_dice") for r in trainer.history if "val_dice" in r],
    }
    bn_curve = [r["test_bn"] for r in trainer.history if "test_bn" in r]
    if bn_curve:
        tail_bn = bn_curve[-job["last_k"]:]
        result["derived"] = {f"{job['method']}_bn": {
            "dice": float(np.mean([c["dice_per_class"] for c in tail_bn], axis=0).mean()),
            "dice_per_class": np.mean([c["dice_per_class"] for c in tail_bn], axis=0).tolist(),
            "asd": float(np.mean([c["asd_per_class"] for c in tail_bn], axis=0).mean()),
            "asd_per_class": np.mean([c["asd_per_class"] for c in tail_bn], axis=0).tolist(),
            "curve": [{**c, **b} for c, b in zip(curve, bn_curve)]}}
    logs = trainer.history[-1]
    if "class_weights" in logs:  # A&D's difficulty weights, for diagnosis
        result["class_weights_last_epoch"] = logs["class_weights"]
    _write_json(Path(job["cell_path"]), result)
    # The cell is final: its checkpoints (tens of MB each) are no longer needed;
    # history.jsonl and curves.png stay for inspection.
    shutil.rmtree(run_dir / "ckpts", ignore_errors=True)
    return result


# Functions whose source is part of the code version (they compute a cell's numbers).
CELL_FUNCTIONS = (epoch_iterations, budget_for, cell_config, _predict, _test_scores, recompute_batchnorm,
                  _bench_callback_class, run_cell)
