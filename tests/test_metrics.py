"""The metrics equal medpy's dc, jc, hd95 and asd, and follow METHOD.md's empty-mask conventions."""
import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from genericssl import metrics


def medpy_scores(pred, gt, spacing=None):
    return {
        "dice": medpy_binary.dc(pred, gt) * 100,
        "jaccard": medpy_binary.jc(pred, gt) * 100,
        "hd95": medpy_binary.hd95(pred, gt, voxelspacing=spacing),
        "asd": medpy_binary.asd(pred, gt, voxelspacing=spacing),
    }


def random_blob(shape, rng, fill=0.5, sigma=1.5):
    """A smooth random mask, often several pieces, often touching the border."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise > np.quantile(noise, 1 - fill)


def assert_equal_to_medpy(pred, gt, spacing=None):
    ours = metrics.binary_scores(pred, gt, spacing)
    ref = medpy_scores(pred, gt, spacing)
    for m in metrics.METRICS:
        assert ours[m] == pytest.approx(ref[m], rel=0, abs=1e-6), m


CASES = {
    "2d_blobs": ((40, 33), None),
    "2d_anisotropic": ((40, 33), (0.7, 2.3)),
    "3d_blobs": ((18, 20, 15), None),
    "3d_anisotropic": ((18, 20, 15), (2.5, 0.8, 0.8)),
    "3d_scalar_spacing": ((12, 14, 16), 1.7),
}


@pytest.mark.parametrize("name", CASES)
def test_random_blobs_match_medpy(name):
    shape, spacing = CASES[name]
    rng = np.random.default_rng(len(name))
    for fill_p, fill_g in [(0.3, 0.3), (0.05, 0.4), (0.5, 0.02)]:
        pred = random_blob(shape, rng, fill_p)
        gt = random_blob(shape, rng, fill_g)
        assert_equal_to_medpy(pred, gt, spacing)


def test_object_touching_every_border_matches_medpy():
    gt = np.ones((10, 12, 9), bool)                  # surface is the array's outer shell
    pred = np.zeros_like(gt)
    pred[0:4, :, 3:9] = True                          # touches five of six faces
    assert_equal_to_medpy(pred, gt)
    assert_equal_to_medpy(gt, pred, (1.0, 0.5, 3.0))


def test_single_voxels_match_medpy():
    pred = np.zeros((9, 9, 9), bool)
    gt = np.zeros_like(pred)
    pred[0, 0, 0] = True                              # corner voxel
    gt[6, 2, 8] = True
    assert_equal_to_medpy(pred, gt)
    assert_equal_to_medpy(pred, gt, (0.5, 2.0, 1.5))
    ours = metrics.binary_scores(pred, pred)
    assert (ours["dice"], ours["hd95"], ours["asd"]) == (100.0, 0.0, 0.0)


def test_asd_is_directed_from_prediction_to_ground_truth():
    gt = np.zeros((30, 30), bool)
    gt[10:20, 10:20] = True
    pred = gt.copy()
    pred[0, 0] = True                                 # a far island raises only pred->gt
    ours = metrics.binary_scores(pred, gt)
    assert ours["asd"] == pytest.approx(medpy_binary.asd(pred, gt), abs=1e-12)
    assert ours["asd"] != pytest.approx(medpy_binary.asd(gt, pred))


def test_surface_distances_equal_medpy_private_helper():
    rng = np.random.default_rng(3)
    pred, gt = random_blob((16, 17, 18), rng, 0.2), random_blob((16, 17, 18), rng, 0.3)
    helper = getattr(medpy_binary, "__surface_distances")
    to_gt, to_pred = metrics.surface_distances(pred, gt, (1.0, 2.0, 0.5))
    np.testing.assert_allclose(to_gt, helper(pred, gt, (1.0, 2.0, 0.5)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(to_pred, helper(gt, pred, (1.0, 2.0, 0.5)), rtol=0, atol=1e-9)


@pytest.mark.parametrize("pred_any,gt_any", [(True, False), (False, True)])
def test_class_in_only_one_map_scores_zero_and_128(pred_any, gt_any):
    pred = np.zeros((8, 8, 8), bool)
    gt = np.zeros_like(pred)
    pred[2:4, 2:4, 2:4] = pred_any
    gt[3:6, 3:6, 3:6] = gt_any
    for authors in (False, True):
        s = metrics.binary_scores(pred, gt, (2.0, 2.0, 2.0), authors_empty_score=authors)
        assert s == {"dice": 0.0, "jaccard": 0.0, "hd95": 128.0, "asd": 128.0}


def test_class_absent_from_both_is_perfect_unless_authors_slip_asked():
    empty = np.zeros((5, 6), np.uint8)
    assert metrics.binary_scores(empty, empty) == {"dice": 100.0, "jaccard": 100.0, "hd95": 0.0, "asd": 0.0}
    authors = metrics.binary_scores(empty, empty, authors_empty_score=True)
    assert authors == {"dice": 1.0, "jaccard": 1.0, "hd95": 0.0, "asd": 0.0}


def test_case_scores_per_class_equal_binary_scores():
    rng = np.random.default_rng(7)
    gt = np.zeros((20, 22, 18), np.uint8)
    pred = np.zeros_like(gt)
    gt[random_blob(gt.shape, rng, 0.3)] = 1
    gt[random_blob(gt.shape, rng, 0.1)] = 2
    pred[random_blob(gt.shape, rng, 0.25)] = 1
    pred[random_blob(gt.shape, rng, 0.15)] = 2
    pred[0:3, 0:3, 0:3] = 4                           # class 4 only predicted; class 3 in neither
    spacing = (1.5, 1.0, 0.75)
    s = metrics.case_scores(pred, gt, num_classes=5, spacing=spacing)
    for c in (1, 2):
        ref = medpy_scores(pred == c, gt == c, spacing)
        for m in metrics.METRICS:
            assert s[m][c - 1] == pytest.approx(ref[m], abs=1e-6)
    assert [s[m][2] for m in metrics.METRICS] == [100.0, 100.0, 0.0, 0.0]
    assert [s[m][3] for m in metrics.METRICS] == [0.0, 0.0, 128.0, 128.0]


def test_metric_protocol_averages_cases_then_classes():
    gt = np.zeros((10, 10), np.uint8)
    gt[2:5, 2:5] = 1
    gt[6:9, 6:9] = 2
    half = gt.copy()
    half[6:9, 6:9] = 0                                # class 2 missed: dice 0
    metric = metrics.SegmentationMetrics(num_classes=3)
    metric(gt, gt)
    metric(half, gt)
    agg = metric.aggregate()
    assert agg["dice"] == [100.0, 50.0]
    assert agg["dice_avg"] == 75.0
    assert agg["hd95"] == [0.0, 64.0]
    metric.reset()
    with pytest.raises(ValueError):
        metric.aggregate()


def test_bad_arguments_are_rejected():
    a = np.zeros((4, 4), bool)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.binary_scores(a, np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="spacing"):
        metrics.binary_scores(a, a, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="num_classes"):
        metrics.case_scores(a, a, num_classes=1)
