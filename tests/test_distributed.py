"""Training in two processes (gloo, CPU), started as torchrun starts them.

Each job runs tests/dist_worker.py in 2 processes with the real Trainer; the tests
compare what the processes hold: after several steps every rank has the same
weights, buffers and difficulty weights, for A&D and every baseline; 2 processes
compute what 1 computes on the same global batch; a kill -9 resumes exactly; a
non-finite loss on one rank stops both with one message; a step that bypasses DDP
is caught by the per-epoch check.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dist_worker import SIZE, Float64NoDropout, dist_cfg, state_of
from genericssl.data.loaders import EpochShuffleSampler, per_process_batch
from genericssl.errors import UserError
from genericssl.training import Trainer
from prepared_data import write_spheres

WORKER = Path(__file__).with_name("dist_worker.py")
METHODS = ["ad", "supervised", "mean_teacher", "uamt", "cps", "bcp", "dhc"]


def launch(scenario, data, out, *methods, timeout=300):
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "--monitor-interval", "0.1", str(WORKER), scenario, str(data), str(out), *methods]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def ranks(out, name):
    return [torch.load(out / f"{name}_rank{r}.pt") for r in (0, 1)]


def history(run):
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_spheres(tmp_path_factory.mktemp("dist") / "data", n=10, size=SIZE, margin=8)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    r = launch("train", data, out, *METHODS)
    assert r.returncode == 0, r.stderr[-4000:]
    return out


# ------------------------------------------------------------------ sharding (no processes)
def test_shards_cover_the_one_process_batches_in_order():
    one = list(EpochShuffleSampler(10, seed=5, stream=1))
    shards = [list(EpochShuffleSampler(10, seed=5, stream=1, rank=r, world_size=2, global_batch=4))
              for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 4  # 2 whole global batches, 2 items each
    # Global batch k of the one-process run = rank 0's k-th share + rank 1's.
    for k in range(2):
        assert shards[0][2 * k:2 * k + 2] + shards[1][2 * k:2 * k + 2] == one[4 * k:4 * k + 4]
    # The epoch is in the index (the augmentation's seed), the same for any rank count.
    s = EpochShuffleSampler(10, seed=5, stream=1, rank=1, world_size=2, global_batch=4)
    s.set_epoch(3)
    assert all(30 <= i < 40 for i in s)


def test_batch_must_divide_among_processes():
    assert per_process_batch(4, 2) == 2
    with pytest.raises(UserError, match=r"batch_size 5 is the global batch .* multiple of 2 \(e.g. 4 or 6\)"):
        per_process_batch(5, 2)


# ------------------------------------------------------------------ two processes
@pytest.mark.parametrize("method", METHODS)
def test_ranks_hold_identical_state_after_training(trained, method):
    r0, r1 = ranks(trained, f"train_{method}")
    assert r0.keys() == r1.keys()
    differ = [k for k in r0 if not torch.equal(r0[k], r1[k])]
    assert not differ, f"{method}: ranks differ in {differ[:5]}"
    hist = history(trained / f"run_train_{method}")
    assert [h["epoch"] for h in hist] == [0, 1]
    assert all(h["world_size"] == 2 and h["ranks_identical"] for h in hist)
    # The checksum moves: the weights were trained, not merely left equal.
    assert hist[0]["param_checksum"] != hist[1]["param_checksum"]


def test_checkpointing_changes_nothing_in_two_processes(trained, data, tmp_path):
    """``train`` checkpoints 2 levels (the default): the recomputation runs SyncBatchNorm's
    collectives again inside the backward pass; the result must be bitwise the plain run's."""
    assert dist_cfg(data).checkpoint_levels == 2
    r = launch("nockpt", data, tmp_path, "ad")
    assert r.returncode == 0, r.stderr[-4000:]
    for got, ref in zip(ranks(tmp_path, "nockpt_ad"), ranks(trained, "train_ad")):
        assert got.keys() == ref.keys()
        differ = [k for k in ref if not torch.equal(got[k], ref[k])]
        assert not differ, differ[:5]


def test_bcp_covers_both_stages(trained):
    # 2 epochs: copy-paste pre-training in epoch 0, self-training with the teacher in epoch 1.
    assert [h["pretrain"] for h in history(trained / "run_train_bcp")] == [1.0, 0.0]


def test_difficulty_weights_are_everyones(trained):
    r0, r1 = ranks(trained, "train_ad")
    w0, w1 = r0["difficulty.weights"], r1["difficulty.weights"]
    assert torch.equal(w0, w1)
    assert not torch.allclose(w0, torch.full_like(w0, 2.0))  # updated from the start value C
    ckpt = torch.load(trained / "run_train_ad" / "ckpts" / "last.pth", weights_only=True)
    assert torch.equal(ckpt["method_state"]["difficulty"]["weights"], w0)
    assert ckpt["world_size"] == 2 and len(ckpt["rng_per_rank"]) == 2
    # Each rank draws its own noise (seed + rank): their random states differ.
    assert not torch.equal(ckpt["rng_per_rank"][0]["torch"], ckpt["rng_per_rank"][1]["torch"])


def test_two_processes_compute_what_one_computes(data, tmp_path):
    r = launch("nodropout", data, tmp_path, "supervised")
    assert r.returncode == 0, r.stderr[-4000:]
    two, two_b = ranks(tmp_path, "nodropout_supervised")
    cfg = dist_cfg(data, "supervised")
    start = Trainer(cfg, data, tmp_path / "start", device="cpu", progress=False, tensorboard=False,
                    callbacks=[Float64NoDropout()], log=lambda *a: None)
    initial = state_of(start)
    one_t = Trainer(cfg, data, tmp_path / "one", device="cpu", progress=False, tensorboard=False,
                    callbacks=[Float64NoDropout()], log=lambda *a: None)
    one_t.fit()
    one = state_of(one_t)
    assert one.keys() == two.keys()
    for k in one:
        if not one[k].is_floating_point():
            assert torch.equal(one[k], two[k]), k
            continue
        scale = one[k].abs().max() + 1e-12
        assert (one[k] - two[k]).abs().max() / scale < 1e-4, k
    moved = max(float((one[k] - initial[k]).abs().max() / (one[k].abs().max() + 1e-12))
                for k in one if k.endswith("conv.weight"))
    print("moved", moved, "worst", max(float((one[k] - two[k]).abs().max() / (one[k].abs().max() + 1e-12)) for k in one if one[k].is_floating_point()))
    assert moved > 1e-2  # four SGD steps, so the agreement is not that of untouched weights
    # Decoders supervised training does not use keep no gradient, so stay as they started.
    for k in one:
        if k.startswith("model.decoder_psi.") and one[k].is_floating_point():
            assert torch.equal(two[k], initial[k]), k


def test_a_step_outside_ddp_is_caught(data, tmp_path):
    r = launch("nosync", data, tmp_path, "supervised")
    assert r.returncode != 0
    for rank in (0, 1):
        msg = (tmp_path / f"nosync_error_rank{rank}.txt").read_text()
        assert "no longer hold the same weights" in msg and "rank 1 differs from rank 0" in msg


def test_nonfinite_loss_on_one_rank_stops_every_rank(data, tmp_path):
    r = launch("nan", data, tmp_path, "supervised", timeout=120)
    assert r.returncode != 0
    for rank in (0, 1):
        msg = (tmp_path / f"nan_error_rank{rank}.txt").read_text()
        assert "non-finite on rank 1 of 2 at epoch 0, iteration 1" in msg and "lower --lr" in msg


def test_kill_9_resumes_exactly_under_two_processes(trained, data, tmp_path):
    r = launch("kill", data, tmp_path, "ad")
    assert r.returncode != 0 and "SIGKILL" in r.stderr
    last = torch.load(tmp_path / "run_kill" / "ckpts" / "last.pth", weights_only=True)
    assert last["epoch"] == 0
    # Another number of processes: it continues, and says it is not bit-identical.
    shutil.copytree(tmp_path / "run_kill", tmp_path / "one_process")
    notes = []
    one = Trainer(dist_cfg(data, "ad"), data, tmp_path / "one_process", device="cpu", progress=False,
                  tensorboard=False, resume=tmp_path / "one_process", log=notes.append)
    assert one.start_epoch == 1 and any("written by 2 process(es), this run has 1" in n for n in notes)
    one.fit()
    assert [h["epoch"] for h in history(tmp_path / "one_process")] == [0, 1]
    r = launch("resume", data, tmp_path, "ad")
    assert r.returncode == 0, r.stderr[-4000:]
    for rank, (resumed, uninterrupted) in enumerate(zip(ranks(tmp_path, "resume_ad"), ranks(trained, "train_ad"))):
        differ = [k for k in uninterrupted if not torch.equal(resumed[k], uninterrupted[k])]
        assert not differ, f"rank {rank}: {differ[:5]}"
    assert [h["epoch"] for h in history(tmp_path / "run_kill")] == [0, 1]


def test_cli_nproc_runs_in_two_processes(data, tmp_path):
    import yaml

    cfg = {k: v for k, v in dist_cfg(data, "supervised", max_epoch=0).to_dict().items()
           if k in ("data_dir", "patch_size", "num_classes", "base_filters", "batch_size", "max_epoch",
                    "num_workers", "seed", "method")}
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(cfg))
    common = ["--config", str(tmp_path / "task.yaml"), "--out", str(tmp_path / "run"), "--device", "cpu",
              "--no-progress"]
    # genericssl run: trains in 2 processes, then rank 0 tests and evaluates.
    r = subprocess.run([sys.executable, "-m", "genericssl", "run", *common, "--nproc", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.count("seed 3: testing") == 1  # printed once, by rank 0
    assert json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    hist = history(tmp_path / "run")
    assert hist[0]["world_size"] == 2 and hist[0]["ranks_identical"]
    assert json.loads((tmp_path / "run" / "distributed.json").read_text())["rank_seeds"] == [3, 4]
    # A batch the processes cannot share is refused before anything starts.
    r = subprocess.run([sys.executable, "-m", "genericssl", "train", *common, "--overwrite", "--nproc", "3"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "multiple of 3" in r.stderr and "Traceback" not in r.stderr
