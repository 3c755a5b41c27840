"""Folder evaluation: pairing, bad input, units, summaries, runs, CLI and pictures."""
import csv
import json

import nibabel as nib
import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from genericssl import evaluation
from genericssl.cli import main as cli
from genericssl.errors import UserError

SHAPE = (20, 24, 16)


def label_pair(seed, classes=3):
    """A ground truth with classes 1..classes-1 and a prediction that mostly overlaps it."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    for c in range(1, classes):
        noise = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 2.0)
        gt[noise > np.quantile(noise, 0.8)] = c
        pred[(noise + 0.3 * rng.standard_normal(SHAPE)) > np.quantile(noise, 0.8)] = c
    return pred, gt


def medpy_case(pred, gt, classes, spacing=None):
    out = {"dice": [], "jaccard": [], "hd95": [], "asd": []}
    for c in range(1, classes):
        p, g = pred == c, gt == c
        out["dice"].append(medpy_binary.dc(p, g) * 100)
        out["jaccard"].append(medpy_binary.jc(p, g) * 100)
        out["hd95"].append(medpy_binary.hd95(p, g, voxelspacing=spacing))
        out["asd"].append(medpy_binary.asd(p, g, voxelspacing=spacing))
    return out


def assert_scores(ours, ref):
    for m in ref:
        np.testing.assert_allclose(ours[m], ref[m], rtol=0, atol=1e-6, err_msg=m)


def prepared_dataset(root, ids, spacing=None):
    """DATA/npy/<id>_label.npy + <id>_image.npy, DATA/split_txts/test.txt, optional dataset.json."""
    (root / "npy").mkdir(parents=True)
    (root / "split_txts").mkdir()
    pairs = {}
    for k, case_id in enumerate(ids):
        pred, gt = label_pair(k)
        np.save(root / "npy" / f"{case_id}_label.npy", gt)
        np.save(root / "npy" / f"{case_id}_image.npy", gt.astype(np.float32) + 0.1 * k)
        pairs[case_id] = (pred, gt)
    (root / "split_txts" / "test.txt").write_text("\n".join(ids) + "\n")
    if spacing:
        (root / "dataset.json").write_text(json.dumps({"num_classes": 4,
                                                       "cases": {i: {"spacing": spacing} for i in ids}}))
    return pairs


def test_cli_end_to_end_scores_good_cases_and_reports_missing_and_mismatched(tmp_path, capsys):
    ids = ["a01", "a02", "a03", "a04", "a05"]
    pairs = prepared_dataset(tmp_path / "DATA", ids)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    np.save(pred_dir / "a01.npy", pairs["a01"][0])
    np.save(pred_dir / "a02.npy", pairs["a02"][0].astype(np.int64))
    # a NIfTI next to .npy ground truth is read in SimpleITK's reversed axis order
    nib.save(nib.Nifti1Image(pairs["a03"][0].transpose().astype(np.float32), np.eye(4)), pred_dir / "a03.nii.gz")
    np.save(pred_dir / "a04.npy", pairs["a04"][0][:, :, :-2])      # shape mismatch; a05 missing
    out = tmp_path / "summary.json"
    rc = cli(["evaluate", "--pred", str(pred_dir), "--gt", str(tmp_path / "DATA"), "--split", "test",
              "--num-classes", "3", "--workers", "2", "--json", str(out), "--no-progress"])
    assert rc == 1                                                  # some cases skipped
    summary = json.loads(out.read_text())
    assert sorted(summary["cases"]) == ["a01", "a02", "a03"]
    for case_id in summary["cases"]:
        pred, gt = pairs[case_id]
        assert_scores(summary["cases"][case_id], medpy_case(pred, gt, 3))
    assert set(summary["skipped"]) == {"a04", "a05"}
    assert "a04.npy" in summary["skipped"]["a04"] and "shape (20, 24, 14)" in summary["skipped"]["a04"]
    assert "no prediction" in summary["skipped"]["a05"] and "a05.npy" in summary["skipped"]["a05"]
    dice = np.array([summary["cases"][i]["dice"] for i in ("a01", "a02", "a03")])
    np.testing.assert_allclose(summary["mean"]["dice"], dice.mean(0))
    assert summary["mean"]["dice_avg"] == pytest.approx(dice.mean())
    printed = capsys.readouterr().out
    assert "a05: no prediction" in printed and "95HD (vox)" in printed
    with open(pred_dir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 and rows[0]["case"] == "a01"
    assert float(rows[1]["hd95"]) == pytest.approx(summary["cases"]["a01"]["hd95"][1])


def write_nifti(path, arr, zooms=(1.0, 1.0, 1.0)):
    nib.save(nib.Nifti1Image(arr, np.diag([*zooms, 1.0])), path)


def test_bad_files_are_skipped_with_a_reason_naming_the_file(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    pred, gt = label_pair(1, classes=2)
    for name in ("ok", "fourd", "corrupt", "fractional", "range", "negative", "pickled"):
        write_nifti(gt_dir / f"{name}.nii.gz", gt)
    write_nifti(pred_dir / "ok.nii.gz", pred)
    write_nifti(pred_dir / "fourd.nii.gz", np.stack([pred, pred], -1))
    (pred_dir / "corrupt.nii.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")
    write_nifti(pred_dir / "fractional.nii.gz", pred.astype(np.float32) * 0.5)
    bad = pred.astype(np.int16)
    bad[0, 0, 0] = 5
    write_nifti(pred_dir / "range.nii.gz", bad)
    bad[0, 0, 0] = -1
    write_nifti(pred_dir / "negative.nii.gz", bad)
    np.save(pred_dir / "pickled.npy", np.array([{"a": 1}], dtype=object))
    s = evaluation.evaluate_folder(pred_dir, gt_dir, num_classes=2, workers=1, progress=False)
    assert list(s["cases"]) == ["ok"]
    reasons = s["skipped"]
    assert set(reasons) == {"fourd", "corrupt", "fractional", "range", "negative", "pickled"}
    for name, words in {"fourd": "4D", "corrupt": "cannot read", "fractional": "non-integer",
                        "range": "label 5 is outside 0..1", "negative": "negative label",
                        "pickled": "holds Python objects"}.items():
        assert str(pred_dir / name) in reasons[name] and words in reasons[name], reasons[name]
    # a NIfTI with a trailing singleton axis is one volume, not 4D
    write_nifti(pred_dir / "fourd.nii.gz", pred[..., None])
    assert "fourd" in evaluation.evaluate_folder(pred_dir, gt_dir, num_classes=2, workers=1,
                                                 progress=False)["cases"]


def test_millimetres_from_nifti_headers_and_dataset_json(tmp_path):
    pred, gt = label_pair(2)
    zooms = (0.8, 1.25, 2.5)
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    write_nifti(tmp_path / "gt" / "c1.nii.gz", gt, zooms)
    write_nifti(tmp_path / "pred" / "c1.nii.gz", pred, (9.0, 9.0, 9.0))   # the GT's header counts
    s = evaluation.evaluate_folder(tmp_path / "pred", tmp_path / "gt", num_classes=3, spacing="mm",
                                   workers=1, progress=False)
    assert_scores(s["cases"]["c1"], medpy_case(pred, gt, 3, zooms))
    assert s["spacing"] == "mm"

    pairs = prepared_dataset(tmp_path / "DATA", ["p1"], spacing=[2.0, 0.5, 1.0])
    (tmp_path / "pred2").mkdir()
    np.save(tmp_path / "pred2" / "p1.npy", pairs["p1"][0])
    s = evaluation.evaluate_folder(tmp_path / "pred2", tmp_path / "DATA", split="test", num_classes=3,
                                   spacing="mm", workers=1, progress=False)
    assert_scores(s["cases"]["p1"], medpy_case(*pairs["p1"], 3, (2.0, 0.5, 1.0)))
    s = evaluation.evaluate_folder(tmp_path / "pred2", tmp_path / "DATA", split="test", workers=1, progress=False)
    assert s["num_classes"] == 4 and any("dataset.json" in n for n in s["notes"])
    assert [s["cases"]["p1"][m][2] for m in ("dice", "hd95")] == [100.0, 0.0]    # class 3 in neither

    (tmp_path / "gt_npy").mkdir()
    np.save(tmp_path / "gt_npy" / "p1.npy", pairs["p1"][1])
    s = evaluation.evaluate_folder(tmp_path / "pred2", tmp_path / "gt_npy", num_classes=3, spacing="mm",
                                   workers=1, progress=False)
    assert not s["cases"] and "no spacing known" in s["skipped"]["p1"]


def test_num_classes_from_ground_truth_pads_cases_with_fewer_classes(tmp_path):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    pred3, gt3 = label_pair(3, classes=3)
    pred2, gt2 = label_pair(4, classes=2)                     # holds class 1 only
    for name, (p, g) in {"three": (pred3, gt3), "two": (pred2, gt2)}.items():
        np.save(tmp_path / "gt" / f"{name}.npy", g)
        np.save(tmp_path / "pred" / f"{name}.npy", p)
    odd = pred2.copy()
    odd[0, 0, 0] = 3
    np.save(tmp_path / "gt" / "odd.npy", gt2)
    np.save(tmp_path / "pred" / "odd.npy", odd)
    s = evaluation.evaluate_folder(tmp_path / "pred", tmp_path / "gt", workers=1, progress=False)
    assert s["num_classes"] == 3 and any("num_classes 3" in n for n in s["notes"])
    assert_scores(s["cases"]["three"], medpy_case(pred3, gt3, 3))
    assert s["cases"]["two"]["dice"][1] == 100.0 and s["cases"]["two"]["hd95"][1] == 0.0
    assert "label 3 is outside 0..2" in s["skipped"]["odd"]
    out = tmp_path / "authors.json"
    cli(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--authors-empty-score",
         "--workers", "1", "--no-progress", "--json", str(out)])
    authors = json.loads(out.read_text())
    assert authors["cases"]["two"]["dice"][1] == 1.0 and authors["cases"]["two"]["jaccard"][1] == 1.0
    assert authors["cases"]["three"] == s["cases"]["three"]


def test_evaluate_arrays_checks_shape_and_labels():
    pred, gt = label_pair(5)
    assert_scores(evaluation.evaluate_arrays(pred, gt, 3, spacing=(1.0, 2.0, 3.0)),
                  medpy_case(pred, gt, 3, (1.0, 2.0, 3.0)))
    with pytest.raises(evaluation.CaseError, match="shape"):
        evaluation.evaluate_arrays(pred[:-1], gt, 3)
    with pytest.raises(evaluation.CaseError, match="outside 0..1"):
        evaluation.evaluate_arrays(pred, gt, 2)


def test_pad_gt_reproduces_the_authors_padded_predictions(tmp_path):
    pred, gt = label_pair(6)
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    np.save(tmp_path / "gt" / "c_label.npy", gt)
    padded_pred = np.pad(pred, [(2, 2), (0, 0), (3, 3)])
    np.save(tmp_path / "pred" / "c.npy", padded_pred)
    plain = evaluation.evaluate_folder(tmp_path / "pred", tmp_path / "gt", num_classes=3, workers=1,
                                       progress=False)
    assert "shape" in plain["skipped"]["c"]
    s = evaluation.evaluate_folder(tmp_path / "pred", tmp_path / "gt", num_classes=3, workers=1,
                                   progress=False, pad_gt=True)
    assert_scores(s["cases"]["c"], medpy_case(pred, gt, 3))


def test_aggregate_runs_mean_and_population_std(tmp_path, capsys):
    runs = [{"spacing": "voxel", "mean": {"dice": [d, 50.0], "dice_avg": (d + 50) / 2, "jaccard": [1, 2],
                                           "jaccard_avg": 1.5, "hd95": [h, 0], "hd95_avg": h / 2,
                                           "asd": [0, 0], "asd_avg": 0}}
            for d, h in [(80.0, 2.0), (90.0, 4.0), (70.0, 6.0)]]
    agg = evaluation.aggregate_runs(runs)
    assert agg["runs"] == 3
    assert agg["mean"]["dice"] == [80.0, 50.0]
    assert agg["std"]["dice"][0] == pytest.approx(np.sqrt(200 / 3))     # ddof=0
    assert agg["std"]["dice_avg"] == pytest.approx(np.sqrt(50 / 3))
    assert agg["mean"]["hd95_avg"] == 2.0
    paths = []
    for k, r in enumerate(runs):
        paths.append(tmp_path / f"run{k}.json")
        paths[-1].write_text(json.dumps(r))
    out = tmp_path / "agg.json"
    assert cli(["evaluate", "--aggregate", *map(str, paths), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["std"]["dice"][0] == pytest.approx(np.sqrt(200 / 3))
    assert "80.00 ± 8.16" in capsys.readouterr().out
    runs[1]["spacing"] = "mm"
    with pytest.raises(ValueError, match="mix"):
        evaluation.aggregate_runs(runs)
    paths[0].write_text("{not json")
    assert cli(["evaluate", "--aggregate", *map(str, paths)]) == 2


def test_cli_user_errors(tmp_path):
    assert cli(["evaluate", "--pred", str(tmp_path)]) == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no ground truth"):
        evaluation.find_cases(tmp_path, tmp_path / "empty")
    with pytest.raises(UserError, match="split 'test'"):
        evaluation.find_cases(tmp_path, tmp_path / "empty", split="test")


def test_plots_draw_the_worst_and_best_cases(tmp_path):
    pairs = prepared_dataset(tmp_path / "DATA", ["x1", "x2", "x3"])
    (tmp_path / "pred").mkdir()
    for case_id, (pred, _) in pairs.items():
        np.save(tmp_path / "pred" / f"{case_id}.npy", pred)
    np.save(tmp_path / "pred" / "x2.npy", pairs["x2"][1])                 # perfect: the best case
    figs = tmp_path / "figs"
    rc = cli(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "DATA"), "--num-classes", "3",
              "--plots", str(figs), "--workers", "1", "--no-progress"])
    assert rc == 0
    for name in ("dice_boxplot.png", "overlays.png"):
        assert (figs / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s = evaluation.evaluate_folder(tmp_path / "pred", tmp_path / "DATA", num_classes=3, workers=1, progress=False)
    assert evaluation.worst_and_best(s)[1] == ("best", "x2")
    gt = np.zeros((6, 8, 5), np.uint8)
    gt[1:5, 2:7, 3] = 1                                                   # most foreground: axis 2, slice 3
    gt[2, 2, 1] = 2
    assert evaluation.pick_slice(gt, gt) == (2, 3)
    assert evaluation.pick_slice(np.zeros_like(gt), np.zeros_like(gt)) == (2, 2)


def _evaluate_cli(capsys, *argv):
    code = cli(["evaluate", "--no-progress", "--workers", "1", *map(str, argv)])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return code, out.out, out.err


def _reason_line(text, case_id):
    return next(line.strip() for line in text.splitlines() if line.strip().startswith(f"{case_id}:"))


@pytest.mark.parametrize("kind, words", [
    ("text", "is not a NumPy .npy file (it does not start with the .npy header"),
    ("empty", "is not a NumPy .npy file (the file is empty"),
    ("truncated", "is truncated or corrupt"),
    ("objects", "holds Python objects"),
    ("nan", "1 NaN or infinite value(s)"),
])
def test_a_bad_npy_prediction_is_named_with_its_real_problem(tmp_path, capsys, kind, words):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    pred, gt = label_pair(2, classes=2)
    for case_id in ("ok", "bad"):
        np.save(gt_dir / f"{case_id}_label.npy", gt)
    np.save(pred_dir / "ok.npy", pred)
    bad = pred_dir / "bad.npy"
    if kind == "text":
        bad.write_text("0 1 1 0\n")
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        np.save(bad, pred)
        bad.write_bytes(bad.read_bytes()[:300])
    elif kind == "objects":
        np.save(bad, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    else:
        nan = pred.astype(np.float32)
        nan[0, 0, 0] = np.nan
        np.save(bad, nan)
    code, out, _ = _evaluate_cli(capsys, "--pred", pred_dir, "--gt", gt_dir, "--num-classes", "2")
    assert code == 1
    line = _reason_line(out, "bad")
    assert line.startswith(f"bad: {bad}")
    assert words in line and "pickled" not in line, line
    assert line.count("bad.npy") == 1, line


def _run_summary(path, case_ids, dice):
    path.write_text(json.dumps({
        "spacing": "voxel", "cases": {i: {} for i in case_ids},
        "mean": {"dice": [dice], "dice_avg": dice, "jaccard": [1.0], "jaccard_avg": 1.0,
                 "hd95": [0.0], "hd95_avg": 0.0, "asd": [0.0], "asd_avg": 0.0}}))
    return path


def test_aggregating_runs_that_scored_different_cases_warns(tmp_path, capsys):
    a = _run_summary(tmp_path / "a.json", ["c1", "c2", "c3"], 80.0)
    b = _run_summary(tmp_path / "b.json", ["c1", "c2"], 70.0)
    out = tmp_path / "agg.json"
    code, stdout, stderr = _evaluate_cli(capsys, "--aggregate", a, b, "--json", out)
    assert code == 0
    warnings = [line for line in stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert f"{a} 3" in warnings[0] and f"{b} 2" in warnings[0] and "different sets of cases" in warnings[0]
    agg = json.loads(out.read_text())
    assert agg["cases_per_run"] == [3, 2] and "different sets of cases" in agg["warning"]
    # the same cases: no warning
    b = _run_summary(tmp_path / "b.json", ["c3", "c2", "c1"], 70.0)
    code, _, stderr = _evaluate_cli(capsys, "--aggregate", a, b, "--json", out)
    assert code == 0 and "warning" not in stderr and "warning" not in json.loads(out.read_text())
