"""Difficulty-aware class weights (from the authors' DHC work), kept across iterations.

Per class c, with EMA factor a = (N-1)/N:
  dice_c = hard batch Dice of argmax(prediction) vs label (background included)
  learn/unlearn = (dice - last) * log(dice / last), where dice rose / did not rise
  L, U = EMA of learn, unlearn;  difficulty = ((U + 1e-8) / (L + 1e-8)) ** (1/5)
  D = EMA of (1 - dice), starting at 1;  w = difficulty * D * C
A class that keeps improving gets a small weight; one that regresses, a large one.

In several processes the counts behind dice_c are summed over every process's
share of the batch before the update, so every process holds the same weights.
"""
from __future__ import annotations

import torch

from ..distributed import batch_sum
from ..losses import dice_from_counts, hard_batch_counts


class DifficultyWeights:
    def __init__(self, num_classes: int, accumulate_iters: int = 50, device=None):
        self.num_classes = num_classes
        self.momentum = (accumulate_iters - 1) / accumulate_iters
        z = torch.zeros(num_classes, device=device)
        self.last_dice = z + 1e-8
        self.learn = z.clone()
        self.unlearn = z.clone()
        self.dice_weight = torch.ones(num_classes, device=device)
        self.weights = torch.full((num_classes,), float(num_classes), device=device)

    def _ema(self, past: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        return self.momentum * past + (1 - self.momentum) * cur

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Update the state from one labeled batch and return the weights (C,)."""
        counts = batch_sum(hard_batch_counts(logits.argmax(dim=1), target, self.num_classes))
        return self.update_from_dice(dice_from_counts(*counts))

    @torch.no_grad()
    def update_from_dice(self, dice: torch.Tensor) -> torch.Tensor:
        dice = dice.to(self.last_dice.device, torch.float32)
        delta = dice - self.last_dice
        gain = delta * torch.log(dice / self.last_dice)
        zero = torch.zeros_like(gain)
        self.learn = self._ema(self.learn, torch.where(delta > 0, gain, zero))
        self.unlearn = self._ema(self.unlearn, torch.where(delta <= 0, gain, zero))
        self.last_dice = dice
        difficulty = ((self.unlearn + 1e-8) / (self.learn + 1e-8)) ** 0.2
        self.dice_weight = self._ema(self.dice_weight, 1.0 - dice)
        self.weights = difficulty * self.dice_weight * self.num_classes
        return self.weights

    _STATE = ("last_dice", "learn", "unlearn", "dice_weight", "weights")

    def state_dict(self) -> dict:
        return {k: getattr(self, k).detach().cpu().clone() for k in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        device = self.last_dice.device
        for k in self._STATE:
            setattr(self, k, state[k].to(device))


class KeepsDifficulty:
    """Mixin for a method holding ``self.difficulty``: the weights' state travels with its
    checkpoints, so a resumed run continues exactly (list it before ``Method``)."""

    def extra_state(self) -> dict:
        state = super().extra_state()
        state["difficulty"] = self.difficulty.state_dict()
        return state

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.difficulty.load_state_dict(state["difficulty"])
