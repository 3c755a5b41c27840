"""Supervised baseline: the same network, labeled data only, D_theta trained with DiceCE."""
from __future__ import annotations

from ..losses import dice_ce_loss
from .base import Method, register


@register
class Supervised(Method):
    name = "supervised"
    uses_unlabeled = False
    description = "labeled data only (lower bound; with all cases labeled, the upper bound)"

    def train_step(self, batch_l, batch_u):
        loss = dice_ce_loss(self.model.d_theta(batch_l["image"]), batch_l["label"])
        return loss, {"loss": loss.detach()}
