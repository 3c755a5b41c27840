"""Mean Teacher, UA-MT and CPS: their pieces on hand-made tensors, then a few real steps."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genericssl.methods import get_method, method_names
from genericssl.methods.cps import cross_pseudo_loss
from genericssl.methods.mean_teacher import ema_factor, ema_update, softmax_mse
from genericssl.methods.uamt import (masked_consistency, predictive_entropy, uncertainty_threshold)
from genericssl.training import Trainer
from prepared_data import write_spheres
from tiny_methods import C, batches, tiny_cfg



pytestmark = pytest.mark.usefixtures("one_thread")


def test_registered():
    assert {"mean_teacher", "uamt", "cps"} <= set(method_names())


# ------------------------------------------------------------------ Mean Teacher
def test_ema_factor_is_the_true_average_first():
    assert ema_factor(0, 0.99) == 0.0          # first update copies the student
    assert ema_factor(1, 0.99) == 0.5          # then the mean of two
    assert ema_factor(9, 0.99) == pytest.approx(0.9)
    assert ema_factor(10_000, 0.99) == 0.99    # capped at alpha


def test_ema_update_math_parameters_only():
    teacher, student = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        student.weight.fill_(3.0)
        student.running_mean.fill_(7.0)
    ema_update(teacher, student, 0.75)
    assert torch.allclose(teacher.weight, torch.full((2,), 1.5))   # 0.75 * 1 + 0.25 * 3
    assert torch.equal(teacher.running_mean, torch.zeros(2))         # buffers are the teacher's own


def test_softmax_mse_no_gradient_to_teacher():
    s = torch.zeros(1, 2, 1, requires_grad=True)
    t = torch.tensor([[[10.0], [-10.0]]], requires_grad=True)
    d = softmax_mse(s, t)
    assert torch.allclose(d, torch.tensor([[[0.25], [0.25]]]), atol=1e-6)
    d.sum().backward()
    assert t.grad is None and s.grad is not None


def test_mean_teacher_steps_teacher_is_ema_of_student():
    m = get_method("mean_teacher")(tiny_cfg(), "cpu")
    m.train()
    params = list(m.parameters())
    assert not any(p is q for p in params for q in m.teacher.parameters())  # teacher not optimised
    opt = torch.optim.SGD(params, lr=0.1)
    before = [p.detach().clone() for p in m.model.parameters()]
    teacher0 = [p.detach().clone() for p in m.teacher.parameters()]
    snapshots = []
    for i in range(2):
        bl, bu = batches(i)
        loss, logs = m.train_step(bl, bu)
        assert torch.isfinite(loss) and set(logs) >= {"loss", "loss_sup", "loss_cons"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.after_step()
        snapshots.append([p.detach().clone() for p in m.model.parameters()])
    assert any(not torch.equal(a, b) for a, b in zip(before, snapshots[-1]))
    # step 0 copies the student, step 1 averages: teacher = (s1 + s2) / 2
    for t, s1, s2 in zip(m.teacher.parameters(), *snapshots):
        assert torch.allclose(t, 0.5 * s1 + 0.5 * s2, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(teacher0, m.teacher.parameters()))
    assert m.predictor() is m.model
    # state round trip (resume)
    m2 = get_method("mean_teacher")(tiny_cfg(seed=1), "cpu")
    m2.load_extra_state(m.extra_state())
    assert m2.ema_step == 2
    assert all(torch.equal(a, b) for a, b in zip(m.teacher.state_dict().values(), m2.teacher.state_dict().values()))


def test_consistency_weight_follows_shared_rampup():
    m = get_method("mean_teacher")(tiny_cfg(unsup_weight=0.1, rampup_epochs=4), "cpu")
    assert m.mu == pytest.approx(0.1 * math.exp(-5))
    m.on_epoch_end(4)
    assert m.mu == pytest.approx(0.1)


# ------------------------------------------------------------------ UA-MT
def test_uncertainty_threshold_ramps_from_three_quarters_to_ln_c():
    assert uncertainty_threshold(0.0, 4) == pytest.approx(0.75 * math.log(4))
    assert uncertainty_threshold(1.0, 4) == pytest.approx(math.log(4))
    assert uncertainty_threshold(0.5, 2) == pytest.approx(0.875 * math.log(2))


def test_predictive_entropy_extremes():
    uniform = torch.full((1, 4, 2), 0.25)
    sure = torch.zeros(1, 4, 2)
    sure[:, 1] = 1.0
    assert torch.allclose(predictive_entropy(uniform), torch.full((1, 1, 2), math.log(4)), atol=1e-5)
    assert torch.allclose(predictive_entropy(sure), torch.zeros(1, 1, 2), atol=1e-5)


def test_masked_consistency_keeps_only_confident_voxels():
    mse = torch.tensor([[[1.0, 5.0, 9.0], [3.0, 7.0, 11.0]]])   # (B=1, C=2, 3 voxels)
    unc = torch.tensor([[[0.1, 0.5, 0.69]]])
    threshold = 0.6
    loss, mask = masked_consistency(mse, unc, threshold)
    assert mask.flatten().tolist() == [1.0, 1.0, 0.0]
    assert loss.item() == pytest.approx((1 + 3 + 5 + 7) / (2 * 2))
    loss, mask = masked_consistency(mse, unc, 0.05)    # nothing confident: zero, not NaN
    assert loss.item() == 0.0 and mask.sum() == 0


def test_uamt_uncertainty_averages_all_eight_passes(monkeypatch):
    m = get_method("uamt")(tiny_cfg(), "cpu")
    calls = []

    def fake_teacher(x):
        # Each pass gets the batch twice: the first copy says class 0, the second class 1,
        # so only the mean over both copies and all passes is 50/50 (entropy ln 2).
        calls.append(x.shape[0])
        b = x.shape[0] // 2
        logits = torch.full((x.shape[0], C) + x.shape[2:], -30.0)
        logits[:b, 0] = 30.0
        logits[b:, 1] = 30.0
        return logits

    monkeypatch.setattr(m.teacher, "d_theta", fake_teacher)
    x = torch.rand(2, 1, 16, 16, 16)
    unc = m.uncertainty(x)
    assert calls == [4] * 4                      # T/2 passes of the doubled batch
    assert unc.shape == (2, 1, 16, 16, 16)
    assert torch.allclose(unc, torch.full_like(unc, math.log(2)), atol=1e-4)


def test_uamt_steps_and_threshold_ramp():
    m = get_method("uamt")(tiny_cfg(rampup_epochs=3), "cpu")
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    for i in range(2):
        loss, logs = m.train_step(*batches(i))
        assert torch.isfinite(loss) and 0.0 <= float(logs["mask_fraction"]) <= 1.0
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.after_step()
    assert m.threshold_ramp == pytest.approx(math.exp(-5))
    m.on_epoch_end(3)
    assert m.threshold_ramp == 1.0
    assert m.extra_state()["threshold_ramp"] == 1.0


# ------------------------------------------------------------------ CPS
def test_cps_uses_the_other_networks_argmax():
    a = torch.tensor([[[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]]], requires_grad=True)   # (1, C=3, 2)
    b = torch.tensor([[[0.0, 5.0], [4.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    # argmax a = [0, 2], argmax b = [1, 0]
    want = F.cross_entropy(a, torch.tensor([[1, 0]])) + F.cross_entropy(b, torch.tensor([[0, 2]]))
    got = cross_pseudo_loss(a, b)
    assert got.item() == pytest.approx(want.item())
    # the hard labels carry no gradient: each net's gradient is its own CE only
    got.backward()
    a_ref = a.detach().clone().requires_grad_(True)
    F.cross_entropy(a_ref, torch.tensor([[1, 0]])).backward()
    assert torch.allclose(a.grad, a_ref.grad)


def test_cps_two_differently_initialised_networks_both_train():
    m = get_method("cps")(tiny_cfg(), "cpu")
    # the biggest convolution of D_theta: the backbone's default init (uniform, bound
    # 1/sqrt(fan_in), so std 1/sqrt(3 fan_in)) in both networks, but different draws
    convs_a = [mod.weight for mod in m.model.decoder_theta.modules() if isinstance(mod, nn.Conv3d)]
    convs_b = [mod.weight for mod in m.model_b.decoder_theta.modules() if isinstance(mod, nn.Conv3d)]
    wa, wb = max(convs_a, key=torch.numel), max(convs_b, key=torch.numel)
    fan_in = wa.shape[1] * 27
    for w in (wa, wb):
        assert w.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.1)
        assert w.abs().max().item() <= 1 / math.sqrt(fan_in)
    assert not torch.equal(wa, wb)
    ids = {id(p) for p in m.parameters()}
    assert all(id(p) in ids for p in m.model_b.parameters())   # both optimised
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    b0 = [p.detach().clone() for p in m.model_b.parameters()]
    for i in range(2):
        loss, logs = m.train_step(*batches(i))
        assert torch.isfinite(loss) and {"loss_sup", "loss_cps"} <= set(logs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(x, y) for x, y in zip(b0, m.model_b.parameters()))
    assert m.predictor() is m.model


# ------------------------------------------------------------------ through the trainer
def write_dataset(root):
    """Two nested classes (shells of radius 5 and 3); eval and test are the same 2 cases."""
    return write_spheres(root, n=8, size=16, radii=(5, 3), margin=5,
                         splits={"labeled": 2, "unlabeled": 4, "eval": None, "test": "eval"})


@pytest.mark.parametrize("method", ["mean_teacher", "uamt", "cps", "dhc"])
def test_trainer_runs_and_resumes_each_baseline(tmp_path, method):
    data = write_dataset(tmp_path / "data")
    cfg = tiny_cfg(method=method, data_dir=str(data), max_epoch=1, iters_per_epoch=1)
    t = Trainer(cfg, data, tmp_path / "run", device="cpu", progress=False, tensorboard=False)
    summary = t.fit()
    assert t.iterations_run == 2 and summary["epochs"] == 2
    t2 = Trainer(cfg, data, tmp_path / "run", device="cpu", resume=tmp_path / "run", progress=False,
                 tensorboard=False)
    for name, module in t.method.modules().items():
        for a, b in zip(module.state_dict().values(), t2.method.modules()[name].state_dict().values()):
            assert torch.equal(a, b)


def test_cps_cross_supervises_the_unlabeled_images_only(monkeypatch):
    from genericssl.methods import cps as cps_module

    m = get_method("cps")(tiny_cfg(), "cpu")
    seen = {}
    real = cps_module.cross_pseudo_loss

    def spy(a, b):
        seen["shapes"] = (a.shape[0], b.shape[0])
        return real(a, b)

    monkeypatch.setattr(cps_module, "cross_pseudo_loss", spy)
    bl, bu = batches(0)
    m.train()
    m.train_step(bl, bu)
    assert seen["shapes"] == (bu["image"].shape[0],) * 2     # SSL4MIS's 3D CPS: outputs[labeled_bs:]


def test_teacher_noise_is_the_references_in_units_of_the_images_spread():
    from genericssl.methods.mean_teacher import teacher_noise

    torch.manual_seed(0)
    z = torch.randn(2, 1, 24, 24, 24)                      # z-scored: the UA-MT code's input
    x = torch.stack([z[0] * 0.25 + 0.5, z[1] * 0.05 + 0.3])  # min-max-like images of two spreads
    nz, nx = teacher_noise(z), teacher_noise(x)
    for k, s in enumerate((0.25, 0.05)):
        spread = float(x[k].std())
        assert spread == pytest.approx(s, rel=0.05)
        assert float(nx[k].abs().max()) <= 0.2 * spread + 1e-6
        assert float(nx[k].std()) == pytest.approx(float(nz[k].std()) * spread, rel=0.1)
    assert float(nz.abs().max()) <= 0.2 * float(z.flatten(1).std(1).max()) + 1e-6
    assert 0.08 < float(nz.std()) < 0.1                     # the reference's clipped N(0, 0.1^2)
