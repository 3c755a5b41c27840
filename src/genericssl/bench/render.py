"""The benchmark report as a reader sees it: the markdown tables (laid out like the paper's),
the comparisons and calibration checks in words, and the plots. What they show is computed
in ``report.py``; nothing here changes a number."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import stats
from .cells import DERIVED, LABELS
from .report import MIN_PAIRS, time_key
from .settings import BASELINE_RULE, CALIBRATION_TARGETS, DEFAULTS, SETTINGS


def _p(p):
    return "—" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _comparison_table(rows: list[dict], columns: dict) -> list[str]:
    out = ["| Setting | comparison | pairs | mean difference [95 % CI] | per class (C1, C2, ...) | Wilcoxon p "
           "| Holm p | verdict |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = "" if r["ci95"] is None else f" [{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}]"
        mean = "—" if r["mean"] is None else f"{r['mean']:+.2f}{ci}"
        per_class = ", ".join(f"{d:+.1f}" for d in r.get("per_class") or []) or "—"
        out.append(f"| {columns.get(r['setting'], r['setting'])} | {LABELS.get(r['a_method'], r['a_method'])} "
                   f"vs {LABELS.get(r['b_method'], r['b_method'])} | {r['n']} | {mean} | {per_class} | "
                   f"{_p(r['p'])} | {_p(r.get('p_holm'))} | **{r['verdict']}** |")
    return out


def _per_class_lines(report: dict, methods: list[str]) -> list[str]:
    """Per-class Dice of every setting with more than one foreground class: a mean over classes
    hides which class a method gains or loses on (UDA's contrast-flipped class, IBSSL's small ones)."""
    summary, out = report["summary"], []
    for s in report["settings"]:
        k = max((len(summary[s][m]["dice_per_class_mean"]) for m in methods), default=0)
        if k < 2:
            continue
        order = ", classes from largest to smallest" if s == "ibssl" else ""
        out += ["", f"## Per-class Dice (%), {report['columns'][s]}{order}", "",
                "| Method | " + " | ".join(f"C{c + 1}" for c in range(k)) + " | mean |",
                "|---|" + "---|" * (k + 1)]
        for m in methods:
            pc = summary[s][m]["dice_per_class_mean"]
            if pc:
                out.append(f"| {LABELS.get(m, m)} | " + " | ".join(f"{v:.1f}" for v in pc)
                           + f" | {np.mean(pc):.1f} |")
    return out


def _interim_lines(report: dict) -> list[str]:
    """A confirmatory report over part of the grid: Holm's correction then runs over fewer
    settings than the final one will, so its verdicts can only weaken; say by how much."""
    grid = [s for s in SETTINGS if not SETTINGS[s].task_file]
    missing = [s for s in grid if s not in report["settings"]]
    short = sorted({r["n"] for r in report["verdict"]["primary"] if r["n"] < MIN_PAIRS})
    if not missing and not short:
        return []
    out = [""]
    if missing:
        m = len(grid)
        out.append(f"**Interim report**: Holm's correction above runs across the {len(grid) - len(missing)} "
                   f"setting(s) present; the confirmatory grid has {m} (missing: {', '.join(missing)}), and "
                   f"its correction multiplies a p-value by up to {m}. A verdict here stands in the final report "
                   f"only if its Wilcoxon p times {m} stays below {stats.ALPHA}: "
                   + ", ".join(f"{LABELS.get(r['a_method'], r['a_method'])} vs "
                               f"{LABELS.get(r['b_method'], r['b_method'])} in {report['columns'][r['setting']]}: "
                               f"{'—' if r['p'] is None else format(min(1.0, r['p'] * m), '.4f')}"
                               for r in report["verdict"]["primary"]) + ".")
    if short:
        out.append(f"Some comparisons have fewer than {MIN_PAIRS} pairs ({', '.join(map(str, short))}): with n "
                   f"pairs the smallest exact two-sided Wilcoxon p is 2/2^n, so they cannot pass the correction "
                   f"yet.")
    return out


def _baseline_cell(c: dict) -> str:
    rule = c.get("baseline_rule") or {}
    if c["strongest_baseline"]:
        means = ", ".join(f"{LABELS.get(m, m)} {v:.2f}" for m, v in
                          sorted(rule.get("decide_means", {}).items(), key=lambda kv: -kv[1]))
        return f"{LABELS.get(c['strongest_baseline'], c['strongest_baseline'])}" + (f" ({means})" if means else "")
    return f"pending: {rule['pending']}" if rule.get("pending") else "—"


def _verdict_lines(report: dict) -> list[str]:
    v = report["verdict"]
    out = []
    phase = report.get("phase")
    if v["primary"]:
        title = ("Comparisons fixed in advance" if phase != "calibration"
                 else "Comparisons (calibration: development seeds, not evidence)")
        out += ["", f"## {title}", "",
                "Paired by seed (the same data and labeled cases): mean of A&D's Dice minus the other's, in "
                "points, with its 95 % t-interval; two-sided Wilcoxon signed-rank p; Holm's correction across "
                f"the settings of each comparison; the verdict is better / worse where the corrected p is "
                f"below {stats.ALPHA}, else undetermined.", ""]
        out += _comparison_table(v["primary"], report["columns"])
    if phase == "confirm" and v["primary"]:
        out += _interim_lines(report)
    if v.get("unfixed"):
        out += ["", f"Not fixed yet (no calibration): A&D vs the strongest baseline in "
                    f"{', '.join(report['columns'][s] for s in v['unfixed'])}."]
    if v["attribution"]:
        out += ["", "## Attribution", "",
                "Each row against the row it changes one thing of (same statistics; Holm across settings "
                "within each row).", ""]
        out += _comparison_table(v["attribution"], report["columns"])
    if phase == "calibration":
        t = CALIBRATION_TARGETS
        out += ["", "## Calibration checks (development seeds)", "",
                f"Targets: the ceiling above every method; supervised std <= {t['supervised_std']} Dice "
                "(population std over seeds; where seeds hold out different domains, within each held-out "
                "domain, the largest; — until some domain has 2 seeds); "
                f"flat curves (last tests' mean within {t['late_gain']} points of the test before); every "
                f"class above {t['class_dice']} Dice for the ceiling. \"test sampling\": the standard error of "
                "one run's mean over its test cases, the part of the std that the test set's size alone "
                "explains.", "",
                "| Setting | ceiling | best other | ceiling above all | supervised std | of it, test sampling "
                "| largest late gain | classes under target (ceiling) | strongest baseline |",
                "|---|---|---|---|---|---|---|---|---|"]
        for s, c in report.get("calibration", {}).items():
            late = max(c["late_gain"].items(), key=lambda kv: abs(kv[1]), default=None)
            fmt = (lambda x: "—" if x is None else f"{x:.2f}")
            out.append(f"| {report['columns'][s]} | {fmt(c['ceiling'])} | {fmt(c['best_other'])} | "
                       f"{'yes' if c['ceiling_above_all'] else 'no'} | {fmt(c['supervised_std'])} | "
                       f"{fmt(c.get('supervised_test_sd'))} | "
                       f"{'—' if late is None else f'{late[1]:+.2f} ({LABELS.get(late[0], late[0])})'} | "
                       f"{', '.join(f'C{k}' for k in c['unlearnable_classes']) or 'none'} | "
                       f"{_baseline_cell(c)} |")
        cal = report.get("calibration", {})
        nxt = {s: c["baseline_rule"]["next"] for s, c in cal.items() if c.get("baseline_rule", {}).get("next")}
        if nxt:
            rule = BASELINE_RULE
            out += ["", f"Next cells for the strongest baseline (`BASELINE_RULE`: screen on {rule['screen_seeds']} "
                        f"shared development seeds, decide between the top {rule['finalists']} on "
                        f"{rule['decide_seeds']}):", ""]
            out += [f"- {report['columns'][s]}: `--phase calibration --settings {s} --seeds "
                    f"{','.join(map(str, n['seeds']))} --methods {','.join(n['methods'])}`" for s, n in nxt.items()]
        shown = list(dict.fromkeys(m for c in cal.values() for m in c.get("wobble", {})))
        if shown:
            out += ["", "Wobble: the population std of each run's reported test evaluations (the last few, "
                        "some epochs apart near the end of training), averaged "
                        "over seeds. A trained network's score should barely move there; what does move "
                        "is noise that no number of seeds averages out of a single run.", "",
                    "| Setting | " + " | ".join(LABELS.get(m, m) for m in shown) + " |",
                    "|---|" + "---|" * len(shown)]
            for s, c in cal.items():
                w = c.get("wobble", {})
                out.append(f"| {report['columns'][s]} | "
                           + " | ".join("—" if m not in w else f"{w[m]:.2f}" for m in shown) + " |")
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
    phase = report.get("phase")
    if phase == "data":
        out = [f"# Accuracy benchmark on {cols[0]}", "",
               "Each method trained on the dataset's splits once per seed (the data stays, the training seed "
               "varies) and tested on its test split.", ""]
    else:
        out = ["# Synthetic accuracy benchmark", "",
               "**Synthetic data**, small volumes, CPU-sized networks: this tests whether the paper's claim "
               "holds on problems that are hard in the same ways, not the paper's numbers.", ""]
    what = {"calibration": "development seeds (calibration): design choices were made on these; not evidence",
            "confirm": "confirmatory seeds, unseen during calibration; each seed is the run's data seed and "
                       "training seed"}.get(phase, "training seeds")
    filters = (f"{run['base_filters']} base filters" if run["base_filters"] else
               f"{DEFAULTS['base_filters']} base filters (a user's task: its own)")
    out += [f"- command: `{report['command'] or 'genericssl bench accuracy'}`",
            f"- seeds: {seeds} ({what}); code {report['code']['package']} / {report['code']['sources']}",
           f"- every method of a setting: the same iterations, batch {run['batch_size']} labeled + "
           f"{run['batch_size']} unlabeled, lr {run['lr']}, ramp-up over the first third of the epochs; "
           f"{filters}, {run['size']}^3 volumes",
           f"- Dice: mean of the last {run['last_k']} test evaluations of each run (sliding window), then mean "
           f"± population std over seeds; best semi-supervised method in bold"]
    if report.get("machines"):
        out.append("- cells computed on: " + "; ".join(
            f"{m['machine'] or 'not recorded'}: {m['cells']}"
            for m in report["machines"])
            + " (a cell's number repeats to the digit on the same CPU kernels, not across them)")
    missing = report.get("missing_cells") or []
    if missing:
        # derived rows re-test a cell's model: they are not cells of their own
        total = len(missing) + sum(len(by_seed) for by_m in report["cells"].values()
                                   for m, by_seed in by_m.items() if m not in DERIVED)
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
                              n=e.get("dice_at_supervised_time_n", len(e["seeds"])), total=n_seeds))
            cells.append("—" if e["time_vs_supervised"] is None else f"{e['time_vs_supervised']:.1f}")
        lines.append(f"| {LABELS.get(m, m)} | " + " | ".join(cells) + " |")
    out += lines
    out += _per_class_lines(report, methods)
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
    # constrained layout makes room for the legend below the axes (tight_layout cannot)
    width_in = 2.2 + 1.9 * len(settings)
    fig, ax = plt.subplots(figsize=(width_in, 3.8), layout="constrained")
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
    # as many legend columns as fit the figure's width (a long label is ~3.5 inches at size 7)
    ncol = max(1, min(len(methods), int(width_in // 3.5)))
    fig.legend(fontsize=7, ncol=ncol, loc="outside lower center", frameon=False)
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


