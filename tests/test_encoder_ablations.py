"""ad_encoder_no_u and ad_encoder_no_deno: A&D with one loss kept out of the shared encoder."""
import pytest
import torch

from genericssl.methods import get_method
from genericssl.methods.ad import AD
from tiny_methods import batches, tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")
VARIANTS = ("ad_encoder_no_u", "ad_encoder_no_deno")
SHARED = ("embedding.", "denoise_model.encoder.")  # the image stem and the encoder


def build(name, mu=1.0, **stops):
    torch.manual_seed(0)                        # the same initial weights for every build
    m = (AD if name == "ad" else get_method(name))(tiny_cfg(), "cpu")
    for k, v in stops.items():
        setattr(m, k, v)
    m.mu = mu
    m.train()
    return m


def step_grads(m, seed=0):
    """One training step from a fixed random state: (loss, {parameter: grad}, buffers)."""
    bl, bu = batches(seed)
    torch.manual_seed(11)                       # t, noise, dropout and Gumbel draws
    loss, logs = m.train_step(bl, bu)
    loss.backward()
    grads = {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
             for k, p in m.model.named_parameters()}
    buffers = {k: b.clone() for k, b in m.model.named_buffers()}
    return loss.detach(), grads, buffers


def is_shared_encoder_weight(key):
    return key.startswith("denoise_model.encoder.") and ".temb_proj." not in key


def close(a, b):
    return torch.allclose(a, b, rtol=1e-6, atol=1e-9)


def test_registered_as_a_and_d_ablations():
    for name in VARIANTS:
        cls = get_method(name)
        assert cls.name == name and cls.__module__.endswith("." + name) and issubclass(cls, AD)
        assert cls.uses_unlabeled and "ablation" in cls.description


def test_with_both_stops_off_the_step_is_a_and_d_exactly():
    loss_ad, g_ad, b_ad = step_grads(build("ad"))
    loss_v, g_v, b_v = step_grads(build("ad_encoder_no_u", stop_u=False, stop_deno=False))
    assert torch.equal(loss_ad, loss_v)
    assert all(torch.equal(g_ad[k], g_v[k]) for k in g_ad)
    assert all(torch.equal(b_ad[k], b_v[k]) for k in b_ad)


def test_no_u_keeps_the_pseudo_label_loss_out_of_the_encoder_only():
    loss_ad, g_ad, b_ad = step_grads(build("ad", mu=2.0))
    _, g_ad0, _ = step_grads(build("ad", mu=0.0))     # A&D's labeled losses alone
    loss_v, g_v, b_v = step_grads(build("ad_encoder_no_u", mu=2.0))
    # The forward passes are A&D's: the same loss and the same BatchNorm statistics.
    assert torch.equal(loss_ad, loss_v)
    assert all(torch.equal(b_ad[k], b_v[k]) for k in b_ad)
    shared = [k for k in g_v if k.startswith(SHARED)]
    assert shared
    # The stem and the encoder get the labeled losses' gradient, not the pseudo labels'...
    assert all(close(g_v[k], g_ad0[k]) for k in shared)
    assert any(not close(g_ad[k], g_ad0[k]) for k in shared)   # (in A&D they do)
    # ...while D_theta learns from the pseudo labels as in A&D.
    theta = [k for k in g_v if k.startswith("decoder_theta.")]
    assert all(close(g_v[k], g_ad[k]) for k in theta)
    assert any(g_v[k].abs().sum() > 0 for k in theta)


def test_no_deno_denoising_path_trains_all_but_the_encoders_shared_weights():
    m = build("ad_encoder_no_deno")
    ref = build("ad")
    bl, _ = batches(0)
    x0 = m.diffusion.label_to_x0(bl["label"], m.cfg.num_classes)
    t = torch.tensor([3, 700])
    x_t = m.diffusion.q_sample(x0, t)
    torch.manual_seed(5)
    out = m.deno_logits(x_t, t, bl["image"])
    torch.manual_seed(5)                        # the same dropout masks
    want = ref.model.d_xi(x_t, t, bl["image"])
    assert torch.equal(out, want)               # the forward pass is D_xi's
    (out ** 2).sum().backward()
    (want ** 2).sum().backward()
    got = dict(m.model.named_parameters())
    exp = dict(ref.model.named_parameters())
    shared = [k for k in got if is_shared_encoder_weight(k)]
    assert shared and all(got[k].grad is None for k in shared)
    own = [k for k in got if k.startswith(("denoise_model.embedding_diffusion.emb.", "denoise_model.decoder."))
           or (k.startswith("denoise_model.encoder.") and ".temb_proj." in k)]
    # Everything else learns as in A&D (fusions A&D never applies, such as the last
    # stage's of a block, get no gradient in either).
    trained = [k for k in own if exp[k].grad is not None]
    assert len(trained) > len(own) // 2
    assert all(got[k].grad is None for k in own if k not in trained)
    for k in trained:
        assert got[k].grad is not None and close(got[k].grad, exp[k].grad), k


def test_no_deno_step_trains_the_encoder_from_the_other_two_losses():
    loss_ad, g_ad, b_ad = step_grads(build("ad"))
    loss_v, g_v, b_v = step_grads(build("ad_encoder_no_deno"))
    assert torch.equal(loss_ad, loss_v)
    assert all(torch.equal(b_ad[k], b_v[k]) for k in b_ad)
    shared = [k for k in g_v if is_shared_encoder_weight(k)]
    assert all(g_v[k].abs().sum() > 0 for k in shared if k.endswith("conv.weight"))  # D_psi, D_theta
    assert any(not close(g_v[k], g_ad[k]) for k in shared)
    for prefix in ("decoder_theta.", "decoder_psi.", "embedding."):
        assert all(close(g_v[k], g_ad[k]) for k in g_v if k.startswith(prefix)), prefix


def test_no_deno_stop_holds_with_activation_checkpointing_on_or_off():
    # Checkpointing recomputes a region's forward in the backward pass from the module's
    # own weights: the stop must not leak through it, and nothing may change with it.
    runs = []
    for levels in (0, 2, 5):
        m = build("ad_encoder_no_deno")
        m.model.set_checkpointing(levels)
        runs.append(step_grads(m))
        assert m.model.encoder.checkpoint_levels == levels
    for loss, g, b in runs[1:]:
        assert torch.equal(loss, runs[0][0])
        assert all(close(g[k], runs[0][1][k]) for k in g)
        assert all(torch.equal(b[k], runs[0][2][k]) for k in b)
