"""The Diffusion V-Net of A&D: one shared encoder, three decoders, four paths.

Shapes: images are (B, K, *S) with S = (D, H, W) in 3D or (H, W) in 2D; every
spatial size must be a multiple of 16. Outputs are (B, C, *S).

- ``d_xi(x_t, t, image)``: denoising stem -> encoder(temb) -> D_xi(temb); predicts x0.
- ``d_psi(image)``: image stem -> encoder -> D_psi.
- ``d_theta(image)`` (also ``forward``): image stem -> encoder -> D_theta; the only
  path used for validation, testing and release.
- ``sample(image)``: DDIM sampling of the one-hot label with D_xi (``diffusion.py``).
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBlock, ResampleBlock, TimeEmbedding, ops_for
from .checkpointing import MAX_LEVEL, region


class Stem(nn.Module):
    """A one-stage conv block plus a time-embedding MLP (``embedding``/``embedding_diffusion``)."""

    def __init__(self, cin: int, cout: int, spatial_dims: int):
        super().__init__()
        self.temb = TimeEmbedding()
        self.emb = ConvBlock(1, cin, cout, spatial_dims, with_temb=True)
        self.checkpoint_levels = 0

    def forward(self, x, t=None):
        temb = self.temb(t) if t is not None else None
        return region(self.checkpoint_levels, 1, self.emb, [self.emb], x, temb), temb


class Encoder(nn.Module):
    def __init__(self, n: int, spatial_dims: int, has_dropout: bool):
        super().__init__()
        sd = spatial_dims
        self.block_one_dw = ResampleBlock(n, 2 * n, sd, up=False, with_temb=True)
        self.block_two = ConvBlock(2, 2 * n, 2 * n, sd, with_temb=True)
        self.block_two_dw = ResampleBlock(2 * n, 4 * n, sd, up=False, with_temb=True)
        self.block_three = ConvBlock(3, 4 * n, 4 * n, sd, with_temb=True)
        self.block_three_dw = ResampleBlock(4 * n, 8 * n, sd, up=False, with_temb=True)
        self.block_four = ConvBlock(3, 8 * n, 8 * n, sd, with_temb=True)
        self.block_four_dw = ResampleBlock(8 * n, 16 * n, sd, up=False, with_temb=True)
        self.block_five = ConvBlock(3, 16 * n, 16 * n, sd, with_temb=True)
        self.dropout = ops_for(sd)["drop"](p=0.5)
        self.has_dropout = has_dropout
        self.checkpoint_levels = 0

    def forward(self, x1, temb=None):
        x2 = self._level(2, self.block_one_dw, self.block_two, x1, temb)
        x3 = self._level(3, self.block_two_dw, self.block_three, x2, temb)
        x4 = self._level(4, self.block_three_dw, self.block_four, x3, temb)
        x5 = self._level(5, self.block_four_dw, self.block_five, x4, temb)
        if self.has_dropout:
            x5 = self.dropout(x5)
        return x1, x2, x3, x4, x5

    def _level(self, level, down, block, x, temb):
        return region(self.checkpoint_levels, level, lambda x, temb: block(down(x, temb), temb), [down, block],
                      x, temb)


class Decoder(nn.Module):
    """One decoder; ``with_temb`` gives the denoising decoder D_xi its time fusion."""

    def __init__(self, n: int, num_classes: int, spatial_dims: int, has_dropout: bool, with_temb: bool):
        super().__init__()
        sd, wt = spatial_dims, with_temb
        self.block_five_up = ResampleBlock(16 * n, 8 * n, sd, up=True, with_temb=wt)
        self.block_six = ConvBlock(3, 8 * n, 8 * n, sd, with_temb=wt)
        self.block_six_up = ResampleBlock(8 * n, 4 * n, sd, up=True, with_temb=wt)
        self.block_seven = ConvBlock(3, 4 * n, 4 * n, sd, with_temb=wt)
        self.block_seven_up = ResampleBlock(4 * n, 2 * n, sd, up=True, with_temb=wt)
        self.block_eight = ConvBlock(2, 2 * n, 2 * n, sd, with_temb=wt)
        self.block_eight_up = ResampleBlock(2 * n, n, sd, up=True, with_temb=wt)
        self.block_nine = ConvBlock(1, n, n, sd, with_temb=wt)
        self.out_conv = ops_for(sd)["conv"](n, num_classes, kernel_size=1)
        self.dropout = ops_for(sd)["drop"](p=0.5)
        self.has_dropout = has_dropout
        self.checkpoint_levels = 0

    def forward(self, features, temb=None):
        x1, x2, x3, x4, x5 = features
        x = self._level(4, self.block_five_up, self.block_six, x5, x4, temb)
        x = self._level(3, self.block_six_up, self.block_seven, x, x3, temb)
        x = self._level(2, self.block_seven_up, self.block_eight, x, x2, temb)
        return region(self.checkpoint_levels, 1, self._top, [self.block_eight_up, self.block_nine, self.out_conv],
                      x, x1, temb)

    def _level(self, level, up, block, x, skip, temb):
        return region(self.checkpoint_levels, level, lambda x, skip, temb: block(up(x, temb) + skip, temb),
                      [up, block], x, skip, temb)

    def _top(self, x, x1, temb):
        x = self.block_nine(self.block_eight_up(x, temb) + x1, temb)
        if self.has_dropout:
            x = self.dropout(x)
        return self.out_conv(x)


class DenoiseModel(nn.Module):
    """Holds the denoising stem, the shared encoder and D_xi (the authors' ``denoise_model``)."""

    def __init__(self, in_channels, num_classes, n, spatial_dims, has_dropout):
        super().__init__()
        self.embedding_diffusion = Stem(in_channels + num_classes, n, spatial_dims)
        self.encoder = Encoder(n, spatial_dims, has_dropout)
        self.decoder = Decoder(n, num_classes, spatial_dims, has_dropout, with_temb=True)


class DiffVNet(nn.Module):
    """Diffusion V-Net (A&D). ``model(image)`` returns the D_theta logits.

    Args:
        in_channels: image channels K (1 for CT/MRI).
        num_classes: C, background included.
        base_filters: n, filters of the first level (32 in the paper).
        spatial_dims: 3 for volumes, 2 for slices (same code, 2D ops).
        has_dropout: the 0.5 dropouts after the bottleneck and before the output
            conv (on in the training model, off in the test model; same keys).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base_filters: int = 32,
                 spatial_dims: int = 3, has_dropout: bool = False):
        super().__init__()
        n = base_filters
        self.in_channels, self.num_classes = in_channels, num_classes
        self.base_filters, self.spatial_dims = base_filters, spatial_dims
        # Registration order gives the authors' state_dict order.
        self.embedding = Stem(in_channels, n, spatial_dims)
        self.decoder_theta = Decoder(n, num_classes, spatial_dims, has_dropout, with_temb=False)
        self.decoder_psi = Decoder(n, num_classes, spatial_dims, has_dropout, with_temb=False)
        self.denoise_model = DenoiseModel(in_channels, num_classes, n, spatial_dims, has_dropout)
        self._diffusion = None

    @property
    def encoder(self) -> Encoder:
        return self.denoise_model.encoder

    def set_checkpointing(self, levels: int) -> None:
        """Recompute the activations of the top ``levels`` resolution levels (0: none, 5: all)
        in the backward pass instead of keeping them (``checkpointing.py``); bit-exact."""
        if not 0 <= levels <= MAX_LEVEL:
            raise ValueError(f"checkpoint levels must lie in 0..{MAX_LEVEL}, got {levels}")
        for m in self.modules():
            if isinstance(m, (Stem, Encoder, Decoder)):
                m.checkpoint_levels = levels

    def set_dropout(self, on: bool) -> None:
        for m in self.modules():
            if isinstance(m, (Encoder, Decoder)):
                m.has_dropout = on

    # ---------------------------------------------------------------- the paths
    def _image_features(self, image):
        x1, _ = self.embedding(image)
        return self.encoder(x1)

    def d_xi(self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Denoising path: predicts the clean one-hot label x0 from the noisy x_t at steps t (B,)."""
        h, temb = self.denoise_model.embedding_diffusion(torch.cat([image, x_t], dim=1), t)
        return self.denoise_model.decoder(self.encoder(h, temb), temb)

    def d_psi(self, image: torch.Tensor) -> torch.Tensor:
        return self.decoder_psi(self._image_features(image))

    def d_theta(self, image: torch.Tensor) -> torch.Tensor:
        return self.decoder_theta(self._image_features(image))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.d_theta(image)

    def sample(self, image: torch.Tensor, diffusion=None) -> torch.Tensor:
        """DDIM x0 sampling with D_xi (10 steps by default): (B, C, *S) in [-1, 1]."""
        if diffusion is None:
            if self._diffusion is None:
                from ..diffusion import Diffusion
                self._diffusion = Diffusion()
            diffusion = self._diffusion
        return diffusion.sample(self.d_xi, image, self.num_classes)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, num_classes={self.num_classes}, "
                f"base_filters={self.base_filters}, spatial_dims={self.spatial_dims}")
