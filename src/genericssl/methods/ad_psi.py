"""Ablation: A&D with pseudo labels from D_psi alone, no diffusion sampling.

Question answered: what does the diffusion branch's contribution to the pseudo
labels add? A&D fuses the smoothed Gumbel-softmax of D_xi's DDIM sample with
softmax(D_psi); here the pseudo label is argmax softmax(D_psi) only. Everything
else is A&D's: D_xi still learns to denoise labels (so the shared encoder still
sees the diffusion task), its prediction still drives the difficulty weights of
D_psi, and D_theta still receives the EMA of D_xi and D_psi. The difference
between ``ad`` and ``ad_psi`` is therefore the sampled labels alone (and their
cost: the 10 sampling passes per iteration).
"""
from __future__ import annotations

import torch

from .ad import AD
from .base import register


@register
class ADPsi(AD):
    name = "ad_psi"
    description = "ablation: A&D with pseudo labels from D_psi alone (no diffusion sampling)"

    @torch.no_grad()
    def pseudo_labels(self, image_u: torch.Tensor) -> torch.Tensor:
        """argmax(softmax(D_psi(x_u))); (B, *S)."""
        # D_psi runs in the mode A&D runs it in (training: dropout, batch statistics),
        # so that only the diffusion term differs from A&D's pseudo labels.
        return self.model.d_psi(image_u).float().softmax(dim=1).argmax(dim=1)
