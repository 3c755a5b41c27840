"""BCP (bidirectional copy-paste): its pieces on small tensors, its stages, and resume."""
import math

import pytest
import torch

from genericssl.checkpoint import load_checkpoint
from genericssl.config import TaskConfig, apply_overrides
from genericssl.losses import dice_ce_loss
from genericssl.methods import bcp, get_method
from genericssl.methods.bcp import (BCP, copy_paste, cuboid_mask, keep_largest_components, masked_dice_ce,
                                    pair_halves, region_loss)
from genericssl.training import Callback, Trainer
from prepared_data import write_spheres

pytestmark = pytest.mark.usefixtures("one_thread")

S = (16, 16, 16)


def tiny_cfg(**kw):
    # 4 cases a batch: each half of 2 keeps BatchNorm defined at the 1^3 bottleneck of 16^3.
    base = dict(patch_size=S, num_classes=3, base_filters=2, batch_size=4, max_epoch=16, num_workers=0,
                seed=0, patience=100, method="bcp")
    base.update(kw)
    return apply_overrides(TaskConfig(), base).validate()


def batches(seed=0, b=4, c=3):
    g = torch.Generator().manual_seed(seed)
    return ({"image": torch.rand(b, 1, *S, generator=g), "label": torch.randint(0, c, (b, *S), generator=g)},
            {"image": torch.rand(b, 1, *S, generator=g)})


def sgd_step(m, opt, bl, bu):
    loss, logs = m.train_step(bl, bu)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    m.after_step()
    return loss, logs


def same(a: dict, b: dict, keys=None) -> bool:
    """Two state dicts hold bitwise equal tensors (under ``keys``, default all of ``a``)."""
    return all(torch.equal(a[k], b[k]) for k in (a if keys is None else keys))


def fixed_keep(spatial=S, box=(slice(2, 12), slice(3, 13), slice(1, 11))):
    keep = torch.ones(spatial, dtype=torch.bool)
    keep[box] = False
    return keep


# ------------------------------------------------------------------ the mask
@pytest.mark.parametrize("spatial", [(16, 16, 16), (7, 5, 9), (12, 9), (112, 112, 80)])
def test_cuboid_has_sides_two_thirds_and_lies_inside(spatial):
    g = torch.Generator().manual_seed(0)
    starts = [set() for _ in spatial]
    for _ in range(200 if max(spatial) < 20 else 20):
        keep = cuboid_mask(spatial, 2 / 3, generator=g)
        assert keep.shape == spatial and keep.dtype == torch.bool
        inside = (~keep).nonzero()
        for axis, s in enumerate(spatial):
            side = int(s * 2 / 3)
            lo, hi = int(inside[:, axis].min()), int(inside[:, axis].max())
            assert hi - lo + 1 == side                    # int(s * 2/3) voxels
            assert 0 <= lo and lo + side <= s - 1          # corner in [0, s - side), as context_mask
            starts[axis].add(lo)
        assert int((~keep).sum()) == math.prod(int(s * 2 / 3) for s in spatial)   # one box
    if max(spatial) < 20:
        for axis, s in enumerate(spatial):
            assert starts[axis] == set(range(s - int(s * 2 / 3)))   # every corner of the range drawn
    # Seeded draws repeat (the run's generator, so a resumed run draws the same masks).
    a = cuboid_mask(spatial, 2 / 3, generator=torch.Generator().manual_seed(5))
    b = cuboid_mask(spatial, 2 / 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_copy_paste_mixes_image_and_label_identically_in_both_directions():
    keep = fixed_keep()
    g = torch.Generator().manual_seed(1)
    x_a, x_b, u_a, u_b = (torch.rand(2, 1, *S, generator=g) for _ in range(4))
    # Labels that are a function of the image: mixing both with the same mask keeps that true.
    y = lambda img: (img[:, 0] > 0.5).long()
    y_a, y_b, p_a, p_b = y(x_a), y(x_b), y(u_a) + 1, y(u_b) + 1   # pseudo labels shifted to tell apart
    mixl, mixl_lab = copy_paste(x_a, u_a, keep), copy_paste(y_a, p_a, keep)
    mixu, mixu_lab = copy_paste(u_b, x_b, keep), copy_paste(p_b, y_b, keep)
    # mixl: border labeled, cuboid unlabeled; mixu the other way round.
    assert torch.equal(mixl[..., ~keep], u_a[..., ~keep]) and torch.equal(mixl[..., keep], x_a[..., keep])
    assert torch.equal(mixu[..., ~keep], x_b[..., ~keep]) and torch.equal(mixu[..., keep], u_b[..., keep])
    shift = (~keep).long()
    assert torch.equal(mixl_lab, y(mixl) + shift)           # labeled border, pseudo (shifted) cuboid
    assert torch.equal(mixu_lab, y(mixu) + (1 - shift))     # pseudo border, labeled cuboid
    # The reference's arithmetic form M x + (1 - M) y.
    M = keep.float()
    assert torch.equal(mixl, M * x_a + (1 - M) * u_a)
    assert torch.equal(mixu_lab, (M * p_b + (1 - M) * y_b).long())


def test_pairing_is_two_halves():
    assert pair_halves(4)[0] == 2 and pair_halves(4)[1].tolist() == [2, 3]
    assert pair_halves(2)[1].tolist() == [1]
    assert pair_halves(1)[1].tolist() == [0]             # one case pairs with itself
    assert pair_halves(3)[0] == 2 and pair_halves(3)[1].tolist() == [2, 0]


# ------------------------------------------------------------------ the loss
def test_masked_dice_ce_over_every_voxel_is_dice_ce_loss():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, *S, generator=g, dtype=torch.float64)
    target = torch.randint(0, 3, (2, *S), generator=g)
    everywhere = torch.ones(S, dtype=torch.bool)
    assert torch.allclose(masked_dice_ce(logits, target, everywhere), dice_ce_loss(logits, target), atol=1e-12)
    logits2d, target2d = logits[:, :, 0], target[:, 0]    # any number of spatial axes
    assert torch.allclose(masked_dice_ce(logits2d, target2d, torch.ones(S[1:], dtype=torch.bool)),
                          dice_ce_loss(logits2d, target2d), atol=1e-12)


def test_masked_dice_ce_sees_only_its_region():
    logits = torch.tensor([[[2.0, 0.0, 5.0, -3.0], [0.0, 1.0, -5.0, 3.0]]], dtype=torch.float64)  # (1, 2, 4)
    target = torch.tensor([[0, 1, 1, 0]])
    region = torch.tensor([True, True, False, False])
    got = masked_dice_ce(logits, target, region)
    # By hand on voxels 0 and 1 only: CE mean, then the foreground class's soft Dice.
    p = logits[0, :, :2].softmax(0)
    ce = -(torch.log(p[0, 0]) + torch.log(p[1, 1])) / 2
    tp, fp, fn = p[1, 1], p[1, 0], 1 - p[1, 1]
    assert got.item() == pytest.approx((ce - (2 * tp + 1) / (2 * tp + fp + fn + 1 + 1e-8)).item(), abs=1e-12)
    other = logits.clone()
    other[..., 2:] = torch.randn(1, 2, 2, dtype=torch.float64)   # outside the region: no effect
    assert masked_dice_ce(other, target, region).item() == pytest.approx(got.item(), abs=1e-12)


def test_empty_region_contributes_zero_not_nan():
    logits = torch.randn(2, 3, *S, requires_grad=True)
    target = torch.randint(0, 3, (2, *S))
    nowhere = torch.zeros(S, dtype=torch.bool)
    loss = masked_dice_ce(logits, target, nowhere)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all() and not logits.grad.any()
    everywhere = ~nowhere    # a cuboid of nothing: region_loss is the border's term alone
    both = region_loss(logits, target, torch.zeros_like(target), everywhere, 1.0, 0.5)
    assert both.item() == pytest.approx(masked_dice_ce(logits, target, everywhere).item(), abs=1e-6)


def test_region_weights():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, *S, generator=g, dtype=torch.float64)
    t_border, t_cuboid = (torch.randint(0, 3, (2, *S), generator=g) for _ in range(2))
    keep = fixed_keep()
    border, cuboid = masked_dice_ce(logits, t_border, keep), masked_dice_ce(logits, t_cuboid, ~keep)
    assert region_loss(logits, t_border, t_cuboid, keep, 1.0, 0.5).item() == pytest.approx(
        (border + 0.5 * cuboid).item(), abs=1e-12)
    assert region_loss(logits, t_border, t_cuboid, keep, 0.5, 1.0).item() == pytest.approx(
        (0.5 * border + cuboid).item(), abs=1e-12)


def test_step_wires_both_directions_with_half_weight_on_pseudo_labels(monkeypatch):
    m = get_method("bcp")(tiny_cfg(num_classes=2), "cpu")
    m.start_self_training()
    m.largest_cc = False
    assert m.mu == 0.5
    keep = fixed_keep()
    monkeypatch.setattr(m, "mask_for", lambda image: keep)
    # The teacher says "foreground where the image is > 0.5"; the student's passes are recorded.
    monkeypatch.setattr(m.teacher, "d_theta", lambda x: torch.cat([0.5 - x, x - 0.5], dim=1))
    seen, calls = [], []
    monkeypatch.setattr(m.model, "d_theta", lambda x: seen.append(x) or torch.zeros(x.shape[0], 2, *S))
    monkeypatch.setattr(bcp, "region_loss", lambda logits, tb, tc, k, wb, wc: calls.append((tb, tc, k, wb, wc))
                        or torch.tensor(float(len(calls))))
    bl, bu = batches(4, c=2)
    loss, logs = m.train_step(bl, bu)
    x, y, u = bl["image"], bl["label"], bu["image"]
    p = (u[:, 0] > 0.5).long()
    assert len(seen) == 2
    assert torch.equal(seen[0], torch.where(keep, x[:2], u[:2]))   # mixl: labeled border, unlabeled cuboid
    assert torch.equal(seen[1], torch.where(keep, u[2:], x[2:]))   # mixu: unlabeled border, labeled cuboid
    (tb_l, tc_l, k_l, wb_l, wc_l), (tb_u, tc_u, k_u, wb_u, wc_u) = calls
    assert torch.equal(tb_l, y[:2]) and torch.equal(tc_l, p[:2]) and (wb_l, wc_l) == (1.0, 0.5)
    assert torch.equal(tb_u, p[2:]) and torch.equal(tc_u, y[2:]) and (wb_u, wc_u) == (0.5, 1.0)
    assert k_l is keep and k_u is keep
    assert loss.item() == 3.0 and logs["pretrain"].item() == 0.0


def test_pretraining_step_mixes_labeled_halves(monkeypatch):
    m = get_method("bcp")(tiny_cfg(), "cpu")
    assert m.pretraining
    keep = fixed_keep()
    monkeypatch.setattr(m, "mask_for", lambda image: keep)
    monkeypatch.setattr(m.teacher, "d_theta", lambda x: pytest.fail("the teacher ran while pre-training"))
    seen = []
    logits = torch.randn(2, 3, *S)
    monkeypatch.setattr(m.model, "d_theta", lambda x: seen.append(x) or logits)
    bl, bu = batches(5)
    loss, logs = m.train_step(bl, bu)
    x, y = bl["image"], bl["label"]
    assert len(seen) == 1 and torch.equal(seen[0], torch.where(keep, x[:2], x[2:]))
    assert loss.item() == pytest.approx(dice_ce_loss(logits, torch.where(keep, y[:2], y[2:])).item(), abs=1e-6)
    assert logs["pretrain"].item() == 1.0 and logs["loss_u"].item() == 0.0


# ------------------------------------------------------------------ pseudo labels
def test_largest_component_per_class_and_case():
    labels = torch.zeros(3, 6, 6, 6, dtype=torch.long)
    labels[0, 0:2, 0:2, 0:2] = 1          # case 0: class 1 big (8) and small (1) blobs
    labels[0, 5, 5, 5] = 1
    labels[0, 3, 0, 0] = 2                # class 2: two voxels touching at a corner only (26-connected)
    labels[0, 4, 1, 1] = 2
    labels[0, 0, 5, 0] = 2                # and a lone voxel, dropped
    labels[1, 4, 4, 4] = 1                # case 1: its own largest blob is kept, whatever case 0 holds
    got = keep_largest_components(labels, 3)
    want = labels.clone()
    want[0, 5, 5, 5] = 0
    want[0, 0, 5, 0] = 0
    assert torch.equal(got, want) and got.dtype == labels.dtype
    assert torch.equal(got[2], labels[2])  # no foreground: left as it is


def test_pseudo_labels_are_the_teachers_argmax_then_largest_component(monkeypatch):
    m = get_method("bcp")(tiny_cfg(num_classes=2), "cpu")
    u = torch.zeros(2, 1, *S)
    u[0, 0, 1:4, 1:4, 1:4] = 1.0
    u[0, 0, 10, 10, 10] = 1.0             # a stray voxel the component filter removes
    monkeypatch.setattr(m.teacher, "d_theta", lambda x: torch.cat([0.5 - x, x - 0.5], dim=1))
    monkeypatch.setattr(m.model, "d_theta", lambda x: pytest.fail("pseudo labels come from the teacher"))
    p = m.pseudo_labels(u)
    assert int(p[0].sum()) == 27 and p[0, 10, 10, 10] == 0 and not p[1].any()
    m.largest_cc = False
    assert int(m.pseudo_labels(u)[0].sum()) == 28


# ------------------------------------------------------------------ the stages
def test_default_schedule():
    # (max_epoch + 1) epochs; pre-training 2/17 of them, at least 1, leaving at least 1.
    for max_epoch, pretrain in [(0, 0), (1, 1), (3, 1), (16, 2), (169, 20), (299, 35)]:
        assert BCP.default_pretrain_epochs(tiny_cfg(max_epoch=max_epoch)) == pretrain


def test_teacher_untouched_while_pretraining_copied_at_switch_then_ema():
    m = get_method("bcp")(tiny_cfg(), "cpu")          # max_epoch 16: epochs 0 and 1 pre-train
    assert m.pretrain_epochs == 2 and m.pretraining and m.mu == 0.5
    assert not {id(p) for p in m.parameters()} & {id(q) for q in m.teacher.parameters()}   # EMA only
    m.train()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    teacher0 = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    student0 = [p.detach().clone() for p in m.model.parameters()]
    for epoch in range(2):
        for i in range(2):
            sgd_step(m, opt, *batches(10 * epoch + i))
            assert same(teacher0, m.teacher.state_dict())
        m.on_epoch_end(epoch)
        assert m.epochs_done == epoch + 1
        assert m.pretraining == (epoch == 0)
    assert any(not torch.equal(a, b) for a, b in zip(student0, m.model.parameters()))
    # The switch: the teacher is the pre-trained student, parameters and BatchNorm buffers.
    assert m.self_training
    assert same(m.model.state_dict(), m.teacher.state_dict())
    # Self-training: after each step, teacher = 0.99 teacher + 0.01 student, parameters only.
    for i in range(2):
        t_before = [p.detach().clone() for p in m.teacher.parameters()]
        loss, logs = m.train_step(*batches(100 + i))
        opt.zero_grad()
        loss.backward()
        opt.step()
        t_bn = {k: v.clone() for k, v in m.teacher.state_dict().items() if "running" in k}
        m.after_step()
        for t, t0, s in zip(m.teacher.parameters(), t_before, m.model.parameters()):
            assert torch.allclose(t, 0.99 * t0 + 0.01 * s, atol=1e-7)
        assert same(t_bn, m.teacher.state_dict())   # buffers: its own
        assert logs["pretrain"].item() == 0.0 and float(logs["loss_u"]) > 0
    # The teacher's running statistics come from its own training-mode passes, not the student's.
    t_state, s_state = m.teacher.state_dict(), m.model.state_dict()
    assert not same(t_state, s_state, [k for k in t_state if "running_mean" in k])
    assert m.predictor() is m.model
    # State round trip.
    m2 = get_method("bcp")(tiny_cfg(seed=1), "cpu")
    m2.load_extra_state(m.extra_state())
    assert m2.self_training and m2.epochs_done == 2 and m2.mu == 0.5
    assert same(m.teacher.state_dict(), m2.teacher.state_dict())


def test_resume_with_a_shorter_schedule_switches_at_once():
    m = get_method("bcp")(tiny_cfg(max_epoch=50), "cpu")      # 6 pre-training epochs
    for e in range(3):
        m.on_epoch_end(e)
    state = m.extra_state()
    assert not state["self_training"]
    with torch.no_grad():
        next(m.model.parameters()).add_(1.0)
    m2 = get_method("bcp")(tiny_cfg(max_epoch=16), "cpu")     # 2: already over
    m2.model.load_state_dict(m.model.state_dict())
    m2.load_extra_state(state)
    assert m2.self_training and not m2.pretraining
    assert same(m2.model.state_dict(), m2.teacher.state_dict())


# ------------------------------------------------------------------ through the trainer
class Switch(Callback):
    """Per epoch: the stage it trained in, and whether teacher == student afterwards."""

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, trainer, record):
        m = trainer.method
        self.seen.append((record["epoch"], record["pretrain"], same(m.model.state_dict(), m.teacher.state_dict())))


def test_trainer_crosses_the_switch_and_resumes_bitwise(tmp_path, monkeypatch):
    monkeypatch.setattr(BCP, "PRETRAIN_FRACTION", 0.5)        # 4 epochs: 0-1 pre-train, 2-3 self-train
    data = write_spheres(tmp_path / "data", n=10, size=16, radii=(5, 3), margin=5,
                         splits={"labeled": 4, "unlabeled": 4, "eval": None, "test": "eval"})
    cfg = tiny_cfg(data_dir=str(data), max_epoch=3, iters_per_epoch=2)
    switch = Switch()
    Trainer(cfg, data, tmp_path / "full", device="cpu", progress=False, tensorboard=False,
            callbacks=[switch]).fit()
    # on_epoch_end(epoch) runs before the epoch's record: the switch follows epoch 1.
    assert switch.seen == [(0, 1.0, False), (1, 1.0, True), (2, 0.0, False), (3, 0.0, False)]
    ref = load_checkpoint(tmp_path / "full" / "ckpts" / "last.pth")
    assert ref["method_state"]["self_training"] and ref["method_state"]["epochs_done"] == 4
    # Killed in epoch 1 (resumes mid-pre-training), 2 (at the switch) and 3 (mid-self-training).
    for dies in (1, 2, 3):
        run = tmp_path / f"crash{dies}"
        t = Trainer(cfg, data, run, device="cpu", progress=False, tensorboard=False)
        real = t._train_epoch

        def train_epoch(epoch, real=real, dies=dies):
            if epoch == dies:
                raise KeyboardInterrupt
            return real(epoch)

        t._train_epoch = train_epoch
        with pytest.raises(KeyboardInterrupt):
            t.fit()
        resumed = Trainer(cfg, data, run, device="cpu", progress=False, tensorboard=False, resume=run)
        assert resumed.start_epoch == dies and resumed.method.pretraining == (dies < 2)
        resumed.fit()
        got = load_checkpoint(run / "ckpts" / "last.pth")
        for k, v in ref["state_dict"].items():
            assert torch.equal(v, got["state_dict"][k]), (dies, k)
        for k, v in ref["method_state"]["teacher"].items():
            assert torch.equal(v, got["method_state"]["teacher"][k]), (dies, k)
        assert {k: v for k, v in ref["method_state"].items() if k != "teacher"} == \
            {k: v for k, v in got["method_state"].items() if k != "teacher"}
        for a, b in zip(ref["optimizer"]["state"].values(), got["optimizer"]["state"].values()):
            assert torch.equal(a["momentum_buffer"], b["momentum_buffer"]), dies
        assert [h["loss"] for h in ref["history"]] == [h["loss"] for h in got["history"]]
