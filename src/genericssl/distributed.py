"""Several processes, one training: torch.distributed as ``torchrun`` starts it.

A process learns its place from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); without it there is one process and
every helper here is a no-op that returns its input, so a one-process run computes
exactly what it computed before any of this existed.

What several processes must agree on, and where it is made so:
- gradients: DistributedDataParallel around one module whose ``forward`` is the
  method's whole training step (``methods.base.StepModule``);
- BatchNorm statistics: :func:`convert_sync_batchnorm` (``sync_bn``), computed over the
  global batch;
- batch sums inside a loss (the batch Dice, a weighted mean's denominator, the
  difficulty weights' counts): :func:`batch_sum` and :func:`global_ratio`, active
  inside :func:`global_batch`, so N processes compute the loss of the global batch;
- everything else (validation, decisions, checks): the small collectives below.
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .errors import AgreedError, UserError

# Long enough for rank 0 to validate or write a checkpoint at the paper's size
# while the others wait; short enough that a lost peer does not hang a job for hours.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def launched_world_size() -> int:
    """The number of processes torchrun (or ``--nproc``) started; 1 when run plainly."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number") from None


def launched_rank() -> int:
    """This process's rank in the job torchrun started (0 when run plainly)."""
    return int(os.environ.get("RANK", "0"))


def current() -> DistContext:
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                       dist.get_backend())


def setup(device: torch.device) -> tuple[DistContext, torch.device]:
    """Join the process group torchrun set up (once per process); returns the context and
    this process's device: ``cuda:LOCAL_RANK`` with NCCL on CUDA, the CPU with gloo."""
    world = launched_world_size()
    if world <= 1:
        return current(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise UserError(f"local rank {local_rank} has no GPU: {n} CUDA device(s) are visible to this "
                            f"process; start at most {n} processes per machine (--nproc-per-node {n})")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise UserError(f"training in several processes runs on CUDA (NCCL) or the CPU (gloo), not on "
                        f"{device.type}; pass --device cpu or cuda")
    if not dist.is_initialized():
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT, **kwargs)
    return current(), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------- collectives
def _device_of(ctx: DistContext) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" else torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over processes (a new tensor on ``t``'s device); ``t`` itself with one process."""
    ctx = current()
    if not ctx.active:
        return t
    out = t.detach().to(_device_of(ctx), copy=True)
    dist.all_reduce(out)
    return out.to(t.device)


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank: one decision, made once."""
    if not current().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    if not current().active:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def main_decides(fn):
    """``fn()`` on rank 0 only (a file read, a check of rank 0's disk); its result, or its
    UserError, on every rank, so that no process is left waiting for one that stopped."""
    if not current().active:
        return fn()
    result, error = None, None
    if current().is_main:
        try:
            result = fn()
        except UserError as e:
            error = str(e)
    result, error = broadcast_object((result, error))
    if error is not None:
        raise AgreedError(error)
    return result


def barrier() -> None:
    if current().active:
        dist.barrier()


def ranks_where(flag: bool) -> list[int]:
    """The ranks on which ``flag`` holds, known to every rank."""
    ctx = current()
    if not ctx.active:
        return [0] if flag else []
    flags = torch.zeros(ctx.world_size, device=_device_of(ctx))
    flags[ctx.rank] = float(bool(flag))
    dist.all_reduce(flags)
    return [r for r in range(ctx.world_size) if flags[r] > 0]


@torch.no_grad()
def broadcast_buffers(modules) -> None:
    """Every rank takes rank 0's buffers (BatchNorm statistics), as DDP does before each forward."""
    if not current().active:
        return
    for m in modules:
        for b in m.buffers():
            dist.broadcast(b.data, 0)


class RanksDisagree(AgreedError):
    pass


@torch.no_grad()
def check_identical(named_tensors) -> float:
    """Stop with a clear error unless every rank holds the same tensors; returns a checksum.

    Per tensor, the sum and the sum of absolute values in float64, gathered from every
    rank and compared exactly (identical tensors give identical sums: same values,
    same order of operations).
    """
    names, rows = [], []
    for name, t in named_tensors:
        t64 = t.detach().double()
        names.append(name)
        rows.append(torch.stack([t64.sum(), t64.abs().sum()]))
    local = torch.stack(rows)
    ctx = current()
    if not ctx.active:
        return float(local[:, 0].sum())
    gathered = [torch.empty_like(local, device=_device_of(ctx)) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, local.to(_device_of(ctx)))
    gathered = [g.cpu() for g in gathered]
    for r in range(1, ctx.world_size):
        bad = (gathered[r] != gathered[0]).any(dim=1).nonzero().flatten().tolist()
        if bad:
            raise RanksDisagree(
                f"the processes no longer hold the same weights: rank {r} differs from rank 0 in "
                f"{len(bad)} tensor(s), first {names[bad[0]]!r} (sum {gathered[r][bad[0], 0]:.9g} vs "
                f"{gathered[0][bad[0], 0]:.9g}). Training stopped: the gradients were not synchronised. "
                f"This is a bug in the method's training step (computation outside StepModule.forward?); "
                f"please report it")
    return float(gathered[0][:, 0].sum())


# ---------------------------------------------------------------------------- the global batch
_GLOBAL_BATCH = contextvars.ContextVar("genericssl_global_batch", default=False)


@contextlib.contextmanager
def global_batch(active: bool = True):
    """Inside, :func:`batch_sum` and :func:`global_ratio` sum over every process's share."""
    token = _GLOBAL_BATCH.set(bool(active) and current().active)
    try:
        yield
    finally:
        _GLOBAL_BATCH.reset(token)


def global_batch_active() -> bool:
    return _GLOBAL_BATCH.get()


class _SumWithGradient(torch.autograd.Function):
    """All-reduce (sum) whose backward all-reduces the gradient: every process's loss
    depends on every process's share, so each share's gradient is the sum of them."""

    @staticmethod
    def forward(ctx, t):
        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


def sum_with_gradient(t: torch.Tensor) -> torch.Tensor:
    return _SumWithGradient.apply(t) if current().active else t


def batch_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes, with gradient: each process's share of a global-batch sum.

    The backward pass sums the gradients over processes too, so that after DDP's
    average every parameter gets the gradient of the global-batch loss.
    """
    return sum_with_gradient(t) if _GLOBAL_BATCH.get() else t


def global_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` for a mean whose weights are spread over the processes.

    Inside :func:`global_batch`: this process's share ``W * num / sum(den)``, so that
    DDP's average over the W processes gives ``sum(num) / sum(den)``; ``den`` must
    carry no gradient (labels, masks, class weights).
    """
    if not _GLOBAL_BATCH.get():
        return num / den
    return num * current().world_size / all_reduce_sum(den.detach())


# ---------------------------------------------------------------------------- SyncBatchNorm
class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch on the CPU (torch's SyncBatchNorm runs on GPUs only).

    Same parameters, buffers and state_dict keys as BatchNorm; in training mode the
    mean and the biased variance are those of the global batch (one all-reduce, with
    gradient), and the running variance takes the unbiased estimate over the global
    count, as BatchNorm does.
    In eval mode, or in one process, it is plain BatchNorm.
    """

    def _check_input_dim(self, x):
        if x.dim() < 3:
            raise ValueError(f"expected an input with spatial axes, got {x.dim()} dimensions")

    def forward(self, x):
        if not (self.training and current().active):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        # One all-reduce per call (the A&D sampler calls BatchNorm hundreds of times per
        # iteration): per channel n * mean, M2 + n * mean^2 and n, where this process's
        # mean and M2 (sum of squared deviations) come from a stable one-pass var_mean;
        # in float64 the global variance sum / N - mean^2 loses nothing to cancellation.
        var_local, mean_local = torch.var_mean(x, dim=dims, correction=0)
        n = x.numel() // x.shape[1]
        mean64 = mean_local.double()
        stats = torch.stack([n * mean64, n * (var_local.double() + mean64 * mean64),
                             torch.full_like(mean64, n)])
        total = sum_with_gradient(stats)
        count = total[2, 0].detach()
        mean = total[0] / count
        var = (total[1] / count - mean * mean).clamp_min(0)
        mean, var = mean.to(x.dtype), var.to(x.dtype)
        y = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                unbiased = var.detach() * float(count / (count - 1))
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y


def _to_gloo_sync(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        out = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        # The same Parameter and buffer objects: optimizers and EMA pairs built before stay valid.
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _to_gloo_sync(child))
    return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of ``module`` synchronised over the processes (in place where possible)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_gloo_sync(module)
