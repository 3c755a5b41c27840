"""Ablation: the supervised baseline with A&D's difficulty-aware class weights.

Question answered: does A&D's gain on rare or hard classes come from the unlabeled
data, or only from weighting the supervised DiceCE by ``DifficultyWeights``? This
method uses no unlabeled data; D_theta learns from labels alone with the weights
that A&D gives D_psi. If it closes most of the gap between ``supervised`` and
``ad`` on small classes, the weights, not the unlabeled data, carry that gain.
"""
from __future__ import annotations

from ..losses import dice_ce_loss
from .base import Method, register
from .difficulty import DifficultyWeights, KeepsDifficulty


@register
class SupervisedDW(KeepsDifficulty, Method):
    name = "supervised_dw"
    uses_unlabeled = False
    description = "ablation: labeled data only, DiceCE weighted by A&D's difficulty-aware class weights"

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        self.difficulty = DifficultyWeights(cfg.num_classes, device=self.device)

    def train_step(self, batch_l, batch_u):
        x_l, y_l = batch_l["image"], batch_l["label"]
        logits = self.model.d_theta(x_l)
        # The weights follow the trained network's own prediction, as A&D's follow
        # D_xi's: here D_theta is the only network, so it judges its own difficulty.
        weights = self.difficulty.update(logits.detach(), y_l)
        loss = dice_ce_loss(logits, y_l, weight=weights)
        return loss, {"loss": loss.detach(), "class_weights": weights.detach().clone()}
