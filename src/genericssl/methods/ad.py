"""Aggregating & Decoupling (A&D), one training iteration as METHOD.md specifies.

Aggregating: one encoder sees labeled and unlabeled data of every domain, in the
diffusion path conditioned on noisy labels. Decoupling: D_xi (diffusion) and
D_psi (difficulty-weighted) learn from labels only; D_theta learns from pseudo
labels only and receives their knowledge as an EMA of their weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..diffusion import Diffusion
from ..losses import dice_ce_loss
from .base import Method, register
from .difficulty import DifficultyWeights, KeepsDifficulty


def gaussian_kernel(num_classes: int, spatial_dims: int, sigma: float = 1.0, size: int = 3) -> torch.Tensor:
    """Depthwise Gaussian kernel, normalised to sum 1: (C, 1, size, ...)."""
    ax = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g1 = torch.exp(-ax ** 2 / (2 * sigma ** 2))
    k = g1
    for _ in range(spatial_dims - 1):
        k = k.unsqueeze(-1) * g1
    k = k / k.sum()
    return k.expand(num_classes, 1, *k.shape).contiguous()


@register
class AD(KeepsDifficulty, Method):
    name = "ad"
    description = "Aggregating & Decoupling (the paper's method)"

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        self.diffusion = Diffusion()
        self.difficulty = DifficultyWeights(cfg.num_classes, device=self.device)
        self.smooth_kernel = gaussian_kernel(cfg.num_classes, cfg.spatial_dims).to(self.device)
        self._ema_pairs = self._match_decoder_params()

    def _match_decoder_params(self):
        """(theta, xi, psi) parameter triples, matched by name; D_xi's time fusion is skipped."""
        m = self.model
        xi = dict(m.denoise_model.decoder.named_parameters())
        psi = dict(m.decoder_psi.named_parameters())
        names = [n for n, _ in m.decoder_theta.named_parameters()]
        theta = dict(m.decoder_theta.named_parameters())
        return ([theta[n] for n in names], [xi[n] for n in names], [psi[n] for n in names])

    @torch.no_grad()
    def transfer_weights(self) -> None:
        """theta <- m theta + (1 - m) (xi + psi) / 2, parameters only (not BN buffers)."""
        theta, xi, psi = self._ema_pairs
        m = self.cfg.ema_m
        torch._foreach_mul_(theta, m)
        torch._foreach_add_(theta, xi, alpha=(1 - m) / 2)
        torch._foreach_add_(theta, psi, alpha=(1 - m) / 2)

    def smooth(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv3d if x.dim() == 5 else F.conv2d
        return conv(x, self.smooth_kernel.to(x.dtype), padding=1, groups=x.shape[1])

    @torch.no_grad()
    def pseudo_labels(self, image_u: torch.Tensor) -> torch.Tensor:
        """argmax(GaussianSmooth(gumbel_softmax(sampled x0)) + softmax(D_psi)); (B, *S)."""
        model = self.model
        if self.cfg.sampler_eval_mode:
            model.eval()
        p_u_xi = model.sample(image_u, self.diffusion)
        if self.cfg.sampler_eval_mode:
            model.train()
        p_u_psi = model.d_psi(image_u).float().softmax(dim=1)
        q = self.smooth(F.gumbel_softmax(p_u_xi.float(), tau=1.0, hard=False, dim=1))
        return (q + p_u_psi).argmax(dim=1)

    def train_step(self, batch_l, batch_u):
        model, C = self.model, self.cfg.num_classes
        x_l, y_l, x_u = batch_l["image"], batch_l["label"], batch_u["image"]
        self.transfer_weights()

        x0 = self.diffusion.label_to_x0(y_l, C)
        t = self.diffusion.sample_t(x_l.shape[0], x_l.device)
        x_t = self.diffusion.q_sample(x0, t)
        p_l_xi = model.d_xi(x_t, t, x_l)
        p_l_psi = model.d_psi(x_l)
        loss_deno = dice_ce_loss(p_l_xi, y_l)
        weights = self.difficulty.update(p_l_xi.detach(), y_l)
        loss_diff = dice_ce_loss(p_l_psi, y_l, weight=weights)

        pseudo = self.pseudo_labels(x_u)
        loss_u = dice_ce_loss(model.d_theta(x_u), pseudo)
        loss = loss_deno + loss_diff + self.mu * loss_u
        logs = {"loss": loss.detach(), "loss_deno": loss_deno.detach(), "loss_diff": loss_diff.detach(),
                "loss_u": loss_u.detach(), "class_weights": weights.detach()}
        return loss, logs
