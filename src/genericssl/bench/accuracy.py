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
import statistics
import sys
from pathlib import Path

from ..errors import UserError
from .cells import (ALL_METHODS, CELL_FUNCTIONS, DERIVED, LABELS, PACKAGE_DIR, VARIANTS,  # noqa: F401
                    _hash_json, _write_json, base_method, budget_for, cell_config, code_version, method_files,
                    prepare_setting, run_cell)
from .render import markdown_report, plot_results  # noqa: F401
from .report import dice_at_time, summarize, time_key, verdict  # noqa: F401
from .settings import (ATTRIBUTION, DIAGNOSTIC, CONFIRM_BASELINES, CONFIRM_SEEDS, DEFAULTS, DEV_SEEDS,  # noqa: F401
                       METHODS, ONLY_IN, SETTINGS, UNSUP_WEIGHTS, BenchSetting)

PHASES = ("calibration", "confirm")


def default_methods(phase: str, settings=()) -> list[str]:
    """Calibration: every method and the fully supervised ceiling (to pick the strongest
    baseline and to check the ceiling). Confirm: supervised, A&D, the baselines fixed by
    calibration and the attribution rows but the diagnostic ones (no ceiling: it is checked on
    development seeds)."""
    if phase == "calibration":
        return list(METHODS)
    fixed = [CONFIRM_BASELINES[s] for s in settings if s in CONFIRM_BASELINES]
    return list(dict.fromkeys(["supervised", "ad", *fixed, *(m for m in ATTRIBUTION if m not in DIAGNOSTIC)]))

def add_accuracy_arguments(p) -> None:
    p.add_argument("--phase", choices=PHASES, default="confirm",
                   help=f"calibration: the development seeds ({DEV_SEEDS[0]}-{DEV_SEEDS[-1]}), every method and "
                        f"the ceiling, to fix design choices and the comparisons; confirm (default): fresh seeds "
                        f"({CONFIRM_SEEDS[0]}-{CONFIRM_SEEDS[-1]}), the comparisons fixed in bench/settings.py "
                        f"and the attribution rows")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma-separated settings (default all: {','.join(SETTINGS)})")
    p.add_argument("--data", metavar="DIR_OR_TASK_YAML", default=None,
                   help="instead of the synthetic settings: a prepared dataset (its folder holding task.yaml, "
                        "or a task .yaml file); the chosen methods are trained on its splits for each seed "
                        "(the data stays, the training seed varies) and compared with the same statistics")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated methods (default: the phase's; all: {','.join(ALL_METHODS)}); 'full' "
                        f"is the supervised method trained with every training case labeled; variants: "
                        + "; ".join(f"{k} is {b} with " + ", ".join(f"{f}={v}" for f, v in o.items())
                                    for k, (b, o) in VARIANTS.items())
                        + "; " + "; ".join(f"{k} is read off every {v} cell" for k, v in DERIVED.items()))
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds, each the data seed and the training seed of one paired run "
                        "(default: the phase's eight)")
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
    p.add_argument("--base-filters", type=int, default=None,
                   help=f"V-Net base filters (default {DEFAULTS['base_filters']}; with --data the task's own)")
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
# supervised_dw, supervised_bn, ad_psi: estimated from their passes (one weighted pass; one
# pass over twice the batch; 4 of A&D's 14 encoder passes and no sampler); ad_encoder_no_*: A&D's
# passes, gradients stopped.
RELATIVE_COST = {"supervised": 1.0, "full": 1.0, "mean_teacher": 2.0, "cps": 3.4, "uamt": 3.6, "ad": 5.9,
                 "bcp": 4.8, "dhc": 3.8, "supervised_dw": 1.1, "supervised_bn": 1.8, "ad_psi": 2.5,
                 "ad_encoder_no_u": 5.9, "ad_encoder_no_deno": 5.9}


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

def cost_estimate(pending: list[dict], finished: list[dict], jobs: int) -> str:
    """What the pending cells will take, at the pace of the cells already finished in this
    folder (median wall seconds per unit of ``relative_cost``; resumed cells give no pace):
    "" when nothing is pending or nothing has finished yet."""
    paces = [r["wall_seconds"] / relative_cost(r["method"]) for r in finished if not r.get("resumed")]
    if not pending or not paces:
        return ""
    seconds = statistics.median(paces) * sum(relative_cost(j["method"]) for j in pending)
    return (f"at the pace of the {len(paces)} finished cells here, about {seconds / 3600:.1f} cell-hours, "
            f"{seconds / 3600 / jobs:.1f} h with {jobs} at a time")


def plan_cells(settings, methods, seeds, out: Path, iters: int, size: int, base_filters: int, device: str,
               weights: dict, log=print, table=None, defaults=None) -> list[dict]:
    table = SETTINGS if table is None else table
    d = {**DEFAULTS, **(defaults or {})}
    codes = {m: code_version(m) for m in methods}
    jobs = []
    for name in settings:
        setting = table[name]
        for seed in seeds:
            # The data seed is the run's seed: each paired run sees its own cases.
            summary = prepare_setting(setting, out, size, seed, log=log)
            task_name = setting.task_for_seed(list(summary["tasks"]), seed)
            task = summary["tasks"][task_name]
            budget = budget_for(task, summary["splits"], iters, d["batch_size"], d["rampup_fraction"],
                                d["test_points"], d["last_k"])
            # A user's dataset trains with its task's network, batch, lr and test strides.
            own = bool(setting.task_file)
            filters = base_filters or (task["base_filters"] if own else DEFAULTS["base_filters"])
            batch, lr = (task["batch_size"], task["lr"]) if own else (d["batch_size"], d["lr"])
            stride = [task["stride_xy"], task["stride_z"]] if own else d["stride"]
            if own:
                budget = budget_for(task, summary["splits"], iters, batch, d["rampup_fraction"],
                                    d["test_points"], d["last_k"])
            for method in methods:
                if method in DERIVED or name not in ONLY_IN.get(method, (name,)):
                    continue
                base, overrides = VARIANTS.get(method, (method, {}))
                overrides = dict(overrides)
                cfg = cell_config(task, base, seed, budget, filters, batch, lr, weights)
                if "rampup_fraction" in overrides:  # a budget field: the ramp over that part of the epochs
                    cfg["rampup_epochs"] = max(1, round(budget["epochs"] * overrides.pop("rampup_fraction")))
                if overrides or method in VARIANTS:
                    cfg.update(overrides, name=f"{task['name']}_{method}_s{seed}")
                code = codes[method]
                key = _hash_json({"code": code, "setting": name, "method": method, "seed": seed,
                                  "task": task_name, "spec": summary["spec"], "data": summary["data_sha"],
                                  "budget": budget,
                                  "cfg": {k: v for k, v in cfg.items() if k != "data_dir"},
                                  "stride": stride, "last_k": d["last_k"], "device": device})
                jobs.append({
                    "key": key, "code": code, "setting": name, "method": method, "seed": seed, "task": task_name,
                    "cfg": cfg, "budget": budget, "device": device, "stride": stride, "last_k": d["last_k"],
                    "cell_path": str(out / "cells" / name / method / f"seed{seed}.json"),
                    "run_dir": str(out / "runs" / name / method / f"seed{seed}-{key[:10]}"),
                })
    return jobs


def _prepare_one(args) -> None:
    setting, out, size, seed = args
    prepare_setting(setting, out, size, seed, log=lambda *_: None)


def prepare_data(settings, seeds, out: Path, size: int, table, jobs: int, log=print) -> None:
    """Generate every (setting, seed) dataset in ``jobs`` processes (one per seed and setting;
    ~5-10 s each at 48^3), so that planning finds them made."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    todo = [(table[name], out, size, seed) for name in settings if not table[name].task_file for seed in seeds]
    if len(todo) < 2:
        return
    log(f"generating or checking {len(todo)} synthetic datasets, {min(jobs, len(todo))} at a time ...")
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_prepare_one, todo))


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


def machine_info() -> dict:
    """What computed a cell, beyond its key: the same key gives the same Dice to the digit on
    one kind of CPU, not across kinds (CPUs with other instruction sets run other convolution
    kernels, whose sums round differently, and 3000 iterations amplify that: docs/benchmark.md,
    round 14)."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_and_stamp(job: dict) -> dict:
    """``run_cell``, then the machine that finished it added to the cell's JSON. Outside
    ``run_cell`` on purpose: its source is part of every cell's key."""
    r = run_cell(job)
    r["machine"] = machine_info()
    _write_json(Path(job["cell_path"]), r)
    return r


def derived_results(results: list[dict], methods) -> list[dict]:
    """The rows read off other cells (``DERIVED``), as cells of their own method."""
    out = []
    for r in results:
        for name, source in DERIVED.items():
            if name in methods and r["method"] == source and name in r.get("derived", {}):
                extra = r["derived"][name]
                out.append({**{k: v for k, v in r.items() if k != "derived"}, **extra, "method": name,
                            "key": f"{r['key']}:{name}", "dice_last": extra["curve"][-1]["dice"]})
    return out


def run_benchmark(settings, methods, seeds, out, iters=DEFAULTS["iters"], size=DEFAULTS["size"],
                  base_filters=None, device="auto", jobs=1, threads=None, weights=None,
                  log=print, table=None, defaults=None, command: str = "", report_only: bool = False,
                  phase: str | None = None) -> dict:
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
    # Rows read off a method's cells cost nothing: they come with it, right after it.
    methods = list(dict.fromkeys(m for src in methods
                                 for m in (src, *(d for d, s in DERIVED.items() if s == src))))
    device = str(resolve_device(device))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if jobs > 1 and not report_only:
        prepare_data(settings, seeds, out, size, table, jobs, log=log)
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
    left = cost_estimate(pending or [j for j in all_jobs if j["key"] not in results], list(results.values()), jobs)
    log(f"{n} cells: {n - len(pending) - len(missing)} cached, {len(pending)} to run "
        f"({jobs} at a time, {threads} threads each, device {device})" + (f"; {left}" if left else ""))
    done = n - len(pending)
    eta = _Eta(pending, jobs)
    if pending and jobs == 1:
        old_threads = torch.get_num_threads()
        try:
            for job in pending:
                r = run_and_stamp({**job, "threads": threads})
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
            futures = {pool.submit(run_and_stamp, {**job, "threads": threads}): job for job in pending}
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
    ordered += derived_results(ordered, methods)
    report = summarize(ordered, all_jobs, settings, methods, seeds, table, command=command, code=code_version(),
                       iters=iters, size=size, base_filters=base_filters, weights=weights, phase=phase)
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
def user_setting(path: str) -> BenchSetting:
    """The one setting of `--data`: a prepared dataset's folder (holding task.yaml) or a task file."""
    p = Path(path)
    task_file = p / "task.yaml" if p.is_dir() else p
    if not task_file.is_file():
        raise UserError(f"--data {path}: no task file ({task_file} does not exist); give a prepared dataset's "
                        f"folder holding task.yaml (as `genericssl prepare` writes) or a task .yaml file")
    return BenchSetting("data", "", column=f"{task_file}", mimics="the user's dataset",
                        task_file=str(task_file.resolve()))


def check_phase_seeds(phase: str, seeds: list[int]) -> None:
    """Calibration never touches the confirmatory seeds, and the confirmatory run never
    reports a development seed: design choices are made on data that is not reported."""
    if phase == "calibration":
        clash = sorted(set(seeds) & set(CONFIRM_SEEDS))
        if clash:
            raise UserError(f"--phase calibration with confirmatory seed(s) {clash}: calibrate on development "
                            f"seeds ({DEV_SEEDS[0]}-{DEV_SEEDS[-1]} or others outside {CONFIRM_SEEDS[0]}-"
                            f"{CONFIRM_SEEDS[-1]}) so that the confirmatory data stays unseen")
    else:
        clash = sorted(set(seeds) & set(DEV_SEEDS))
        if clash:
            raise UserError(f"--phase confirm with development seed(s) {clash}: design choices were made on "
                            f"them, so they are not evidence; use fresh seeds (default {CONFIRM_SEEDS[0]}-"
                            f"{CONFIRM_SEEDS[-1]})")


def main_accuracy(args) -> int:
    if args.data:
        table = {"data": user_setting(args.data)}
        settings, phase = ["data"], "data"
        seeds = parse_seeds(args.seeds) if args.seeds is not None else list(CONFIRM_SEEDS)
        default = ["supervised", "ad"]
    else:
        table, phase = SETTINGS, args.phase
        settings = parse_names(args.settings, list(SETTINGS), "settings")
        seeds = parse_seeds(args.seeds) if args.seeds is not None else list(
            DEV_SEEDS if phase == "calibration" else CONFIRM_SEEDS)
        check_phase_seeds(phase, seeds)
        default = default_methods(phase, settings)
    methods = parse_names(args.methods, list(ALL_METHODS), "methods") if args.methods is not None else default
    # A derived row is read off its source's cells, which must then run too.
    methods += [DERIVED[m] for m in methods if m in DERIVED and DERIVED[m] not in methods]
    weights = parse_weights(args.weights)
    # The command that trains the cells, which --report-only does not.
    command = shlex.join(["genericssl", "bench", "accuracy", *(a for a in sys.argv[3:] if a != "--report-only")])
    run_benchmark(settings, methods, seeds, args.out, iters=args.iters, size=args.size,
                  base_filters=args.base_filters, device=args.device, jobs=args.jobs, threads=args.threads,
                  weights=weights, command=command.strip(), report_only=args.report_only, table=table,
                  phase=phase)
    return 0

