"""`genericssl bench accuracy` on one tiny setting: results, caching, invalidation, bad input."""
import json

import numpy as np
import pytest

from genericssl import cli
from genericssl.bench import accuracy as acc
from genericssl.bench import cells
from genericssl.errors import UserError
from genericssl.training import Trainer

TINY = dict(iters=2, size=16, base_filters=4, threads=1, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    lines = []
    report = acc.run_benchmark(["ssl"], ["supervised", "mean_teacher"], [0], out, log=lines.append, **TINY)
    return out, report, lines


def test_results_structure(first_run):
    out, report, lines = first_run
    saved = json.loads((out / "results.json").read_text())
    assert saved["synthetic_data"] is True and saved["seeds"] == [0]
    assert saved["code"] == acc.code_version()
    for m in ("supervised", "mean_teacher"):
        s = saved["summary"]["ssl"][m]
        assert 0.0 <= s["dice_mean"] <= 100.0 and s["dice_std"] == 0.0
        assert len(s["dice_per_class_mean"]) == 2          # the ssl spec has 2 foreground classes
        assert s["iterations"] == [2] and s["asd_mean"] >= 0.0
        cell = saved["cells"]["ssl"][m]["0"]
        assert cell["iterations"] == 2 and cell["train_seconds"] > 0 and cell["wall_seconds"] > 0
        assert len(cell["dice_per_class"]) == len(cell["asd_per_class"]) == 2
        assert cell["curve"] and cell["curve"][-1]["iteration"] == 2
        # one score per test case, whose mean is the run's Dice (classes and cases average either way)
        assert len(cell["dice_per_case"]) == 20
        assert np.mean(cell["dice_per_case"]) == pytest.approx(cell["dice"])
        assert (out / "cells" / "ssl" / m / "seed0.json").is_file()
    assert saved["summary"]["ssl"]["supervised"]["time_vs_supervised"] == pytest.approx(1.0)
    assert saved["budget"]["ssl"]["ssl_0.1"]["iterations"] == 2
    md = (out / "results.md").read_text()
    assert "Synthetic data" in md and "| Mean Teacher |" in md and "SSL (LA-like, 10%)" in md
    for png in ("dice_by_setting.png", "test_curves.png"):
        assert (out / png).stat().st_size > 0
    assert sum("seed 0: Dice" in line for line in lines) == 2      # one progress line per cell


def test_each_cell_names_the_machine_that_computed_it(first_run):
    # a key does not fix the CPU kernels, and those change a 3000-iteration cell's Dice
    import torch

    out, report, _ = first_run
    cell = json.loads((out / "cells" / "ssl" / "supervised" / "seed0.json").read_text())
    assert cell["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert cell["machine"]["torch"] == torch.__version__ and cell["machine"]["cpu"]
    assert report["machines"] == [{"machine": f"{cell['machine']['cpu']} ({cell['machine']['cpu_capability']})",
                                   "cells": 2}]
    assert f"cells computed on: {cell['machine']['cpu']}" in (out / "results.md").read_text()


def test_second_run_uses_the_cache(first_run):
    out, report, _ = first_run
    cell = out / "cells" / "ssl" / "supervised" / "seed0.json"
    before = cell.read_text()
    lines = []
    again = acc.run_benchmark(["ssl"], ["supervised"], [0], out, log=lines.append, **TINY)
    assert any("1 cached, 0 to run" in line for line in lines)
    assert cell.read_text() == before
    assert again["summary"]["ssl"]["supervised"]["dice_mean"] == report["summary"]["ssl"]["supervised"]["dice_mean"]


def test_report_only_trains_nothing_and_names_the_missing_cells(first_run, monkeypatch):
    out, report, _ = first_run
    monkeypatch.setattr(acc, "run_cell", lambda job: pytest.fail("--report-only must not train"))
    lines = []
    partial = acc.run_benchmark(["ssl"], ["supervised", "uamt"], [0], out, log=lines.append, report_only=True,
                                **TINY)
    assert any("1 of 2 cells finished" in line for line in lines)
    assert partial["missing_cells"] == ["ssl/uamt/seed0"]
    assert partial["summary"]["ssl"]["uamt"]["dice_mean"] is None
    assert partial["summary"]["ssl"]["supervised"]["dice_mean"] == report["summary"]["ssl"]["supervised"]["dice_mean"]
    md = (out / "results.md").read_text()
    assert "**incomplete**: 1 of 2 cells finished" in md and "ssl/uamt/seed0" in md
    assert not (out / "cells" / "ssl" / "uamt").exists()


def test_other_code_version_is_rerun_not_mixed(first_run, monkeypatch):
    out, _, _ = first_run
    real = acc.code_version()
    monkeypatch.setattr(acc, "code_version", lambda method=None: {**real, "sources": "0" * 16})
    lines = []
    report = acc.run_benchmark(["ssl"], ["supervised"], [0], out, log=lines.append, **TINY)
    assert any("another code version" in line for line in lines)
    assert any("0 cached, 1 to run" in line for line in lines)
    cell = json.loads((out / "cells" / "ssl" / "supervised" / "seed0.json").read_text())
    assert cell["code"]["sources"] == "0" * 16
    assert report["code"]["sources"] == "0" * 16


def test_interrupted_cell_resumes(tmp_path, monkeypatch):
    # 72 iterations = two epochs of the tiny ssl task (72 unlabeled cases, batch 2); die after epoch 0's checkpoint.
    real = Trainer._write_logs
    state = {"raised": False}

    def dying(self, record):
        if record["epoch"] == 1 and not state["raised"]:
            state["raised"] = True
            raise KeyboardInterrupt
        real(self, record)

    monkeypatch.setattr(Trainer, "_write_logs", dying)
    kw = {**TINY, "iters": 72}
    with pytest.raises(KeyboardInterrupt):
        acc.run_benchmark(["ssl"], ["supervised"], [0], tmp_path, log=lambda s: None, **kw)
    assert not (tmp_path / "cells" / "ssl" / "supervised" / "seed0.json").exists()
    report = acc.run_benchmark(["ssl"], ["supervised"], [0], tmp_path, log=lambda s: None, **kw)
    cell = report["cells"]["ssl"]["supervised"]["0"]
    assert cell["resumed"] and cell["epochs"] == 2 and cell["iterations"] == 72


def test_budget_is_shared_and_ramps_over_a_third():
    task = {"name": "t", "splits": {"labeled": "labeled", "unlabeled": "unlabeled"}, "repeat": "labeled"}
    b = acc.budget_for(task, {"labeled": 4, "unlabeled": 36}, 1000, 2, 1 / 3, 8, 3)
    assert b["iters_per_epoch"] == 18 and b["epochs"] == 56 and b["iterations"] == 1008
    assert b["rampup_epochs"] == 19
    # the reported mean is over the last 3 epochs tested, which sit near the end
    assert b["test_epochs"][-3:] == [51, 53, 55] and 8 <= len(b["test_epochs"]) <= 12
    full = acc.cell_config({**task, "num_classes": 3}, "full", 0, b, 8, 2, 0.01, acc.UNSUP_WEIGHTS)
    assert full["method"] == "supervised" and full["splits"]["labeled"] == "train_all"
    assert full["iters_per_epoch"] == 18 and full["max_epoch"] == 55
    ad = acc.cell_config({**task, "num_classes": 3}, "ad", 0, b, 8, 2, 0.01, acc.UNSUP_WEIGHTS)
    assert ad["rampup_epochs"] == full["rampup_epochs"] and ad["unsup_weight"] == 10.0


def test_variant_is_its_method_with_its_overrides_and_a_cache_key_of_its_own(tmp_path):
    jobs = acc.plan_cells(["ssl"], ["ad", "ad_eval_sampler"], [0], tmp_path, 2, 16, 4, "cpu", acc.UNSUP_WEIGHTS,
                          log=lambda *_: None)
    ad, var = jobs
    assert var["cfg"]["method"] == "ad" and var["cfg"]["sampler_eval_mode"] is True
    assert "sampler_eval_mode" not in ad["cfg"] and var["cfg"]["unsup_weight"] == ad["cfg"]["unsup_weight"]
    assert var["key"] != ad["key"] and var["cell_path"] != ad["cell_path"]
    assert {k: v for k, v in var["cfg"].items() if k not in ("sampler_eval_mode", "name")} == \
        {k: v for k, v in ad["cfg"].items() if k != "name"}
    assert "ad_eval_sampler" in acc.ALL_METHODS and acc.ALL_METHODS[-1] == "full"


def test_cell_keys_follow_the_data_bytes_not_the_generator_source(tmp_path, monkeypatch):
    import shutil

    pkg = tmp_path / "pkg"
    shutil.copytree(acc.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cells, "PACKAGE_DIR", pkg)   # where code_version reads it
    before = acc.code_version()
    with open(pkg / "data" / "synthetic.py", "a") as f:
        f.write("\n# an edit of the generator\n")
    assert acc.code_version() == before          # it reaches the key through the data it makes
    with open(pkg / "losses.py", "a") as f:
        f.write("\n# an edit of the training code\n")
    assert acc.code_version() != before

    monkeypatch.undo()
    plan = lambda: acc.plan_cells(["ssl"], ["supervised"], [0], tmp_path / "out", 2, 16, 4, "cpu",
                                  acc.UNSUP_WEIGHTS, log=lambda *_: None)
    first = plan()[0]
    assert plan()[0]["key"] == first["key"]
    data_dir = next((tmp_path / "out" / "data").iterdir())
    (data_dir / "task.yaml").write_text((data_dir / "task.yaml").read_text() + "# paths only\n")
    assert plan()[0]["key"] == first["key"]
    arr = next((data_dir / "npy").glob("*_image.npy"))
    a = np.load(arr)
    a.flat[0] += 1.0
    np.save(arr, a)
    assert plan()[0]["key"] != first["key"]


def test_a_change_to_one_method_reruns_that_method_only(tmp_path, monkeypatch):
    import shutil

    assert acc.method_files("ad") == ["methods/__init__.py", "methods/ad.py", "methods/base.py",
                                      "methods/difficulty.py", "methods/ramps.py"]
    assert "methods/mean_teacher.py" in acc.method_files("uamt")   # UA-MT builds on it
    assert acc.method_files("full") == acc.method_files("supervised")
    pkg = tmp_path / "pkg"
    shutil.copytree(acc.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cells, "PACKAGE_DIR", pkg)   # where code_version reads it
    names = ("supervised", "mean_teacher", "uamt", "cps", "bcp", "dhc", "ad", "ad_eval_sampler")
    before = {m: acc.code_version(m) for m in names}
    everything = acc.code_version()

    def edit(rel):
        with open(pkg / rel, "a") as f:
            f.write("\n# an edit\n")
        now = {m: acc.code_version(m) for m in names}
        changed = {m for m in names if now[m] != before[m]}
        before.update(now)
        return changed

    assert edit("methods/cps.py") == {"cps"}
    assert edit("methods/bcp.py") == {"bcp"}
    assert edit("methods/difficulty.py") == {"ad", "ad_eval_sampler", "dhc"}   # DHC's DiffDW is A&D's rule
    assert edit("methods/mean_teacher.py") == {"mean_teacher", "uamt", "bcp"}  # BCP takes its ema_update
    assert edit("methods/base.py") == set(names)
    assert edit("losses.py") == set(names)
    assert acc.code_version() != everything


def test_a_setting_reaches_its_own_cells_keys_and_no_others(tmp_path):
    import dataclasses

    def keys(table, weights=acc.UNSUP_WEIGHTS):
        jobs = acc.plan_cells(list(table), ["supervised", "ad"], [0], tmp_path, 2, 16, 4, "cpu", weights,
                              log=lambda *_: None, table=table)
        return {(j["setting"], j["method"]): j["key"] for j in jobs}

    ssl = acc.SETTINGS["ssl"]
    base = keys({"ssl": ssl})
    # a new setting next to it reruns nothing of it
    more = keys({"ssl": ssl, "ssl5": acc.SETTINGS["ssl5"]})
    assert {k: v for k, v in more.items() if k[0] == "ssl"} == base
    # but a change to the setting itself (its labeled fraction) or a method's weight does
    changed = keys({"ssl": dataclasses.replace(ssl, spec_kwargs={"labeled": 0.2})})
    assert not set(changed.values()) & set(base.values())
    heavier = keys({"ssl": ssl}, {**acc.UNSUP_WEIGHTS, "ad": 5.0})
    assert heavier[("ssl", "supervised")] == base[("ssl", "supervised")]
    assert heavier[("ssl", "ad")] != base[("ssl", "ad")]


def test_the_ssl_settings_have_the_la_counts(tmp_path):
    """LA's 80 training and 20 test volumes, 4 (5 %) or 8 (10 %) of them labeled (calibration round 8)."""
    jobs = acc.plan_cells(["ssl5", "ssl"], ["supervised"], [0], tmp_path, 2, 16, 4, "cpu", acc.UNSUP_WEIGHTS,
                          log=lambda *_: None)
    for job, (n_l, n_u) in zip(jobs, ((4, 76), (8, 72))):
        split_dir = tmp_path / "data" / job["cfg"]["data_dir"].rsplit("/", 1)[-1] / "split_txts"
        assert len((split_dir / "labeled.txt").read_text().split()) == n_l
        assert len((split_dir / "unlabeled.txt").read_text().split()) == n_u
        assert len((split_dir / "test.txt").read_text().split()) == 20
    assert [j["task"] for j in jobs] == ["ssl_0.05", "ssl_0.1"]


def test_eta_scales_the_measured_pace_by_the_cost_of_what_is_left():
    pending = [{"key": "a", "method": "supervised"}, {"key": "b", "method": "ad_eval_sampler"},
               {"key": "c", "method": "ad"}]
    assert acc.relative_cost("ad_eval_sampler") == acc.relative_cost("ad") > acc.relative_cost("supervised")
    eta = acc._Eta(pending, jobs=2)
    # one supervised cell took 600 s: two A&D cells of 5.9 units each, on 2 workers, take 5.9 * 600 s
    assert eta.done("a", 600.0) == "about 59 min left"
    assert eta.done("b", 10.0, resumed=True) == "about 30 min left"   # no pace from a resumed cell
    assert eta.done("c", 1.0) == ""


def test_a_folder_with_finished_cells_says_what_the_rest_will_take():
    pending = [{"method": "ad"}, {"method": "ad_full_ramp"}, {"method": "supervised"}]
    assert acc.cost_estimate(pending, [], jobs=2) == ""                       # no pace yet
    assert acc.cost_estimate([], [{"method": "ad", "wall_seconds": 5.0}], jobs=2) == ""
    finished = [{"method": "supervised", "wall_seconds": 300.0}, {"method": "full", "wall_seconds": 400.0},
                {"method": "mean_teacher", "wall_seconds": 700.0},           # 350 s per unit
                {"method": "ad", "wall_seconds": 60.0, "resumed": True}]     # only its last part: no pace
    # median pace 350 s per unit, 12.8 units pending: 4480 s, 1.2 cell-hours, 0.6 h on 2 workers
    text = acc.cost_estimate(pending, finished, jobs=2)
    assert text.startswith("at the pace of the 3 finished cells here") and "about 1.2 cell-hours, 0.6 h" in text


def _fake_cell(setting, method, seed, dice):
    return {"setting": setting, "method": method, "seed": seed, "task": "t", "dice": dice, "asd": 1.0,
            "dice_per_class": [dice], "iterations": 10, "train_seconds": 10.0, "train_cpu_seconds": 10.0,
            "threads": 1, "device": "cpu", "curve": [{"train_seconds": 10.0, "train_cpu_seconds": 10.0,
                                                      "dice": dice}]}


def test_report_says_how_many_seeds_a_mean_covers_and_pairs_by_seed():
    dice = {("supervised", 0): 50.0, ("supervised", 1): 60.0, ("mean_teacher", 0): 70.0,
            ("mean_teacher", 1): 60.0, ("ad", 0): 72.0, ("ad", 1): 59.0, ("cps", 0): 40.0}
    cells = [_fake_cell("ssl", m, seed, d) for (m, seed), d in dice.items()]
    jobs = [{"setting": "ssl", "task": "t", "last_k": 3, "code": {"package": "x", "sources": "y"},
             "budget": {"iterations": 10, "epochs": 1, "iters_per_epoch": 10, "rampup_epochs": 1,
                        "test_every": 1}, "cfg": {"patch_size": [8, 8, 8]}}]
    methods = ["supervised", "mean_teacher", "cps", "ad"]
    report = acc.summarize(cells, jobs, ["ssl"], methods, [0, 1], acc.SETTINGS, iters=10, size=16,
                           base_filters=4, weights={})
    report["missing_cells"] = ["ssl/cps/seed1"]
    md = acc.markdown_report(report)
    assert "| CPS | 40.00 (n=1) |" in md                      # one seed: no made-up spread
    assert "65.50 ± 6.50 |" in md and "(n=2)" not in md      # the full seed count needs no note
    # A&D vs supervised, paired by seed: +22 and -1; two pairs decide nothing
    (v,) = acc.verdict(report)["primary"]
    assert v["differences"] == [22.0, -1.0] and v["mean"] == pytest.approx(10.5)
    assert v["verdict"] == "undetermined"
    assert "| 2 | +10.50 [" in md and "**undetermined**" in md


def test_dice_at_time_takes_the_last_points_within_the_time():
    curve = [{"train_seconds": t, "dice": d} for t, d in [(1, 10.0), (2, 20.0), (3, 30.0), (4, 40.0), (9, 90.0)]]
    assert acc.dice_at_time(curve, 4.0, 3) == pytest.approx(30.0)
    assert acc.dice_at_time(curve, 0.5, 3) is None
    one = {"threads": 1, "device": "cpu", "train_cpu_seconds": 5.0}
    assert acc.time_key(one, one) == "train_cpu_seconds"
    assert acc.time_key(one, {**one, "threads": 2}) == "train_seconds"
    assert acc.time_key(one, {**one, "device": "cuda"}) == "train_seconds"


def test_bad_names_list_the_valid_ones():
    with pytest.raises(UserError, match="unknown settings 'lung'; valid settings: ssl5, ssl, ibssl, uda, semidg"):
        acc.parse_names("ssl,lung", list(acc.SETTINGS), "settings")
    with pytest.raises(UserError, match="valid methods: supervised, mean_teacher, uamt, cps, bcp, dhc, ad, full"):
        acc.parse_names("fixmatch", list(acc.METHODS), "methods")
    with pytest.raises(UserError, match="seed list is empty"):
        acc.parse_seeds(" , ")
    with pytest.raises(UserError, match="integers"):
        acc.parse_seeds("0,one")
    assert acc.parse_seeds("2,0,2") == [2, 0]
    with pytest.raises(UserError, match="METHOD=W"):
        acc.parse_weights("ad")
    assert acc.parse_weights("cps=10")["cps"] == 10.0


def test_cli_reports_bad_input_without_traceback(capsys):
    assert cli.main(["bench", "accuracy", "--settings", "lung"]) == 2
    assert "valid settings: ssl5, ssl, ibssl, uda, semidg" in capsys.readouterr().err
    assert cli.main(["bench", "accuracy", "--seeds", ""]) == 2
    assert "seed list is empty" in capsys.readouterr().err
