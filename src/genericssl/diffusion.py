"""The diffusion process of A&D: a linear 1000-step schedule, forward noising, and
the 10-step DDIM (eta = 0) sampler that predicts x0.

The schedule is computed in float64 (numpy, as the authors' guided-diffusion code
does) and gathered per step into float32, so sampled values match theirs.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


def linear_betas(num_steps: int = 1000, start: float = 1e-4, end: float = 0.02) -> np.ndarray:
    return np.linspace(start, end, num_steps, dtype=np.float64)


def respaced_timesteps(num_steps: int = 1000, sample_steps: int = 10) -> list[int]:
    """Evenly spaced, rounded original steps, first and last included: {0, 111, ..., 999}."""
    if sample_steps == 1:
        return [0]
    stride = (num_steps - 1) / (sample_steps - 1)
    return sorted({round(i * stride) for i in range(sample_steps)})


class Diffusion:
    """Schedule, forward noising ``q_sample`` and the DDIM x0 sampler ``sample``.

    Args:
        num_steps: training steps T (1000).
        sample_steps: DDIM steps on the respaced schedule (10).
    """

    def __init__(self, num_steps: int = 1000, sample_steps: int = 10):
        self.num_steps = num_steps
        betas = linear_betas(num_steps)
        abar = np.cumprod(1.0 - betas)
        self.sqrt_abar = np.sqrt(abar)
        self.sqrt_one_minus_abar = np.sqrt(1.0 - abar)
        self.timesteps = respaced_timesteps(num_steps, sample_steps)
        # The respaced process keeps alphas_cumprod at the kept steps.
        self.abar_respaced = abar[self.timesteps]
        self.abar_prev_respaced = np.append(1.0, self.abar_respaced[:-1])
        # DDIM coefficients per respaced step, float64 then float32 as in guided-diffusion.
        self.recip_sqrt_abar = np.sqrt(1.0 / self.abar_respaced)
        self.sqrt_recipm1_abar = np.sqrt(1.0 / self.abar_respaced - 1.0)
        self.sqrt_abar_prev = np.sqrt(self.abar_prev_respaced)
        self.sqrt_one_minus_abar_prev = np.sqrt(1.0 - self.abar_prev_respaced)
        self._gather_cache: dict = {}

    # ------------------------------------------------------------------ training
    def _gather(self, arr: np.ndarray, t: torch.Tensor, ndim: int) -> torch.Tensor:
        key = (id(arr), t.device)
        table = self._gather_cache.get(key)
        if table is None:
            table = self._gather_cache[key] = torch.from_numpy(arr).to(t.device)
        return table[t].float().view(-1, *([1] * (ndim - 1)))

    def sample_t(self, batch: int, device, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, self.num_steps, (batch,), device=device, generator=generator)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t of shape (B,)."""
        if noise is None:
            noise = torch.randn_like(x0)
        return (self._gather(self.sqrt_abar, t, x0.dim()) * x0
                + self._gather(self.sqrt_one_minus_abar, t, x0.dim()) * noise)

    @staticmethod
    def label_to_x0(label: torch.Tensor, num_classes: int) -> torch.Tensor:
        """(B, *S) integer labels -> (B, C, *S) one-hot scaled to {-1, 1}."""
        onehot = F.one_hot(label.long(), num_classes).movedim(-1, 1)
        return onehot.to(torch.float32) * 2 - 1

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, denoiser: Callable, image: torch.Tensor, num_classes: int,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """DDIM (eta = 0) from pure noise; returns the last predicted x0, (B, C, *S) in [-1, 1].

        ``denoiser(x_t, t, image)`` predicts x0 and receives the ORIGINAL step index.
        Everything stays on the device: no per-step host copies.
        """
        shape = (image.shape[0], num_classes, *image.shape[2:])
        x = torch.randn(shape, device=image.device, dtype=image.dtype) if noise is None else noise
        x0 = x
        for i in reversed(range(len(self.timesteps))):
            t = torch.full((shape[0],), self.timesteps[i], device=image.device, dtype=torch.long)
            x0 = denoiser(x, t, image).float().clamp(-1, 1)
            if i == 0:
                break  # abar_prev = 1: the DDIM update would return x0 itself
            eps = (float(np.float32(self.recip_sqrt_abar[i])) * x - x0) / float(np.float32(self.sqrt_recipm1_abar[i]))
            x = (x0 * float(np.float32(self.sqrt_abar_prev[i]))
                 + float(np.float32(self.sqrt_one_minus_abar_prev[i])) * eps)
        return x0
