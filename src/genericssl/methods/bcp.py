"""Bidirectional copy-paste (BCP, Bai et al., CVPR 2023), as its LA code trains it.

The network is the V-Net path image stem -> shared encoder -> D_theta, as for every
baseline; a second copy, the teacher, is an EMA of it and makes the pseudo labels.

What one iteration computes, in order (reference: DeepMed-Lab-ECNU/BCP,
``code/LA_BCP_train.py`` and ``utils/BCP_utils.py``):

0. Pairing. A process's share of n labeled cases is cut into halves a = cases
   0..k-1 and b = cases k..n-1, k = ceil(n / 2); case i of a pairs with case
   (i + k) mod n, so an even share is the reference's two halves, an odd one
   pairs its first case twice, and a share of one pairs the case with itself.
   The unlabeled share is cut the same way.
1. The mask. One cuboid per iteration, shared by every image of it: each side
   ``int(s * 2/3)`` voxels (``MASK_RATIO``, the LA code's ``mask_ratio``) of the
   patch side s, its corner uniform in ``[0, s - side)`` per axis (``context_mask``
   writes LA's patch sides 112, 112, 80 for s; drawn here from torch's
   generator, so seeded and resumed with the run). M = 1 outside the cuboid, 0
   inside; mixing x with y means ``M x + (1 - M) y``: x keeps the border, y is
   pasted into the cuboid.
   Images and labels are mixed with the same M (``copy_paste``).

Pre-training (the first ``pretrain_epochs`` epochs; labeled data only):

2p. mixed = mix(x_a, x_b), its label mix(y_a, y_b);
    loss = DiceCE(D_theta(mixed), mixed label) (the LA code's loss on the whole
    mixed image, the student alone in training mode). The teacher is untouched:
    never run, never updated.

At the end of the last pre-training epoch the teacher becomes a copy of the
student (parameters and BatchNorm buffers), as the reference's self-training
loads the pre-trained weights into both networks. The switch is recorded in the
checkpoint, so a run resumed on either side of it continues exactly (and a run
resumed with a shorter schedule, whose pre-training is already over, switches
at once).

Self-training (the remaining epochs):

2. Pseudo labels, without gradient, the teacher in training mode (dropout on,
   batch statistics), one pass per half as there: p_a = argmax teacher(u_a),
   p_b = argmax teacher(u_b); then each foreground class keeps its largest
   26-connected component per case (``LARGEST_COMPONENT``; the LA code's
   ``get_cut_mask(..., nms=1)``, i.e. ``LargestCC_pancreas`` with skimage's
   default full connectivity, a case without foreground left as it is; the ACDC
   code's ``get_ACDC_2DLargestCC`` does it per class, which is what this does for
   C > 2). With 2 classes, argmax is the LA code's ``softmax >= 0.5`` except on
   exact ties.
3. Both directions:
   mixl = mix(x_a, u_a): border labeled, cuboid unlabeled;
   mixu = mix(u_b, x_b): border unlabeled, cuboid labeled.
   Two student passes, one per mixed batch (BatchNorm statistics per batch, as
   there).
4. Each mixed image is scored region by region (the LA code's ``mix_loss``):
   DiceCE restricted to the border with its target, plus DiceCE restricted to
   the cuboid with its target (an empty region adds 0), the pseudo-labeled
   region weighted by ``U_WEIGHT`` = 0.5 (the LA code's ``u_weight``), the
   labeled one by 1:
     loss_l = L_M(out_l, y_a) + 0.5 L_(1-M)(out_l, p_a)
     loss_u = 0.5 L_M(out_u, p_b) + L_(1-M)(out_u, y_b)
     loss = loss_l + loss_u
5. After the optimizer step: teacher <- 0.99 teacher + 0.01 student, parameters
   only (``cfg.ema_m``; the LA code's ``update_ema_variables(model, ema_model,
   0.99)``, no warm-up); the teacher's BatchNorm statistics are its own, from its
   training-mode passes.

The released network is the student (the reference saves and tests ``model``).
With the default ``batch_size`` 4 the halves are 2 + 2 labeled and 2 + 2
unlabeled crops, the LA code's ``labeled_bs`` 4 of ``batch_size`` 8. Each
student or teacher pass sees half a batch, so a half of one case needs a patch
whose V-Net bottleneck keeps more than one voxel (32 per axis or more).

Constants (class attributes; the optional config fields named in brackets are
read when present, so that a config that grows them can set them):
  MASK_RATIO 2/3 [bcp_mask_ratio]; U_WEIGHT 0.5 [bcp_u_weight];
  PRETRAIN_FRACTION 2000 / 17000 of the epochs [bcp_pretrain_epochs, a count];
  LARGEST_COMPONENT True [bcp_largest_component].
``mu`` (logged per epoch) is U_WEIGHT: BCP has no ramp (its code computes a
consistency ramp and never uses it), and ``cfg.unsup_weight`` is not used.

Where this departs from the reference code, and why:
- Backbone: our V-Net path with the project's default initialisation, like every
  other method here (theirs: their V-Net).
- Loss: the project's DiceCE (CE minus the soft batch Dice of the foreground
  classes, smoothing 1), restricted to a region by summing CE, tp, fp and fn over
  that region's voxels only. Theirs: (CE + 1 - Dice) / 2 with a per-case Dice
  over all classes, background included, smoothing 1e-5. Ours keeps the methods
  comparable (they differ in how they use unlabeled data, not in the supervised
  loss) and, in several processes, sums over the global batch.
- Schedule: the two stages are epochs of one run. Pre-training takes the first
  2/17 of the epochs (the LA code: 2000 of 2000 + 15000 iterations), at least
  one and leaving at least one for self-training (none with a single epoch).
  The trainer's poly learning rate runs over both stages, with one optimizer
  (its momentum carries over the switch); the reference keeps 0.01 while
  pre-training and in self-training starts a fresh optimizer at 0.01 that it
  divides by 10 every 2500 iterations.
- Optimizer: the trainer's SGD for every method (momentum 0.9, Nesterov, weight
  decay 3e-5); theirs: SGD, momentum 0.9, weight decay 1e-4, no Nesterov.
- Model selection: the trainer validates every ``eval_every`` epochs and keeps
  the best student of the whole run; the reference validates every 200
  iterations in each stage and keeps each stage's best. The teacher (and the
  student) start self-training from the student at the end of pre-training, not
  from the pre-training's best validated checkpoint.
- The EMA factor is ``cfg.ema_m`` (0.99 by default, the reference's value).
- Several processes: each pairs cases within its own share and draws its own
  mask, so N processes train on other mixes than one process with the same
  global batch (gradients and the loss sums are still global, BatchNorm with
  ``sync_bn`` too, and the processes hold identical weights).
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import batch_sum, global_batch_active, global_ratio
from ..losses import dice_ce_loss
from ..postprocess import largest_component
from .base import Method, register
from .mean_teacher import ema_update


def _option(cfg, name: str, default):
    value = getattr(cfg, name, None)
    return default if value is None else value


def cuboid_mask(spatial: tuple[int, ...], ratio: float, device=None, generator=None) -> torch.Tensor:
    """Bool (*S): True outside one random cuboid of ``int(s * ratio)`` per side, False inside."""
    keep = torch.ones(spatial, dtype=torch.bool, device=device)
    box = []
    for s in spatial:
        side = int(s * ratio)
        start = int(torch.randint(0, max(s - side, 1), (1,), generator=generator))
        box.append(slice(start, start + side))
    keep[tuple(box)] = False
    return keep


def copy_paste(outer: torch.Tensor, inner: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``outer`` where ``keep`` (the border), ``inner`` inside the cuboid.

    ``keep`` is (*S) and broadcasts over images (B, K, *S) and label maps (B, *S) alike,
    so an image and its label are mixed voxel for voxel the same way.
    """
    return torch.where(keep, outer, inner)


def pair_halves(n: int) -> tuple[int, torch.Tensor]:
    """(k, partner indices): case i < k of half a pairs with case (i + k) mod n of half b."""
    k = math.ceil(n / 2)
    return k, (torch.arange(k) + k) % n


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The project's DiceCE over the voxels of ``region`` (bool, broadcastable to target).

    CE is the mean over the region's voxels; the soft batch Dice sums tp, fp and fn over
    them, ``(2 tp + 1) / (2 tp + fp + fn + 1 + 1e-8)``, foreground classes, so that with a
    region of every voxel this is ``losses.dice_ce_loss``. An empty region (in every
    process) is 0, without NaN and without gradient.
    """
    logits = logits if logits.dtype == torch.float64 else logits.float()
    target = target.long()
    m = region.expand_as(target).to(logits.dtype)
    ce_voxel = F.cross_entropy(logits, target, reduction="none")
    # The reference's 1e-16: an empty region contributes nothing rather than NaN.
    ce = global_ratio((ce_voxel * m).sum(), m.sum() + 1e-16)
    probs = logits.softmax(dim=1)
    onehot = F.one_hot(target, probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    m = m.unsqueeze(1)
    dims = [0] + list(range(2, probs.dim()))
    tp = (probs * onehot * m).sum(dims)
    fp = (probs * (1 - onehot) * m).sum(dims)
    fn = ((1 - probs) * onehot * m).sum(dims)
    if global_batch_active():
        tp, fp, fn = batch_sum(torch.stack([tp, fp, fn])).unbind(0)
    dice = (2 * tp + 1) / (2 * tp + fp + fn + 1 + 1e-8)
    # tp + fn over the classes counts the region's voxels: exactly 0 when it is empty.
    present = (tp + fn).sum() > 0.5
    return ce - torch.where(present, dice[1:].mean(), dice.new_zeros(()))


def region_loss(logits, target_border, target_cuboid, keep, w_border: float, w_cuboid: float):
    """w_border DiceCE on the border with its target + w_cuboid DiceCE inside the cuboid."""
    return (w_border * masked_dice_ce(logits, target_border, keep)
            + w_cuboid * masked_dice_ce(logits, target_cuboid, ~keep))


def keep_largest_components(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each foreground class keeps its largest fully connected component, case by case."""
    arr = labels.detach().cpu().numpy()
    out = np.stack([largest_component(a, range(1, num_classes), connectivity=a.ndim) for a in arr])
    return torch.from_numpy(out).to(labels.device, labels.dtype)


@register
class BCP(Method):
    name = "bcp"
    description = ("bidirectional copy-paste: labeled copy-paste pre-training, then EMA-teacher pseudo labels "
                   "mixed both ways with labeled crops")

    MASK_RATIO = 2 / 3
    U_WEIGHT = 0.5
    PRETRAIN_FRACTION = 2000 / 17000
    LARGEST_COMPONENT = True

    def __init__(self, cfg, device):
        super().__init__(cfg, device)
        self.mask_ratio = float(_option(cfg, "bcp_mask_ratio", self.MASK_RATIO))
        self.largest_cc = bool(_option(cfg, "bcp_largest_component", self.LARGEST_COMPONENT))
        self.pretrain_epochs = self.default_pretrain_epochs(cfg)
        self.teacher = self.build_network().to(self.device)
        self.teacher.load_state_dict(self.model.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.epochs_done = 0
        # True once the teacher is the pre-trained student (at once without pre-training).
        self.self_training = self.pretrain_epochs == 0

    @classmethod
    def default_pretrain_epochs(cls, cfg) -> int:
        n = getattr(cfg, "bcp_pretrain_epochs", None)
        if n is None:
            n = max(1, round((cfg.max_epoch + 1) * cls.PRETRAIN_FRACTION))
        # At least one epoch of self-training whenever there are two epochs or more.
        return max(0, min(int(n), cfg.max_epoch))

    def unsup_weight_at(self, epoch: int) -> float:
        return float(_option(self.cfg, "bcp_u_weight", self.U_WEIGHT))

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model, "teacher": self.teacher}

    def parameters(self) -> Iterable[nn.Parameter]:
        return self.model.parameters()

    @property
    def pretraining(self) -> bool:
        return not self.self_training

    def start_self_training(self) -> None:
        """Self-training starts from the pre-trained network in both roles."""
        self.teacher.load_state_dict(self.model.state_dict())
        self.self_training = True

    def steady_state(self) -> None:
        """Self-training, the step of 15/17 of the epochs (for ``bench train``)."""
        if not self.self_training:
            self.start_self_training()

    # ---------------------------------------------------------------- the step
    def mask_for(self, image: torch.Tensor) -> torch.Tensor:
        return cuboid_mask(tuple(image.shape[2:]), self.mask_ratio, device=image.device)

    @torch.no_grad()
    def pseudo_labels(self, image: torch.Tensor) -> torch.Tensor:
        labels = self.teacher.d_theta(image).argmax(dim=1)
        return keep_largest_components(labels, self.cfg.num_classes) if self.largest_cc else labels

    def train_step(self, batch_l, batch_u):
        x_l, y_l = batch_l["image"], batch_l["label"]
        k, partner = pair_halves(x_l.shape[0])
        partner = partner.to(x_l.device)
        x_a, x_b, y_a, y_b = x_l[:k], x_l[partner], y_l[:k], y_l[partner]
        keep = self.mask_for(x_l)
        zero = torch.zeros((), device=x_l.device)
        if self.pretraining:
            mixed = copy_paste(x_a, x_b, keep)
            loss = dice_ce_loss(self.model.d_theta(mixed), copy_paste(y_a, y_b, keep))
            return loss, {"loss": loss.detach(), "loss_l": loss.detach(), "loss_u": zero,
                          "pretrain": torch.ones((), device=x_l.device)}

        x_u = batch_u["image"]
        u_a, u_b = x_u[:k], x_u[partner]
        p_a, p_b = self.pseudo_labels(u_a), self.pseudo_labels(u_b)
        w = self.mu
        out_l = self.model.d_theta(copy_paste(x_a, u_a, keep))
        out_u = self.model.d_theta(copy_paste(u_b, x_b, keep))
        loss_l = region_loss(out_l, y_a, p_a, keep, 1.0, w)
        loss_u = region_loss(out_u, p_b, y_b, keep, w, 1.0)
        loss = loss_l + loss_u
        return loss, {"loss": loss.detach(), "loss_l": loss_l.detach(), "loss_u": loss_u.detach(),
                      "pretrain": zero}

    def after_step(self) -> None:
        if not self.pretraining:
            ema_update(self.teacher, self.model, self.cfg.ema_m)

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        self.epochs_done = epoch + 1
        if not self.self_training and self.epochs_done >= self.pretrain_epochs:
            self.start_self_training()

    # ---------------------------------------------------------------- state
    def extra_state(self) -> dict:
        state = super().extra_state()
        state["epochs_done"] = self.epochs_done
        state["self_training"] = self.self_training
        return state

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.epochs_done = int(state.get("epochs_done", 0))
        self.self_training = bool(state.get("self_training", self.epochs_done >= self.pretrain_epochs))
        if not self.self_training and self.epochs_done >= self.pretrain_epochs:
            # Resumed with a schedule whose pre-training is already over.
            self.start_self_training()
