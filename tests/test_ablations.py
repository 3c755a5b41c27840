"""The attribution ablations: supervised_dw, supervised_bn, ad_psi."""
import copy
import io

import pytest
import torch
from prepared_data import write_spheres
from torch import nn

from genericssl.config import method_names_light
from genericssl.losses import dice_ce_loss
from genericssl.methods import get_method, method_names
from genericssl.methods.ad import AD
from genericssl.methods.difficulty import DifficultyWeights
from genericssl.training import Trainer
from tiny_methods import C, batches, tiny_cfg

ABLATIONS = ("supervised_dw", "supervised_bn", "ad_psi")

pytestmark = pytest.mark.usefixtures("one_thread")


def first_bn(net: nn.Module) -> nn.Module:
    return next(m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


def sgd_step(m, loss):
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    opt.zero_grad()
    loss.backward()
    opt.step()
    m.after_step()


def test_registered_under_their_file_names():
    assert set(ABLATIONS) <= set(method_names())
    assert method_names_light() == method_names()
    for name in ABLATIONS:
        cls = get_method(name)
        assert cls.name == name and cls.description and cls.__module__.endswith("." + name)
    assert not get_method("supervised_dw").uses_unlabeled
    assert get_method("supervised_bn").uses_unlabeled and get_method("ad_psi").uses_unlabeled
    assert issubclass(get_method("ad_psi"), AD)


# ------------------------------------------------------------------ supervised_dw
def test_supervised_dw_loss_is_dice_ce_weighted_by_its_own_difficulty(monkeypatch):
    torch.manual_seed(0)
    m = get_method("supervised_dw")(tiny_cfg(), "cpu")
    m.train()
    outputs = []
    real = m.model.d_theta
    monkeypatch.setattr(m.model, "d_theta", lambda x: outputs.append(real(x)) or outputs[-1])
    independent = DifficultyWeights(C)
    weights = []
    for i in range(3):
        bl, _ = batches(i)
        loss, logs = m.train_step(bl, None)
        logits = outputs[-1]
        w = independent.update(logits.detach(), bl["label"])
        assert torch.allclose(logs["class_weights"], w)
        assert torch.allclose(loss, dice_ce_loss(logits, bl["label"], weight=w), atol=1e-6)
        assert not torch.allclose(loss, dice_ce_loss(logits, bl["label"]))   # the weights matter
        sgd_step(m, loss)
        weights.append(w.clone())
    assert len(outputs) == 3                      # one forward per step, labeled images only
    assert not torch.allclose(weights[0], weights[1]) and not torch.allclose(weights[1], weights[2])


def test_supervised_dw_resume_continues_identically():
    torch.manual_seed(0)
    m = get_method("supervised_dw")(tiny_cfg(), "cpu")
    m.train()
    for i in range(2):
        loss, _ = m.train_step(batches(i)[0], None)
        sgd_step(m, loss)
    buf = io.BytesIO()
    torch.save({"model": m.model.state_dict(), "method_state": m.extra_state()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    resumed = get_method("supervised_dw")(tiny_cfg(), "cpu")
    resumed.model.load_state_dict(ckpt["model"])
    resumed.load_extra_state(ckpt["method_state"])
    fresh = get_method("supervised_dw")(tiny_cfg(), "cpu")   # the weights' state not restored
    fresh.model.load_state_dict(ckpt["model"])
    bl = batches(5)[0]
    out = {}
    for key, method in (("m", m), ("resumed", resumed), ("fresh", fresh)):
        method.train()
        torch.manual_seed(7)
        out[key] = method.train_step(bl, None)
    assert torch.equal(out["m"][0], out["resumed"][0])
    assert torch.equal(out["m"][1]["class_weights"], out["resumed"][1]["class_weights"])
    assert not torch.allclose(out["m"][1]["class_weights"], out["fresh"][1]["class_weights"])


# ------------------------------------------------------------------ supervised_bn
def test_supervised_bn_batchnorm_sees_unlabeled_images_loss_sees_labeled_only():
    torch.manual_seed(0)
    m = get_method("supervised_bn")(tiny_cfg(), "cpu")
    plain = get_method("supervised")(tiny_cfg(), "cpu")
    plain.model.load_state_dict(m.model.state_dict())
    for method in (m, plain):
        method.finish_setup()
        method.train()
    reference = copy.deepcopy(m.model)          # the same network before the step
    bl, bu = (m.prepare_batch(b) for b in batches(0))
    x_l, y_l, x_u = bl["image"], bl["label"], bu["image"]

    torch.manual_seed(1)
    loss, logs = m.train_step(bl, bu)
    torch.manual_seed(1)
    loss_plain, _ = plain.train_step(bl, None)
    torch.manual_seed(1)
    logits = reference.d_theta(torch.cat([x_l, x_u]))
    want = dice_ce_loss(logits[: x_l.shape[0]], y_l)

    # BatchNorm's running statistics are those of the concatenated batch, not the labeled one
    bn, bn_plain, bn_ref = first_bn(m.model), first_bn(plain.model), first_bn(reference)
    assert torch.allclose(bn.running_mean, bn_ref.running_mean, atol=1e-7)
    assert torch.allclose(bn.running_var, bn_ref.running_var, atol=1e-7)
    assert not torch.allclose(bn.running_mean, bn_plain.running_mean, atol=1e-5)
    assert int(bn.num_batches_tracked) == 1      # one forward, not two
    # the loss is DiceCE on the labeled slice of that forward, with its gradients
    assert torch.allclose(loss, want, atol=1e-6) and float(logs["loss"]) == pytest.approx(want.item(), abs=1e-6)
    assert not torch.allclose(loss, loss_plain, atol=1e-5)   # batch statistics include x_u
    loss.backward()
    want.backward()
    for (k, p), q in zip(m.model.named_parameters(), reference.parameters()):
        assert (p.grad is None) == (q.grad is None), k
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-6), k
    assert all(p.grad is None for k, p in m.model.named_parameters() if k.startswith("decoder_psi."))


def test_supervised_bn_ignores_anything_of_the_unlabeled_batch_but_its_images():
    torch.manual_seed(0)
    m = get_method("supervised_bn")(tiny_cfg(), "cpu")
    m.train()
    bl, bu = batches(0)

    def loss_with(batch_u):
        torch.manual_seed(1)                    # the same dropout masks every time
        return m.train_step(bl, batch_u)[0]

    loss = loss_with(bu)
    with_label = dict(bu, label=torch.randint(0, C, bu["image"].shape[:1] + bu["image"].shape[2:]))
    assert torch.equal(loss_with(with_label), loss)
    assert not torch.allclose(loss_with({"image": torch.rand_like(bu["image"])}), loss)


# ------------------------------------------------------------------ ad_psi
def test_ad_psi_pseudo_labels_are_d_psi_argmax_without_sampling(monkeypatch):
    torch.manual_seed(0)
    m = get_method("ad_psi")(tiny_cfg(), "cpu")

    def no_sampling(*a, **k):
        raise AssertionError("ad_psi must not run the diffusion sampler")

    monkeypatch.setattr(m.model, "sample", no_sampling)
    monkeypatch.setattr(m.diffusion, "sample", no_sampling)
    m.train()
    x_u = batches(0)[1]["image"]
    torch.manual_seed(3)
    pseudo = m.pseudo_labels(x_u)
    torch.manual_seed(3)                        # the same dropout masks
    with torch.no_grad():
        want = m.model.d_psi(x_u).float().softmax(dim=1).argmax(dim=1)
    assert pseudo.shape == (2, 16, 16, 16) and torch.equal(pseudo, want)
    # known D_psi logits decide alone
    psi = torch.zeros(2, C, 16, 16, 16)
    psi[:, 2] = 1.0
    psi[:, 1, ..., :8] = 5.0
    monkeypatch.setattr(m.model, "d_psi", lambda image: psi)
    p = m.pseudo_labels(x_u)
    assert (p[..., :8] == 1).all() and (p[..., 8:] == 2).all()


def test_ad_psi_step_keeps_the_rest_of_ad_and_trains_d_theta(monkeypatch):
    torch.manual_seed(0)
    m = get_method("ad_psi")(tiny_cfg(), "cpu")
    monkeypatch.setattr(m.model, "sample", lambda *a, **k: pytest.fail("sampler called"))
    m.on_epoch_end(3)                           # mu = 1 after the ramp
    m.train()
    bn = m.model.encoder.block_two.ops[0].norm
    n0 = int(bn.num_batches_tracked)
    theta0 = [p.detach().clone() for p in m.model.decoder_theta.parameters()]
    w0 = m.difficulty.weights.clone()
    bl, bu = batches(0)
    loss, logs = m.train_step(bl, bu)
    # D_xi, D_psi on labeled, D_psi for pseudo labels, D_theta: 4 encoder passes (A&D: 14)
    assert int(bn.num_batches_tracked) - n0 == 4
    assert set(logs) >= {"loss", "loss_deno", "loss_diff", "loss_u", "class_weights"}
    assert torch.isfinite(loss) and not torch.equal(m.difficulty.weights, w0)
    assert float(logs["loss"]) == pytest.approx(float(logs["loss_deno"] + logs["loss_diff"] + logs["loss_u"]), rel=1e-5)
    loss.backward()
    for prefix in ("decoder_theta.", "decoder_psi.", "denoise_model.decoder.", "denoise_model.encoder."):
        assert any(p.grad is not None and p.grad.abs().sum() > 0
                   for k, p in m.model.named_parameters() if k.startswith(prefix)), prefix
    torch.optim.SGD(m.parameters(), lr=0.1).step()
    assert all(not torch.equal(a, b) for a, b in zip(theta0, m.model.decoder_theta.parameters())
               if a.numel() > 1)


# ------------------------------------------------------------------ through the trainer
@pytest.mark.parametrize("method", ABLATIONS + ("ad_encoder_no_u", "ad_encoder_no_deno"))
def test_trainer_runs_and_resumes_each_ablation(tmp_path, method):
    data = write_spheres(tmp_path / "data", n=8, size=16, radii=(5, 3), margin=5,
                         splits={"labeled": 2, "unlabeled": 4, "eval": None, "test": "eval"})
    cfg = tiny_cfg(method=method, data_dir=str(data), max_epoch=1, iters_per_epoch=1)
    t = Trainer(cfg, data, tmp_path / "run", device="cpu", progress=False, tensorboard=False)
    summary = t.fit()
    assert t.iterations_run == 2 and summary["epochs"] == 2
    t2 = Trainer(cfg, data, tmp_path / "run", device="cpu", resume=tmp_path / "run", progress=False,
                 tensorboard=False)
    for a, b in zip(t.method.model.state_dict().values(), t2.method.model.state_dict().values()):
        assert torch.equal(a, b)
    state, state2 = t.method.extra_state(), t2.method.extra_state()
    if "difficulty" in state:
        for k, v in state["difficulty"].items():
            assert torch.equal(v, state2["difficulty"][k]), k
