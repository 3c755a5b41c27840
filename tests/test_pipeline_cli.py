"""The one-command paths a user runs: demo, and run (train -> test -> evaluate)."""
import json

import numpy as np
import torch

from genericssl import DiffVNet
from genericssl.cli import main
from test_training import write_dataset


def test_demo_end_to_end_tiny(tmp_path):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--size", "32", "--max-epoch", "1", "--iters-per-epoch", "2",
               "--base-filters", "4", "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["methods"]) == {"ad", "supervised"}
    for r in res["methods"].values():
        assert len(r["per_class_dice"]) == 3 and 0 <= r["mean_dice"] <= 1
        assert r["iterations"] == 4
    for png in ("overlays.png", "curves.png"):
        assert (out / png).stat().st_size > 5000


def test_run_trains_tests_and_evaluates(tmp_path, capsys):
    data = write_dataset(tmp_path / "data")
    out = tmp_path / "run"
    common = ["--data-dir", str(data), "--patch-size", "16x16x16", "--base-filters", "4", "--batch-size", "2",
              "--num-classes", "2", "--num-workers", "0", "--stride-xy", "8", "--stride-z", "8", "--no-progress"]
    assert main(["run", *common, "--max-epoch", "1", "--out", str(out)]) == 0
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert set(metrics["cases"]) == {"case08", "case09"}
    assert len(metrics["cases"]["case08"]["dice"]) == 1
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["case08.npy", "case09.npy"]

    # -d false with an authors'-format checkpoint ({'state_dict'} only)
    torch.manual_seed(0)
    ckpt = tmp_path / "best_model.pth"
    torch.save({"state_dict": DiffVNet(1, 2, 4, 3, has_dropout=True).state_dict()}, ckpt)
    out2 = tmp_path / "authors"
    assert main(["run", *common, "--no-train", "--checkpoint", str(ckpt), "--out", str(out2)]) == 0
    assert (out2 / "test_metrics.json").exists()


def test_run_with_several_seeds_aggregates(tmp_path):
    data = write_dataset(tmp_path / "data")
    out = tmp_path / "runs"
    assert main(["run", "--data-dir", str(data), "--patch-size", "16x16x16", "--base-filters", "4",
                 "--batch-size", "2", "--num-classes", "2", "--num-workers", "0", "--max-epoch", "0",
                 "--method", "supervised", "--seeds", "0,1", "--stride-xy", "16", "--stride-z", "16",
                 "--out", str(out), "--no-progress", "--ensemble"]) == 0
    agg = json.loads((out / "test_metrics_runs.json").read_text())
    assert agg["runs"] == 2 and "std" in agg
    assert (out / "seed0" / "ckpts" / "best_model.pth").exists() and (out / "seed1").is_dir()
    # The ensemble of the two seeds: its softmax is the mean of theirs, so its labels are the
    # argmax of the mean of the seeds' probabilities.
    ens = json.loads((out / "ensemble" / "test_metrics.json").read_text())
    assert set(ens["cases"]) == {"case08", "case09"}
    from genericssl.checkpoint import load_model
    from genericssl.inference import predict_probs
    models = [load_model(out / f"seed{s}" / "ckpts" / "best_model.pth")[0] for s in (0, 1)]
    image = np.load(data / "npy" / "case08_image.npy")
    from genericssl.data.cases import normalize_intensity
    x = normalize_intensity(image, {"clip": None, "percentile": None})
    mean = sum(predict_probs(m, x, (16, 16, 16), stride_xy=16, stride_z=16) for m in models) / 2
    assert (mean.argmax(0).numpy() == np.load(out / "ensemble" / "predictions" / "case08.npy")).mean() > 0.999
