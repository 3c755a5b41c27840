"""Mean Teacher (Tarvainen & Valpola 2017) as the UA-MT code runs it on volumes.

The student is the V-Net path image stem -> shared encoder -> D_theta. The teacher
is a second copy whose parameters are an exponential moving average of the
student's. On unlabeled images the student's softmax is pulled towards the
teacher's softmax on a noise-perturbed copy of the same images (mean squared
error), with the consistency weight ramped up like A&D's unlabeled weight.

Choices, following Yu et al.'s UA-MT code (``train_LA_meanteacher*.py``):
- EMA factor ``min(1 - 1 / (step + 1), alpha)`` with alpha = ``cfg.ema_m`` (0.99):
  the true average until the exponential one is more accurate. Parameters only;
  the teacher's BatchNorm statistics are its own.
- The teacher runs in training mode (dropout on, batch statistics), as there.
- Input noise for the teacher: ``clamp(N(0, 0.1^2), -0.2, 0.2)`` in units of the
  image's own intensity spread. The UA-MT code adds it to LA volumes z-scored per case
  (spread 1); our images are min-max scaled to [0, 1] (spread ~0.2-0.3), where the
  unscaled noise would be 4-5x stronger. So the noise is multiplied by each image's
  standard deviation (no gradient): for a z-scored image it is the reference's noise.
- One student forward over the labeled and unlabeled batch together, so that
  BatchNorm sees both, as there.
- The released network (``predictor``) is the student, as in the UA-MT code,
  which saves and tests ``model``, not ``ema_model``.
- The supervised term is the same DiceCE as A&D's and the supervised baseline's,
  so that methods differ only in how they use unlabeled data.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..losses import dice_ce_loss
from .base import Method, register

NOISE_STD, NOISE_CLIP = 0.1, 0.2


def teacher_noise(x: torch.Tensor) -> torch.Tensor:
    """The reference's clipped Gaussian, scaled by each image's standard deviation (B, 1, ...)."""
    spread = x.detach().flatten(1).std(dim=1).view(-1, *([1] * (x.dim() - 1)))
    return torch.clamp(torch.randn_like(x) * NOISE_STD, -NOISE_CLIP, NOISE_CLIP) * spread


def ema_factor(step: int, alpha: float) -> float:
    """The EMA factor at optimizer step ``step`` (0-based)."""
    return min(1.0 - 1.0 / (step + 1), alpha)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, factor: float) -> None:
    """teacher <- factor * teacher + (1 - factor) * student, parameters only."""
    t = [p for p in teacher.parameters()]
    s = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t, factor)
    torch._foreach_add_(t, s, alpha=1.0 - factor)


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise (softmax(student) - softmax(teacher))^2, (B, C, *S); no gradient to the teacher."""
    return (student_logits.float().softmax(1) - teacher_logits.detach().float().softmax(1)) ** 2


@register
class MeanTeacher(Method):
    name = "mean_teacher"
    description = "Mean Teacher: EMA teacher, softmax MSE consistency on noisy unlabeled inputs"

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        self.teacher = self.build_network().to(self.device)
        # Step 0's factor is 0, so the first update copies the student anyway; starting
        # from a copy only makes the first iteration's targets meaningful.
        self.teacher.load_state_dict(self.model.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.ema_step = 0

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "teacher": self.teacher}

    def parameters(self) -> Iterable[nn.Parameter]:
        # The teacher learns only through the EMA, never through the optimizer.
        return self.model.parameters()

    def student_forward(self, x_l, x_u):
        logits = self.model.d_theta(torch.cat([x_l, x_u], dim=0))
        return logits[: x_l.shape[0]], logits[x_l.shape[0]:]

    def consistency(self, logits_u: torch.Tensor, x_u: torch.Tensor) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            teacher_u = self.teacher.d_theta(x_u + teacher_noise(x_u))
        loss = softmax_mse(logits_u, teacher_u).mean()
        return loss, {}

    def train_step(self, batch_l, batch_u):
        x_l, y_l, x_u = batch_l["image"], batch_l["label"], batch_u["image"]
        logits_l, logits_u = self.student_forward(x_l, x_u)
        loss_sup = dice_ce_loss(logits_l, y_l)
        loss_cons, extra = self.consistency(logits_u, x_u)
        loss = loss_sup + self.mu * loss_cons
        logs = {"loss": loss.detach(), "loss_sup": loss_sup.detach(), "loss_cons": loss_cons.detach()}
        logs.update(extra)
        return loss, logs

    def after_step(self) -> None:
        ema_update(self.teacher, self.model, ema_factor(self.ema_step, self.cfg.ema_m))
        self.ema_step += 1

    def extra_state(self) -> dict:
        state = super().extra_state()
        state["ema_step"] = self.ema_step
        return state

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.ema_step = int(state.get("ema_step", 0))
