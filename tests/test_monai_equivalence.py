"""Where a MONAI definition is ours, the numbers say so (and where the docstrings claim it)."""
import pytest
import torch

from genericssl.losses import dice_ce_loss

monai_losses = pytest.importorskip("monai.losses")


@pytest.mark.parametrize("weighted", [False, True])
def test_monai_dice_ce_has_our_gradients(weighted):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, 6, 6, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 3, (2, 6, 6, 6))
    weight = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64) if weighted else None
    theirs = monai_losses.DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                                     smooth_nr=1, smooth_dr=1, weight=weight)(logits, target[:, None])
    ours = dice_ce_loss(logits, target, weight)
    g_theirs, = torch.autograd.grad(theirs, logits)
    g_ours, = torch.autograd.grad(ours, logits)
    # MONAI's Dice term is 1 - Dice (weighted: sum of w_c (1 - Dice_c) / C'), ours is -Dice: a constant apart.
    constant = 1.0 if weight is None else float(weight[1:].mean())
    assert float(theirs.detach() - ours.detach()) == pytest.approx(constant, abs=1e-9)
    assert torch.allclose(g_theirs, g_ours, atol=1e-12, rtol=0)
