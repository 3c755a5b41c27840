"""`genericssl predict`: checkpoints of both formats, NIfTI and .npy in and out, bad inputs."""
import gzip

import nibabel as nib
import numpy as np
import pytest
import torch

from genericssl.checkpoint import save_checkpoint
from genericssl.cli import main
from genericssl.predict import raw_preparation, resize_nearest
from genericssl.config import TaskConfig, load_config
from genericssl.imageio import as_3d, dataset_axes, read_volume, write_label_nifti
from genericssl.errors import UserError
from genericssl.models.diff_vnet import DiffVNet

PATCH = "16x32x32"
AFFINE = np.array([[0.0, 0.0, -1.5, 10.0], [0.0, 0.8, 0.0, -20.0], [0.7, 0.0, 0.0, 5.0], [0, 0, 0, 1]])


def _model(num_classes=2, seed=0):
    torch.manual_seed(seed)
    net = DiffVNet(1, num_classes, 4, 3)
    for m in net.modules():  # statistics that make the labels vary over the volume
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(torch.rand(2, 1, 16, 32, 32))
        net.decoder_theta.out_conv.bias.zero_()
    return net.eval()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    net = _model()
    cfg = TaskConfig(name="tiny", patch_size=(16, 32, 32), num_classes=2, base_filters=4)
    save_checkpoint({"state_dict": net.state_dict(), "config": cfg.to_dict()}, d / "ours.pth")
    torch.save({"state_dict": net.state_dict()}, d / "authors.pth")  # the released best_model.pth layout
    return d


def _nifti(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _run(capsys, *argv):
    code = main(["predict", "--no-progress", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_nifti_label_map_lies_on_the_scan(ckpts, tmp_path, capsys):
    scan = _nifti(tmp_path / "scan.nii.gz", np.random.default_rng(0).random((36, 34, 20)).astype(np.float32) * 900)
    code, text = _run(capsys, "--checkpoint", ckpts / "ours.pth", "--input", scan, "--output", tmp_path / "out",
                      "--stride-preset", "coarse")
    assert code == 0, text
    seg = nib.load(str(tmp_path / "out" / "scan_seg.nii.gz"))
    assert seg.shape == (36, 34, 20)
    np.testing.assert_allclose(seg.affine, AFFINE)
    assert seg.get_data_dtype() == np.uint8
    data = np.asarray(seg.dataobj)
    assert data.dtype == np.uint8 and set(np.unique(data)) <= {0, 1}


def test_both_checkpoint_formats_load_and_agree_on_npy(ckpts, tmp_path, capsys):
    image = np.random.default_rng(1).random((20, 36, 33)).astype(np.float32)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "case7_image.npy", image)
    np.save(tmp_path / "in" / "case7_label.npy", np.zeros(image.shape, np.uint8))  # left out: ground truth
    code, text = _run(capsys, "-k", ckpts / "ours.pth", "--input", tmp_path / "in", "-o", tmp_path / "a",
                      "--stride-xy", "16", "--stride-z", "8")
    assert code == 0, text
    assert "case7_label.npy: a prepared label array" in text
    code, text = _run(capsys, "-k", ckpts / "authors.pth", "--input", tmp_path / "in" / "case7_image.npy",
                      "-o", tmp_path / "b", "--patch", PATCH, "--stride-xy", "16", "--stride-z", "8")
    assert code == 0, text
    a, b = np.load(tmp_path / "a" / "case7.npy"), np.load(tmp_path / "b" / "case7.npy")
    assert a.shape == image.shape and a.dtype == np.uint8
    assert len(np.unique(a)) == 2
    np.testing.assert_array_equal(a, b)


def test_authors_checkpoint_with_a_task_takes_its_preset(ckpts, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(2).random((16, 32, 32)).astype(np.float32))
    # la_0.1 says 32 filters; the file has 4: a clear error unless overridden.
    code, text = _run(capsys, "-k", ckpts / "authors.pth", "--input", tmp_path / "x.npy", "-o", tmp_path / "o",
                      "--task", "la_0.1")
    assert code == 2 and "base_filters: checkpoint has 4, task la_0.1 has 32" in text
    code, text = _run(capsys, "-k", ckpts / "authors.pth", "--input", tmp_path / "x.npy", "-o", tmp_path / "o",
                      "--task", "la_0.1", "--base-filters", "4", "--patch", PATCH, "--mode", "whole")
    assert code == 0, text
    assert np.load(tmp_path / "o" / "x.npy").shape == (16, 32, 32)


def test_wrong_class_count_is_a_clear_error(ckpts, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((16, 32, 32), np.float32))
    code, text = _run(capsys, "-k", ckpts / "ours.pth", "--input", tmp_path / "x.npy", "-o", tmp_path / "o",
                      "--num-classes", "3")
    assert code == 2
    assert "num_classes: checkpoint has 2, configuration says 3" in text


def test_4d_and_corrupt_files_are_named_and_the_rest_predicted(ckpts, tmp_path, capsys):
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(3)
    _nifti(d / "good.nii.gz", rng.random((33, 32, 17)).astype(np.float32))
    _nifti(d / "cine.nii.gz", rng.random((32, 32, 16, 3)).astype(np.float32))
    (d / "broken.nii.gz").write_bytes(gzip.compress(b"not a nifti header"))
    (d / "notes.txt").write_text("hello")
    code, text = _run(capsys, "-k", ckpts / "ours.pth", "--input", d, "-o", tmp_path / "o", "--mode", "whole")
    assert code == 1, text
    assert (tmp_path / "o" / "good_seg.nii.gz").is_file()
    assert not (tmp_path / "o" / "cine_seg.nii.gz").exists()
    assert "cine.nii.gz is 4D with shape (32, 32, 16, 3); expected a 3D volume" in text
    assert "cannot read" in text and "broken.nii.gz" in text
    assert "notes.txt: not a scan or .npy file" in text
    # the frame a user asks for, or all of them
    code, text = _run(capsys, "-k", ckpts / "ours.pth", "--input", d / "cine.nii.gz", "-o", tmp_path / "o",
                      "--mode", "whole", "--frame", "all")
    assert code == 0, text
    assert nib.load(str(tmp_path / "o" / "cine_seg.nii.gz")).shape == (32, 32, 16, 3)


def test_single_4d_file_fails_with_exit_status_2(ckpts, tmp_path, capsys):
    f = _nifti(tmp_path / "cine.nii.gz", np.zeros((32, 32, 16, 2), np.float32))
    code, text = _run(capsys, "-k", ckpts / "ours.pth", "--input", f, "-o", tmp_path / "o")
    assert code == 2 and str(f) in text and "--frame" in text


def test_synapse_scan_is_resized_for_the_model_and_back(tmp_path, capsys):
    net = DiffVNet(1, 14, 4, 3).eval()
    torch.save({"state_dict": net.state_dict()}, tmp_path / "syn.pth")
    scan = _nifti(tmp_path / "img0001.nii.gz", np.random.default_rng(4).normal(0, 300, (30, 28, 12)).astype(np.float32))
    code, text = _run(capsys, "-k", tmp_path / "syn.pth", "--task", "synapse_0.2", "--base-filters", "4",
                      "--input", scan, "-o", tmp_path / "o", "--mode", "whole")
    assert code == 0, text
    assert "resize to 80x160x160" in text
    seg = nib.load(str(tmp_path / "o" / "img0001_seg.nii.gz"))
    assert seg.shape == (30, 28, 12)
    np.testing.assert_allclose(seg.affine, AFFINE)


def test_mmwhs_preparation_maps_labels_back_onto_the_scan():
    cfg = load_config("mmwhs_ct2mr")
    prep = raw_preparation(cfg, dataset_axes(cfg.dataset))
    assert prep.note and "bounding box" in prep.note
    data = np.zeros((40, 30, 24), np.float32)
    data[5:20, 18:28, 2:9] = 800  # a bright block off centre
    affine = np.diag([-1.2, 1.0, 2.0, 1.0])  # x runs right-to-left: reorientation flips it
    arr, ctx = prep.forward(data, affine)
    assert arr.shape == (144, 144, 144)
    back = prep.backward((arr > arr.mean() + arr.std()).astype(np.uint8), ctx)
    assert back.shape == data.shape
    truth = data > 0
    dice = 2 * (back.astype(bool) & truth).sum() / (back.astype(bool).sum() + truth.sum())
    assert dice > 0.9


def test_resize_nearest_keeps_values_and_shape():
    lab = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    up = resize_nearest(lab, (4, 6, 8))
    assert up.shape == (4, 6, 8) and set(np.unique(up)) == set(range(24))
    np.testing.assert_array_equal(resize_nearest(up, (2, 3, 4)), lab)


def test_imageio_axes_and_label_header(tmp_path):
    assert dataset_axes("la") == "xyz" and dataset_axes("synapse") == "zyx"
    (tmp_path / "dataset.json").write_text('{"axes": "xyz"}')
    assert dataset_axes("custom", tmp_path) == "xyz"
    img = nib.Nifti1Image(np.ones((4, 5, 6), np.int16), AFFINE)
    img.header.set_slope_inter(2.0, 10.0)
    nib.save(img, str(tmp_path / "s.nii"))
    vol = read_volume(tmp_path / "s.nii")
    assert as_3d(vol).shape == (4, 5, 6) and float(as_3d(vol).max()) == 12.0
    write_label_nifti(tmp_path / "l.nii.gz", np.ones((4, 5, 6), np.uint8), vol, num_classes=3)
    out = nib.load(str(tmp_path / "l.nii.gz"))
    assert np.asarray(out.dataobj).max() == 1  # the scan's scaling does not apply to labels
    assert out.header["cal_max"] == 2
    np.testing.assert_allclose(out.affine, AFFINE)
    with pytest.raises(UserError, match="bad.npy"):
        (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
        read_volume(tmp_path / "bad.npy")


def _npy_inputs(folder, *names):
    folder.mkdir()
    for k, name in enumerate(names):
        np.save(folder / f"{name}_image.npy", np.random.default_rng(k).random((16, 32, 32)).astype(np.float32))
    return folder


def _skip_line(text, name):
    return next(line.strip() for line in text.splitlines() if line.strip().startswith(name))


def test_a_scan_that_cannot_be_written_is_skipped_and_the_rest_written(ckpts, tmp_path, capsys, monkeypatch):
    import errno

    from genericssl import imageio

    real = imageio.write_npy

    def disk_full_for_a(path, arr):
        if path.name == "a.npy":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, arr)

    monkeypatch.setattr(imageio, "write_npy", disk_full_for_a)
    d = _npy_inputs(tmp_path / "in", "a", "b")
    code, text = _run(capsys, "-k", ckpts / "ours.pth", "--input", d, "-o", tmp_path / "o", "--mode", "whole")
    assert code == 1, text
    assert (tmp_path / "o" / "b.npy").is_file() and not (tmp_path / "o" / "a.npy").exists()
    assert "1 label map(s)" in text
    assert _skip_line(text, "a_image.npy") == (f"a_image.npy: cannot write {tmp_path / 'o' / 'a.npy'}: "
                                               f"No space left on device")
    assert "Traceback" not in text


def test_an_output_path_that_is_a_folder_skips_only_that_scan(ckpts, tmp_path, capsys):
    d = _npy_inputs(tmp_path / "in", "a", "b")
    (tmp_path / "o" / "a.npy").mkdir(parents=True)  # os.replace cannot put a file there
    code, text = _run(capsys, "-k", ckpts / "ours.pth", "--input", d, "-o", tmp_path / "o", "--mode", "whole")
    assert code == 1, text
    assert (tmp_path / "o" / "b.npy").is_file()
    assert _skip_line(text, "a_image.npy").startswith(f"a_image.npy: cannot write {tmp_path / 'o' / 'a.npy'}: ")
    assert "Traceback" not in text


def test_an_output_folder_that_cannot_be_made_is_a_clear_error(ckpts, tmp_path, capsys):
    d = _npy_inputs(tmp_path / "in", "a")
    (tmp_path / "file").write_text("")
    code, text = _run(capsys, "-k", ckpts / "ours.pth", "--input", d, "-o", tmp_path / "file" / "o", "--mode", "whole")
    assert code == 2
    assert f"--output {tmp_path / 'file' / 'o'}: cannot create the folder" in text
    assert "Traceback" not in text


def test_nan_and_non_npy_inputs_are_named_once(ckpts, tmp_path, capsys):
    d = _npy_inputs(tmp_path / "in", "good")
    image = np.ones((16, 32, 32), np.float32)
    image[0, 0, 0] = np.nan
    np.save(d / "nan_image.npy", image)
    (d / "notes_image.npy").write_text("a text file under an .npy name\n")
    code, text = _run(capsys, "-k", ckpts / "ours.pth", "--input", d, "-o", tmp_path / "o", "--mode", "whole")
    assert code == 1, text
    assert _skip_line(text, "nan_image.npy") == "nan_image.npy: the image holds NaN or infinite values"
    line = _skip_line(text, str(d / "notes_image.npy"))
    assert "is not a NumPy .npy file" in line and "pickled" not in line
    assert "Traceback" not in text


def test_probabilities_ensemble_tta_component_overlay_and_label_files(ckpts, tmp_path, capsys):
    # A scan that goes through a preparation step (Synapse: resized to the model's grid and back).
    syn = DiffVNet(1, 14, 4, 3)
    save_checkpoint({"state_dict": syn.state_dict(), "config": load_config("synapse_0.2").to_dict()
                     | {"base_filters": 4}}, tmp_path / "syn.pth")
    scan = _nifti(tmp_path / "scan.nii.gz", np.random.default_rng(5).random((40, 36, 12)).astype(np.float32) * 300)
    code, text = _run(capsys, "-k", tmp_path / "syn.pth", "--input", scan, "-o", tmp_path / "p", "--mode", "whole",
                      "--save-probabilities", "--overlay")
    assert code == 0, text
    seg = np.asarray(nib.load(str(tmp_path / "p" / "scan_seg.nii.gz")).dataobj)
    npz = np.load(tmp_path / "p" / "scan_probs.npz")
    probs = npz["probabilities"]
    assert probs.dtype == np.float16 and probs.shape == (14, 40, 36, 12)
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=2e-2)
    np.testing.assert_allclose(npz["affine"], AFFINE)
    agree = (probs.astype(np.float32).argmax(0) == seg).mean()
    assert agree > 0.99, agree   # float16 rounding may flip a near-tie
    assert (tmp_path / "p" / "scan_seg_overlay.png").stat().st_size > 1000
    assert '"Clear Label"' in (tmp_path / "p" / "labels.itksnap.txt").read_text()
    assert (tmp_path / "p" / "labels.ctbl").is_file()

    image = np.random.default_rng(1).random((20, 36, 33)).astype(np.float32)
    np.save(tmp_path / "case7_image.npy", image)
    one = tmp_path / "one"
    assert _run(capsys, "-k", ckpts / "ours.pth", "--input", tmp_path / "case7_image.npy", "-o", one,
                "--save-probabilities")[0] == 0
    # An ensemble of the same checkpoint twice is that checkpoint.
    two = tmp_path / "two"
    code, text = _run(capsys, "-k", ckpts / "ours.pth", ckpts / "ours.pth", "--input", tmp_path / "case7_image.npy",
                      "-o", two, "--save-probabilities")
    assert code == 0 and "ensemble of 2" in text, text
    assert np.array_equal(np.load(one / "case7.npy"), np.load(two / "case7.npy"))
    np.testing.assert_array_equal(np.load(one / "case7_probs.npz")["probabilities"],
                                  np.load(two / "case7_probs.npz")["probabilities"])
    p = np.load(one / "case7_probs.npz")["probabilities"]
    assert np.array_equal(p.argmax(0), np.load(one / "case7.npy")) or (p.argmax(0) == np.load(one / "case7.npy")).mean() > 0.99
    # Mirror TTA and the largest component run and say so.
    code, text = _run(capsys, "-k", ckpts / "ours.pth", "--input", tmp_path / "case7_image.npy", "-o",
                      tmp_path / "t", "--tta", "mirror", "--largest-component", "all", "--stride-preset", "coarse")
    assert code == 0 and "mirror TTA (8 passes)" in text and "largest component of classes 1" in text, text
    lab = np.load(tmp_path / "t" / "case7.npy")
    from scipy import ndimage
    assert ndimage.label(lab == 1)[1] <= 1
    # An ensemble member for another task is refused by name.
    code, text = _run(capsys, "-k", ckpts / "ours.pth", tmp_path / "syn.pth", "--input", tmp_path / "case7_image.npy",
                      "-o", tmp_path / "x")
    assert code == 2 and "syn.pth cannot join an ensemble" in text and "num_classes" in text
