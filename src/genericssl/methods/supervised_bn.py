"""Ablation: the supervised loss, with BatchNorm seeing the unlabeled images too.

Question answered: in domain adaptation settings (unlabeled images from the target
domain), how much of a semi-supervised method's gain comes only from BatchNorm
normalising with, and keeping running statistics of, target images? Mean Teacher,
UA-MT and DHC pass labeled and unlabeled images through D_theta together; this
method does the same forward and nothing else with the unlabeled images: no
pseudo labels, no consistency, no gradient from an unlabeled term.
"""
from __future__ import annotations

import torch

from ..losses import dice_ce_loss
from .base import Method, register


@register
class SupervisedBN(Method):
    name = "supervised_bn"
    uses_unlabeled = True
    description = "ablation: supervised loss only, but labeled and unlabeled images share one forward (BatchNorm)"

    def train_step(self, batch_l, batch_u):
        x_l, y_l = batch_l["image"], batch_l["label"]
        n_l = x_l.shape[0]
        if batch_u is None:
            x = x_l
        else:
            # One forward over both, so that the batch statistics used for the labeled
            # images, and the running statistics released with D_theta, include the
            # unlabeled ones; separate forwards would keep them apart.
            x = torch.cat([x_l, batch_u["image"]], dim=0)
            if self.channels_last and x.dim() == 5:
                x = x.contiguous(memory_format=torch.channels_last_3d)
        logits = self.model.d_theta(x)
        loss = dice_ce_loss(logits[:n_l], y_l)
        return loss, {"loss": loss.detach()}
