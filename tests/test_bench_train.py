"""`genericssl bench train`: one real iteration at the accuracy benchmark's cell shape."""
import json

from genericssl import cli


def test_bench_preset_times_a_real_iteration_of_the_benchmark_cell(capsys):
    assert cli.main(["bench", "train", "--preset", "bench", "--method", "mean_teacher",
                     "--iters", "1", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["method"] == "mean_teacher"
    assert (out["base_filters"], out["num_classes"], out["batch"], out["patch"]) == (8, 3, "2+2", [32, 32, 32])
    assert out["sec_per_iter"] > 0 and out["peak_rss_mb"] > 0


def test_unknown_method_is_a_clear_error(capsys):
    assert cli.main(["bench", "train", "--preset", "bench", "--method", "fixmatch", "--iters", "1"]) == 2
    err = capsys.readouterr().err
    assert "fixmatch" in err and "mean_teacher" in err
