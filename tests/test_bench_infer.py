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
