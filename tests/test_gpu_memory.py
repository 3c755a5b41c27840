"""The memory count (`bench memory`): per-operation extrapolation from two small patches.

The estimate must agree with what the same counting gives when the iteration is run at
the target size and batch itself, must see checkpointing's saving, and must follow tensor lifetimes.
"""
import dataclasses
import json

import pytest
import torch

from genericssl.bench import gpu_memory
from genericssl.cli import main
from genericssl.config import TaskConfig


def small_cfg(levels, method="ad", spatial_dims=3):
    patch = (48, 32, 32) if spatial_dims == 3 else (64, 48)
    return TaskConfig(name="m", patch_size=patch, num_classes=3, base_filters=4, batch_size=2,
                      spatial_dims=spatial_dims, checkpoint_levels=levels, method=method, max_epoch=10).validate()


def direct(cfg):
    timeline, fixed, _ = gpu_memory.iteration_timeline(cfg, cfg.patch_size)
    return max(timeline) + fixed


@pytest.mark.parametrize("levels, method, dims", [(0, "ad", 3), (2, "ad", 3), (2, "supervised", 2)])
def test_extrapolation_equals_the_direct_count(levels, method, dims):
    cfg = small_cfg(levels, method, dims)
    est = gpu_memory.estimate(cfg)
    # Exact in the voxel count; the per-case tensors the probes' single case leaves out are
    # a few kB (55 kB of 90 MB here).
    assert abs(est["peak_bytes"] - direct(cfg)) < 2e-3 * direct(cfg)
    assert est["persistent_bytes"] > 0 and est["operations"] > 100


def test_checkpointing_shows_in_the_estimate_and_the_gpu_figure_is_smaller():
    plain, ckpt = (gpu_memory.estimate(dataclasses.replace(small_cfg(levels), patch_size=(96, 96, 64)))
                   for levels in (0, 2))
    assert ckpt["peak_bytes"] < 0.6 * plain["peak_bytes"]
    for est in (plain, ckpt):
        # 2-byte activations, float32 gradients and weights, the float16 weight copies.
        assert est["persistent_bytes"] + 1.5 * est["weight_bytes"] < est["gpu_fp16_bytes"] < est["peak_bytes"]


def test_live_bytes_follow_tensor_lifetimes():
    with gpu_memory.LiveBytes() as tracker:
        a = torch.ones(1000)          # 4000 bytes
        b = a.view(10, 100)           # a view: no new storage
        c = (a * 2).half()            # 4000 bytes for a moment, then 2000 kept
        del a, b
        after = tracker.live
    assert tracker.timeline[0] == 4000 and max(tracker.timeline) == 10000
    assert after == 2000 and c.numel() == 1000


def test_cli_prints_a_row_per_preset_and_level(capsys):
    assert main(["bench", "memory", "-t", "mnms2d_A_0.02", "--levels", "0", "2", "--json", "--threads", "1",
                 "--set", "base_filters=4", "--set", "batch_size=2"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["checkpoint_levels"] for r in rows] == [0, 2]
    assert rows[1]["gpu_fp16_gib"] < rows[0]["gpu_fp16_gib"] and rows[1]["cpu_fp32_gib"] < rows[0]["cpu_fp32_gib"]
    assert "| mnms2d_A_0.02 | 224x224, 2+2 | 4 | 2 |" in out
