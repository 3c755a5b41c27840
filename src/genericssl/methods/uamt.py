"""Uncertainty-aware Mean Teacher (UA-MT, Yu et al., MICCAI 2019).

A Mean Teacher whose consistency only counts where the teacher is confident.
The teacher predicts each unlabeled image T = 8 times with Monte-Carlo dropout
(training mode) on independently noise-perturbed inputs; the uncertainty of a
voxel is the predictive entropy of the mean softmax. Voxels whose uncertainty is
below a threshold take part in the softmax-MSE consistency, averaged over those
voxels and the classes. The threshold rises from 0.75 to 1 times ln(C), the
largest possible entropy, with the sigmoid ramp, so that more voxels join as the
teacher improves.

As in the authors' code (``train_LA_meanteacher_certainty_unlabel.py``): the
unlabeled batch is repeated twice and sent through the teacher T/2 times; the
consistency target is one more noisy teacher pass; the loss is
``sum(mask * mse) / (C * sum(mask))``. There the threshold ramp and the
consistency ramp both span the whole run; here both follow ``cfg.rampup_length``
(the same ramp as every method's unlabeled weight), which keeps them tied.
"""
from __future__ import annotations

import math

import torch

from ..distributed import global_ratio
from .mean_teacher import MeanTeacher, softmax_mse, teacher_noise
from .base import register
from .ramps import sigmoid_rampup

MC_PASSES = 8
THRESHOLD_START = 0.75


def predictive_entropy(mean_probs: torch.Tensor) -> torch.Tensor:
    """-sum_c p log(p + 1e-6) over the class axis, keeping it: (B, 1, *S)."""
    return -(mean_probs * torch.log(mean_probs + 1e-6)).sum(dim=1, keepdim=True)


def uncertainty_threshold(ramp: float, num_classes: int) -> float:
    """(0.75 + 0.25 ramp) ln(C): from 3/4 of the largest possible entropy up to all of it."""
    return (THRESHOLD_START + (1.0 - THRESHOLD_START) * ramp) * math.log(num_classes)


def masked_consistency(mse: torch.Tensor, uncertainty: torch.Tensor, threshold: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``mse`` (B, C, *S) over the voxels with uncertainty < threshold and the classes.

    Returns the loss and the mask (B, 1, *S), float.
    """
    mask = (uncertainty < threshold).float()
    # In several processes the count of kept voxels is the global batch's (global_ratio).
    loss = global_ratio((mask * mse).sum(), mse.shape[1] * mask.sum() + 1e-16)
    return loss, mask


@register
class UAMT(MeanTeacher):
    name = "uamt"
    description = "UA-MT: Mean Teacher with an MC-dropout entropy mask on the consistency"

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        self.threshold_ramp = sigmoid_rampup(0, cfg.rampup_length)

    @torch.no_grad()
    def uncertainty(self, x_u: torch.Tensor) -> torch.Tensor:
        """Predictive entropy of the teacher's mean softmax over MC_PASSES noisy dropout passes."""
        repeated = x_u.repeat(2, *([1] * (x_u.dim() - 1)))
        b = x_u.shape[0]
        probs = 0.0
        for _ in range(MC_PASSES // 2):
            p = self.teacher.d_theta(repeated + teacher_noise(repeated)).float().softmax(dim=1)
            probs = probs + p[:b] + p[b:]
        return predictive_entropy(probs / MC_PASSES)

    def consistency(self, logits_u, x_u):
        with torch.no_grad():
            teacher_u = self.teacher.d_theta(x_u + teacher_noise(x_u))
        unc = self.uncertainty(x_u)
        threshold = uncertainty_threshold(self.threshold_ramp, self.cfg.num_classes)
        loss, mask = masked_consistency(softmax_mse(logits_u, teacher_u), unc, threshold)
        return loss, {"mask_fraction": mask.mean().detach(), "uncertainty": unc.mean().detach()}

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        self.threshold_ramp = sigmoid_rampup(epoch, self.cfg.rampup_length)

    def extra_state(self) -> dict:
        state = super().extra_state()
        state["threshold_ramp"] = self.threshold_ramp
        return state

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.threshold_ramp = float(state.get("threshold_ramp", self.threshold_ramp))
