"""The report of `genericssl bench accuracy` as data: aggregation over seeds, the verdicts
and the calibration checks (``render.py`` writes them as markdown and plots)."""
from __future__ import annotations

import math

import numpy as np

from . import stats
from .cells import DERIVED, LABELS, code_version
from .settings import (ATTRIBUTION_PAIRS, BASELINE_RULE, CALIBRATION_TARGETS, CONFIRM_BASELINES, DEFAULTS,
                       DEV_SEEDS, METHODS)

BASELINES = tuple(m for m in METHODS if m not in ("supervised", "ad", "full"))
# The fewest paired seeds whose exact Wilcoxon p can pass Holm's first step over five
# settings (2/2^8 = 0.0078 < 0.05/5): docs/benchmark.md.
MIN_PAIRS = 8

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


def summarize(results, jobs, settings, methods, seeds, table, command="", code=None, **run) -> dict:
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
                # a run that had not tested yet by then has no value: say over how many runs
                "dice_at_supervised_time_n": sum(v is not None for v in eq_time),
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
        "code": code if code is not None else code_version(), "settings": list(settings), "methods": list(methods),
        "seeds": list(seeds), "run": {**run, "batch_size": DEFAULTS["batch_size"], "lr": DEFAULTS["lr"],
                                      "last_k": last_k},
        "columns": {s: table[s].column for s in settings}, "budget": budget,
        "summary": summary, "cells": cells,
    }
    report["machines"] = machines(results)
    report["phase"] = run.get("phase")
    report["verdict"] = verdict(report)
    if report["phase"] == "calibration":
        report["calibration"] = calibration(report)
    return report


def machines(results) -> list[dict]:
    """Which machines finished the cells, and how many each (derived rows are not cells).
    A cell's key fixes its code, data and settings, not its CPU: a cell run again on a CPU with
    other kernels is another draw of the training's rounding, not the same number."""
    counts: dict = {}
    for r in results:
        if r["method"] in DERIVED:
            continue
        m = r.get("machine")
        name = None
        if m:
            name = f"{m['cpu']} ({m['cpu_capability']}" + (f", {m['gpu']}" if m.get("gpu") else "") + ")"
        counts[name] = counts.get(name, 0) + 1
    order = sorted(counts, key=lambda k: (k is None, k or ""))  # the unrecorded last
    return [{"machine": k, "cells": counts[k]} for k in order]


# ---------------------------------------------------------------- report
def _dice_by_seed(report: dict, setting: str, method: str) -> dict:
    return {seed: r["dice"] for seed, r in report["cells"].get(setting, {}).get(method, {}).items()}


def per_class_difference(report: dict, setting: str, a: str, b: str) -> list[float] | None:
    """Mean over the seeds both rows hold of a's per-class Dice minus b's: which classes a
    paired difference comes from (the verdict is on the mean over classes)."""
    cells = report["cells"].get(setting, {})
    ca, cb = cells.get(a, {}), cells.get(b, {})
    diffs = [np.subtract(ca[s]["dice_per_class"], cb[s]["dice_per_class"]) for s in ca if s in cb
             and len(ca[s].get("dice_per_class") or []) == len(cb[s].get("dice_per_class") or []) > 0]
    return np.mean(diffs, axis=0).tolist() if diffs else None


def _row(family: str, report: dict, setting: str, a: str, b: str) -> dict:
    return {"family": family, "setting": setting, "a_method": a, "b_method": b,
            "a": _dice_by_seed(report, setting, a), "b": _dice_by_seed(report, setting, b),
            "per_class": per_class_difference(report, setting, a, b)}


def verdict(report: dict) -> dict:
    """The comparisons fixed in advance, with their statistics (``bench.stats``):

    - primary: per setting, A&D vs supervised and A&D vs the baseline that calibration
      found strongest (``settings.CONFIRM_BASELINES``); with ``--data``, A&D vs every
      other method run, Holm-corrected across those methods;
    - attribution: each attribution row vs the row it changes one thing of.
    Each comparison is a family across settings for Holm's correction."""
    settings, methods = report["settings"], report["methods"]
    primary, attribution = [], []
    if report.get("phase") == "data":
        # a derived row re-tests one of these cells' models; it is an attribution, not a rival
        for b in (m for m in methods if m != "ad" and m not in DERIVED):
            if "ad" in methods:
                primary.append(_row("A&D vs each method", report, settings[0], "ad", b))
    else:
        for s in settings:
            if "ad" in methods and "supervised" in methods:
                primary.append(_row("A&D vs supervised", report, s, "ad", "supervised"))
            fixed = CONFIRM_BASELINES.get(s)
            if fixed and "ad" in methods and fixed in methods:
                primary.append(_row("A&D vs the strongest baseline of calibration", report, s, "ad", fixed))
    for row, ref in ATTRIBUTION_PAIRS.items():
        for s in settings:
            if row in methods and ref in methods and report["cells"].get(s, {}).get(row):
                attribution.append(_row(f"{row} vs {ref}", report, s, row, ref))
    return {"primary": stats.compare(primary), "attribution": stats.compare(attribution),
            "unfixed": [s for s in settings if report.get("phase") == "confirm" and s not in CONFIRM_BASELINES]}


def _seed_spread(by_seed: dict) -> tuple[float | None, int]:
    """Population std of Dice over seeds, within each task (a SemiDG seed's task is its held-out
    domain: seeds that hold out different domains differ by the domain, not by noise); the
    largest over the tasks run on at least 2 seeds, and how many tasks had 2."""
    by_task: dict[str, list[float]] = {}
    for r in by_seed.values():
        by_task.setdefault(r.get("task", ""), []).append(float(r["dice"]))
    stds = [float(np.std(v)) for v in by_task.values() if len(v) >= 2]
    return (max(stds) if stds else None), len(stds)


def _test_sampling_sd(by_seed: dict) -> float | None:
    """The part of a seed-to-seed std that the test set's size alone explains: the standard error
    of one run's mean test Dice over its cases (sd of the per-case Dice / sqrt(cases)), as a
    root mean square over the runs. None for cells written before per-case scores were kept."""
    var = [float(np.var(r["dice_per_case"], ddof=1)) / len(r["dice_per_case"])
           for r in by_seed.values() if len(r.get("dice_per_case") or []) >= 2]
    return float(np.sqrt(np.mean(var))) if var else None


def calibration(report: dict) -> dict:
    """What calibration checks per setting (``CALIBRATION_TARGETS``): the ceiling above every
    method, supervised training's seed spread, flat curves, learnable classes; and the
    strongest baseline (highest mean Dice over the development seeds), which the
    confirmatory comparison is then fixed to."""
    t = CALIBRATION_TARGETS
    out = {}
    for s in report["settings"]:
        summ = report["summary"][s]
        means = {m: summ[m]["dice_mean"] for m in report["methods"] if summ[m]["dice_mean"] is not None}
        others = {m: v for m, v in means.items() if m != "full"}
        late, wobble = {}, {}
        for m, by_seed in report["cells"].get(s, {}).items():
            gains, spreads = [], []
            for r in by_seed.values():
                c = r["curve"]
                k = len(r.get("reported_over_epochs", [])) or 1
                tail = [p["dice"] for p in c[-k:]]
                if len(c) > k:
                    gains.append(float(np.mean(tail)) - c[-k - 1]["dice"])
                if k > 1 and len(c) >= k:
                    spreads.append(float(np.std(tail)))
            if gains:
                late[m] = float(np.mean(gains))
            # How far one run's reported tests, a few epochs apart at a small learning rate, disagree:
            # a trained network's test score should barely move there. Calibration round 9 found A&D's
            # moving with a std of 1.5-5.5 points per run with its running BatchNorm statistics and of
            # 0.6-1.7 with them recomputed (docs/benchmark.md): noise of the test model, not of the seed.
            if spreads:
                wobble[m] = float(np.mean(spreads))
        full_classes = summ["full"]["dice_per_class_mean"] if "full" in summ else []
        rule = strongest_baseline(report, s, [m for m in report["methods"] if m in BASELINES])
        sup_std, groups = _seed_spread(report["cells"].get(s, {}).get("supervised", {}))
        out[s] = {
            "ceiling": means.get("full"), "best_other": max(others.values(), default=None),
            "ceiling_above_all": ("full" in means and bool(others) and means["full"] > max(others.values())),
            "supervised_std": sup_std, "supervised_std_groups": groups,
            "supervised_test_sd": _test_sampling_sd(report["cells"].get(s, {}).get("supervised", {})),
            "supervised_std_ok": sup_std is not None and sup_std <= t["supervised_std"],
            "late_gain": late, "wobble": wobble, "flat": all(abs(v) <= t["late_gain"] for v in late.values()) if late else None,
            "unlearnable_classes": [i + 1 for i, v in enumerate(full_classes) if v < t["class_dice"]],
            "strongest_baseline": rule["name"], "baseline_rule": rule,
        }
    return out


def _next_cells(dice: dict, methods: list[str], seeds) -> dict:
    """The cells still missing for the rule's current step: these methods on these seeds."""
    todo = [m for m in methods if any(str(x) not in dice[m] for x in seeds)]
    return {"methods": todo, "seeds": [x for x in seeds if any(str(x) not in dice[m] for m in todo)]}


def strongest_baseline(report: dict, setting: str, baselines: list[str]) -> dict:
    """The baseline a setting's confirmatory run compares A&D with, by ``BASELINE_RULE``:
    screen every baseline on the development seeds they all share, keep the best few, name the
    one of those with the highest mean over the seeds they share. Screening only on shared
    seeds keeps one baseline's lucky extra seed from deciding; "pending" says what is missing."""
    rule = BASELINE_RULE
    dice = {m: _dice_by_seed(report, setting, m) for m in baselines}
    out = {"name": None, "screened_on": [], "screen_means": {}, "finalists": [], "decided_on": [],
           "decide_means": {}, "pending": ""}
    if not baselines:
        out["pending"] = "no baseline run"
        return out
    common = sorted(set.intersection(*(set(d) for d in dice.values())), key=int)
    out["screened_on"] = [int(x) for x in common]
    if len(common) < rule["screen_seeds"]:
        short = [m for m in baselines if len(dice[m]) < rule["screen_seeds"]]
        out["pending"] = (f"screening: every baseline on {rule['screen_seeds']} shared development seeds "
                          f"({len(common)} shared; fewest: {', '.join(LABELS.get(m, m) for m in short) or 'none'})")
        out["next"] = _next_cells(dice, baselines, DEV_SEEDS[:rule["screen_seeds"]])
        return out
    screen = {m: float(np.mean([dice[m][x] for x in common])) for m in baselines}
    finalists = sorted(baselines, key=lambda m: -screen[m])[:rule["finalists"]]
    shared = sorted(set.intersection(*(set(dice[m]) for m in finalists)), key=int)
    out.update(screen_means=screen, finalists=finalists, decided_on=[int(x) for x in shared])
    if len(shared) < rule["decide_seeds"]:
        out["pending"] = (f"finalists {' and '.join(LABELS.get(m, m) for m in finalists)} on "
                          f"{rule['decide_seeds']} shared development seeds ({len(shared)} so far)")
        out["next"] = _next_cells(dice, finalists, DEV_SEEDS[:rule["decide_seeds"]])
        return out
    out["decide_means"] = {m: float(np.mean([dice[m][x] for x in shared])) for m in finalists}
    out["name"] = max(finalists, key=out["decide_means"].get)
    return out
