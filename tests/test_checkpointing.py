"""Activation checkpointing (``checkpoint_levels``): the same computation, less memory kept.

Training with any number of checkpointed levels must give bitwise the weights, gradients,
BatchNorm buffers and random state of training without; the recomputation must not
update BatchNorm's running statistics a second time; and the activations kept for the
backward pass must shrink.
"""
import ctypes

import pytest
import torch

from genericssl.config import TaskConfig, apply_overrides
from genericssl.methods import get_method
from genericssl.models import checkpointing
from genericssl.training import Trainer
from prepared_data import write_spheres

PATCH = (32, 32, 32)


def build(method="ad", levels=0, base_filters=4, patch=PATCH, num_classes=3):
    cfg = TaskConfig(name="t", patch_size=patch, num_classes=num_classes, base_filters=base_filters,
                     batch_size=2, max_epoch=10, checkpoint_levels=levels).validate()
    torch.manual_seed(0)
    m = get_method(method)(cfg, torch.device("cpu"))
    m.finish_setup()
    m.train()
    return m


def batches(m, patch=PATCH, num_classes=3):
    g = torch.Generator().manual_seed(1)
    bl = m.prepare_batch({"image": torch.rand(2, 1, *patch, generator=g),
                          "label": torch.randint(0, num_classes, (2, *patch), generator=g)})
    bu = m.prepare_batch({"image": torch.rand(2, 1, *patch, generator=g)})
    return bl, bu


def train_steps(method, levels, steps=2):
    m = build(method, levels)
    bl, bu = batches(m)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    grads = None
    for _ in range(steps):
        loss, _ = m.train_step(bl, bu if m.uses_unlabeled else None)
        opt.zero_grad()
        loss.backward()
        grads = {n: p.grad.clone() for name, net in m.modules().items()
                 for n, p in net.named_parameters(prefix=name) if p.grad is not None}
        opt.step()
        m.after_step()
    state = {f"{name}.{k}": v.clone() for name, net in m.modules().items() for k, v in net.state_dict().items()}
    return loss.detach(), grads, state, torch.get_rng_state()


@pytest.mark.parametrize("method", ["ad", "cps", "mean_teacher"])
def test_checkpointed_training_is_bitwise_the_plain_one(method):
    ref_loss, ref_grads, ref_state, ref_rng = train_steps(method, 0)
    assert any(k.endswith("running_var") for k in ref_state)
    for levels in (1, 2, 5):
        loss, grads, state, rng = train_steps(method, levels)
        assert torch.equal(loss, ref_loss), levels
        assert grads.keys() == ref_grads.keys()
        for k in ref_grads:
            assert torch.equal(grads[k], ref_grads[k]), (levels, k)
        for k in ref_state:  # weights, running statistics and num_batches_tracked
            assert torch.equal(state[k], ref_state[k]), (levels, k)
        assert torch.equal(rng, ref_rng), levels  # dropout drew the same masks, no more


def test_recomputation_would_update_batchnorm_twice_without_the_guard(monkeypatch):
    _, _, ref_state, _ = train_steps("supervised", 0, steps=1)

    class Nothing:
        def __init__(self, modules):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(checkpointing, "KeepRunningStats", Nothing)
    _, _, state, _ = train_steps("supervised", 5, steps=1)
    counted = [k for k in ref_state if k.endswith("num_batches_tracked")]
    assert all(int(state[k]) == 2 * int(ref_state[k]) for k in counted)
    assert any(not torch.equal(state[k], ref_state[k]) for k in ref_state if k.endswith("running_mean"))


def test_no_checkpointing_without_gradients(monkeypatch):
    """The sampler and validation run no-gradient passes: nothing to keep, nothing to recompute."""
    m = build("ad", levels=5)
    calls = []
    real = checkpointing.run_region
    monkeypatch.setattr(checkpointing, "run_region", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        m.model.d_theta(torch.rand(1, 1, *PATCH))
    assert calls == []
    m.model.d_theta(torch.rand(1, 1, *PATCH))
    assert len(calls) == 9  # stem, four encoder levels, four decoder levels


def _heap_bytes():
    try:
        libc = ctypes.CDLL("libc.so.6")
        info = libc.mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc's mallinfo2 to count the heap")

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    info.restype = Info
    i = info()
    return i.uordblks + i.hblkhd


def kept_bytes(levels):
    """Heap bytes the three gradient paths of an A&D iteration hold until backward."""
    m = build("ad", levels, base_filters=8, patch=(64, 64, 64), num_classes=2)
    bl, bu = batches(m, patch=(64, 64, 64), num_classes=2)
    x_t = torch.rand(2, 2, 64, 64, 64)
    t = torch.tensor([3, 500])
    before = _heap_bytes()
    outs = [m.model.d_xi(x_t, t, bl["image"]), m.model.d_psi(bl["image"]), m.model.d_theta(bu["image"])]
    kept = _heap_bytes() - before
    sum(o.square().mean() for o in outs).backward()
    return kept


def test_checkpointing_keeps_fewer_activations():
    full, top, two, every = (kept_bytes(levels) for levels in (0, 1, 2, 5))
    one_tensor = 2 * 8 * 64 ** 3 * 4  # one full-resolution activation of the batch
    assert full > 20 * one_tensor
    assert top < 0.6 * full and two < 0.3 * full and every < 0.25 * full, (full, top, two, every)


def test_trainer_with_checkpointing_trains_the_same_run(tmp_path):
    data = write_spheres(tmp_path / "data", n=10, size=20, seed=0)
    weights = []
    for levels in (0, 2):
        cfg = apply_overrides(TaskConfig(), dict(
            data_dir=str(data), patch_size=(16, 16, 16), num_classes=2, base_filters=4, batch_size=2,
            max_epoch=1, num_workers=0, seed=3, patience=100, checkpoint_levels=levels)).validate()
        t = Trainer(cfg, data, tmp_path / f"run{levels}", progress=False, tensorboard=False, log=lambda *a: None)
        t.fit()
        weights.append(t.method.model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_levels_are_checked():
    with pytest.raises(Exception, match="checkpoint_levels"):
        apply_overrides(TaskConfig(), {"checkpoint_levels": 6}).validate()
    with pytest.raises(ValueError, match="0..5"):
        build("supervised").model.set_checkpointing(-1)
