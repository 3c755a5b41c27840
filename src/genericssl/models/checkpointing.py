"""Activation checkpointing of the V-Net's resolution levels, bit-exact to plain training.

An A&D iteration holds the activations of three gradient paths (D_xi, D_psi and
D_theta, each a whole encoder and decoder) until the backward pass; they are most of
an iteration's memory, and most of them sit at the full-resolution level (a level
holds 1/4 of the voxels-times-channels of the level above). A checkpointed region
keeps only its inputs and computes its forward again when the backward pass reaches
it (``torch.utils.checkpoint``, non-reentrant: the autograd graph is the same, so the
gradients are summed in the same order and come out bitwise equal).

A region is one resolution level of one path: in the encoder the downsampling block
and the conv block it feeds (the stem at level 1), in the decoder the upsampling
block, the skip addition and the conv block (the output head at level 1). Level 1
holds about 60 % of the activations for about 20 % of a path's forward arithmetic,
levels 1-2 about 85 % for 55 %; level 1's elementwise operations are memory-bound,
so the recomputation costs more time than its arithmetic share (on a 2-core CPU, 2
levels: +10 % per A&D iteration at S, about +12 % at M).

Two things would make the recomputation differ from the first forward, and neither
may: dropout masks (torch's checkpoint replays the random state) and BatchNorm's
running statistics, which a second training-mode forward would update a second
time; :class:`KeepRunningStats` puts them back as they were after the first.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

# The levels a preset may checkpoint: 0 (none) to 5 (every level of the V-Net).
MAX_LEVEL = 5


class KeepRunningStats:
    """Context of a recomputation: BatchNorm buffers end as they were when it began."""

    def __init__(self, modules: Iterable[nn.Module]):
        self.norms = [m for module in modules for m in module.modules()
                      if isinstance(m, _BatchNorm) and m.track_running_stats]
        self.saved: list = []

    def __enter__(self):
        self.saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
                      for m in self.norms]
        return self

    def __exit__(self, *exc) -> bool:
        with torch.no_grad():
            for m, (mean, var, count) in zip(self.norms, self.saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)
        self.saved = []
        return False


def run_region(fn: Callable, modules: Iterable[nn.Module], *args):
    """``fn(*args)``, its activations recomputed in the backward pass instead of kept."""
    modules = list(modules)
    return checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=True,
                      context_fn=lambda: (nullcontext(), KeepRunningStats(modules)))


def region(checkpoint_levels: int, level: int, fn: Callable, modules: Iterable[nn.Module], *args):
    """``fn(*args)``, checkpointed when ``level`` is among the ``checkpoint_levels`` top levels
    and gradients are being recorded (the sampler and validation run as before)."""
    if level <= checkpoint_levels and torch.is_grad_enabled():
        return run_region(fn, modules, *args)
    return fn(*args)
