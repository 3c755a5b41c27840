"""The one small interface that A&D and every baseline implement.

The trainer knows only this: it asks a method for its parameters, calls
``train_step`` once per iteration inside autocast, steps the optimizer, then calls
``after_step``; ``on_epoch_end`` after each epoch's training; ``predictor()`` for
validation and testing. A new method is one new file that subclasses ``Method``
and registers itself with ``@register``.

``train_step`` always runs as the ``forward`` of a :class:`StepModule` that holds
every network of ``modules()``; in several processes that module is what
DistributedDataParallel wraps, so whatever paths of its networks a method calls
inside ``train_step``, their gradients are synchronised. A method needs no code of
its own for several processes: what ``after_step`` and ``on_epoch_end`` compute
from the (identical) weights is identical on every process, and batch sums inside
a loss go through ``distributed.batch_sum`` / ``global_ratio`` (``losses.py`` does).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..config import TaskConfig
from ..models.diff_vnet import DiffVNet
from .ramps import sigmoid_rampup

METHODS: dict[str, type["Method"]] = {}


def register(cls):
    METHODS[cls.name] = cls
    return cls


class Method:
    name: str = ""
    uses_unlabeled: bool = True
    description: str = ""

    def __init__(self, cfg: TaskConfig, device: torch.device):
        self.cfg = cfg
        self.device = torch.device(device)
        self.model = self.build_network().to(self.device)
        self.channels_last = self._use_channels_last()
        self.mu = self.unsup_weight_at(0)

    # ---------------------------------------------------------------- building
    def build_network(self) -> DiffVNet:
        c = self.cfg
        net = DiffVNet(c.in_channels, c.num_classes, c.base_filters, c.spatial_dims, has_dropout=True)
        net.set_checkpointing(c.checkpoint_levels)
        return net

    def _use_channels_last(self) -> bool:
        # Channels-last 3D measured faster on CPUs for this network (the full-resolution
        # convolutions most); on GPUs cuDNN picks its own layouts under autocast.
        use = self.cfg.channels_last
        if use is None:
            use = self.device.type == "cpu" and self.cfg.spatial_dims == 3
        return bool(use) and self.cfg.spatial_dims == 3

    def finish_setup(self) -> None:
        """Called by the trainer once every network exists: sets the memory layout."""
        if self.channels_last:
            for m in self.modules().values():
                m.to(memory_format=torch.channels_last_3d)

    def prepare_batch(self, batch: dict | None) -> dict | None:
        batch = batch_to(batch, self.device)
        if batch is not None and self.channels_last and batch["image"].dim() == 5:
            batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last_3d)
        return batch

    def modules(self) -> dict[str, nn.Module]:
        """Every trained network by name; ``model`` is the one whose D_theta is released."""
        return {"model": self.model}

    def parameters(self) -> Iterable[nn.Parameter]:
        for m in self.modules().values():
            yield from m.parameters()

    def train(self, mode: bool = True) -> None:
        for m in self.modules().values():
            m.train(mode)

    # ---------------------------------------------------------------- training
    def train_step(self, batch_l: dict, batch_u: dict | None) -> tuple[torch.Tensor, dict]:
        """One iteration's loss and a dict of detached scalars/tensors to log."""
        raise NotImplementedError

    def after_step(self) -> None:
        """Called after the optimizer step (e.g. a Mean Teacher's EMA)."""

    def unsup_weight_at(self, epoch: int) -> float:
        return self.cfg.unsup_weight * sigmoid_rampup(epoch, self.cfg.rampup_length)

    def on_epoch_end(self, epoch: int) -> None:
        """After epoch e's training the weight becomes w_u r(e), used by epoch e + 1."""
        self.mu = self.unsup_weight_at(epoch)

    # ---------------------------------------------------------------- inference
    def predictor(self) -> nn.Module:
        """The network whose forward gives the released logits (D_theta)."""
        return self.model

    # ---------------------------------------------------------------- state
    def extra_state(self) -> dict:
        """Method state beyond ``model`` (other networks, running statistics...)."""
        state = {name: m.state_dict() for name, m in self.modules().items() if name != "model"}
        state["mu"] = self.mu
        return state

    def load_extra_state(self, state: dict) -> None:
        for name, m in self.modules().items():
            if name != "model":
                m.load_state_dict(state[name])
        self.mu = float(state.get("mu", self.mu))


class StepModule(nn.Module):
    """A method's networks as submodules; ``forward`` is one whole training step.

    DDP synchronises the gradients of computation that runs inside the wrapped
    module's ``forward`` only (calls to ``model.d_xi`` and the like from outside
    would train each process on its own gradients, silently). Making the method's
    ``train_step`` that forward puts every trainable computation of a step inside.
    """

    def __init__(self, method: Method):
        super().__init__()
        self.nets = nn.ModuleDict(method.modules())
        self.method = method

    def forward(self, batch_l: dict, batch_u: dict | None):
        return self.method.train_step(batch_l, batch_u)


def batch_to(batch: dict | None, device) -> dict | None:
    if batch is None:
        return None
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
