"""Building blocks of the Diffusion V-Net, for 2D and 3D alike.

Module and attribute names follow the authors' release exactly (``ops``, ``conv``,
``norm``, ``temb_fusion``, ``temb_proj``, ``temb.dense``) because their
checkpoints must load with strict key matching.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

TEMB_CHANNELS = 512
TEMB_SIN_DIM = 128


def ops_for(spatial_dims: int) -> dict:
    """The op classes of one dimensionality, so one block class serves 2D and 3D."""
    if spatial_dims == 3:
        return {"conv": nn.Conv3d, "convT": nn.ConvTranspose3d, "norm": nn.BatchNorm3d, "drop": nn.Dropout3d}
    if spatial_dims == 2:
        return {"conv": nn.Conv2d, "convT": nn.ConvTranspose2d, "norm": nn.BatchNorm2d, "drop": nn.Dropout2d}
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def timestep_embedding(t: torch.Tensor, dim: int = TEMB_SIN_DIM) -> torch.Tensor:
    """Sinusoidal embedding of integer steps ``t`` (B,) -> (B, dim): half sin, half cos."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class TimeEmbedding(nn.Module):
    """t -> sinusoid(128) -> Linear(128, 512) -> swish -> Linear(512, 512)."""

    def __init__(self):
        super().__init__()
        self.dense = nn.ModuleList([nn.Linear(TEMB_SIN_DIM, TEMB_CHANNELS), nn.Linear(TEMB_CHANNELS, TEMB_CHANNELS)])

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = self.dense[0](timestep_embedding(t))
        return self.dense[1](F.silu(h))


class TembFusion(nn.Module):
    """Adds Linear(512 -> C)(swish(temb)) to every voxel; identity when no temb is given."""

    def __init__(self, channels: int):
        super().__init__()
        self.temb_proj = nn.Linear(TEMB_CHANNELS, channels)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        if temb is None:
            return x
        bias = self.temb_proj(F.silu(temb))
        # Broadcast over however many spatial axes x has (the authors' 2D model
        # always used three, which is why its D_xi path could not run).
        return x + bias.view(*bias.shape, *([1] * (x.dim() - 2)))


class ConvStage(nn.Module):
    """Conv k3 p1 -> ReLU -> BatchNorm -> Dropout(0.1, channel-wise) [-> time fusion]."""

    def __init__(self, cin: int, cout: int, spatial_dims: int, with_temb: bool):
        super().__init__()
        ops = ops_for(spatial_dims)
        self.conv = ops["conv"](cin, cout, kernel_size=3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.norm = ops["norm"](cout)
        self.dropout = ops["drop"](p=0.1)
        self.temb_fusion = TembFusion(cout) if with_temb else None

    def forward(self, x, temb=None, fuse: bool = True):
        x = self.dropout(self.norm(self.relu(self.conv(x))))
        if fuse and self.temb_fusion is not None:
            x = self.temb_fusion(x, temb)
        return x


class ConvBlock(nn.Module):
    """``n_stages`` conv stages; time fusion after every stage except the last.

    The last stage still owns a fusion layer (never applied) when ``with_temb``, as
    in the authors' model, so that their checkpoints load strictly.
    """

    def __init__(self, n_stages: int, cin: int, cout: int, spatial_dims: int, with_temb: bool):
        super().__init__()
        self.ops = nn.ModuleList(
            ConvStage(cin if i == 0 else cout, cout, spatial_dims, with_temb) for i in range(n_stages))

    def forward(self, x, temb=None):
        last = len(self.ops) - 1
        for i, stage in enumerate(self.ops):
            x = stage(x, temb, fuse=i != last)
        return x


class ResampleBlock(nn.Module):
    """Down (Conv k2 s2) or up (ConvTranspose k2 s2) -> ReLU -> BatchNorm [-> time fusion]."""

    def __init__(self, cin: int, cout: int, spatial_dims: int, up: bool, with_temb: bool):
        super().__init__()
        ops = ops_for(spatial_dims)
        conv = ops["convT" if up else "conv"](cin, cout, kernel_size=2, stride=2)
        layers = [conv, nn.ReLU(inplace=True), ops["norm"](cout)]
        if with_temb:
            layers.append(TembFusion(cout))
        self.ops = nn.ModuleList(layers)

    def forward(self, x, temb=None):
        for op in self.ops:
            x = op(x, temb) if isinstance(op, TembFusion) else op(x)
        return x
