"""Sliding-window and whole-volume inference: window placement, padding, averaging, batching."""
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from genericssl.inference import (authors_pad, axis_strides, overlap_strides, plan_windows, predict_probs,
                                  predict_volume, prepare_model, sliding_window_probs, whole_pad, window_starts)
from genericssl.models.diff_vnet import DiffVNet

PATCH = (16, 32, 32)


def busy_model(num_classes=3, seed=0, spatial_dims=3):
    """A tiny DiffVNet whose labels vary over the volume: with default batch-norm
    statistics a random network gives every voxel the same class."""
    torch.manual_seed(seed)
    net = DiffVNet(1, num_classes, 4, spatial_dims)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.rand((2, 1) + PATCH[-spatial_dims:]))
        net.decoder_theta.out_conv.bias.zero_()
    return net.eval()


class WindowStub(nn.Module):
    """Logits that depend on the voxel and on the window (its mean), so every
    window contributes a different probability to the voxels it shares."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.0, 3.0, -2.0]))

    def forward(self, x):
        m = x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
        return torch.cat([self.w[0] * x, self.w[1] * x + 4 * m, self.w[2] * x + 7 * m * m], dim=1)


def authors_loop(model, image, patch, stride_xy, stride_z):
    """The authors' test_single_case as METHOD.md describes it: numpy, one window at a time."""
    pad = [max((p - s) // 2 + 1, 0) for s, p in zip(image.shape, patch)] \
        if any(s < p for s, p in zip(image.shape, patch)) else [0, 0, 0]
    image = np.pad(image, [(q, q) for q in pad])
    dd, ww, hh = image.shape
    sz = math.ceil((dd - patch[0]) / stride_z) + 1
    sx = math.ceil((ww - patch[1]) / stride_xy) + 1
    sy = math.ceil((hh - patch[2]) / stride_xy) + 1
    score, cnt = None, np.zeros(image.shape, np.float32)
    for z in range(sz):
        zs = min(stride_z * z, dd - patch[0])
        for x in range(sx):
            xs = min(stride_xy * x, ww - patch[1])
            for y in range(sy):
                ys = min(stride_xy * y, hh - patch[2])
                p = image[zs:zs + patch[0], xs:xs + patch[1], ys:ys + patch[2]]
                with torch.no_grad():
                    y1 = torch.softmax(model(torch.from_numpy(p.copy())[None, None]), dim=1)[0].numpy()
                if score is None:
                    score = np.zeros((y1.shape[0],) + image.shape, np.float32)
                score[:, zs:zs + patch[0], xs:xs + patch[1], ys:ys + patch[2]] += y1
                cnt[zs:zs + patch[0], xs:xs + patch[1], ys:ys + patch[2]] += 1
    score /= cnt[None]
    return score, np.argmax(score, axis=0)


# ------------------------------------------------------------------ placement
@pytest.mark.parametrize("size,patch,stride,expected", [
    (20, 16, 4, [0, 4]),
    (16, 16, 4, [0]),                 # axis equal to the patch: one window
    (21, 16, 4, [0, 4, 5]),           # last start 8 not reachable: clamped to s - p
    (160, 112, 16, [0, 16, 32, 48]),
    (160, 112, 64, [0, 48]),
    (96, 80, 16, [0, 16]),
    (97, 80, 16, [0, 16, 17]),
])
def test_window_starts_formula(size, patch, stride, expected):
    assert window_starts(size, patch, stride) == expected
    assert window_starts(size, patch, stride) == [min(k * stride, size - patch)
                                                  for k in range(math.ceil((size - patch) / stride) + 1)]


def test_window_starts_rejects_axis_smaller_than_patch_and_bad_stride():
    with pytest.raises(ValueError):
        window_starts(10, 16, 4)
    with pytest.raises(ValueError):
        window_starts(20, 16, 0)


def test_strides_z_first_axis_xy_the_rest():
    assert axis_strides(3, 16, 4) == (4, 16, 16)
    assert axis_strides(2, 16, 4) == (16, 16)
    assert overlap_strides((112, 112, 80), 0.5) == (56, 56, 40)
    with pytest.raises(ValueError):
        overlap_strides((16,), 1.0)


def test_paper_window_counts():
    # The authors' LA test: 104 windows at 16/4, 16 at 64/16 on a 160x160x96 volume.
    assert plan_windows((160, 160, 96), (112, 112, 80), axis_strides(3, 16, 4)).num_windows == 104
    assert plan_windows((160, 160, 96), (112, 112, 80), axis_strides(3, 64, 16)).num_windows == 16


def test_padding_only_when_an_axis_is_smaller_and_then_every_axis():
    assert authors_pad((16, 40, 32), PATCH) == (0, 0, 0)  # equal is not smaller
    # 12 < 16 -> (16-12)//2+1 = 3; 40 > 32 -> 0; 32 == 32 -> 1
    assert authors_pad((12, 40, 32), PATCH) == (3, 0, 1)
    plan = plan_windows((12, 40, 32), PATCH, (4, 16, 16))
    assert plan.padded_shape == (18, 40, 34)
    assert plan.starts == ((0, 2), (0, 8), (0, 2))
    assert whole_pad((12, 40, 32)) == [(2, 2), (4, 4), (0, 0)]


def test_coverage_counts_match_accumulated_counts():
    plan = plan_windows((21, 37, 40), PATCH, (4, 8, 16))
    acc = np.zeros(plan.padded_shape, np.float32)
    for c in plan.windows():
        acc[tuple(slice(a, a + p) for a, p in zip(c, PATCH))] += 1
    cz, cy, cx = plan.axis_counts()
    np.testing.assert_array_equal(acc, cz[:, None, None] * cy[None, :, None] * cx[None, None, :])
    assert list(plan.windows())[:2] == [(0, 0, 0), (0, 0, 8)]  # last axis innermost, as the authors loop


# ------------------------------------------------------------------ averaging
@pytest.mark.parametrize("shape", [(21, 37, 40), (12, 20, 40)])
def test_equal_weight_average_matches_the_authors_loop(shape):
    model = WindowStub()
    image = np.random.default_rng(0).random(shape).astype(np.float32)
    ref_probs, ref_labels = authors_loop(model, image, PATCH, stride_xy=8, stride_z=4)
    probs, plan = sliding_window_probs(model, image, PATCH, axis_strides(3, 8, 4), batch_windows=3)
    np.testing.assert_allclose(probs.numpy(), ref_probs, rtol=1e-5, atol=1e-6)
    # Averages of softmaxes: each voxel's probabilities sum to one only if every window counts once.
    np.testing.assert_allclose(probs.sum(0).numpy(), 1.0, atol=1e-5)
    labels = predict_volume(model, image, PATCH, stride_xy=8, stride_z=4, authors_padding=True)
    np.testing.assert_array_equal(labels, ref_labels)


def test_volume_smaller_than_patch_crops_back_unless_authors_padding():
    model = busy_model()
    image = np.random.default_rng(1).random((12, 20, 40)).astype(np.float32)
    padded = predict_volume(model, image, PATCH, stride_xy=16, stride_z=4, authors_padding=True)
    assert padded.shape == (18, 34, 40)  # 12+2*3, 20+2*7, 40
    cropped = predict_volume(model, image, PATCH, stride_xy=16, stride_z=4)
    assert cropped.shape == image.shape and cropped.dtype == np.uint8
    np.testing.assert_array_equal(cropped, padded[3:15, 7:27, :])


def test_batched_windows_give_the_same_labels_as_one_at_a_time():
    model = busy_model()
    image = np.random.default_rng(2).random((22, 45, 40)).astype(np.float32)
    kw = dict(stride_xy=16, stride_z=4)
    one = predict_probs(model, image, PATCH, batch_windows=1, **kw)
    batched = predict_probs(model, image, PATCH, batch_windows=5, **kw)  # 12 windows: 5 + 5 + 2
    np.testing.assert_allclose(batched.numpy(), one.numpy(), atol=1e-4)
    labels_one, labels_batched = one.argmax(0).numpy(), batched.argmax(0).numpy()
    assert len(np.unique(labels_one)) == 3  # a map with structure, not one class everywhere
    np.testing.assert_array_equal(labels_batched, labels_one)
    np.testing.assert_array_equal(predict_volume(model, image, PATCH, batch_windows=5, **kw), labels_one)


def test_whole_mode_equals_window_mode_when_the_patch_covers_the_volume():
    model = busy_model()
    image = np.random.default_rng(3).random(PATCH).astype(np.float32)
    whole = predict_volume(model, image, PATCH, mode="whole")
    window = predict_volume(model, image, PATCH, stride_xy=16, stride_z=4)
    assert len(np.unique(window)) > 1
    np.testing.assert_array_equal(whole, window)


def test_whole_mode_pads_to_a_multiple_of_16_and_crops_back():
    model = busy_model()
    image = np.random.default_rng(4).random((19, 33, 40)).astype(np.float32)
    assert predict_volume(model, image, PATCH, mode="whole").shape == image.shape


def test_2d_model_predicts_a_volume_slice_by_slice():
    model = busy_model(spatial_dims=2)
    image = np.random.default_rng(5).random((3, 36, 40)).astype(np.float32)
    labels = predict_volume(model, image, (32, 32), stride_xy=8)
    assert labels.shape == image.shape
    np.testing.assert_array_equal(labels[1], predict_volume(model, image[1], (32, 32), stride_xy=8))


def test_prepare_model_switches_layout_without_changing_labels():
    model = busy_model()
    image = np.random.default_rng(6).random((20, 40, 36)).astype(np.float32)
    a = predict_volume(model, image, PATCH, stride_xy=8, stride_z=4, channels_last=False)
    prepare_model(model, "cpu", channels_last=True)
    assert any(p.dim() == 5 and not p.is_contiguous() for p in model.parameters())
    b = predict_volume(model, image, PATCH, stride_xy=8, stride_z=4)
    assert (a == b).mean() > 0.999


def test_every_window_is_visited_once():
    calls = []

    class Counter(WindowStub):
        def forward(self, x):
            calls.append(x.shape[0])
            return super().forward(x)

    shape = (21, 37, 40)
    plan = plan_windows(shape, PATCH, (4, 8, 8))
    predict_volume(Counter(), np.zeros(shape, np.float32), PATCH, stride_xy=8, stride_z=4, batch_windows=4)
    assert sum(calls) == plan.num_windows == 3 * 2 * 2
    assert calls == [4, 4, 4]
    assert len(set(itertools.product(*plan.starts))) == plan.num_windows
