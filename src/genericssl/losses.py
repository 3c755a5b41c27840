"""Segmentation losses as the A&D paper computes them.

MONAI's ``DiceCELoss(include_background=False, to_onehot_y=True, softmax=True,
batch=True, smooth_nr=1, smooth_dr=1, weight=w)`` is this loss plus the constant 1 (1.5
with weights; its Dice term is 1 - Dice): the same gradients, tested in
tests/test_monai_equivalence.py. The definition is written out here all the same
because in several processes its tp/fp/fn and the weighted CE's denominator must be
sums over the global batch, which MONAI's loss cannot do.

In several processes (``distributed.global_batch``) the batch sums run over the
global batch, as nnU-Net's DDP Dice does: the soft Dice's tp/fp/fn are summed over
the processes with gradient and the weighted CE's denominator over the processes,
so N processes compute the loss one process computes on the same global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed import batch_sum, global_batch_active, global_ratio


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision logits (autocast); float64 stays float64."""
    return logits if logits.dtype == torch.float64 else logits.float()


def soft_batch_dice(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-class soft Dice over batch and space together, (C,), background included.

    ``(2 tp + 1) / (2 tp + fp + fn + 1 + 1e-8)`` on softmax probabilities.
    """
    probs = _upcast(logits).softmax(dim=1)
    onehot = F.one_hot(target.long(), probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    dims = [0] + list(range(2, probs.dim()))
    tp = (probs * onehot).sum(dims)
    fp = (probs * (1 - onehot)).sum(dims)
    fn = ((1 - probs) * onehot).sum(dims)
    if global_batch_active():
        tp, fp, fn = batch_sum(torch.stack([tp, fp, fn])).unbind(0)
    return (2 * tp + 1) / (2 * tp + fp + fn + 1 + 1e-8)


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """CE - mean over foreground classes of (w_c x soft batch Dice_c).

    Args:
        logits: (B, C, *S). target: (B, *S) integer labels.
        weight: optional (C,) class weights, used by CE (PyTorch's weighted mean,
            background included) and on each foreground Dice.
    """
    logits = _upcast(logits)
    if weight is not None and global_batch_active():
        # PyTorch's weighted mean, sum(w_y l) / sum(w_y), with both sums over the global batch.
        per_voxel = F.cross_entropy(logits, target.long(), weight=weight, reduction="none")
        ce = global_ratio(per_voxel.sum(), weight[target.long()].sum())
    else:
        ce = F.cross_entropy(logits, target.long(), weight=weight)
    dice = soft_batch_dice(logits, target)[1:]
    if weight is not None:
        dice = dice * weight[1:]
    return ce - dice.mean()


def hard_batch_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int, smooth: float = 1e-8) -> torch.Tensor:
    """Per-class Dice of hard label maps over the whole batch, (C,), background included.

    ``(2 tp + s) / (2 tp + fp + fn + 2 s)``: a class absent from both scores 0.5.
    """
    tp, fp, fn = hard_batch_counts(pred, target, num_classes)
    return dice_from_counts(tp, fp, fn, smooth)


def hard_batch_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-class true positives, false positives and false negatives of hard label maps, (3, C)."""
    p = F.one_hot(pred.long(), num_classes).reshape(-1, num_classes).float()
    t = F.one_hot(target.long(), num_classes).reshape(-1, num_classes).float()
    tp = (p * t).sum(0)
    fp = (p * (1 - t)).sum(0)
    fn = ((1 - p) * t).sum(0)
    return torch.stack([tp, fp, fn])


def dice_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, smooth: float = 1e-8) -> torch.Tensor:
    return (2 * tp + smooth) / (2 * tp + fp + fn + 2 * smooth)
