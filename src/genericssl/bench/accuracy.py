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

import json
import os
import shlex
import sys
from pathlib import Path

from ..errors import UserError
from .cells import (ALL_METHODS, CELL_FUNCTIONS, LABELS, PACKAGE_DIR, VARIANTS, _hash_json,  # noqa: F401
                    _write_json, base_method, budget_for, cell_config, code_version, method_files,
                    prepare_setting, run_cell)
from .report import dice_at_time, markdown_report, plot_results, summarize, time_key, verdict  # noqa: F401
from .settings import DEFAULTS, METHODS, SETTINGS, UNSUP_WEIGHTS  # noqa: F401

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
    report = summarize(ordered, all_jobs, settings, methods, seeds, table, command=command, code=code_version(),
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

