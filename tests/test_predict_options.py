"""Prediction options: probabilities, Gaussian blending, mirror TTA, ensembles, the largest
component, viewer label files, and export round trips."""
import itertools
import json

import numpy as np
import pytest
import torch
from torch import nn

from genericssl.config import TaskConfig
from genericssl.inference import mirror_flips, predict_probs, predict_volume
from genericssl.labelfiles import class_names, itksnap_text, slicer_text, write_label_files
from genericssl.models.diff_vnet import DiffVNet
from genericssl.postprocess import largest_component, parse_classes

PATCH = (16, 16, 16)


def _net(seed=0, classes=3, cin=1):
    torch.manual_seed(seed)
    return DiffVNet(cin, classes, 4, 3).eval()


def _volume(shape=(40, 32, 24), seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize("blend", ["uniform", "gaussian"])
def test_probabilities_sum_to_one_and_their_argmax_is_the_label_map(blend):
    net, x = _net(), _volume()
    probs = predict_probs(net, x, PATCH, stride_xy=8, stride_z=8, blend=blend)
    assert probs.shape == (3,) + x.shape
    assert torch.allclose(probs.sum(0), torch.ones(x.shape), atol=1e-5)
    labels = predict_volume(net, x, PATCH, stride_xy=8, stride_z=8, blend=blend)
    assert np.array_equal(labels, probs.argmax(0).numpy())


def test_gaussian_blend_changes_the_weights_not_the_windows():
    # A model whose softmax is the same for every window gives the same map under either weighting.
    class Const(nn.Module):
        in_channels, spatial_dims = 1, 3

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([0.3, -0.2]))

        def forward(self, x):
            return self.w.view(1, 2, 1, 1, 1).expand(x.shape[0], 2, *x.shape[2:]).clone()

    x = _volume((20, 20, 20))
    u = predict_probs(Const(), x, PATCH, stride_xy=8, stride_z=8)
    g = predict_probs(Const(), x, PATCH, stride_xy=8, stride_z=8, blend="gaussian")
    assert torch.allclose(u, g, atol=1e-6)
    # A real network: the weighting does change the softmax where windows overlap.
    net = _net()
    assert not torch.allclose(predict_probs(net, x, PATCH, stride_xy=8, stride_z=8),
                              predict_probs(net, x, PATCH, stride_xy=8, stride_z=8, blend="gaussian"))


class MirrorSymmetric(nn.Module):
    """net averaged over the 8 flips: flipping its input flips its output."""

    def __init__(self, net):
        super().__init__()
        self.net, self.in_channels, self.spatial_dims = net, net.in_channels, 3

    def forward(self, x):
        outs = [torch.flip(self.net(torch.flip(x, [2 + a for a in f])), [2 + a for a in f])
                for f in mirror_flips(3)]
        return sum(outs) / len(outs)


def test_mirror_tta_of_a_mirror_symmetric_model_changes_nothing():
    sym, x = MirrorSymmetric(_net()), _volume((32, 32, 32))
    # Windows at 0, 8, 16 along each axis: the same set after a flip.
    plain = predict_probs(sym, x, PATCH, stride_xy=8, stride_z=8)
    tta = predict_probs(sym, x, PATCH, stride_xy=8, stride_z=8, tta="mirror")
    assert torch.allclose(plain, tta, atol=1e-5)
    # ... while it does change a plain network's output.
    net = _net()
    assert not torch.allclose(predict_probs(net, x, PATCH, stride_xy=8, stride_z=8),
                              predict_probs(net, x, PATCH, stride_xy=8, stride_z=8, tta="mirror"), atol=1e-4)
    assert len(mirror_flips(3)) == 8 and len(mirror_flips(2)) == 4 and mirror_flips(3, "none") == [()]


def test_an_ensemble_of_one_is_that_model_and_of_two_is_their_mean():
    a, b, x = _net(0), _net(1), _volume()
    pa = predict_probs(a, x, PATCH, stride_xy=8, stride_z=8)
    assert torch.equal(predict_probs([a], x, PATCH, stride_xy=8, stride_z=8), pa)
    pb = predict_probs(b, x, PATCH, stride_xy=8, stride_z=8)
    both = predict_probs([a, b], x, PATCH, stride_xy=8, stride_z=8)
    assert torch.allclose(both, (pa + pb) / 2, atol=1e-6)
    with pytest.raises(ValueError, match="disagree"):
        predict_probs([a, _net(2, classes=2)], x, PATCH, stride_xy=8, stride_z=8)


def test_largest_component_keeps_the_larger_blob_per_class():
    lab = np.zeros((20, 20, 20), np.uint8)
    lab[2:8, 2:8, 2:8] = 1       # 216 voxels
    lab[12:15, 12:15, 12:15] = 1  # 27 voxels, apart
    lab[2:5, 12:18, 2:5] = 2     # class 2: one blob
    out = largest_component(lab, [1, 2])
    assert (out == 1).sum() == 216 and out[13, 13, 13] == 0
    assert np.array_equal(out == 2, lab == 2)
    assert np.array_equal(largest_component(lab, []), lab)
    assert parse_classes("all", 3) == [1, 2] and parse_classes("2", 3) == [2]
    with pytest.raises(ValueError, match="not foreground"):
        parse_classes("0,5", 3)


def test_label_files_carry_the_dataset_class_names(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "left atrium"}}))
    names = class_names(2, tmp_path)
    assert names == {0: "background", 1: "left atrium"}
    itk, ctbl = write_label_files(tmp_path / "out", names)
    assert '"left atrium"' in itk.read_text() and '"Clear Label"' in itk.read_text()
    assert "1 left_atrium" in ctbl.read_text()
    # nnU-Net's dataset.json maps names to values.
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "tumour": 1}}))
    assert class_names(2, tmp_path)[1] == "tumour"
    assert class_names(3, None)[2] == "class 2"


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_round_trips(tmp_path, fmt, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnx", reason="ONNX export needs genericssl[export]")
        pytest.importorskip("onnxruntime", reason="checking an ONNX file needs onnxruntime")
    from genericssl.checkpoint import save_checkpoint
    from genericssl.cli import main
    from genericssl.export import load_exported

    cfg = TaskConfig(patch_size=(16, 32, 32), in_channels=2, num_classes=3, base_filters=4)
    net = DiffVNet(2, 3, 4, 3)
    save_checkpoint({"state_dict": net.state_dict(), "config": cfg.to_dict()}, tmp_path / "m.pth")
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "m.pt")
    assert main(["export", "-k", str(tmp_path / "m.pth"), "--format", fmt, "-o", str(out)]) == 0
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["input"]["channels"] == 2 and side["num_classes"] == 3
    f = load_exported(out)
    x = torch.rand(2, 2, 32, 48, 16)   # another size than the patch, batch 2
    with torch.no_grad():
        ref = net.eval()(x)
    assert torch.allclose(f(x), ref, atol=1e-4)


def test_evaluate_reports_with_and_without_the_largest_component(tmp_path, capsys):
    from genericssl.cli import main
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[2:8, 2:8, 2:8] = 1
    pred = gt.copy()
    pred[14:17, 14:17, 14:17] = 1   # a stray blob: hurts HD95, removed by the filter
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    np.save(tmp_path / "pred" / "c1.npy", pred)
    np.save(tmp_path / "gt" / "c1_label.npy", gt)
    js = tmp_path / "m.json"
    code = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--num-classes", "2",
                 "--largest-component", "all", "--json", str(js), "--no-progress", "--workers", "1"])
    assert code == 0, capsys.readouterr().err
    out = json.loads(js.read_text())
    assert out["largest_component"] == "all"
    assert out["mean"]["dice_avg"] == pytest.approx(100.0)
    assert out["mean_without_postprocessing"]["dice_avg"] < 100.0
    assert "largest connected component" in capsys.readouterr().out
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--num-classes", "2",
                 "--largest-component", "5", "--no-progress"]) == 2
    assert "not foreground classes" in capsys.readouterr().err
