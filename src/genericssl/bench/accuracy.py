"""`genericssl bench accuracy`: every method on the synthetic settings (bench/settings.py).

For each setting (``bench/settings.py``) the synthetic data is generated once
(the data seed is fixed per setting); then every method is trained for the same
number of iterations with each training seed: a *cell* is one (setting, method,
seed). During training the current released network (the method's predictor)
is tested on the test split every few epochs with the sliding window; a cell's
Dice is the mean of its last ``last_k`` test evaluations, not one noisy end
point, and the whole curve (Dice against training seconds) gives the
equal-time view.

A finished cell is a JSON file under ``OUT/cells`` whose ``key`` hashes the code
version (package version, the sources that compute a cell) and the cell's
settings; a cell whose key does not match is rerun, never mixed in. A cell
interrupted mid-training resumes from its last epoch (``OUT/runs``, keyed the
same way). ``--jobs N`` trains N cells at once in separate processes.

Outputs in OUT: ``results.json``, ``results.md`` (tables laid out like the
paper's), ``dice_by_setting.png``, ``ibssl_per_class.png``, ``test_curves.png``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import UserError
from .settings import DEFAULTS, METHOD_LABELS, METHODS, SETTINGS, UNSUP_WEIGHTS, BenchSetting

# Variants: a method with a few TaskConfig fields changed, reported as a row of its
# own. The overrides go into the cell's config and so into its cache key; the
# method's own cells keep theirs.
#   ad_eval_sampler: A&D sampling its pseudo labels in eval mode (METHOD.md's
#   optional departure), so that the 10 no-gradient denoising passes per
#   iteration stop dominating the encoder's BatchNorm running statistics that
#   D_theta is tested with (docs/benchmark.md has the diagnosis).
VARIANTS = {"ad_eval_sampler": ("ad", {"sampler_eval_mode": True})}
VARIANT_LABELS = {"ad_eval_sampler": "A&D, eval-mode sampler"}
ALL_METHODS = METHODS[:-1] + tuple(VARIANTS) + METHODS[-1:]  # the reference row stays last
LABELS = {**METHOD_LABELS, **VARIANT_LABELS}

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
def add_accuracy_arguments(p) -> None:
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma-separated settings (default all: {','.join(SETTINGS)})")
    p.add_argument("--methods", default=",".join(ALL_METHODS),
                   help=f"comma-separated methods (default all: {','.join(ALL_METHODS)}); 'full' is the "
                        f"supervised method trained with every training case labeled; variants: "
                        + "; ".join(f"{k} is {b} with " + ", ".join(f"{f}={v}" for f, v in o.items())
                                    for k, (b, o) in VARIANTS.items()))
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds (default 0,1,2)")
    p.add_argument("--out", default="bench_accuracy", help="output and cache folder (default bench_accuracy)")
    p.add_argument("--device", "-c", default="auto", help="auto, cpu, cuda, mps")
    p.add_argument("--jobs", type=int, default=1,
                   help="cells trained at once, each in its own process with max(1, cores // jobs) threads")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per cell (default max(1, cores // jobs))")
    p.add_argument("--iters", type=int, default=DEFAULTS["iters"],
                   help=f"training iterations per cell (default {DEFAULTS['iters']})")
    p.add_argument("--size", type=int, default=DEFAULTS["size"],
                   help=f"synthetic volume edge in voxels (default {DEFAULTS['size']}; patch 32^3 from 48)")
    p.add_argument("--base-filters", type=int, default=DEFAULTS["base_filters"],
                   help=f"V-Net base filters (default {DEFAULTS['base_filters']})")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: write the report from the cells finished so far (say which are missing)")
    p.add_argument("--weights", default="",
                   help="override maximum unlabeled-loss weights, e.g. mean_teacher=10,cps=10 "
                        f"(defaults: {', '.join(f'{k}={v:g}' for k, v in UNSUP_WEIGHTS.items())})")


def parse_names(text: str, valid, what: str) -> list[str]:
    names = []
    for n in (t.strip() for t in (text or "").split(",")):
        if n and n not in names:
            names.append(n)
    if not names:
        raise UserError(f"no {what} given; valid {what}: {', '.join(valid)}")
    bad = [n for n in names if n not in valid]
    if bad:
        raise UserError(f"unknown {what} {', '.join(repr(b) for b in bad)}; valid {what}: {', '.join(valid)}")
    return names


def parse_seeds(text: str) -> list[int]:
    parts = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not parts:
        raise UserError("the seed list is empty: give at least one training seed, e.g. --seeds 0,1,2")
    try:
        seeds = [int(t) for t in parts]
    except ValueError:
        raise UserError(f"seeds must be integers, got {text!r} (e.g. --seeds 0,1,2)") from None
    return list(dict.fromkeys(seeds))


def parse_weights(text: str) -> dict[str, float]:
    weights = dict(UNSUP_WEIGHTS)
    for item in (t.strip() for t in (text or "").split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in UNSUP_WEIGHTS:
            raise UserError(f"--weights takes METHOD=W with METHOD one of {', '.join(UNSUP_WEIGHTS)}; "
                            f"got {item!r}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise UserError(f"--weights {item!r}: {value!r} is not a number") from None
    return weights


# ---------------------------------------------------------------- code version
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def base_method(method: str) -> str:
    """The method a variant runs (a method is its own)."""
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
    h = hashlib.sha256()
    for sub in ("npy", "split_txts"):
        for path in sorted((data_dir / sub).iterdir()):
            h.update(f"{sub}/{path.name}".encode())
            h.update(path.read_bytes())
    h.update((data_dir / "dataset.json").read_bytes())
    return h.hexdigest()[:16]


def prepare_setting(setting: BenchSetting, out: Path, size: int, data_seed: int, log=print) -> dict:
    """Generate (or reuse) the setting's synthetic data; returns the generator's summary."""
    from ..data.synthetic import make_synthetic_dataset, named_spec

    spec = named_spec(setting.spec, seed=data_seed, size=size, **setting.spec_kwargs)
    gen_src = (PACKAGE_DIR / "data" / "synthetic.py").read_bytes()
    key = _hash_json({"spec": dataclasses.asdict(spec), "generator": _sha(gen_src)})
    data_dir = out / "data" / f"{setting.name}-{key[:10]}"
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
    cfg.update(name=f"{task['name']}_{method}_s{seed}", method="supervised" if method == "full" else method,
               seed=seed, base_filters=base_filters, batch_size=batch_size, lr=lr,
               max_epoch=budget["max_epoch"], iters_per_epoch=budget["iters_per_epoch"],
               rampup_epochs=budget["rampup_epochs"], unsup_weight=float(weights.get(method, 0.0)),
               patience=10 ** 9, eval_every=budget["test_every"], num_workers=0)
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
        kwargs = {"stride_xy": stride, "stride_z": stride}
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
    return {"dice": float(dice_c.mean()), "dice_per_class": dice_c.tolist(),
            "asd": float(asd_c.mean()), "asd_per_class": asd_c.tolist()}


def _bench_callback_class():
    from ..training import Callback

    class BenchCallback(Callback):
        """A test-set evaluation of the predictor at chosen epochs, through the trainer's public hooks.

        The scores go into the epoch's record (and so into the history and the resume
        checkpoint), with the training seconds up to that epoch.
        """

        def __init__(self, cases, test_epochs, stride):
            self.cases, self.test_epochs, self.stride = cases, set(test_epochs), stride
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
                record["test"] = _test_scores(trainer.method.predictor(), self.cases, trainer.cfg.num_classes,
                                              trainer.cfg.patch_size, self.stride, trainer.device)
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

    bench = _bench_callback_class()(cases, job["budget"]["test_epochs"], job["stride"])
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
        "dice_last": curve[-1]["dice"], "reported_over_epochs": [c["epoch"] for c in tail],
        "iterations": len(trainer.history) * per_epoch, "epochs": len(trainer.history),
        "train_seconds": float(sum(r["seconds"] for r in trainer.history)),
        "train_cpu_seconds": float(sum(r.get("cpu_seconds", 0.0) for r in trainer.history)),
        "wall_seconds": time.time() - t0, "resumed": bool(trainer.start_epoch),
        "threads": torch.get_num_threads(), "device": str(trainer.device), "curve": curve,
        "val_dice": [r.get("val_dice") for r in trainer.history if "val_dice" in r],
    }
    logs = trainer.history[-1]
    if "class_weights" in logs:  # A&D's difficulty weights, for diagnosis
        result["class_weights_last_epoch"] = logs["class_weights"]
    _write_json(Path(job["cell_path"]), result)
    # The cell is final: its checkpoints (tens of MB each) are no longer needed;
    # history.jsonl and curves.png stay for inspection.
    shutil.rmtree(run_dir / "ckpts", ignore_errors=True)
    return result


# Functions whose source is part of the code version (they compute a cell's numbers).
CELL_FUNCTIONS = (epoch_iterations, budget_for, cell_config, _predict, _test_scores, _bench_callback_class,
                  run_cell)


# ---------------------------------------------------------------- planning
# Training CPU time per cell relative to supervised (measured on the ssl setting). bcp, dhc:
# ssl seed 0, 144 iterations, 1 thread, against supervised in the same run (BCP 1 epoch of 8
# pre-training, about its 2/17), where mean_teacher, cps and ad measured 1.8, 3.5 and 6.9.
RELATIVE_COST = {"supervised": 1.0, "full": 1.0, "mean_teacher": 2.0, "cps": 3.4, "uamt": 3.6, "ad": 5.9,
                 "bcp": 4.8, "dhc": 3.8}


def relative_cost(method: str) -> float:
    """A variant costs what its method costs."""
    return RELATIVE_COST.get(base_method(method), 1.0)


class _Eta:
    """Time left, from the cells finished in this run: wall seconds per unit of
    ``relative_cost``, times the units still pending, over the parallel jobs."""

    def __init__(self, pending: list[dict], jobs: int):
        self.left = {j["key"]: relative_cost(j["method"]) for j in pending}
        self.jobs, self.units, self.seconds = jobs, 0.0, 0.0

    def done(self, job_key: str, wall_seconds: float, resumed: bool = False) -> str:
        units = self.left.pop(job_key, 0.0)
        if not resumed:  # a resumed cell's wall time covers only its last part: no pace from it
            self.units += units
            self.seconds += wall_seconds
        if not self.left or self.units <= 0:
            return ""
        eta = self.seconds / self.units * sum(self.left.values()) / self.jobs
        return f"about {eta / 3600:.1f} h left" if eta >= 5400 else f"about {eta / 60:.0f} min left"

def plan_cells(settings, methods, seeds, out: Path, iters: int, size: int, base_filters: int, device: str,
               weights: dict, log=print, table=None, defaults=None) -> list[dict]:
    table = SETTINGS if table is None else table
    d = {**DEFAULTS, **(defaults or {})}
    codes = {m: code_version(m) for m in methods}
    jobs = []
    for name in settings:
        setting = table[name]
        summary = prepare_setting(setting, out, size, d["data_seed"], log=log)
        for seed in seeds:
            task_name = setting.task_for_seed(list(summary["tasks"]), seed)
            task = summary["tasks"][task_name]
            budget = budget_for(task, summary["splits"], iters, d["batch_size"], d["rampup_fraction"],
                                d["test_points"], d["last_k"])
            for method in methods:
                base, overrides = VARIANTS.get(method, (method, {}))
                cfg = cell_config(task, base, seed, budget, base_filters, d["batch_size"], d["lr"], weights)
                if overrides:
                    cfg.update(overrides, name=f"{task['name']}_{method}_s{seed}")
                code = codes[method]
                key = _hash_json({"code": code, "setting": name, "method": method, "seed": seed,
                                  "task": task_name, "spec": summary["spec"], "data": summary["data_sha"],
                                  "budget": budget,
                                  "cfg": {k: v for k, v in cfg.items() if k != "data_dir"},
                                  "stride": d["stride"], "last_k": d["last_k"], "device": device})
                jobs.append({
                    "key": key, "code": code, "setting": name, "method": method, "seed": seed, "task": task_name,
                    "cfg": cfg, "budget": budget, "device": device, "stride": d["stride"], "last_k": d["last_k"],
                    "cell_path": str(out / "cells" / name / method / f"seed{seed}.json"),
                    "run_dir": str(out / "runs" / name / method / f"seed{seed}-{key[:10]}"),
                })
    return jobs


def cached_result(job: dict) -> tuple[dict | None, str]:
    """(result, "") when the cell's JSON matches ``job``; (None, why) otherwise."""
    path = Path(job["cell_path"])
    if not path.is_file():
        return None, ""
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None, "unreadable cache file"
    if result.get("key") != job["key"]:
        old = result.get("code", {})
        if old != job["code"]:
            return None, (f"cached with another code version ({old.get('package')}/{old.get('sources')}, now "
                          f"{job['code']['package']}/{job['code']['sources']})")
        return None, "cached with other settings"
    return result, ""


def _cell_line(i: int, n: int, r: dict, note: str = "") -> str:
    return (f"[{i:>3}/{n}] {r['setting']:<7} {r['method']:<13} seed {r['seed']}: Dice {r['dice']:6.2f}  "
            f"ASD {r['asd']:6.2f}  {r['iterations']} it  {r['train_seconds']:6.0f} s train"
            f"{'  ' + note if note else ''}")


def run_benchmark(settings, methods, seeds, out, iters=DEFAULTS["iters"], size=DEFAULTS["size"],
                  base_filters=DEFAULTS["base_filters"], device="auto", jobs=1, threads=None, weights=None,
                  log=print, table=None, defaults=None, command: str = "", report_only: bool = False) -> dict:
    """Run (or resume) the benchmark; write results.json, results.md and the plots; return the results.

    ``report_only``: train nothing and report the cells already finished (a long
    run can be looked at while it goes on, from another shell)."""
    import torch

    from ..training import resolve_device

    table = SETTINGS if table is None else table
    if jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {jobs}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    if iters < 1:
        raise UserError(f"--iters must be at least 1, got {iters}")
    if size < 16:
        raise UserError(f"--size must be at least 16 (the V-Net downsamples 4 times), got {size}")
    weights = dict(UNSUP_WEIGHTS) if weights is None else weights
    device = str(resolve_device(device))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    all_jobs = plan_cells(settings, methods, seeds, out, iters, size, base_filters, device, weights, log=log,
                          table=table, defaults=defaults)
    n = len(all_jobs)
    results, pending = {}, []
    for job in all_jobs:
        result, why = cached_result(job)
        if result is not None:
            results[job["key"]] = result
        else:
            if why:
                log(f"{job['setting']} {job['method']} seed {job['seed']}: {why}; rerunning")
            pending.append(job)
    # Seed by seed (a stopped run leaves whole seeds), and within a seed the costly
    # cells first, so that parallel workers do not end waiting on one A&D cell.
    pending.sort(key=lambda j: (seeds.index(j["seed"]), -relative_cost(j["method"])))
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    missing = []
    if report_only:
        missing, pending = [f"{j['setting']}/{j['method']}/seed{j['seed']}" for j in pending], []
        log(f"report only: {n - len(missing)} of {n} cells finished")
    log(f"{n} cells: {n - len(pending) - len(missing)} cached, {len(pending)} to run "
        f"({jobs} at a time, {threads} threads each, device {device})")
    done = n - len(pending)
    eta = _Eta(pending, jobs)
    if pending and jobs == 1:
        old_threads = torch.get_num_threads()
        try:
            for job in pending:
                r = run_cell({**job, "threads": threads})
                results[job["key"]] = r
                done += 1
                log(_cell_line(done, n, r, eta.done(job["key"], r["wall_seconds"], r["resumed"])))
        finally:
            torch.set_num_threads(old_threads)
    elif pending:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"))
        try:
            futures = {pool.submit(run_cell, {**job, "threads": threads}): job for job in pending}
            for fut in as_completed(futures):
                r = fut.result()
                results[r["key"]] = r
                done += 1
                log(_cell_line(done, n, r, eta.done(r["key"], r["wall_seconds"], r["resumed"])))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    ordered = [results[j["key"]] for j in all_jobs if j["key"] in results]
    report = summarize(ordered, all_jobs, settings, methods, seeds, table, command=command,
                       iters=iters, size=size, base_filters=base_filters, weights=weights)
    report["missing_cells"] = missing
    _write_json(out / "results.json", report)
    (out / "results.md").write_text(markdown_report(report, table))
    try:
        plot_results(report, out, table)
    except Exception as e:  # a missing font or backend must not lose the numbers
        log(f"warning: plots not written: {e}")
    log(f"wrote {out / 'results.json'}, {out / 'results.md'} and plots")
    return report


# ---------------------------------------------------------------- aggregation
def _mean_std(values):
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v))  # population std, as the paper's Synapse table


def dice_at_time(curve: list[dict], seconds: float, k: int, key: str = "train_seconds") -> float | None:
    """Mean Dice of the last ``k`` test evaluations done within ``seconds`` of training."""
    pts = [c["dice"] for c in curve if c[key] <= seconds * (1 + 1e-9)]
    return float(np.mean(pts[-k:])) if pts else None


def time_key(a: dict, b: dict) -> str:
    """Compare single-thread CPU runs by CPU seconds (the work, whatever else shared the
    machine); anything else by wall seconds."""
    single = all(r.get("threads") == 1 and r.get("device") == "cpu" and r.get("train_cpu_seconds")
                 for r in (a, b))
    return "train_cpu_seconds" if single else "train_seconds"


def summarize(results, jobs, settings, methods, seeds, table, command="", **run) -> dict:
    cells: dict = {}
    for r in results:
        cells.setdefault(r["setting"], {}).setdefault(r["method"], {})[str(r["seed"])] = r
    last_k = jobs[0]["last_k"] if jobs else DEFAULTS["last_k"]
    summary: dict = {}
    for s in settings:
        summary[s] = {}
        sup = cells.get(s, {}).get("supervised", {})
        for m in methods:
            by_seed = cells.get(s, {}).get(m, {})
            rs = [by_seed[str(seed)] for seed in seeds if str(seed) in by_seed]
            dice_m, dice_s = _mean_std([r["dice"] for r in rs])
            asd_m, asd_s = _mean_std([r["asd"] for r in rs])
            per_class = np.mean([r["dice_per_class"] for r in rs], axis=0).tolist() if rs else []
            eq_time, ratio, clocks = [], [], set()
            for r in rs:
                ref = sup.get(str(r["seed"]))
                if ref is not None and ref["train_seconds"] > 0:
                    key = time_key(r, ref)
                    eq_time.append(dice_at_time(r["curve"], ref[key], last_k, key))
                    ratio.append(r[key] / ref[key])
                    clocks.add("CPU" if key == "train_cpu_seconds" else "wall")
            eq_m, eq_s = _mean_std(eq_time)
            summary[s][m] = {
                "dice_mean": dice_m, "dice_std": dice_s, "asd_mean": asd_m, "asd_std": asd_s,
                "dice_per_class_mean": per_class, "seeds": [r["seed"] for r in rs],
                "tasks": sorted({r["task"] for r in rs}),
                "iterations": sorted({r["iterations"] for r in rs}),
                "train_seconds_mean": _mean_std([r["train_seconds"] for r in rs])[0],
                "dice_at_supervised_time_mean": eq_m, "dice_at_supervised_time_std": eq_s,
                "time_vs_supervised": _mean_std(ratio)[0], "time_clock": "/".join(sorted(clocks)),
                "train_cpu_seconds_mean": _mean_std([r["train_cpu_seconds"] for r in rs])[0],
            }
    budget = {}
    for j in jobs:
        budget.setdefault(j["setting"], {})[j["task"]] = {
            k: j["budget"][k] for k in ("iterations", "epochs", "iters_per_epoch", "rampup_epochs", "test_every")}
        budget[j["setting"]][j["task"]]["patch_size"] = j["cfg"]["patch_size"]
    report = {
        "benchmark": "genericssl bench accuracy", "synthetic_data": True, "command": command,
        "code": code_version(), "settings": list(settings), "methods": list(methods),
        "seeds": list(seeds), "run": {**run, "batch_size": DEFAULTS["batch_size"], "lr": DEFAULTS["lr"],
                                      "last_k": last_k},
        "columns": {s: table[s].column for s in settings}, "budget": budget,
        "summary": summary, "cells": cells,
    }
    report["verdict"] = verdict(report)
    return report


# ---------------------------------------------------------------- report
def verdict(report: dict) -> list[dict]:
    """The issue's question, per setting: is A&D (and each A&D variant) ahead of the best
    baseline? Compared on the seeds that A&D and every baseline finished (an unfinished
    run must not decide it), with the gap of the means and the seeds on which A&D won
    head to head (same seed, same data), which says more than a gap inside the spread."""
    cells, methods = report["cells"], report["methods"]
    ours = [m for m in methods if base_method(m) == "ad"]
    baselines = [m for m in methods if m not in ours and m != "full"]
    rows = []
    for s in report["settings"] if baselines else []:
        by = cells.get(s, {})
        for m in ours:
            seeds = set(by.get(m, {}))
            for b in baselines:
                seeds &= set(by.get(b, {}))
            seeds = sorted(seeds, key=int)
            if not seeds:
                continue
            mean = {k: float(np.mean([by[k][x]["dice"] for x in seeds])) for k in baselines + [m]}
            best = max(baselines, key=mean.get)
            wins = sum(by[m][x]["dice"] > by[best][x]["dice"] for x in seeds)
            rows.append({"setting": s, "method": m, "seeds": [int(x) for x in seeds], "dice": mean[m],
                         "best_baseline": best, "best_baseline_dice": mean[best], "gap": mean[m] - mean[best],
                         "seeds_won": wins})
    return rows


def _verdict_lines(report: dict) -> list[str]:
    rows = report["verdict"]
    if not rows:
        return []
    ours = {r["method"] for r in rows}
    baselines = [LABELS.get(m, m) for m in report["methods"] if m not in ours and m != "full"]
    out = ["", "## Is A&D ahead of the best baseline?", "",
           f"On the seeds that A&D and every baseline ({', '.join(baselines)}) finished: "
           "gap = A&D's mean Dice minus the best baseline's; seeds won = runs with the same seed and "
           "data where A&D's Dice was higher.", "",
           "| Setting | Method | seeds | Dice | best baseline | its Dice | gap | seeds won |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {report['columns'][r['setting']]} | {LABELS.get(r['method'], r['method'])} | "
                   f"{', '.join(map(str, r['seeds']))} | {r['dice']:.2f} | "
                   f"{LABELS.get(r['best_baseline'], r['best_baseline'])} | {r['best_baseline_dice']:.2f} | "
                   f"{r['gap']:+.2f} | {r['seeds_won']} of {len(r['seeds'])} |")
    return out


def _fmt(m, s, digits=2, n=None, total=None):
    """``mean ± std``; a mean over fewer seeds than the report's says over how many
    (a single seed has no spread to show, and "± 0.00" would claim one)."""
    if m is None:
        return "—"
    if n is not None and total is not None and n < total:
        spread = "" if n < 2 else f" ± {s:.{digits}f}"
        return f"{m:.{digits}f}{spread} (n={n})"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_report(report: dict, table=None) -> str:
    table = SETTINGS if table is None else table
    settings, methods, summary = report["settings"], report["methods"], report["summary"]
    cols = [report["columns"][s] for s in settings]
    semi = [m for m in methods if m != "full"]
    n_seeds = len(report["seeds"])

    def best(s, key, lower=False):
        vals = {m: summary[s][m][key] for m in semi if summary[s][m][key] is not None}
        if not vals:
            return None
        return (min if lower else max)(vals, key=vals.get)

    def rows(key, std_key, lower=False, digits=2):
        lines = ["| Method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for m in methods:
            cells = []
            for s in settings:
                e = summary[s][m]
                txt = _fmt(e[key], e[std_key], digits, len(e["seeds"]), n_seeds)
                if m != "full" and best(s, key, lower) == m and e[key] is not None:
                    txt = f"**{txt}**"
                cells.append(txt)
            label = LABELS.get(m, m) + (" *(reference)*" if m == "full" else "")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return lines

    seeds = ", ".join(map(str, report["seeds"]))
    run = report["run"]
    out = ["# Synthetic accuracy benchmark", "",
           "**Synthetic data**, small volumes, CPU-sized networks: this tests whether the paper's claim "
           "holds on problems that are hard in the same ways, not the paper's numbers.", "",
           f"- command: `{report['command'] or 'genericssl bench accuracy'}`",
           f"- seeds: {seeds}; code {report['code']['package']} / {report['code']['sources']}",
           f"- every method of a setting: the same iterations, batch {run['batch_size']} labeled + "
           f"{run['batch_size']} unlabeled, lr {run['lr']}, ramp-up over the first third of the epochs; "
           f"{run['base_filters']} base filters, {run['size']}^3 volumes",
           f"- Dice: mean of the last {run['last_k']} test evaluations of each run (sliding window), then mean "
           f"± population std over seeds; best semi-supervised method in bold"]
    missing = report.get("missing_cells") or []
    if missing:
        total = len(missing) + sum(len(by_seed) for by_m in report["cells"].values() for by_seed in by_m.values())
        out.append(f"- **incomplete**: {total - len(missing)} of {total} cells finished; each mean covers the "
                   f"seeds finished for its row (missing: {', '.join(missing)})")
    out += ["", "## Test Dice (%), equal iterations", ""]
    out += rows("dice_mean", "dice_std")
    out += ["", "## Test ASD (voxels, lower is better), equal iterations", ""]
    out += rows("asd_mean", "asd_std", lower=True)
    out += _verdict_lines(report)
    out += ["", "## Equal time", "",
            "Dice of each run at the training time its seed's supervised run took (mean of the last "
            f"{run['last_k']} test evaluations by then), and training time relative to supervised "
            "(single-thread CPU runs compare CPU seconds, which do not depend on what else shared the "
            "machine; other runs compare wall seconds). "
            "Schedules (lr, ramp-up) are set for the full run, so this view is pessimistic for the "
            "slower methods.", ""]
    lines = ["| Method | " + " | ".join(f"{c}: Dice at sup. time | time ×" for c in cols) + " |",
             "|---|" + "---|---|" * len(cols)]
    for m in methods:
        cells = []
        for s in settings:
            e = summary[s][m]
            cells.append(_fmt(e["dice_at_supervised_time_mean"], e["dice_at_supervised_time_std"],
                              n=len(e["seeds"]), total=n_seeds))
            cells.append("—" if e["time_vs_supervised"] is None else f"{e['time_vs_supervised']:.1f}")
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    out += lines
    if "ibssl" in settings:
        k = max((len(summary["ibssl"][m]["dice_per_class_mean"]) for m in methods), default=0)
        if k:
            out += ["", "## IBSSL per-class Dice (%), classes from largest to smallest", "",
                    "| Method | " + " | ".join(f"C{c + 1}" for c in range(k)) + " | mean |",
                    "|---|" + "---|" * (k + 1)]
            for m in methods:
                pc = summary["ibssl"][m]["dice_per_class_mean"]
                if pc:
                    out.append(f"| {LABELS.get(m, m)} | " + " | ".join(f"{v:.1f}" for v in pc)
                               + f" | {np.mean(pc):.1f} |")
    out += ["", "## Budget", "", "| Setting | task(s) | iterations | epochs × it/epoch | ramp-up epochs | patch "
            "| train s per cell, wall (CPU), mean over seeds |", "|---|---|---|---|---|---|---|"]
    for s in settings:
        tasks = report["budget"].get(s, {})
        b = next(iter(tasks.values()), None)
        if b is None:
            continue
        secs = ", ".join(f"{m} {summary[s][m]['train_seconds_mean']:.0f}"
                         + (f" ({summary[s][m]['train_cpu_seconds_mean']:.0f} CPU)"
                            if summary[s][m]["train_cpu_seconds_mean"] else "")
                         for m in methods if summary[s][m]["train_seconds_mean"] is not None)
        out.append(f"| {report['columns'][s]} | {', '.join(sorted(tasks))} | {b['iterations']} | "
                   f"{b['epochs']} × {b['iters_per_epoch']} | {b['rampup_epochs']} | "
                   f"{'×'.join(map(str, b['patch_size']))} | {secs} |")
    return "\n".join(out) + "\n"


def plot_results(report: dict, out: Path, table=None) -> None:
    from ..plots import _pyplot

    plt = _pyplot()
    settings, methods, summary = report["settings"], report["methods"], report["summary"]
    cmap = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(2.2 + 1.9 * len(settings), 3.8))
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        xs = [k + (i - (len(methods) - 1) / 2) * width for k in range(len(settings))]
        ys = [summary[s][m]["dice_mean"] or 0.0 for s in settings]
        es = [summary[s][m]["dice_std"] or 0.0 for s in settings]
        ax.bar(xs, ys, width, yerr=es, capsize=2, color=cmap(i), label=LABELS.get(m, m),
               hatch="//" if m == "full" else None, alpha=0.6 if m == "full" else 1.0)
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels([report["columns"][s] for s in settings], fontsize=8)
    ax.set_ylabel("test Dice (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"Synthetic benchmark: mean ± std over seeds {report['seeds']}")
    # below the axes: inside, it hid the tallest bars
    ax.legend(fontsize=7, ncol=min(4, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.1), frameon=False)
    fig.tight_layout()
    fig.savefig(out / "dice_by_setting.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    if "ibssl" in settings and any(summary["ibssl"][m]["dice_per_class_mean"] for m in methods):
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for i, m in enumerate(methods):
            pc = summary["ibssl"][m]["dice_per_class_mean"]
            if pc:
                ax.plot(range(1, len(pc) + 1), pc, marker="o", color=cmap(i), label=LABELS.get(m, m),
                        linestyle="--" if m == "full" else "-")
        ax.set_xlabel("foreground class (largest to smallest)")
        ax.set_ylabel("test Dice (%)")
        ax.set_ylim(0, 100)
        ax.set_title("IBSSL: per-class Dice, mean over seeds")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "ibssl_per_class.png", dpi=110)
        plt.close(fig)

    fig, axes = plt.subplots(1, len(settings), figsize=(max(5.5, 4 * len(settings)), 3.6), squeeze=False)
    labeled = set()  # one legend entry per method, from whichever seed is plotted first
    for ax, s in zip(axes[0], settings):
        for i, m in enumerate(methods):
            for seed, r in sorted(report["cells"].get(s, {}).get(m, {}).items()):
                c, key = r["curve"], time_key(r, r)
                ax.plot([p[key] for p in c], [p["dice"] for p in c], color=cmap(i), lw=1,
                        label=None if m in labeled else LABELS.get(m, m))
                labeled.add(m)
        ax.set_title(report["columns"][s], fontsize=9)
        ax.set_xlabel("training seconds (CPU if 1 thread)")
        ax.set_xscale("log")
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("test Dice (%)")
    if labeled:
        fig.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "test_curves.png", dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- entry point
def main_accuracy(args) -> int:
    settings = parse_names(args.settings, list(SETTINGS), "settings")
    methods = parse_names(args.methods, list(ALL_METHODS), "methods")
    seeds = parse_seeds(args.seeds)
    weights = parse_weights(args.weights)
    # The command that trains the cells, which --report-only does not.
    command = shlex.join(["genericssl", "bench", "accuracy", *(a for a in sys.argv[3:] if a != "--report-only")])
    run_benchmark(settings, methods, seeds, args.out, iters=args.iters, size=args.size,
                  base_filters=args.base_filters, device=args.device, jobs=args.jobs, threads=args.threads,
                  weights=weights, command=command.strip(), report_only=args.report_only)
    return 0
