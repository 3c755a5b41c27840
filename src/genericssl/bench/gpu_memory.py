"""The memory a training iteration needs, counted on the CPU (`genericssl bench memory`).

The count: the real iteration (the method's step, backward, SGD step, as the trainer
runs it) runs on the CPU with small patches while a dispatch mode adds up the bytes of
every tensor storage alive after each operation. The sequence of operations does not
depend on the patch size, and every activation's size is proportional to the voxel
count times the batch, so for each operation k the live bytes are
``a_k + b_k * batch * voxels``; two patch sizes at one case per loader give a_k and b_k,
and the peak at the preset's patch and batch is the largest ``a_k + b_k * batch * voxels``
(within 0.1 % of the direct count at the target size and batch: the extrapolation is
exact in the voxel count, and a few kB of per-case tensors escape the single-case probes). The
weights, their momentum and BatchNorm buffers (alive before the iteration) are added.
In float32 this is what the iteration holds on a CPU: for the LA preset at 2
checkpointed levels 7.17 GiB counted, against 7.56 GiB peak resident in `bench train`,
~0.4 GiB of which the process holds before it trains (libraries, the loaded model).

On a GPU under float16 autocast the activations take 2 bytes a value instead of 4.
Running the count under CPU autocast would give the float16 figure directly, but
half-precision 3D convolutions on a CPU without native support run ~50x slower than
float32 (7.1 s against 0.15 s for one 16-channel 32^3 layer here), so the GPU figure is
derived: the float32 count with every non-persistent byte halved except the gradients
(float32, one model's size), plus autocast's float16 copies of the weights (half a
model). Loss terms and the sampler's C-channel tensors stay float32 on a GPU, so the
halving slightly understates them. It is an estimate of ``torch.cuda.max_memory_allocated``;
not counted are the CUDA context (~0.3-0.6 GB), cuDNN's workspaces and the caching
allocator's rounding and fragmentation; `scripts/gpu_check.sh` measures it where a GPU is.
"""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GIB = 2 ** 30


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensor storages that operations created and that are still alive, after each op."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.timeline: list[int] = []
        self._alive: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._alive.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                key = id(st)
                if key not in self._alive and st.nbytes():
                    self._alive[key] = st.nbytes()
                    self.live += st.nbytes()
                    weakref.finalize(st, self._free, key)
        self.timeline.append(self.live)
        return out


def persistent_bytes(method, optimizer) -> int:
    """Weights, BatchNorm buffers and optimizer state: alive across iterations."""
    seen, total = set(), 0
    tensors = [t for m in method.modules().values() for t in (*m.parameters(), *m.buffers())]
    tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
    for t in tensors:
        st = t.untyped_storage()
        if st.data_ptr() not in seen:
            seen.add(st.data_ptr())
            total += st.nbytes()
    return total


def probe_patches(spatial_dims: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Two small patches with different voxel counts: multiples of 16 (the V-Net's four
    halvings) and at least 32 per axis, so that no axis is 1 at the bottleneck (where the
    backward pass skips a reduction over size-1 axes and the operations would differ)."""
    return (32,) * spatial_dims, (48,) + (32,) * (spatial_dims - 1)


def iteration_timeline(cfg, patch: tuple[int, ...], method_name: str | None = None,
                       batch: int | None = None) -> tuple[list[int], int, int]:
    """Live bytes after each operation of one steady-state float32 iteration of ``cfg`` at
    ``patch`` (and ``batch``, default the configuration's); the persistent bytes (weights,
    buffers, momentum); the weights' bytes."""
    import dataclasses

    from ..methods.base import StepModule
    from ..training import make_optimizer, optimizer_step
    from .train import random_batches, steady_method

    cfg = dataclasses.replace(cfg, patch_size=tuple(patch), channels_last=False, amp=False,
                              batch_size=batch or cfg.batch_size)
    method = steady_method(cfg, method_name or cfg.method, torch.device("cpu"))
    opt = make_optimizer(method.parameters(), 1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    step = StepModule(method)
    bl, bu = random_batches(method, cfg.batch_size, cfg.patch_size, 0)
    # The trainer's own step; the first one creates the momentum buffers every later one finds.
    optimizer_step(step, method, opt, scaler, bl, bu, False, "cpu")
    tracker = LiveBytes()
    with tracker:
        optimizer_step(step, method, opt, scaler, bl, bu, False, "cpu")
    weights = sum(p.numel() * p.element_size() for p in method.parameters() if p.requires_grad)
    return tracker.timeline, persistent_bytes(method, opt), weights


def estimate(cfg, method_name: str | None = None, probes=None) -> dict:
    """Peak bytes of one iteration at ``cfg.patch_size`` (float32 on a CPU; float16 autocast on a
    GPU, derived as the module docstring says), extrapolated per operation from ``probes``."""
    import math

    probes = probes or probe_patches(cfg.spatial_dims)
    # Every activation is batch x channels x voxels: the probes run one case per loader and
    # the extrapolation is in batch x voxels.
    (t1, fixed, weights), (t2, _, _) = (iteration_timeline(cfg, p, method_name, batch=1) for p in probes)
    if len(t1) != len(t2):
        raise RuntimeError(f"the iteration ran {len(t1)} and {len(t2)} operations at the two probe sizes; "
                           f"the extrapolation needs the same sequence")
    v1, v2 = (math.prod(p) for p in probes)
    v = math.prod(cfg.patch_size) * cfg.batch_size
    peak = max(a + (b - a) * (v - v1) / (v2 - v1) for a, b in zip(t1, t2))
    gpu = fixed + weights / 2 + weights + max(peak - weights, 0) / 2
    return {"peak_bytes": int(peak + fixed), "gpu_fp16_bytes": int(gpu), "persistent_bytes": fixed,
            "weight_bytes": weights, "operations": len(t1)}
