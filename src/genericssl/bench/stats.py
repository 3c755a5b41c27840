"""Paired comparisons of two methods over seeds: the statistics of `bench accuracy`'s verdicts.

A run pairs a method with another when both trained on the same data seed and training
seed (the same cases, the same labeled subset). For each pair of methods the report gives
the mean paired difference with its 95 % t-interval and the two-sided Wilcoxon
signed-rank p-value (exact for small samples, scipy); the p-values of one comparison
across settings are Holm-corrected, and the verdict is "better" or "worse" only where
the corrected p-value is below ``ALPHA``, else "undetermined". With n pairs the smallest
exact two-sided Wilcoxon p-value is 2 / 2^n (0.0078 at n = 8), so a family of 5
settings needs n >= 8 for even the clearest result (every pair in one direction) to pass
Holm's first step (0.05 / 5 = 0.01).
"""
from __future__ import annotations

import math

import numpy as np

ALPHA = 0.05


def paired(a: dict, b: dict) -> dict:
    """``a`` minus ``b`` over the keys (seeds) both hold: n, mean, 95 % t-interval, Wilcoxon p."""
    keys = sorted(set(a) & set(b), key=str)
    d = np.asarray([float(a[k]) - float(b[k]) for k in keys], dtype=np.float64)
    out = {"n": len(keys), "seeds": keys, "differences": d.tolist(), "mean": None, "ci95": None,
           "sd": None, "p": None}
    if len(d) == 0:
        return out
    out["mean"] = float(d.mean())
    if len(d) >= 2:
        from scipy import stats

        sd = float(d.std(ddof=1))
        half = float(stats.t.ppf(0.975, len(d) - 1)) * sd / math.sqrt(len(d))
        out.update(sd=sd, ci95=[out["mean"] - half, out["mean"] + half])
    out["p"] = wilcoxon_p(d)
    return out


def wilcoxon_p(d) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of the differences ``d`` (1.0 when all are 0)."""
    d = np.asarray(d, dtype=np.float64)
    if len(d) == 0:
        return None
    if not np.any(d != 0):
        return 1.0
    from scipy import stats

    # zero_method "wilcox" drops zero differences (a tie says nothing about direction);
    # the exact null distribution is used for small samples without ties.
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: list) -> list:
    """Holm's step-down adjusted p-values (None stays None), in the input's order."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    adjusted: list = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def verdict(mean: float | None, p_adjusted: float | None, alpha: float = ALPHA) -> str:
    """"better" / "worse" when the Holm-adjusted p-value is below ``alpha``, else "undetermined"."""
    if mean is None or p_adjusted is None or p_adjusted >= alpha or mean == 0:
        return "undetermined"
    return "better" if mean > 0 else "worse"


def compare(rows: list[dict], alpha: float = ALPHA) -> list[dict]:
    """Each row: ``family`` (the comparison, e.g. "A&D vs supervised"), ``setting``, ``a``
    and ``b`` (seed -> score). Adds the paired statistics, the Holm-adjusted p-value within
    its family (one comparison across settings) and the verdict."""
    out = [{**r, **paired(r["a"], r["b"])} for r in rows]
    for family in dict.fromkeys(r["family"] for r in out):
        members = [r for r in out if r["family"] == family]
        for r, p_adj in zip(members, holm([r["p"] for r in members])):
            r["p_holm"] = p_adj
            r["verdict"] = verdict(r["mean"], p_adj, alpha)
            r["family_size"] = sum(1 for m in members if m["p"] is not None)
    for r in out:
        r.pop("a"), r.pop("b")
    return out
