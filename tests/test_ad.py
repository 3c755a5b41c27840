import math

import pytest
import torch
import torch.nn.functional as F

from genericssl.config import load_config
from genericssl.losses import dice_ce_loss, hard_batch_dice, soft_batch_dice
from genericssl.methods import get_method
from genericssl.methods.ad import gaussian_kernel
from genericssl.methods.difficulty import DifficultyWeights
from genericssl.methods.ramps import sigmoid_rampup


def tiny_cfg(**kw):
    over = {"patch_size": "16x16x16", "base_filters": 4, "batch_size": 2, "num_classes": 3}
    over.update(kw)
    return load_config("la_0.05", overrides=over)


def batches(C=3, s=16):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, C, (2, s, s, s), generator=g)
    return ({"image": torch.rand(2, 1, s, s, s, generator=g), "label": y},
            {"image": torch.rand(2, 1, s, s, s, generator=g)})


def test_difficulty_weights_favour_a_regressing_class():
    dw = DifficultyWeights(3, accumulate_iters=50)
    # class 1 improves every iteration, class 2 gets worse after a peak
    for k in range(10):
        dw.update_from_dice(torch.tensor([0.9, 0.3 + 0.05 * k, 0.8 - 0.05 * k if k > 2 else 0.5 + 0.1 * k]))
    w = dw.weights
    assert w[2] > 5 * w[1]
    # by hand for one step from the initial state
    dw = DifficultyWeights(2, accumulate_iters=50)
    w = dw.update_from_dice(torch.tensor([0.5, 0.25]))
    a = 49 / 50
    learn = (1 - a) * (torch.tensor([0.5, 0.25]) - 1e-8) * torch.log(torch.tensor([0.5, 0.25]) / 1e-8)
    diff = (1e-8 / (learn + 1e-8)) ** 0.2
    D = a + (1 - a) * (1 - torch.tensor([0.5, 0.25]))
    assert torch.allclose(w, diff * D * 2, rtol=1e-4)


def test_difficulty_state_round_trips():
    dw = DifficultyWeights(3)
    dw.update_from_dice(torch.tensor([0.5, 0.2, 0.1]))
    other = DifficultyWeights(3)
    other.load_state_dict(dw.state_dict())
    d = torch.tensor([0.6, 0.1, 0.3])
    assert torch.allclose(dw.update_from_dice(d), other.update_from_dice(d))


def test_hard_and_soft_dice_definitions():
    pred = torch.tensor([[0, 1, 1, 2]])
    gt = torch.tensor([[0, 1, 2, 2]])
    d = hard_batch_dice(pred, gt, 4)
    assert torch.allclose(d[:3], torch.tensor([1.0, 2 / 3, 2 / 3]), atol=1e-6)
    assert d[3].item() == pytest.approx(0.5)  # absent from both
    logits = F.one_hot(gt, 3).movedim(-1, 1).float() * 50
    assert torch.allclose(soft_batch_dice(logits, gt), torch.ones(3), atol=1e-4)


def test_dice_ce_weighting():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, 4)
    y = torch.randint(0, 3, (2, 4, 4, 4))
    w = torch.tensor([0.5, 2.0, 1.0])
    dice = soft_batch_dice(logits, y)
    expected = F.cross_entropy(logits, y, weight=w) - (dice[1:] * w[1:]).mean()
    assert torch.allclose(dice_ce_loss(logits, y, w), expected)
    assert torch.allclose(dice_ce_loss(logits, y), F.cross_entropy(logits, y) - dice[1:].mean())


def test_weight_transfer_touches_only_shared_parameters():
    torch.manual_seed(0)
    m = get_method("ad")(tiny_cfg(), "cpu")
    net = m.model
    before = {k: v.clone() for k, v in net.state_dict().items()}
    m.transfer_weights()
    after = net.state_dict()
    for k, v in after.items():
        if k.startswith("decoder_theta.") and ("running" in k or "num_batches" in k):
            assert torch.equal(v, before[k]), k  # BN buffers untouched
        elif k.startswith("decoder_theta."):
            n = k[len("decoder_theta."):]
            exp = 0.99 * before[k] + 0.01 * (before["denoise_model.decoder." + n] + before["decoder_psi." + n]) / 2
            assert torch.allclose(v, exp, atol=1e-7), k
        else:
            assert torch.equal(v, before[k]), k


def test_gaussian_kernel_and_zero_padding():
    k = gaussian_kernel(2, 3)
    assert k.shape == (2, 1, 3, 3, 3) and torch.allclose(k.sum(dim=(1, 2, 3, 4)), torch.ones(2))
    m = get_method("ad")(tiny_cfg(num_classes=2), "cpu")
    out = m.smooth(torch.ones(1, 2, 5, 5, 5))
    assert torch.allclose(out[0, 0, 2, 2, 2], torch.tensor(1.0))
    assert out[0, 0, 0, 0, 0] < 0.6  # corner loses the zero-padded neighbours


def test_pseudo_labels_from_known_probabilities(monkeypatch):
    torch.manual_seed(0)
    m = get_method("ad")(tiny_cfg(num_classes=3), "cpu")
    x = torch.zeros(1, 1, 8, 8, 8)
    x0 = -torch.ones(1, 3, 8, 8, 8)
    x0[:, 2] = 1.0  # the sampler says class 2 everywhere
    monkeypatch.setattr(m.model, "sample", lambda image, diffusion=None: x0)
    # D_psi undecided: the fused label follows the smoothed Gumbel sample of x0
    monkeypatch.setattr(m.model, "d_psi", lambda image: torch.zeros(1, 3, 8, 8, 8))
    assert (m.pseudo_labels(x) == 2).float().mean() > 0.8
    # D_psi certain of class 1 on the left half: that wins there
    psi = torch.zeros(1, 3, 8, 8, 8)
    psi[:, 1, :, :, :4] = 100.0
    monkeypatch.setattr(m.model, "d_psi", lambda image: psi)
    p = m.pseudo_labels(x)
    assert (p[..., :4] == 1).all()


def test_train_step_runs_the_14_encoder_passes_in_train_mode():
    torch.manual_seed(0)
    m = get_method("ad")(tiny_cfg(), "cpu")
    m.train()
    bn = m.model.encoder.block_two.ops[0].norm
    n0 = int(bn.num_batches_tracked)
    bl, bu = batches()
    loss, logs = m.train_step(bl, bu)
    assert int(bn.num_batches_tracked) - n0 == 14
    assert torch.isfinite(loss)
    loss.backward()
    net = m.model
    for prefix in ("decoder_theta.", "decoder_psi.", "denoise_model.decoder.", "denoise_model.encoder."):
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for k, p in net.named_parameters() if k.startswith(prefix)), prefix
    assert set(logs) >= {"loss_deno", "loss_diff", "loss_u", "class_weights"}


def test_eval_mode_sampler_keeps_sampling_out_of_the_running_statistics():
    torch.manual_seed(0)
    m = get_method("ad")(tiny_cfg(sampler_eval_mode=True), "cpu")
    m.train()
    bn = m.model.encoder.block_two.ops[0].norm
    n0, mean0 = int(bn.num_batches_tracked), bn.running_mean.clone()
    bl, bu = batches()
    x_u = bu["image"]
    m.pseudo_labels(x_u)
    # the 10 sampling passes leave the statistics alone; the D_psi pass updates them
    assert int(bn.num_batches_tracked) - n0 == 1
    assert m.model.training  # back in train mode for the passes with gradients
    sampled = []
    real_sample = m.model.sample
    m.model.sample = lambda image, diffusion=None: sampled.append(m.model.training) or real_sample(image, diffusion)
    n1 = int(bn.num_batches_tracked)
    loss, _ = m.train_step(bl, bu)
    assert sampled == [False] and int(bn.num_batches_tracked) - n1 == 4
    assert torch.isfinite(loss) and not torch.equal(bn.running_mean, mean0)


def test_unsup_weight_schedule():
    cfg = tiny_cfg(max_epoch=10, unsup_weight=2.0)
    m = get_method("ad")(cfg, "cpu")
    assert m.mu == pytest.approx(2 * math.exp(-5))  # epoch 0
    m.on_epoch_end(0)
    assert m.mu == pytest.approx(2 * math.exp(-5))  # epoch 1 still uses r(0)
    m.on_epoch_end(5)
    assert m.mu == pytest.approx(2 * math.exp(-5 * 0.25))  # epoch 6 uses r(5)
    assert sigmoid_rampup(20, 10) == 1.0 and sigmoid_rampup(3, 0) == 1.0
    cfg = tiny_cfg(max_epoch=300, rampup_epochs=100)
    assert cfg.rampup_length == 100


def test_supervised_ignores_unlabeled_data():
    torch.manual_seed(0)
    m = get_method("supervised")(tiny_cfg(), "cpu")
    assert not m.uses_unlabeled
    bl, _ = batches()
    loss, _ = m.train_step(bl, None)
    loss.backward()
    assert all(p.grad is None for k, p in m.model.named_parameters() if k.startswith("decoder_psi."))
