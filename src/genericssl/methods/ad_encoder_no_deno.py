"""Ablation: A&D whose shared encoder does not learn from the denoising loss.

Question answered: does sharing the encoder with the denoising path (its input is the
image and a noisy label, whose clean version it learns to return) cost the image path
what supervised training keeps? Here D_xi's loss trains D_xi, the denoising stem and
the encoder's time fusions (which only this path uses), but not the encoder's shared
convolutions and norms: they learn from D_psi's difficulty-weighted DiceCE and D_theta's
pseudo-label loss alone. Forward passes, pseudo labels, BatchNorm statistics and the
sampler are A&D's: only gradients differ. The step and its seams are
``ad_encoder_no_u``'s, with the other stop.
"""
from __future__ import annotations

from .ad_encoder_no_u import ADEncoderNoU
from .base import register


@register
class ADEncoderNoDeno(ADEncoderNoU):
    name = "ad_encoder_no_deno"
    description = "ablation: A&D, the denoising loss trains D_xi but not the shared encoder's weights"
    stop_u = False
    stop_deno = True
