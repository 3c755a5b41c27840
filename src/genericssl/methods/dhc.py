"""Dual-debiased Heterogeneous Co-training (DHC, Wang & Li, MICCAI 2023), for class-imbalanced SSL.

Two networks of the same shape (the V-Net path image stem -> shared encoder ->
D_theta, as for every baseline) teach each other as in CPS, but each weights its
classes differently, so that the two are biased in different directions and
their mistakes differ ("heterogeneous"): network A by how hard a class is to
learn (DiffDW), network B by how rare it is (DistDW).

What one iteration computes, in order (reference: xmed-lab/DHC,
``code/train_dhc.py``, classes ``DiffDW`` and ``DistDW``; losses from
``code/utils/loss.py``):

1. One forward pass of each network over the labeled and unlabeled images
   together, ``image = cat(x_l, x_u)``: logits_A, logits_B (so BatchNorm sees both,
   as there).
2. Hard labels without gradient: hard_A = argmax logits_A, hard_B = argmax logits_B.
3. Difficulty-aware weights of A (DiffDW), from A's labeled logits and the labels
   (``genericssl.methods.difficulty.DifficultyWeights``, A&D's copy of the same
   rule, with N = ``DIFF_ACCUMULATE_ITERS`` = 50, so EMA factor a = 0.98, and
   the power 1/5): per class c, background included,
     dice_c = hard batch Dice (2tp + 1e-8) / (2tp + fp + fn + 2e-8) of argmax vs label;
     learn_c / unlearn_c = (dice_c - last_c) log(dice_c / last_c) where dice rose /
       did not rise, else 0; last_c = dice_c (last starts at 1e-8);
     L = a L + (1-a) learn;  U = a U + (1-a) unlearn (both start at 0);
     difficulty = ((U + 1e-8) / (L + 1e-8)) ** (1/5);
     D = a D + (1-a)(1 - dice) (D starts at 1);
     w_A = difficulty D / max_c(difficulty D) * C   (DHC's normalisation; A&D has none).
   A class that keeps improving gets a small weight, one that stalls or regresses
   (U large against L) and one that scores low (D large) a large one.
4. Distribution-aware weights of B (DistDW), from B's OWN hard labels on the
   unlabeled images (as the reference: ``get_ema_weights(output_B_u)``): with n_c
   the voxel count of class c,
     P_c = (max_k n_k + 1e-8) / (n_c + 1e-8);  cur_c = C log P_c / max_k log P_k,
   so the most frequent class gets 0, the rarest C; then
     w_B = m w_B + (1 - m) cur,  m = ``DIST_MOMENTUM`` = 0.99, every iteration.
   w_B starts as cur of the labeled class counts (see the departures).
   Both weights are computed in this iteration, before its loss, and carry no
   gradient.
5. Supervised term, each network with its own weights, on the labeled images:
     loss_sup = wDiceCE(logits_A_l, y_l; w_A) + wDiceCE(logits_B_l, y_l; w_B),
   wDiceCE = weighted CE (PyTorch's weighted mean sum_v w_y l_v / sum_v w_y,
   background included) - mean over foreground classes of w_c x soft batch Dice_c
   (smoothing 1): the reference's ``DC_and_CE_loss(w_dc=w, w_ce=w)`` (its
   ``--sup_loss w_ce+dice``), which is also ``losses.dice_ce_loss(.., weight=w)``,
   the project's shared DiceCE.
6. Cross pseudo supervision on every image of the iteration (labeled and
   unlabeled), weighted CE only (its ``--cps_loss wce``): each network learns
   the OTHER's hard labels with its OWN weights,
     loss_cps = wCE(logits_A, hard_B; w_A) + wCE(logits_B, hard_A; w_B).
7. loss = loss_sup + mu loss_cps, mu = CPS_WEIGHT r(e), with CPS_WEIGHT = 0.1 (the
   README's Synapse run, ``-w 0.1``) and r the sigmoid ramp exp(-5 (1 - e/R)^2)
   over R = ``cfg.rampup_length`` epochs (the max epoch unless set: the
   reference ramps over all epochs), updated after each epoch (epoch 0 uses r(0)).

Both networks are trained by the one SGD optimizer (the reference uses two with
the same settings, which is the same update). Network A (``model``) is the
released, validated and tested one; B is ``model_b`` in the method state.

Constants (class attributes; the optional config fields in brackets are read when
present, as bcp.py does, so that a config that grows them can set them):
  CPS_WEIGHT 0.1 [dhc_cps_weight]; DIFF_ACCUMULATE_ITERS 50; DIST_MOMENTUM 0.99.
  ``cfg.unsup_weight`` (A&D's w_u = 10) is not used.
The reference's other published settings are the trainer's: 300 epochs (README
``-ep 300``; ``cfg.max_epoch``), batch 2 labeled + 2 unlabeled, SGD momentum 0.9
nesterov, weight decay 3e-5, lr poly (1 - e/E)^0.9 set after each epoch, Synapse
patience 100.

Where this departs from the reference code, and why:
- Release: the reference validates and tests the mean of A's and B's logits and
  saves both. The trainer's checkpoint holds one network (``model``), so A alone
  is validated, saved and released, as CPS releases its first network; B's
  weights are in ``last.pth`` (``method_state.model_b``).
- Initialisation: both networks keep the backbone's PyTorch default init, drawn
  one after the other (so different). The reference initialises both
  Kaiming-normal; on this backbone that init alone makes supervised training miss
  the small class (cps.py, docs/benchmark.md).
- DistDW's starting weights: the reference counts the classes of the whole
  labeled set (full volumes) before training; a method here does not see the
  dataset, so w_B starts from the class counts of the first iteration's labeled
  crops (the global batch in several processes). With m = 0.99 the start weighs
  e^-1 after 100 iterations.
- Degenerate cases the reference turns into NaN: a weighted CE whose voxels all
  have classes of weight 0 (a background-only labeled batch under w_B, whose
  most frequent class weighs 0) is 0 here; DistDW of exactly equal class counts
  (every log P = 0) is C for every class.
- Learning rate: ``cfg.lr`` (1e-2, the project's; the reference's README run
  uses 3e-2, its script default is 1e-3). Augmentation: the project's shared
  pipeline (theirs: random crop and two flips). Validation every
  ``cfg.eval_every`` epochs on the centre crop (theirs: every 10 epochs).
  Mixed precision follows ``cfg.amp`` (theirs: always).
- Several processes: every count behind the weights (DiffDW's tp/fp/fn, DistDW's
  class counts) is summed over the processes before the update, and the
  weighted CE's denominator too (``distributed.batch_sum`` / ``global_ratio``),
  so every process holds the same weights and computes the global batch's loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import batch_sum, global_ratio
from ..losses import soft_batch_dice
from .base import Method, register
from .difficulty import DifficultyWeights, KeepsDifficulty
from .ramps import sigmoid_rampup


def _option(cfg, name: str, default):
    value = getattr(cfg, name, None)
    return default if value is None else value


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype == torch.float64 else logits.float()


# ---------------------------------------------------------------- losses
def weighted_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """PyTorch's class-weighted CE mean, sum_v w[y_v] l_v / sum_v w[y_v], over the global batch.

    0 (not NaN) when every voxel's class weighs 0.
    """
    logits = _upcast(logits)
    target = target.long()
    weight = weight.to(logits.dtype)
    per_voxel = F.cross_entropy(logits, target, weight=weight, reduction="none")
    return global_ratio(per_voxel.sum(), weight[target].sum().clamp_min(1e-12))


def weighted_dice_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """weighted CE - mean over foreground classes of (w_c soft batch Dice_c): ``dice_ce_loss(.., weight)``."""
    logits = _upcast(logits)
    dice = soft_batch_dice(logits, target)[1:] * weight[1:].to(logits.dtype)
    return weighted_ce(logits, target, weight) - dice.mean()


def cross_pseudo_loss(logits_a, logits_b, weight_a, weight_b) -> torch.Tensor:
    """wCE(a, argmax b; w_a) + wCE(b, argmax a; w_b): each learns the other's hard labels (no
    gradient through them) with its own class weights."""
    hard_a = logits_a.detach().argmax(dim=1)
    hard_b = logits_b.detach().argmax(dim=1)
    return weighted_ce(logits_a, hard_b, weight_a) + weighted_ce(logits_b, hard_a, weight_b)


# ---------------------------------------------------------------- class weights
def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Voxels per class of a label map, (C,) float64, summed over the global batch."""
    counts = torch.bincount(labels.reshape(-1).long(), minlength=num_classes)[:num_classes]
    return batch_sum(counts.to(torch.float64))


def distribution_weights(counts: torch.Tensor) -> torch.Tensor:
    """DistDW's weights of class counts, (C,) float32: C log P_c / max log P, P_c = (max n + 1e-8) / (n_c + 1e-8).

    The most frequent class weighs 0 and the rarest C; equal counts give C everywhere.
    """
    counts = counts.to(torch.float64)
    c = counts.numel()
    log_p = torch.log((counts.max() + 1e-8) / (counts + 1e-8))
    top = log_p.max()
    # torch.where rather than an if: no device-to-host sync per iteration on a GPU.
    w = torch.where(top > 0, log_p / top * c, torch.full_like(log_p, float(c)))
    return w.to(torch.float32)


class DistributionWeights:
    """DistDW: an EMA (per iteration) of the distribution weights of hard pseudo labels."""

    def __init__(self, num_classes: int, momentum: float = 0.99, device=None):
        self.num_classes = num_classes
        self.momentum = momentum
        self.weights = torch.full((num_classes,), float(num_classes), device=device)
        self.initialised = False

    @torch.no_grad()
    def init_from_counts(self, counts: torch.Tensor) -> torch.Tensor:
        self.weights = distribution_weights(counts).to(self.weights.device)
        self.initialised = True
        return self.weights

    @torch.no_grad()
    def update(self, pseudo: torch.Tensor) -> torch.Tensor:
        """w <- m w + (1 - m) weights(counts of ``pseudo``), hard labels (B, *S); returns w (C,)."""
        cur = distribution_weights(class_counts(pseudo, self.num_classes)).to(self.weights.device)
        self.weights = self.momentum * self.weights + (1 - self.momentum) * cur
        return self.weights

    def state_dict(self) -> dict:
        return {"weights": self.weights.detach().cpu().clone(), "initialised": self.initialised}

    def load_state_dict(self, state: dict) -> None:
        self.weights = state["weights"].to(self.weights.device)
        self.initialised = bool(state["initialised"])


def normalised_difficulty(weights: torch.Tensor, num_classes: int) -> torch.Tensor:
    """DHC's DiffDW weights from A&D's difficulty * D * C: scaled so that the largest is C."""
    return weights / weights.max() * num_classes


# ---------------------------------------------------------------- the method
@register
class DHC(KeepsDifficulty, Method):
    name = "dhc"
    description = ("dual-debiased heterogeneous co-training: two networks cross-supervise, one with "
                   "difficulty-aware, one with distribution-aware class weights (class-imbalanced SSL)")

    CPS_WEIGHT = 0.1
    DIFF_ACCUMULATE_ITERS = 50
    DIST_MOMENTUM = 0.99

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        self.model_b = self.build_network().to(self.device)
        C = cfg.num_classes
        self.difficulty = DifficultyWeights(C, accumulate_iters=self.DIFF_ACCUMULATE_ITERS, device=self.device)
        self.distribution = DistributionWeights(C, momentum=self.DIST_MOMENTUM, device=self.device)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "model_b": self.model_b}

    def unsup_weight_at(self, epoch: int) -> float:
        w = float(_option(self.cfg, "dhc_cps_weight", self.CPS_WEIGHT))
        return w * sigmoid_rampup(epoch, self.cfg.rampup_length)

    @torch.no_grad()
    def class_weights(self, logits_a_l, y_l, hard_b_u) -> tuple[torch.Tensor, torch.Tensor]:
        """This iteration's (w_A, w_B), updating both states."""
        C = self.cfg.num_classes
        w_a = normalised_difficulty(self.difficulty.update(logits_a_l, y_l), C)
        if not self.distribution.initialised:
            self.distribution.init_from_counts(class_counts(y_l, C))
        w_b = self.distribution.update(hard_b_u)
        return w_a, w_b

    def train_step(self, batch_l, batch_u):
        x_l, y_l, x_u = batch_l["image"], batch_l["label"], batch_u["image"]
        n_l = x_l.shape[0]
        image = torch.cat([x_l, x_u], dim=0)
        logits_a = self.model.d_theta(image)
        logits_b = self.model_b.d_theta(image)
        hard_b_u = logits_b[n_l:].detach().argmax(dim=1)
        w_a, w_b = self.class_weights(logits_a[:n_l].detach(), y_l, hard_b_u)
        loss_sup = weighted_dice_ce(logits_a[:n_l], y_l, w_a) + weighted_dice_ce(logits_b[:n_l], y_l, w_b)
        loss_cps = cross_pseudo_loss(logits_a, logits_b, w_a, w_b)
        loss = loss_sup + self.mu * loss_cps
        logs = {"loss": loss.detach(), "loss_sup": loss_sup.detach(), "loss_cps": loss_cps.detach(),
                "class_weights_diff": w_a.detach().clone(), "class_weights_dist": w_b.detach().clone()}
        return loss, logs

    # ---------------------------------------------------------------- state
    def extra_state(self) -> dict:
        state = super().extra_state()
        state["distribution"] = self.distribution.state_dict()
        return state

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.distribution.load_state_dict(state["distribution"])
