"""nnU-Net v2 and Decathlon datasets as users have them: two channels, anisotropic voxels that vary
from scan to scan, oblique affines, NIfTI and NRRD; prepared, trained, and predicted onto new scans
whose label maps must lie on the scan (shape, spacing, affine) and find the structure."""
import json

import numpy as np
import pytest
import yaml

from genericssl.cli import main
from genericssl.imageio import read_volume
from genericssl.prepare.scans import labels_to_scan, source_context, spacing_zyx
from layout_fixtures import make_scan, structure_labels, write, write_decathlon, write_nnunet


def dice(a, b):
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


def prepare(*args):
    return main(["prepare", *map(str, args), "--workers", "1"])


def test_nnunet_layout_prepared_on_the_median_spacing(tmp_path, capsys):
    raw = tmp_path / "Dataset001_Toy"
    truth = write_nnunet(raw)
    out = tmp_path / "prep"
    assert prepare("nnunet", "--raw", raw, "--out", out) == 0
    meta = json.loads((out / "dataset.json").read_text())
    prep = meta["preparation"]
    assert prep["channels"] == 2 and prep["channel_names"] == ["T2", "ADC"] and prep["orientation"] == "RAS"
    assert meta["labels"] == {"0": "background", "1": "ball", "2": "core"}
    splits = {p.stem: p.read_text().split() for p in (out / "split_txts").glob("*.txt")}
    labeled_pool = {f"toy_{i:03d}" for i in range(6)}
    assert set(splits["labeled"]) | set(splits["eval"]) | set(splits["test"]) == labeled_pool
    assert len(splits["eval"]) == len(splits["test"]) == 1
    assert splits["unlabeled"] == ["toy_006", "toy_007", "toy_008"]     # imagesUnlabeled/
    assert meta["splits"] == splits                                    # recorded in dataset.json as written
    # The target is the median spacing of the labeled training cases, computed from their affines.
    expected = np.median([spacing_zyx(truth[c][0], truth[c][1], "RAS") for c in splits["labeled"]], axis=0)
    assert np.allclose(prep["spacing"], expected, atol=1e-5)
    task = yaml.safe_load((out / "task.yaml").read_text())
    assert task["in_channels"] == 2 and task["num_classes"] == 3 and task["dataset"] == "custom"
    for cid, (affine, shape, centre) in truth.items():
        image = np.load(out / "npy" / f"{cid}_image.npy")
        label = np.load(out / "npy" / f"{cid}_label.npy")
        case = meta["cases"][cid]
        own = spacing_zyx(affine, shape, "RAS")
        assert image.shape == (2,) + label.shape == (2,) + tuple(case["shape"])
        assert np.allclose(np.array(label.shape), np.round(np.array(shape[::-1]) * own / expected))
        assert case["geometry"]["shape"] == list(shape) and np.allclose(case["geometry"]["affine"], affine, atol=1e-5)
        assert case["labeled"] == (cid in labeled_pool)
        if cid in labeled_pool:
            # Prepared label -> the source grid by the recorded geometry: the structure where it was.
            back = labels_to_scan(label, {"grid": tuple(shape[::-1]), "affine": affine, "orientation": "RAS"})
            source = structure_labels(affine, shape, centre)
            assert back.shape == tuple(shape) and dice(back > 0, source > 0) > 0.9
        else:
            assert not label.any()
    # A second run reuses every case; a seeded labeled fraction moves the rest to unlabeled.
    assert prepare("nnunet", "--raw", raw, "--out", out) == 0
    assert "9 reused" in capsys.readouterr().out
    out2 = tmp_path / "half"
    assert prepare("nnunet", "--raw", raw, "--out", out2, "--labeled-fraction", "0.5", "--spacing", "3", "2", "2") == 0
    half = {p.stem: p.read_text().split() for p in (out2 / "split_txts").glob("*.txt")}
    assert len(half["labeled"]) == 2 and len(half["unlabeled"]) == 5 and half["eval"] == splits["eval"]
    meta2 = json.loads((out2 / "dataset.json").read_text())
    assert meta2["preparation"]["spacing"] == [3.0, 2.0, 2.0]
    hidden = (set(half["unlabeled"]) & labeled_pool).pop()
    assert not np.load(out2 / "npy" / f"{hidden}_label.npy").any()       # its label was not read


@pytest.mark.parametrize("ending", [".nrrd"])
def test_nnunet_nrrd_train_then_predict_new_scans_on_their_own_grid(tmp_path, ending):
    raw = tmp_path / "Dataset002_Toy"
    write_nnunet(raw, ending=ending, seed=0)
    out, run = tmp_path / "prep", tmp_path / "run"
    assert prepare("nnunet", "--raw", raw, "--out", out) == 0
    assert main(["train", "--config", str(out / "task.yaml"), "--method", "supervised", "-n", "40",
                 "--set", "batch_size=2", "--set", "base_filters=4", "--set", "repeat=unlabeled",
                 "--no-progress", "--out", str(run)]) == 0
    rng = np.random.default_rng(42)
    scans = tmp_path / "scans"
    truth = {}
    for name, fmt in (("a", ".nrrd"), ("b", ".nii.gz")):
        chans, label, affine, centre = make_scan(rng, shape=(26, 22, 11))
        for k, c in enumerate(chans):
            write(scans / f"{name}_{k:04d}{fmt}", c, affine)
        truth[name] = (label, affine, fmt)
    write(scans / "lonely_0000.nii.gz", chans[0], affine)        # a case missing its second channel
    seg = tmp_path / "seg"
    rc = main(["predict", "-k", str(run / "ckpts" / "best_model.pth"), "--input", str(scans), "--output", str(seg),
               "--no-progress"])
    assert rc == 1                                                # lonely was refused, the others written
    assert not list(seg.glob("lonely*"))
    for name, (label, affine, fmt) in truth.items():
        pred = read_volume(seg / f"{name}_seg{fmt}")
        assert pred.data.shape == label.shape
        assert np.allclose(pred.affine, affine, atol=1e-4)
        assert dice(pred.data >= 1, label >= 1) > 0.5, name
    # `run` writes its test predictions onto the original scans as well (grid, affine, format).
    assert main(["run", "--config", str(out / "task.yaml"), "--no-train", "-k", str(run / "ckpts" / "best_model.pth"),
                 "--no-progress", "--out", str(tmp_path / "tested")]) == 0
    meta = json.loads((out / "dataset.json").read_text())
    test_case = (out / "split_txts" / "test.txt").read_text().split()[0]
    on_scan = read_volume(tmp_path / "tested" / "predictions_on_scans" / f"{test_case}_seg{ending}")
    source = read_volume(meta["cases"][test_case]["geometry"]["label"])
    assert on_scan.data.shape == source.data.shape and np.allclose(on_scan.affine, source.affine, atol=1e-4)
    assert dice(on_scan.data >= 1, source.data >= 1) > 0.5
    # A scan whose single file lacks the channels
    assert main(["predict", "-k", str(run / "ckpts" / "best_model.pth"), "--input", str(scans / "a_0000.nrrd"),
                 "--output", str(tmp_path / "one"), "--no-progress"]) == 2


def test_predict_names_a_case_with_missing_channels(tmp_path, capsys):
    raw = tmp_path / "Dataset003_Toy"
    write_nnunet(raw, n_labeled=4, n_unlabeled=0, seed=5)
    out, run = tmp_path / "prep", tmp_path / "run"
    assert prepare("nnunet", "--raw", raw, "--out", out, "--eval-fraction", "0.25", "--test-fraction", "0.25") == 0
    assert main(["train", "--config", str(out / "task.yaml"), "--method", "supervised", "-n", "0",
                 "--set", "batch_size=2", "--set", "base_filters=2", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    scans = tmp_path / "scans"
    chans, label, affine, _ = make_scan(np.random.default_rng(0))
    write(scans / "lonely_0000.nii.gz", chans[0], affine)
    write(scans / "whole_0000.nii.gz", chans[0], affine)
    write(scans / "whole_0001.nii.gz", chans[1], affine)
    write(scans / "plain.nii.gz", chans[0], affine)
    rc = main(["predict", "-k", str(run / "ckpts" / "best_model.pth"), "--input", str(scans),
               "--output", str(tmp_path / "seg"), "--output-format", "mha", "--save-probabilities", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 1
    assert "case lonely has channel file(s) [0]; the model needs exactly 2" in text
    assert "plain.nii.gz has shape (24, 24, 12): the model was trained on 2 channels" in text
    assert (tmp_path / "seg" / "whole_seg.mha").is_file()
    seg = read_volume(tmp_path / "seg" / "whole_seg.mha").data
    assert seg.shape == (24, 24, 12)
    probs = np.load(tmp_path / "seg" / "whole_probs.npz")["probabilities"].astype(np.float32)
    assert probs.shape == (3, 24, 24, 12) and np.allclose(probs.sum(0), 1, atol=2e-3)
    # On the scan's grid, as the label map (float16 storage may flip an exact near-tie).
    assert np.mean(probs.argmax(0) == seg) > 0.999


def test_decathlon_datalist_4d_channels_validation_and_unlabeled(tmp_path):
    raw = tmp_path / "Task99_Toy"
    truth = write_decathlon(raw)
    out = tmp_path / "prep"
    assert prepare("decathlon", "--raw", raw, "--out", out, "--orientation", "LPS") == 0
    splits = {p.stem: p.read_text().split() for p in (out / "split_txts").glob("*.txt")}
    assert splits["eval"] == ["toy_008"]                              # the datalist's validation entry
    assert splits["unlabeled"] == ["toy_006", "toy_007"]              # training entries without a label
    assert len(splits["labeled"]) == 5 and len(splits["test"]) == 1
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["preparation"]["channel_names"] == ["T2", "ADC"] and meta["preparation"]["orientation"] == "LPS"
    for cid in truth:
        image = np.load(out / "npy" / f"{cid}_image.npy")
        assert image.ndim == 4 and image.shape[0] == 2
        # Channel 0 is bright on the ball, channel 1 dark: the 4th axis was read as the channels.
        lab = np.load(out / "npy" / f"{cid}_label.npy")
        if lab.any():
            assert image[0][lab > 0].mean() > image[0][lab == 0].mean()
            assert image[1][lab > 0].mean() < image[1][lab == 0].mean()
            # Back onto the source scan (flipped to LPS and back) through the recorded geometry.
            affine, shape, centre = truth[cid]
            back = labels_to_scan(lab, source_context(meta["cases"][cid]["geometry"], "LPS"))
            assert back.shape == tuple(shape)
            assert dice(back > 0, structure_labels(affine, shape, centre) > 0) > 0.9


def test_time_series_split_into_frames_or_refused(tmp_path, capsys):
    raw = tmp_path / "Dataset004_Cine"
    rng = np.random.default_rng(7)
    for i in range(4):
        chans, label, affine, _ = make_scan(rng)
        frames = np.stack([chans[0], np.roll(chans[0], 1, 0), chans[0]], -1)
        labels = np.stack([label, np.zeros_like(label), label], -1)     # only ED and ES annotated
        write(raw / "imagesTr" / f"cine_{i}_0000.nii.gz", frames, affine)
        write(raw / "labelsTr" / f"cine_{i}.nii.gz", labels.astype(np.uint8), affine)
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "cine"},
                                                  "labels": {"background": 0, "ball": 1, "core": 2},
                                                  "file_ending": ".nii.gz"}))
    assert prepare("nnunet", "--raw", raw, "--out", tmp_path / "no") == 1
    assert "is 4D with 3 frames on its last axis" in capsys.readouterr().out
    out = tmp_path / "frames"
    assert prepare("nnunet", "--raw", raw, "--out", out, "--split-frames", "--eval-fraction", "0.25",
                   "--test-fraction", "0.25") == 0
    splits = {p.stem: p.read_text().split() for p in (out / "split_txts").glob("*.txt")}
    subjects = {s: {c.rsplit("_t", 1)[0] for c in ids} for s, ids in splits.items()}
    assert len(subjects["labeled"]) == 2 and len(subjects["eval"]) == len(subjects["test"]) == 1
    assert all(c.endswith(("_t00", "_t02")) for s in ("labeled", "eval", "test") for c in splits[s])
    assert all(c.endswith("_t01") for c in splits["unlabeled"]) and len(splits["unlabeled"]) == 2


def test_bad_layouts_name_the_file(tmp_path, capsys):
    raw = tmp_path / "Dataset005_Bad"
    write_nnunet(raw, n_labeled=4, n_unlabeled=0, seed=9)
    bad = read_volume(raw / "labelsTr" / "toy_001.nii.gz")
    data = bad.data.copy()
    data[0, 0, 0] = 7
    write(raw / "labelsTr" / "toy_001.nii.gz", data.astype(np.uint8), bad.affine)
    other = read_volume(raw / "imagesTr" / "toy_002_0001.nii.gz")
    write(raw / "imagesTr" / "toy_002_0001.nii.gz", other.data[:-2], other.affine)
    (raw / "imagesTr" / "toy_003_0001.nii.gz").unlink()
    assert prepare("nnunet", "--raw", raw, "--out", tmp_path / "o") == 1
    text = capsys.readouterr().out
    assert "toy_001" in text and "label codes [7]" in text and "toy_001.nii.gz" in text
    assert "channel toy_002_0001.nii.gz is not on the grid of toy_002_0000.nii.gz" in text
    assert "toy_003_0001.nii.gz does not exist" in text
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2"}, "file_ending": ".nii.gz",
                                                  "labels": {"background": 0, "ball": [1, 2]}}))
    assert prepare("nnunet", "--raw", raw, "--out", tmp_path / "o2") == 2
    assert "region" in capsys.readouterr().err
    (raw / "dataset.json").write_text("[1, 2]")
    assert prepare("nnunet", "--raw", raw, "--out", tmp_path / "o3") == 2
    assert "expected a JSON object of key: value entries, got a list" in capsys.readouterr().err


def test_a_zero_spacing_and_a_duplicate_case_are_one_line_each(tmp_path, capsys):
    raw = tmp_path / "Dataset006_Toy"
    write_nnunet(raw, n_labeled=4, n_unlabeled=1, seed=11)
    assert prepare("nnunet", "--raw", raw, "--out", tmp_path / "o", "--spacing", "0", "2", "2") == 2
    assert "--spacing must be three positive voxel sizes in mm" in capsys.readouterr().err
    extra = tmp_path / "more"
    for f in (raw / "imagesTr").glob("toy_000_*"):
        (extra / f.name).parent.mkdir(exist_ok=True)
        (extra / f.name).write_bytes(f.read_bytes())
    assert prepare("nnunet", "--raw", raw, "--out", tmp_path / "o", "--unlabeled", extra) == 2
    assert "case names occur twice (two folders or two entries): toy_000" in capsys.readouterr().err
