"""Benchmark v2: paired statistics and verdicts, seeds that vary the data, the phases, the
attribution rows, anatomy that varies from case to case, and `bench accuracy --data`."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from genericssl import cli
from genericssl.bench import accuracy as acc
from genericssl.bench import cells, stats
from genericssl.data.synthetic import make_case, make_synthetic_dataset, named_spec
from genericssl.errors import UserError

TINY = dict(iters=2, size=16, base_filters=4, threads=1, device="cpu")
pytestmark = pytest.mark.usefixtures("one_thread")
quiet = dict(log=lambda *_: None)


# ---------------------------------------------------------------- statistics
def test_paired_difference_interval_and_exact_wilcoxon():
    a = {s: 60.0 + s for s in range(8)}
    b = {s: 58.0 + 0.5 * s for s in range(8)}
    r = stats.paired(a, b)
    d = np.array([2.0 + 0.5 * s for s in range(8)])
    assert r["n"] == 8 and r["mean"] == pytest.approx(d.mean())
    half = 2.3646242510102993 * d.std(ddof=1) / np.sqrt(8)   # t(0.975, 7)
    assert r["ci95"] == pytest.approx([d.mean() - half, d.mean() + half])
    assert r["p"] == pytest.approx(2 / 2 ** 8)   # every pair one way: the smallest exact p at n = 8
    # only seeds both hold are paired
    assert stats.paired(a, {0: 1.0, 3: 2.0, 99: 0.0})["seeds"] == [0, 3]
    assert stats.paired({0: 1.0}, {0: 1.0})["p"] == 1.0 and stats.paired({}, {})["mean"] is None


def test_holm_steps_down_and_keeps_order():
    adj = stats.holm([0.01, 0.04, 0.03, 0.005, None])
    assert adj[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and adj[4] is None
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_verdicts_need_the_corrected_p_value():
    clear = {s: 5.0 + s % 3 for s in range(8)}             # A&D ahead on every pair
    zero = {s: 0.0 for s in range(8)}
    mixed = {s: (-1) ** s * (1 + s) for s in range(8)}       # no direction
    rows = [{"family": "F", "setting": "x", "a_method": "ad", "b_method": "s", "a": clear, "b": zero},
            {"family": "F", "setting": "y", "a_method": "ad", "b_method": "s", "a": zero, "b": clear},
            {"family": "F", "setting": "z", "a_method": "ad", "b_method": "s", "a": mixed, "b": zero}]
    out = stats.compare(rows)
    assert [r["verdict"] for r in out] == ["better", "worse", "undetermined"]
    assert out[0]["p_holm"] == pytest.approx(3 * 2 / 2 ** 8) and out[0]["family_size"] == 3
    # five settings with 8 clear pairs each: 5 x 0.0078 = 0.039 still passes; with 6 pairs it cannot
    six = {s: 1.0 for s in range(6)}
    few = stats.compare([{"family": "G", "setting": str(i), "a_method": "a", "b_method": "b", "a": six,
                          "b": {s: 0.0 for s in range(6)}} for i in range(5)])
    assert all(r["verdict"] == "undetermined" for r in few)


def _fake_cell(setting, method, seed, dice, per_class=None):
    curve = [{"train_seconds": t, "train_cpu_seconds": t, "dice": dice} for t in (5.0, 10.0)]
    return {"setting": setting, "method": method, "seed": seed, "task": "t", "dice": dice, "asd": 1.0,
            "dice_per_class": per_class or [dice], "iterations": 10, "train_seconds": 10.0,
            "train_cpu_seconds": 10.0, "threads": 1, "device": "cpu", "curve": curve,
            "reported_over_epochs": [1]}


JOBS = [{"setting": "ssl", "task": "t", "last_k": 1, "code": {"package": "x", "sources": "y"},
         "budget": {"iterations": 10, "epochs": 2, "iters_per_epoch": 5, "rampup_epochs": 1, "test_every": 1},
         "cfg": {"patch_size": [8, 8, 8]}}]


def report_calibration(results, seeds, setting="ssl"):
    methods = sorted({r["method"] for r in results})
    return acc.summarize(results, JOBS, [setting], methods, seeds, acc.SETTINGS, iters=10, size=16,
                         base_filters=4, weights={}, phase="calibration")["calibration"][setting]


def test_calibration_reports_how_much_a_runs_last_tests_disagree():
    """The wobble: the population std of the last k tests of one run, averaged over seeds; a
    method whose score moves by points between neighbouring late epochs shows it, a steady one not."""
    seeds = [1000, 1001]
    tails = {"supervised": {1000: [90.0, 90.0, 90.0], 1001: [88.0, 88.0, 88.0]},
             "ad": {1000: [74.0, 84.0, 87.0], 1001: [83.0, 86.0, 83.0]}}
    results = []
    for m, by_seed in tails.items():
        for seed, tail in by_seed.items():
            r = _fake_cell("ssl", m, seed, float(np.mean(tail)))
            r["curve"] = [{"train_seconds": 1.0 + i, "train_cpu_seconds": 1.0 + i, "dice": d}
                          for i, d in enumerate([80.0, *tail])]
            r["reported_over_epochs"] = [7, 8, 9]
            results.append(r)
    report = acc.summarize(results, JOBS, ["ssl"], ["supervised", "ad"], seeds, acc.SETTINGS, iters=10,
                           size=16, base_filters=4, weights={}, phase="calibration")
    c = report["calibration"]["ssl"]
    assert c["wobble"]["supervised"] == 0.0
    assert c["wobble"]["ad"] == pytest.approx((np.std([74, 84, 87]) + np.std([83, 86, 83])) / 2)
    md = acc.markdown_report(report)
    assert f"| SSL (LA-like, 10%) | 0.00 | {c['wobble']['ad']:.2f} |" in md


def test_the_strongest_baseline_is_screened_on_shared_seeds_then_decided_between_two():
    # BASELINE_RULE: means on the seeds every baseline has pick two finalists; the finalists'
    # mean over the seeds both have names one. A baseline's extra seeds never decide the screen.
    level = {"mean_teacher": 70.0, "uamt": 71.0, "cps": 60.0, "bcp": 65.0, "dhc": 62.0}
    results = [_fake_cell("uda", m, s, v) for m, v in level.items() for s in (1000, 1001)]
    results += [_fake_cell("uda", "dhc", s, 99.0) for s in (1002, 1003, 1004)]  # lucky extra seeds
    seeds = [1000, 1001, 1002, 1003, 1004]
    c = report_calibration(results, seeds, "uda")
    rule = c["baseline_rule"]
    assert rule["screened_on"] == [1000, 1001] and rule["finalists"] == ["uamt", "mean_teacher"]
    assert c["strongest_baseline"] is None and "UA-MT and Mean Teacher" in rule["pending"]
    assert rule["next"] == {"methods": ["uamt", "mean_teacher"], "seeds": [1002, 1003, 1004]}
    md = acc.markdown_report(acc.summarize(results, JOBS, ["uda"], sorted(level), seeds, acc.SETTINGS, iters=10,
                                           size=16, base_filters=4, weights={}, phase="calibration"))
    assert "`--phase calibration --settings uda --seeds 1002,1003,1004 --methods uamt,mean_teacher`" in md
    # the finalists on three more seeds, where Mean Teacher is ahead: it is named, not the screen's leader
    results += [_fake_cell("uda", "mean_teacher", s, 80.0) for s in (1002, 1003, 1004)]
    results += [_fake_cell("uda", "uamt", s, 72.0) for s in (1002, 1003, 1004)]
    c = report_calibration(results, seeds, "uda")
    assert c["strongest_baseline"] == "mean_teacher"
    assert c["baseline_rule"]["decided_on"] == seeds
    assert c["baseline_rule"]["decide_means"]["mean_teacher"] == pytest.approx((70 * 2 + 80 * 3) / 5)
    # too few shared seeds to screen: says which baselines are short
    c = report_calibration([r for r in results if r["method"] != "cps" or r["seed"] == 1000], seeds, "uda")
    assert c["strongest_baseline"] is None and "CPS" in c["baseline_rule"]["pending"]
    assert c["baseline_rule"]["next"] == {"methods": ["cps"], "seeds": [1001]}


def test_report_gives_the_fixed_comparisons_attribution_and_calibration(monkeypatch):
    seeds = list(range(1000, 1008))
    rng = np.random.default_rng(0)
    dice = {"supervised": 60.0, "mean_teacher": 62.0, "ad": 66.0, "full": 80.0, "ad_bn": 66.0}
    results = [_fake_cell("ssl", m, s, v + (rng.normal(0, 0.5) if m != "ad_bn" else 0.0), [v, 30.0])
               for m, v in dice.items() for s in seeds]
    for r in results:                      # ad_bn reads its cell's A&D value: the difference is 0
        if r["method"] == "ad_bn":
            r["dice"] = next(x["dice"] for x in results if x["method"] == "ad" and x["seed"] == r["seed"])
    methods = list(dice)
    report = acc.summarize(results, JOBS, ["ssl"], methods, seeds, acc.SETTINGS, iters=10, size=16,
                           base_filters=4, weights={}, phase="calibration")
    (p,) = report["verdict"]["primary"]
    assert p["family"] == "A&D vs supervised" and p["n"] == 8 and p["verdict"] == "better"
    assert p["mean"] == pytest.approx(6.0, abs=1.0)
    (a,) = report["verdict"]["attribution"]
    assert (a["a_method"], a["b_method"], a["verdict"]) == ("ad_bn", "ad", "undetermined") and a["p"] == 1.0
    c = report["calibration"]["ssl"]
    assert c["ceiling_above_all"] and c["strongest_baseline"] == "mean_teacher"
    assert c["supervised_std_ok"] and c["unlearnable_classes"] == [2] and c["flat"]
    assert c["supervised_test_sd"] is None                 # no per-case scores in these cells
    for r in results:                      # 4 test cases, per-case sd 11.5 (ddof 1): a run's mean carries 5.8
        r["dice_per_case"] = [r["dice"] + d for d in (-10.0, 10.0, -10.0, 10.0)]
    assert report_calibration(results, seeds)["supervised_test_sd"] == pytest.approx(np.std([-10, 10] * 2, ddof=1) / 2)
    md = acc.markdown_report(report)
    assert "development seeds (calibration)" in md and "## Calibration checks" in md
    assert "| SSL (LA-like, 10%) | A&D (ours) vs Supervised (labeled only) | 8 |" in md and "**better**" in md
    # once calibration has fixed the baseline, the confirmatory report compares with it
    monkeypatch.setitem(acc.CONFIRM_BASELINES, "ssl", "mean_teacher")
    confirm = acc.summarize(results, JOBS, ["ssl"], methods, seeds, acc.SETTINGS, iters=10, size=16,
                            base_filters=4, weights={}, phase="confirm")
    fams = [r["family"] for r in confirm["verdict"]["primary"]]
    assert fams == ["A&D vs supervised", "A&D vs the strongest baseline of calibration"]
    assert "calibration" not in confirm
    # one setting of five: its Holm p is its own, and the report says what the full grid's would be
    sup = confirm["verdict"]["primary"][0]
    assert sup["p_holm"] == pytest.approx(sup["p"]) and sup["p"] == pytest.approx(2 / 256)
    md = acc.markdown_report(confirm)
    assert "**Interim report**" in md and "missing: ssl5, ibssl, uda, semidg" in md
    assert f"in SSL (LA-like, 10%): {5 * 2 / 256:.4f}" in md and "fewer than 8 pairs" not in md
    few = acc.summarize([r for r in results if r["seed"] < 1005], JOBS, ["ssl"], methods, seeds[:5], acc.SETTINGS,
                        iters=10, size=16, base_filters=4, weights={}, phase="confirm")
    assert "fewer than 8 pairs (5)" in acc.markdown_report(few)


def test_comparisons_say_which_classes_a_difference_comes_from():
    # UDA-like: A&D gains 12 points on class 3 only, and no method learns class 2; the verdict is
    # on the mean over classes, the per-class differences and table show where it comes from.
    seeds = list(range(8))
    results = []
    for s in seeds:
        sup = [60.0 + s, 0.0, 40.0 + s]
        ad = [60.0 + s, 0.0, 52.0 + s + (s % 2)]
        results += [_fake_cell("uda", "supervised", s, float(np.mean(sup)), sup),
                    _fake_cell("uda", "ad", s, float(np.mean(ad)), ad)]
    report = acc.summarize(results, JOBS, ["uda"], ["supervised", "ad"], seeds, acc.SETTINGS, iters=10, size=16,
                           base_filters=4, weights={}, phase="confirm")
    row = report["verdict"]["primary"][0]
    assert row["per_class"] == pytest.approx([0.0, 0.0, 12.5]) and row["verdict"] == "better"
    assert row["mean"] == pytest.approx(12.5 / 3)
    md = acc.markdown_report(report)
    assert "| 8 | +4.17 [" in md and "| +0.0, +0.0, +12.5 |" in md
    assert "## Per-class Dice (%), UDA" in md
    assert "| A&D (ours) | 63.5 | 0.0 | 56.0 | 39.8 |" in md   # class means over the 8 seeds
    # only the seeds both rows hold are paired, per class as for the mean
    again = acc.summarize(results[2:], JOBS, ["uda"], ["supervised", "ad"], seeds, acc.SETTINGS, iters=10,
                          size=16, base_filters=4, weights={}, phase="confirm")
    assert again["verdict"]["primary"][0]["per_class"] == pytest.approx([0.0, 0.0, 12 + 4 / 7])


def test_phases_keep_development_and_confirmatory_seeds_apart(tmp_path):
    with pytest.raises(UserError, match="confirmatory seed"):
        acc.check_phase_seeds("calibration", [3, 1000])
    with pytest.raises(UserError, match="not evidence"):
        acc.check_phase_seeds("confirm", [1001])
    acc.check_phase_seeds("calibration", list(acc.DEV_SEEDS))
    acc.check_phase_seeds("confirm", list(acc.CONFIRM_SEEDS))
    assert "full" in acc.default_methods("calibration") and "full" not in acc.default_methods("confirm")
    assert set(acc.ATTRIBUTION) - set(acc.DIAGNOSTIC) <= set(acc.default_methods("confirm"))
    assert not set(acc.DIAGNOSTIC) & set(acc.default_methods("confirm"))  # asked for by name only
    assert cli.main(["bench", "accuracy", "--phase", "confirm", "--seeds", "1003", "--out", str(tmp_path)]) == 2


# ---------------------------------------------------------------- planning
def test_each_seed_is_its_own_data_and_attribution_rows_are_planned_where_they_mean_something(tmp_path):
    methods = ["supervised", "ad", "ad_full_ramp", "supervised_bn", "ad_bn"]
    jobs = acc.plan_cells(["ssl", "uda"], methods, [0, 1], tmp_path, 400, 16, 4, "cpu", acc.UNSUP_WEIGHTS, **quiet)
    by = {(j["setting"], j["method"], j["seed"]): j for j in jobs}
    assert not any(m == "ad_bn" for _, m, _ in by)               # read off the ad cells, not trained
    assert ("ssl", "supervised_bn", 0) not in by and ("uda", "supervised_bn", 0) in by
    data = {j["cfg"]["data_dir"] for j in jobs if j["setting"] == "ssl"}
    assert len(data) == 2                                         # the data seed is the run's seed
    a0, a1 = by[("ssl", "supervised", 0)], by[("ssl", "supervised", 1)]
    assert a0["cfg"]["data_dir"] != a1["cfg"]["data_dir"]
    ad, ramp = by[("ssl", "ad", 0)], by[("ssl", "ad_full_ramp", 0)]
    assert ramp["cfg"]["rampup_epochs"] == ramp["budget"]["epochs"] > ad["cfg"]["rampup_epochs"]
    assert ramp["cfg"]["method"] == "ad" and ramp["key"] != ad["key"]
    assert ad["cfg"]["checkpoint_levels"] == 0



def test_supervised_spread_is_measured_within_each_held_out_domain():
    from genericssl.bench.report import calibration

    def report_for(seeds):
        results = []
        for s in seeds:   # domain A scores ~50, domain B ~70: a domain gap, not seed noise
            for m, base in (("supervised", 50.0), ("full", 90.0)):
                r = _fake_cell("semidg", m, s, base + 20.0 * (s % 2) + 0.5 * (s % 4 >= 2))
                r["task"] = "AB"[s % 2]
                results.append(r)
        return acc.summarize(results, JOBS, ["semidg"], ["supervised", "full"], seeds, acc.SETTINGS, iters=10,
                             size=16, base_filters=4, weights={}, phase="calibration")

    c = calibration(report_for([1000, 1001, 1002, 1003]))["semidg"]
    assert c["supervised_std"] == pytest.approx(0.25) and c["supervised_std_groups"] == 2 and c["supervised_std_ok"]
    c = calibration(report_for([1000, 1001]))["semidg"]     # one seed per domain: nothing to measure yet
    assert c["supervised_std"] is None and not c["supervised_std_ok"]


def test_anatomy_varies_from_case_to_case_only_when_asked():
    spec = named_spec("ssl", seed=3, size=32)
    varied = dataclasses.replace(spec, variation=1.0)
    same = make_case(dataclasses.replace(spec, variation=0.0), 0, "train", 0)
    assert all(np.array_equal(x, y) for x, y in zip(same, make_case(spec, 0, "train", 0)))

    def centres(s):
        return np.array([ndimage.center_of_mass(make_case(s, 0, "train", k)[1] == 1) for k in range(6)])

    assert centres(varied).std(0).mean() > 1.5 * centres(spec).std(0).mean()
    for k in range(3):   # every class still present
        assert set(np.unique(make_case(varied, 0, "train", k)[1])) == {0, 1, 2}
    with pytest.raises(UserError, match="variation"):
        dataclasses.replace(spec, variation=2.0).validate()


def test_ibssl_smallest_class_is_large_enough_to_learn():
    s = acc.SETTINGS["ibssl"]
    spec = dataclasses.replace(named_spec(s.spec, seed=0, size=48, **s.spec_kwargs), variation=s.variation)
    smallest = [int((make_case(spec, 0, "train", k)[1] == spec.num_classes - 1).sum()) for k in range(4)]
    assert np.mean(smallest) > 100   # v1's smallest classes held 5-127 voxels and scored 0 for every method



def _near_air_fraction(spec, cases=4):
    """Share of the smallest class's voxels within 2 voxels of the air outside the body."""
    from genericssl.data import synthetic as S

    anatomy, out = S._anatomy(spec), []
    for k in range(cases):
        rng = np.random.default_rng([spec.seed, 0, S.ROLES.index("train"), k])
        vrng = np.random.default_rng([spec.seed, 0, S.ROLES.index("train"), k, 0x7A2])
        label, body, _ = S.render_label(spec, anatomy, rng, vrng)
        small = label == spec.num_classes - 1
        out.append((small & ndimage.binary_dilation(~body, iterations=2)).sum() / max(1, small.sum()))
    return float(np.mean(out))


def test_spread_keeps_small_structures_off_the_body_rim():
    # At the generator's default spread (0.40) the small structures, placed last with the most
    # room, can end up against the rim (calibration round 4, docs/benchmark.md).
    s = acc.SETTINGS["ibssl"]
    rim = {sp: np.mean([_near_air_fraction(dataclasses.replace(
        named_spec(s.spec, seed=seed, size=48, **s.spec_kwargs), variation=1.0, spread=sp))
        for seed in (0, 2)]) for sp in (0.40, 0.28)}
    assert rim[0.28] < 0.25 * rim[0.40]
    spec = named_spec("ssl", seed=3, size=32)
    assert all(np.array_equal(x, y) for x, y in zip(make_case(spec, 0, "train", 0),
                                                    make_case(dataclasses.replace(spec, spread=0.40), 0, "train", 0)))
    with pytest.raises(UserError, match="spread"):
        dataclasses.replace(spec, spread=0.0).validate()

# ---------------------------------------------------------------- cells
def test_batchnorm_recomputation_is_the_plain_average_of_image_passes():
    from genericssl.config import TaskConfig
    from genericssl.models.diff_vnet import DiffVNet

    torch.manual_seed(0)
    cfg = TaskConfig(num_classes=2, base_filters=4, patch_size=(16, 16, 16)).validate()
    net = DiffVNet(1, cfg.num_classes, cfg.base_filters, 3, has_dropout=True)
    images = [np.random.default_rng(i).random((1, 20, 20, 20), dtype=np.float32) * (i + 1) for i in range(5)]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    new = cells.recompute_batchnorm(net, images, (16, 16, 16), seed=0, batch=2, passes=1)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())   # the original is untouched
    first = next(m for m in new.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    seen = []
    hook = first.register_forward_pre_hook(lambda m, a: seen.append(a[0].mean(dim=(0, 2, 3, 4))))
    again = cells.recompute_batchnorm(new, images, (16, 16, 16), seed=0, batch=2, passes=1)
    hook.remove()
    bn = next(m for m in again.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    # batches of 2 and 3 crops (a last crop alone joins the batch before): the plain average of the batch means
    assert len(seen) == 2 and torch.allclose(bn.running_mean, torch.stack(seen).mean(0), atol=1e-6)
    assert not bn.training and bn.momentum is None


def test_ad_cells_carry_the_batchnorm_recomputed_row(tmp_path):
    # Asked for by name (ad_bn) or not (ad_psi_bn): a row read off a cell comes with it.
    report = acc.run_benchmark(["ssl"], ["ad", "ad_bn", "ad_psi"], [0], tmp_path, **TINY, **quiet)
    assert report["methods"] == ["ad", "ad_bn", "ad_psi", "ad_psi_bn"]
    for source in ("ad", "ad_psi"):
        cell = report["cells"]["ssl"][source]["0"]
        derived = report["cells"]["ssl"][f"{source}_bn"]["0"]
        assert set(cell["derived"]) == {f"{source}_bn"} and derived["dice"] == cell["derived"][f"{source}_bn"]["dice"]
        assert len(derived["curve"]) == len(cell["curve"]) and derived["method"] == f"{source}_bn"
        # the recomputed statistics are another test model: its curve is not the cell's own
        assert [c["dice_per_case"] for c in derived["curve"]] != [c["dice_per_case"] for c in cell["curve"]]
    families = {a["family"] for a in report["verdict"]["attribution"]}
    assert {"ad_bn vs ad", "ad_psi vs ad", "ad_psi_bn vs ad_bn"} <= families
    assert "Attribution" in (tmp_path / "results.md").read_text()


# ---------------------------------------------------------------- a user's dataset
def test_bench_accuracy_on_a_prepared_dataset(tmp_path, capsys):
    data = tmp_path / "mydata"
    make_synthetic_dataset(data, named_spec("ssl", seed=5, size=16, n_train=8, n_eval=2, n_test=2))
    out = tmp_path / "out"
    args = ["bench", "accuracy", "--data", str(data), "--methods", "supervised,ad", "--seeds", "0,1",
            "--iters", "2", "--base-filters", "4", "--device", "cpu", "--threads", "1", "--out", str(out)]
    assert cli.main(args) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["phase"] == "data" and report["settings"] == ["data"] and report["seeds"] == [0, 1]
    assert report["methods"] == ["supervised", "ad", "ad_bn"]
    (row,) = report["verdict"]["primary"]  # ad_bn re-tests ad's models: not a rival in the family
    assert (row["a_method"], row["b_method"], row["n"]) == ("ad", "supervised", 2)
    assert {r["b_method"] for r in report["verdict"]["attribution"]} == {"ad"}
    cell = report["cells"]["data"]["ad"]["0"]
    assert cell["task"] == "ssl_0.1"
    md = (out / "results.md").read_text()
    assert md.startswith("# Accuracy benchmark on") and "A&D (ours) vs Supervised (labeled only)" in md
    # one dataset for every seed: the training seed varies, the data does not
    assert not (out / "data").exists()
    assert report["cells"]["data"]["ad"]["1"]["task"] == cell["task"]
    capsys.readouterr()
    assert cli.main(["bench", "accuracy", "--data", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "no task file" in capsys.readouterr().err


def test_equal_time_says_over_how_many_runs_it_averages():
    """A slow method's run that had not tested yet when its seed's supervised run finished has no
    Dice at that time: the mean is over the others, and the report must not print it as a spread
    over every seed ("± 0.00" from a single run)."""
    seeds = [1000, 1001, 1002]
    results = [_fake_cell("ssl", "supervised", s, 90.0) for s in seeds]
    for s in seeds:
        r = _fake_cell("ssl", "ad", s, 80.0)
        first = 8.0 if s == 1000 else 30.0            # only seed 1000 tested within supervised's 10 s
        r["curve"] = [{"train_seconds": t, "train_cpu_seconds": t, "dice": 70.0 + s - 1000}
                      for t in (first, 40.0)]
        r["train_seconds"] = r["train_cpu_seconds"] = 40.0
        results.append(r)
    report = acc.summarize(results, JOBS, ["ssl"], ["supervised", "ad"], seeds, acc.SETTINGS, iters=10,
                           size=16, base_filters=4, weights={}, phase="calibration")
    e = report["summary"]["ssl"]["ad"]
    assert e["dice_at_supervised_time_n"] == 1 and e["dice_at_supervised_time_mean"] == 70.0
    md = acc.markdown_report(report)
    assert "| A&D (ours) | 70.00 (n=1) | 4.0 |" in md
    assert "| Supervised (labeled only) | 90.00 ± 0.00 | 1.0 |" in md
