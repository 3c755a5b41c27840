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


def test_bcp_is_timed_in_self_training_and_dhc_runs(capsys, monkeypatch):
    from genericssl.methods.bcp import BCP

    stages = []
    real = BCP.train_step

    def recording(self, batch_l, batch_u):
        stages.append(self.pretraining)
        return real(self, batch_l, batch_u)

    monkeypatch.setattr(BCP, "train_step", recording)
    for method in ("bcp", "dhc"):
        assert cli.main(["bench", "train", "--preset", "bench", "--method", method,
                         "--iters", "1", "--threads", "1"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["method"] == method and out["sec_per_iter"] > 0
    # The warm-up and the timed iteration are both the self-training step (teacher, two mixes).
    assert stages == [False, False]
