"""Strong augmentation (METHOD.md, "Strong augmentation")."""
import math

import numpy as np
import pytest
from scipy import ndimage

from genericssl.data import augment
from genericssl.data.augment import (StrongAugment, center_crop, crop_padding, random_crop,
                                     resample, rotation_matrix)


def _blob(shape, centre, radius):
    grid = np.indices(shape).astype(float)
    d2 = sum((g - c) ** 2 for g, c in zip(grid, centre))
    return d2 < radius ** 2


# ---------------------------------------------------------------- cropping
def test_padding_only_axes_not_longer_than_patch():
    assert crop_padding((40, 100, 80), (64, 64, 80), 1) == [13, 0, 1]
    assert crop_padding((100, 100, 81), (64, 64, 80), 1) == [0, 0, 0]
    # The 2D preset's extra 2: an axis one or two longer than the patch gets 1
    # (the authors' max((p-s)//2 + 2, 0)) once some axis needs padding.
    assert crop_padding((200, 226), (224, 224), 2) == [14, 1]


def test_random_crop_start_range_never_draws_last_position():
    shape, patch = (10, 13), (6, 8)
    index = np.arange(np.prod(shape)).reshape(shape).astype(np.float32)
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(400):
        img, lab = random_crop(index, None, patch, 1, rng)
        assert lab is None and img.shape == patch
        starts.add(divmod(int(img[0, 0]), shape[1]))
    assert {a for a, _ in starts} == set(range(0, 10 - 6))
    assert {b for _, b in starts} == set(range(0, 13 - 8))


def test_random_crop_pads_short_axes_with_zeros():
    image = np.ones((5, 20), np.float32)
    label = np.ones((5, 20), np.uint8)
    img, lab = random_crop(image, label, (8, 16), 1, np.random.default_rng(1))
    # axis 0: 5 + 2 * ((8-5)//2 + 1) = 9 -> start in [0, 1) = 0; rows 0, 1 are padding
    assert img.shape == (8, 16) and lab.shape == (8, 16)
    assert np.all(img[:2] == 0) and np.all(img[2:7] == 1) and np.all(img[7:] == 0)
    assert np.array_equal(lab, img.astype(np.uint8))


def test_random_crop_equal_size_without_padding_starts_at_zero():
    image = np.arange(64, dtype=np.float32).reshape(8, 8)
    img, _ = random_crop(image, None, (8, 8), 0, np.random.default_rng(0))
    assert np.array_equal(img, image)


def test_center_crop_start_is_python_round():
    rows = np.arange(13, dtype=np.float32)[:, None] * np.ones((1, 20), np.float32)
    img, _ = center_crop(rows, None, (8, 16), 1)
    assert img[0, 0] == round((13 - 8) / 2)  # 2: round half to even, as the authors
    img, _ = center_crop(rows[:11], None, (8, 16), 1)
    assert img[0, 0] == 2                    # round(1.5)
    small = np.ones((6, 6), np.float32)
    img, _ = center_crop(small, None, (8, 8), 1)
    # padded by 2 per side to 10, start round(1) = 1: one padded row/column each side
    assert img.shape == (8, 8) and img[0].sum() == 0 and img[1, 1] == 1 and img[7].sum() == 0


# ---------------------------------------------------------------- intensity transforms
@pytest.fixture
def patch():
    rng = np.random.default_rng(3)
    return (ndimage.gaussian_filter(rng.random((20, 24, 22)), 1.5) * 3 + 1).astype(np.float32)


def test_brightness_scales_by_one_factor(patch):
    out, _ = augment.brightness(patch, None, np.random.default_rng(0))
    ratio = out / patch
    assert np.allclose(ratio, ratio.flat[0], rtol=1e-5)
    assert 0.7 <= ratio.flat[0] <= 1.3


def test_contrast_keeps_min_max_bounds_and_scales_about_mean(patch):
    factors = []
    for seed in range(20):
        out, _ = augment.contrast(patch, None, np.random.default_rng(seed))
        assert out.min() >= patch.min() - 1e-6 and out.max() <= patch.max() + 1e-6
        mean = patch.mean()
        inside = (out > patch.min() + 1e-4) & (out < patch.max() - 1e-4) & (abs(patch - mean) > 0.05)
        f = (out[inside] - mean) / (patch[inside] - mean)
        assert np.allclose(f, np.median(f), atol=1e-3)
        factors.append(np.median(f))
    assert min(factors) < 1 < max(factors) and 0.7 <= min(factors) and max(factors) <= 1.3


def test_gamma_restores_mean_and_std_and_keeps_order(patch):
    for seed in range(5):
        out, _ = augment.gamma(patch, None, np.random.default_rng(seed))
        assert out.mean() == pytest.approx(patch.mean(), rel=1e-4)
        assert out.std() == pytest.approx(patch.std(), rel=1e-4)
        order = np.argsort(patch.ravel())
        assert np.all(np.diff(out.ravel()[order]) >= -1e-5)


def test_blur_reflects_at_border():
    const = np.full((12, 12, 12), 5.0, np.float32)
    out, _ = augment.blur(const, None, np.random.default_rng(0))
    assert np.allclose(out, 5.0)      # zero padding would darken the faces
    noise = np.random.default_rng(1).standard_normal((16, 16, 16)).astype(np.float32)
    out, _ = augment.blur(noise, None, np.random.default_rng(0))
    assert out.std() < 0.5 * noise.std()


# ---------------------------------------------------------------- spatial transforms
def test_rotation_is_about_first_axis_like_batchgenerators():
    rng = np.random.default_rng(0)
    img = ndimage.gaussian_filter(rng.random((10, 24, 28)), 2).astype(np.float32)
    angle = 0.2
    matrix = rotation_matrix(angle, 3)
    centre = (np.array(img.shape) - 1) / 2
    out, _ = resample(img, None, matrix, centre - matrix @ centre)
    # batchgenerators: centred mesh @ rotation_x, re-centred, map_coordinates order 3
    coords = np.indices(img.shape).astype(float) - centre[:, None, None, None]
    rot_x = np.array([[1, 0, 0], [0, math.cos(angle), -math.sin(angle)],
                      [0, math.sin(angle), math.cos(angle)]])
    coords = (coords.reshape(3, -1).T @ rot_x).T.reshape(coords.shape) + centre[:, None, None, None]
    ref = ndimage.map_coordinates(img.astype(float), coords, order=3, mode="constant", cval=0)
    assert np.abs(out - ref).max() < 1e-5


def test_rotation_keeps_label_values_and_volume():
    shape = (16, 40, 40)
    label = np.zeros(shape, np.uint8)
    label[_blob(shape, (7.5, 19.5, 19.5), 12)] = 1
    label[_blob(shape, (7.5, 14, 25), 5)] = 2
    image = label.astype(np.float32)
    for seed in range(3):
        out, lab = augment.rotate(image, label, np.random.default_rng(seed))
        assert set(np.unique(lab)) <= {0, 1, 2}
        for v in (1, 2):
            assert abs((lab == v).sum() / (label == v).sum() - 1) < 0.1
        # rotation about axis 0: a column along axis 0 stays a column
        cyl = np.broadcast_to((label == 1).any(axis=0), shape).astype(np.uint8)
        _, moved = augment.rotate(image, cyl, np.random.default_rng(seed))
        assert np.all(moved == moved[:1])


def test_label_resampling_is_thresholded_linear_not_nearest():
    label = np.zeros((5, 9, 9), np.uint8)
    label[2, 4, 4] = 3
    image = label.astype(np.float32)
    matrix, offset = np.eye(3), np.array([0.0, 0.4, 0.4])
    _, lab = resample(image, label, matrix, offset)
    # Output (2, 4, 4) samples (2, 4.4, 4.4): the mask's bilinear value is
    # 0.6 * 0.6 = 0.36 < 0.5, so the voxel is lost; nearest neighbour keeps it.
    nearest = ndimage.affine_transform(label, matrix, offset, order=0)
    assert nearest[2, 4, 4] == 3
    assert lab.sum() == 0
    label[2, 4:6, 4:6] = 3
    _, lab = resample(image, label, matrix, offset)
    # (5, 5) samples (5.4, 5.4): 0.36 again, lost; nearest would keep all four.
    assert lab[2, 4, 4] == 3 and (lab == 3).sum() == 3 and lab[2, 5, 5] == 0


def test_scaling_zooms_in_or_does_nothing():
    shape = (24, 24, 24)
    label = _blob(shape, (11.5, 11.5, 11.5), 6).astype(np.uint8)
    image = label.astype(np.float32)
    seen = set()
    for seed in range(12):
        _, lab = augment.scale(image, label, np.random.default_rng(seed))
        ratio = lab.sum() / label.sum()
        if ratio == 1.0:
            seen.add("none")
            assert np.array_equal(lab, label)
        else:
            seen.add("zoom")
            assert 1.0 < ratio < (1 / 0.7) ** 3 * 1.1
    assert seen == {"none", "zoom"}


# ---------------------------------------------------------------- the composition
def test_three_distinct_transforms_each_with_probability(monkeypatch):
    calls = []

    def spy(name):
        def f(image, label, rng):
            calls[-1].append(name)
            return image, label
        return f

    monkeypatch.setattr(augment, "TRANSFORMS", {n: spy(n) for n in augment.TRANSFORM_NAMES})
    aug = StrongAugment((8, 8, 8), prob=1.0)
    rng = np.random.default_rng(0)
    image = np.zeros((10, 10, 10), np.float32)
    orders = set()
    for _ in range(200):
        calls.append([])
        aug(image, None, rng)
        assert len(calls[-1]) == 3 and len(set(calls[-1])) == 3
        orders.add(tuple(calls[-1]))
    assert len(orders) > 60   # 120 ordered triples exist: order is random too
    aug = StrongAugment((8, 8, 8), prob=0.7)
    calls.clear()
    for _ in range(300):
        calls.append([])
        aug(image, None, rng)
    rate = sum(map(len, calls)) / (3 * 300)
    assert 0.63 < rate < 0.77


def test_strong_augment_reproducible_2d_and_3d():
    rng = np.random.default_rng(5)
    for shape, patch in (((40, 36, 30), (32, 32, 16)), ((50, 40), (32, 32))):
        image = rng.random(shape).astype(np.float32)
        label = (image > 0.6).astype(np.uint8) + (image > 0.9)
        aug = StrongAugment(patch, 1)
        a = aug(image, label, np.random.default_rng(11))
        b = aug(image, label, np.random.default_rng(11))
        c = aug(image, label, np.random.default_rng(12))
        assert a[0].shape == patch and a[0].dtype == np.float32 and a[1].dtype == np.uint8
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        assert not np.array_equal(a[0], c[0])
        assert set(np.unique(a[1])) <= {0, 1, 2}
        zero = np.zeros(shape, np.uint8)
        assert not aug(image, zero, np.random.default_rng(3))[1].any()


def test_channels_move_together_and_take_their_own_intensities():
    from genericssl.data.augment import StrongAugment

    rng0 = np.random.default_rng(0)
    image = rng0.normal(size=(20, 20, 20)).astype(np.float32)
    label = (rng0.random((20, 20, 20)) > 0.7).astype(np.uint8)
    spatial = StrongAugment((16, 16, 16), num_transforms=2, prob=1.0, transforms=("rotation", "scaling"))
    for seed in range(4):
        one = spatial(image, label, np.random.default_rng(seed))
        two = spatial(np.stack([image, image * 2]), label, np.random.default_rng(seed))
        # The same crop, rotation and scale for every channel and the label, and the same as one channel.
        assert two[0].shape == (2, 16, 16, 16)
        assert np.array_equal(two[0][0], one[0]) and np.array_equal(two[1], one[1])
        assert np.allclose(two[0][1], 2 * one[0], atol=1e-4)
    bright = StrongAugment((16, 16, 16), num_transforms=1, prob=1.0, transforms=("brightness",))
    out, _ = bright(np.stack([image, image]), label, np.random.default_rng(1))
    f0 = np.median(out[0] / np.where(out[1] == 0, 1, out[1]))
    assert not np.isclose(f0, 1.0)            # each channel drew its own brightness factor
