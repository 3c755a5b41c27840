"""Ablation: A&D whose shared encoder does not learn from the pseudo-label loss.

Question answered: does D_theta's pseudo-label loss, at A&D's weight of 10, cost the
shared encoder what supervised training keeps? In A&D that loss reaches the image stem
and the encoder through D_theta; here its gradient stops at D_theta's input (the
encoder's features, detached), so D_theta still learns from the pseudo labels and
still receives the EMA of D_xi and D_psi, while the encoder and the image stem learn
from the labeled losses alone (the denoising loss of D_xi, the difficulty-weighted
DiceCE of D_psi). Every forward pass, the pseudo labels, the BatchNorm statistics and
the sampler are A&D's: only gradients differ. Its sibling ``ad_encoder_no_deno`` stops
the other loss that trains the shared encoder.

The step is A&D's (``methods/ad.py``) with the two passes that carry a loss into the
encoder made replaceable (``deno_logits``, ``theta_logits``); ``ad.py`` itself is left
as it is because the benchmark's cached cells are keyed on its bytes. A test checks that
with both stops off this step computes A&D's loss and gradients exactly.
"""
from __future__ import annotations

import torch
from torch.func import functional_call

from ..losses import dice_ce_loss
from ..models.checkpointing import run_region
from .ad import AD
from .base import register


@register
class ADEncoderNoU(AD):
    name = "ad_encoder_no_u"
    description = "ablation: A&D, the pseudo-label loss trains D_theta but not the shared encoder"
    stop_u = True      # D_theta's pseudo-label loss stops at the encoder's features
    stop_deno = False  # D_xi's denoising loss leaves the encoder's shared weights alone

    def theta_logits(self, image: torch.Tensor) -> torch.Tensor:
        """D_theta's logits for the pseudo-label loss; A&D's ``model.d_theta`` unless ``stop_u``."""
        model = self.model
        if not self.stop_u:
            return model.d_theta(image)
        x1, _ = model.embedding(image)
        return model.decoder_theta([f.detach() for f in model.encoder(x1)])

    def deno_logits(self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """D_xi's prediction of x0; A&D's ``model.d_xi`` unless ``stop_deno``.

        With ``stop_deno`` the encoder runs with its shared weights (every one the image
        path also uses) as constants: the gradient still flows through the encoder's
        activations to the denoising stem, and into the time fusions only this path uses.
        """
        model = self.model
        if not self.stop_deno:
            return model.d_xi(x_t, t, image)
        encoder = model.encoder
        h, temb = model.denoise_model.embedding_diffusion(torch.cat([image, x_t], dim=1), t)
        levels = encoder.checkpoint_levels

        def frozen_encoder(h, temb):
            shared = {n: p.detach() for n, p in encoder.named_parameters() if ".temb_proj." not in f".{n}"}
            encoder.checkpoint_levels = 0
            try:
                return functional_call(encoder, shared, (h, temb), strict=False)
            finally:
                encoder.checkpoint_levels = levels

        if levels and torch.is_grad_enabled():
            # A region checkpointed inside the encoder would recompute its forward in the
            # backward pass with the encoder's own weights, after functional_call has put
            # them back, and undo the stop: the whole pass is one region instead, whose
            # recomputation runs frozen_encoder again (bit-exact, like every region).
            features = run_region(frozen_encoder, [encoder], h, temb)
        else:
            features = frozen_encoder(h, temb)
        return model.denoise_model.decoder(features, temb)

    def train_step(self, batch_l, batch_u):
        # A&D's step (methods/ad.py, AD.train_step), line for line, through the two seams.
        C = self.cfg.num_classes
        x_l, y_l, x_u = batch_l["image"], batch_l["label"], batch_u["image"]
        self.transfer_weights()

        x0 = self.diffusion.label_to_x0(y_l, C)
        t = self.diffusion.sample_t(x_l.shape[0], x_l.device)
        x_t = self.diffusion.q_sample(x0, t)
        p_l_xi = self.deno_logits(x_t, t, x_l)
        p_l_psi = self.model.d_psi(x_l)
        loss_deno = dice_ce_loss(p_l_xi, y_l)
        weights = self.difficulty.update(p_l_xi.detach(), y_l)
        loss_diff = dice_ce_loss(p_l_psi, y_l, weight=weights)

        pseudo = self.pseudo_labels(x_u)
        loss_u = dice_ce_loss(self.theta_logits(x_u), pseudo)
        loss = loss_deno + loss_diff + self.mu * loss_u
        logs = {"loss": loss.detach(), "loss_deno": loss_deno.detach(), "loss_diff": loss_diff.detach(),
                "loss_u": loss_u.detach(), "class_weights": weights.detach()}
        return loss, logs
