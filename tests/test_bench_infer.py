"""`genericssl bench infer`: the figures it prints come from the real prediction paths."""
import json

from genericssl.cli import main


def test_bench_infer_times_each_prediction_option(capsys):
    args = ["bench", "infer", "--shape", "48x48x24", "--patch", "32x32x16", "--base-filters", "4",
            "--stride-xy", "8", "--stride-z", "8", "--threads", "1"]
    assert main(args + ["--options"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["windows"] == 3 * 3 * 2 and out["ensemble"] == 1
    assert set(out["options"]) == {"blend gaussian", "tta mirror", "ensemble of 2"}
    for figures in out["options"].values():
        assert figures["sec_per_volume"] > 0 and 0 <= figures["labels_equal_to_main_run"] <= 1
    # The same run asked for directly: mirror TTA gives the labels --options measured for it.
    assert main(args + ["--tta", "mirror"]) == 0
    mirror = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert mirror["tta"] == "mirror" and mirror["class_fractions"] != [] and mirror["windows"] == out["windows"]


def test_bench_infer_scores_each_way_on_a_trained_checkpoint(tmp_path, capsys):
    from test_training import write_dataset

    data = write_dataset(tmp_path / "data")
    run = tmp_path / "run"
    assert main(["train", "--data-dir", str(data), "--patch-size", "16x16x16", "--base-filters", "4",
                 "--batch-size", "2", "--num-classes", "2", "--num-workers", "0", "-n", "1", "--no-progress",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["bench", "infer", "-k", str(run / "ckpts" / "best_model.pth"), "--data-dir", str(data), "--options",
                 "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["bench"] == "infer_trained" and out["cases"] == 2 and out["split"] == "test"
    ways = out["ways"]
    assert list(ways)[:2] == ["window 16/4 (paper)", "whole volume"] and len(ways) == 5
    for name, w in ways.items():
        assert len(w["dice_per_class"]) == 1 and 0 <= w["mean_dice"] <= 100 and w["sec_per_volume"] >= 0
        if name != "window 16/4 (paper)":
            assert 0 <= w["labels_equal_to_paper"] <= 1 and w["relative_cost"] > 0
