"""Cross pseudo supervision (CPS, Chen et al., CVPR 2021).

Two networks of the same shape, initialised differently, both trained: each is
supervised by DiceCE on the labeled images, and each learns, by cross-entropy,
the other's hard labels (argmax, no gradient) on every image of the iteration,
labeled and unlabeled, as in the paper. The CPS weight ramps up like A&D's
unlabeled weight. Network 1 (``model``) is the released one.

Initialisation as in the 3D CPS code of SSL4MIS and of the A&D authors' DHC
repository: network 1's convolutions Kaiming-normal, network 2's Xavier-normal
(BatchNorm weight 1, bias 0; transposed convolutions keep PyTorch's default).
Both networks see the labeled and unlabeled batch in one forward pass, as there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import dice_ce_loss
from .base import Method, register


def init_weights(model: nn.Module, conv_init) -> nn.Module:
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.Conv2d)):
            conv_init(m.weight)
        elif isinstance(m, (nn.BatchNorm3d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def cross_pseudo_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """CE(a, argmax b) + CE(b, argmax a); the hard labels carry no gradient."""
    hard_a = logits_a.detach().argmax(dim=1)
    hard_b = logits_b.detach().argmax(dim=1)
    return F.cross_entropy(logits_a.float(), hard_b) + F.cross_entropy(logits_b.float(), hard_a)


@register
class CPS(Method):
    name = "cps"
    description = "cross pseudo supervision: two differently initialised networks teach each other"

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        self.model_b = self.build_network().to(self.device)
        init_weights(self.model, nn.init.kaiming_normal_)
        init_weights(self.model_b, nn.init.xavier_normal_)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "model_b": self.model_b}

    def train_step(self, batch_l, batch_u):
        x_l, y_l, x_u = batch_l["image"], batch_l["label"], batch_u["image"]
        n_l = x_l.shape[0]
        image = torch.cat([x_l, x_u], dim=0)
        logits_a = self.model.d_theta(image)
        logits_b = self.model_b.d_theta(image)
        loss_sup = dice_ce_loss(logits_a[:n_l], y_l) + dice_ce_loss(logits_b[:n_l], y_l)
        loss_cps = cross_pseudo_loss(logits_a, logits_b)
        loss = loss_sup + self.mu * loss_cps
        return loss, {"loss": loss.detach(), "loss_sup": loss_sup.detach(), "loss_cps": loss_cps.detach()}
