"""DHC: its class weights and losses on hand-made tensors, a few real steps, and an exact resume."""
import math

import pytest
import torch
import torch.nn.functional as F

from genericssl.checkpoint import load_checkpoint
from genericssl.config import TaskConfig, apply_overrides, method_names_light
from genericssl.losses import dice_ce_loss
from genericssl.methods import get_method, method_names
from genericssl.methods.dhc import (DHC, DistributionWeights, class_counts, cross_pseudo_loss,
                                    distribution_weights, normalised_difficulty, weighted_ce,
                                    weighted_dice_ce)
from genericssl.methods.difficulty import DifficultyWeights
from genericssl.methods.ramps import sigmoid_rampup
from genericssl.training import Trainer
from prepared_data import write_spheres
from test_baselines import C, batches  # the same classes and random labeled + unlabeled batches


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(**kw):
    base = dict(patch_size=(16, 16, 16), num_classes=C, base_filters=4, batch_size=2, max_epoch=9,
                rampup_epochs=3, num_workers=0, seed=0, patience=100, method="dhc")
    base.update(kw)
    return apply_overrides(TaskConfig(), base).validate()


def test_registered_under_its_file_name():
    assert "dhc" in method_names() and "dhc" in method_names_light()
    assert get_method("dhc") is DHC and DHC.uses_unlabeled


# ------------------------------------------------------------------ DistDW
def test_distribution_weights_rare_high_frequent_zero():
    w = distribution_weights(torch.tensor([1000.0, 100.0, 10.0]))
    # C log(max / n_c) / max_k log(max / n_k): log 10 / log 100 = 1/2 for the middle class
    assert w.tolist() == pytest.approx([0.0, 1.5, 3.0], abs=1e-6)
    assert w.dtype == torch.float32
    # A class absent from the counts is the rarest of all.
    assert distribution_weights(torch.tensor([50.0, 0.0, 50.0])).tolist() == pytest.approx([0, 3, 0])
    # Equal counts (every log P = 0) would be 0/0: every class weighs C instead.
    assert distribution_weights(torch.tensor([7.0, 7.0, 7.0])).tolist() == [3.0, 3.0, 3.0]


def test_class_counts_histogram():
    labels = torch.tensor([[0, 0, 2], [2, 2, 0]])
    assert class_counts(labels, 3).tolist() == [3.0, 0.0, 3.0]
    assert class_counts(labels, 3).dtype == torch.float64


def test_distribution_ema_moves_towards_the_pseudo_labels_distribution():
    dw = DistributionWeights(C, momentum=0.99)
    w0 = dw.init_from_counts(torch.tensor([1000.0, 100.0, 10.0])).clone()
    assert dw.initialised
    # Pseudo labels where class 1 became rare and class 2 frequent.
    pseudo = torch.tensor([0] * 100 + [1] * 1 + [2] * 50)
    cur = distribution_weights(class_counts(pseudo, C))
    w1 = dw.update(pseudo)
    assert torch.allclose(w1, 0.99 * w0 + 0.01 * cur)
    assert w1[1] > w0[1] and w1[2] < w0[2]
    # Every call is one EMA step: after k equal updates the gap to cur shrinks by 0.99^k.
    for _ in range(9):
        w = dw.update(pseudo)
    assert torch.allclose(w - cur, 0.99 ** 10 * (w0 - cur), atol=1e-5)
    state = dw.state_dict()
    other = DistributionWeights(C)
    other.load_state_dict(state)
    assert other.initialised and torch.equal(other.weights, dw.weights)


# ------------------------------------------------------------------ DiffDW
def test_difficulty_weights_normalised_to_c_and_one_step_by_hand():
    dw = DifficultyWeights(C, accumulate_iters=DHC.DIFF_ACCUMULATE_ITERS)
    assert dw.momentum == pytest.approx(0.98)
    dice = torch.tensor([0.9, 0.5, 0.1])
    w = normalised_difficulty(dw.update_from_dice(dice), C)
    # by hand: learn = 0.02 dice log(dice / 1e-8) (dice rose from 1e-8), unlearn 0, D = 0.98 + 0.02 (1 - dice)
    learn = 0.02 * (dice - 1e-8) * torch.log(dice / 1e-8)
    raw = (1e-8 / (learn + 1e-8)) ** 0.2 * (0.98 + 0.02 * (1 - dice))
    assert torch.allclose(w, raw / raw.max() * C, rtol=1e-4)
    assert w.max().item() == pytest.approx(C)


def test_difficulty_weights_rise_for_a_hard_class_and_fall_for_an_easy_one():
    dw = DifficultyWeights(C, accumulate_iters=DHC.DIFF_ACCUMULATE_ITERS)
    for k in range(40):
        # class 0 easy: high and steadily rising; class 1 learns slowly; class 2 stalls and regresses
        dice = torch.tensor([0.80 + 0.004 * k, 0.20 + 0.002 * k, 0.30 - 0.004 * k + 0.03 * (k % 2)])
        w = normalised_difficulty(dw.update_from_dice(dice), C)
    assert w[0] < w[1] < w[2]
    assert w[2].item() == pytest.approx(C)
    # Class 2 starts to learn fast: its weight falls against class 1's (the largest is C by
    # construction), and so does its weight before the normalisation.
    before, raw_before = (w[2] / w[1]).item(), dw.weights[2].item()
    for k in range(60):
        dice = torch.tensor([0.96, 0.28 + 0.002 * k, 0.2 + 0.01 * k])
        w = normalised_difficulty(dw.update_from_dice(dice), C)
    assert (w[2] / w[1]).item() < 0.7 * before and dw.weights[2].item() < 0.7 * raw_before


# ------------------------------------------------------------------ losses
def test_weighted_dice_ce_is_the_projects_weighted_dice_ce():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, C, 4, 4, 4, generator=g)
    target = torch.randint(0, C, (2, 4, 4, 4), generator=g)
    w = torch.tensor([0.2, 1.5, 3.0])
    assert weighted_dice_ce(logits, target, w).item() == pytest.approx(dice_ce_loss(logits, target, w).item(),
                                                                      rel=1e-5)
    assert weighted_ce(logits, target, w).item() == pytest.approx(
        F.cross_entropy(logits, target, weight=w).item(), rel=1e-5)


def test_weighted_ce_of_weightless_classes_is_zero_not_nan():
    logits = torch.randn(1, C, 5, requires_grad=True)
    target = torch.zeros(1, 5, dtype=torch.long)
    w = torch.tensor([0.0, 2.0, 3.0])
    assert torch.isnan(F.cross_entropy(logits, target, weight=w))   # what the reference computes
    loss = weighted_ce(logits, target, w) + weighted_dice_ce(logits, target, w)
    assert torch.isfinite(loss)
    assert weighted_ce(logits, target, w).item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_cross_pseudo_loss_uses_the_others_argmax_and_its_own_weights():
    a = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 3.0, 4.0]]], requires_grad=True)  # (1, C, 3)
    b = torch.tensor([[[0.0, 5.0, 0.0], [4.0, 0.0, 0.0], [0.0, 0.0, 1.0]]], requires_grad=True)
    # argmax a = [0, 2, 2], argmax b = [1, 0, 2]
    w_a, w_b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, 0.1, 3.0])
    got = cross_pseudo_loss(a, b, w_a, w_b)
    want = (F.cross_entropy(a, torch.tensor([[1, 0, 2]]), weight=w_a)
            + F.cross_entropy(b, torch.tensor([[0, 2, 2]]), weight=w_b))
    assert got.item() == pytest.approx(want.item())
    # No gradient through the pseudo labels: a's gradient is that of its own term alone.
    got.backward()
    a_ref = a.detach().clone().requires_grad_(True)
    F.cross_entropy(a_ref, torch.tensor([[1, 0, 2]]), weight=w_a).backward()
    assert torch.allclose(a.grad, a_ref.grad)


# ------------------------------------------------------------------ the method
def no_dropout(m):
    for net in m.modules().values():
        net.set_dropout(False)
        for d in net.modules():
            if isinstance(d, torch.nn.modules.dropout._DropoutNd):
                d.p = 0.0


def test_one_step_wires_weights_pseudo_labels_and_losses():
    m = get_method("dhc")(tiny_cfg(), "cpu")
    m.train()
    no_dropout(m)
    m.mu = 0.7
    bl, bu = batches(3)
    loss, logs = m.train_step(bl, bu)
    image = torch.cat([bl["image"], bu["image"]])
    with torch.no_grad():
        la, lb = m.model.d_theta(image), m.model_b.d_theta(image)
    w_a, w_b = logs["class_weights_diff"], logs["class_weights_dist"]
    # A: DiffDW of its own labeled prediction (fresh state, one update), scaled so the largest is C.
    fresh = DifficultyWeights(C, accumulate_iters=50)
    assert torch.allclose(w_a, normalised_difficulty(fresh.update(la[:2], bl["label"]), C))
    # B: DistDW started from the labeled counts, one EMA step with B's OWN unlabeled argmax.
    start = distribution_weights(class_counts(bl["label"], C))
    assert torch.allclose(w_b, 0.99 * start + 0.01 * distribution_weights(class_counts(lb[2:].argmax(1), C)))
    # The supervised terms use each network's weights; the cps terms the other's argmax.
    sup = weighted_dice_ce(la[:2], bl["label"], w_a) + weighted_dice_ce(lb[:2], bl["label"], w_b)
    cps = weighted_ce(la, lb.argmax(1), w_a) + weighted_ce(lb, la.argmax(1), w_b)
    assert logs["loss_sup"].item() == pytest.approx(sup.item(), rel=1e-5)
    assert logs["loss_cps"].item() == pytest.approx(cps.item(), rel=1e-5)
    assert loss.item() == pytest.approx(sup.item() + 0.7 * cps.item(), rel=1e-5)
    # The distribution was initialised once; the next step only moves it by the EMA.
    _, logs2 = m.train_step(*batches(4))
    assert m.distribution.initialised
    assert (logs2["class_weights_dist"] - w_b).abs().max() <= 0.01 * C + 1e-6


def test_two_differently_initialised_networks_both_train():
    m = get_method("dhc")(tiny_cfg(), "cpu")
    pa, pb = list(m.model.parameters()), list(m.model_b.parameters())
    assert any(not torch.equal(x, y) for x, y in zip(pa, pb))
    ids = {id(p) for p in m.parameters()}
    assert all(id(p) in ids for p in pa + pb)
    assert m.predictor() is m.model and set(m.modules()) == {"model", "model_b"}
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    a0 = [p.detach().clone() for p in pa]
    b0 = [p.detach().clone() for p in pb]
    m.mu = 0.1
    for i in range(2):
        loss, logs = m.train_step(*batches(i))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(x, y) for x, y in zip(a0, m.model.parameters()))
    assert any(not torch.equal(x, y) for x, y in zip(b0, m.model_b.parameters()))


def test_cps_weight_is_dhcs_ramped_not_the_unsup_weight():
    m = get_method("dhc")(tiny_cfg(rampup_epochs=4, unsup_weight=10.0), "cpu")
    assert m.mu == pytest.approx(0.1 * math.exp(-5))
    for e in range(6):
        m.on_epoch_end(e)
        assert m.mu == pytest.approx(0.1 * sigmoid_rampup(e, 4))
    assert m.mu == pytest.approx(0.1)


# ------------------------------------------------------------------ through the trainer
def write_dataset(root):
    """Two nested classes (shells of radius 5 and 3): 2 labeled, 4 unlabeled, 2 eval (= test) cases."""
    return write_spheres(root, n=8, size=16, radii=(5, 3), margin=5,
                         splits={"labeled": 2, "unlabeled": 4, "eval": None, "test": "eval"})


def test_resume_halfway_ends_bitwise_where_one_run_ends(tmp_path):
    data = write_dataset(tmp_path / "data")
    cfg = tiny_cfg(data_dir=str(data), max_epoch=3, iters_per_epoch=1)
    quiet = dict(device="cpu", progress=False, tensorboard=False, log=lambda *a: None)
    full = Trainer(cfg, data, tmp_path / "full", **quiet)
    full.fit()
    ref = load_checkpoint(tmp_path / "full" / "ckpts" / "last.pth")

    crashed = Trainer(cfg, data, tmp_path / "crash", **quiet)
    original = crashed._train_epoch

    def dies_in_epoch_2(epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(epoch)

    crashed._train_epoch = dies_in_epoch_2
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    resumed = Trainer(cfg, data, tmp_path / "crash", resume=tmp_path / "crash", **quiet)
    assert resumed.start_epoch == 2
    resumed.fit()
    got = load_checkpoint(tmp_path / "crash" / "ckpts" / "last.pth")
    for k, v in ref["state_dict"].items():
        assert torch.equal(v, got["state_dict"][k]), k
    ms_ref, ms_got = ref["method_state"], got["method_state"]
    for k, v in ms_ref["model_b"].items():
        assert torch.equal(v, ms_got["model_b"][k]), k
    for part in ("difficulty", "distribution"):
        for k, v in ms_ref[part].items():
            assert (torch.equal(v, ms_got[part][k]) if torch.is_tensor(v) else v == ms_got[part][k]), (part, k)
    assert ms_ref["distribution"]["initialised"] and ms_ref["mu"] == ms_got["mu"]
    # The weights moved from their starts, and the history logs both.
    assert not torch.allclose(ms_ref["difficulty"]["weights"], torch.full((C,), float(C)))
    assert len(resumed.history[-1]["class_weights_dist"]) == C
