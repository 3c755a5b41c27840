"""`genericssl prepare la`: HDF5 to arrays, the SSL splits, bad cases, re-runs."""
import json
import os

import numpy as np
import pytest

from genericssl.cli import main as cli
from genericssl.errors import UserError
from genericssl.prepare import la
from prepare_fixtures import LA_SET, la_id, make_la, write_la_case


def _split(out, name):
    return (out / "split_txts" / f"{name}.txt").read_text().splitlines()


def test_arrays_are_the_hdf5_contents_as_xyz(tmp_path):
    arrays = make_la(tmp_path / "raw", n_train=5, n_test=2)
    out = tmp_path / "LA_data"
    assert cli(["prepare", "la", "--raw", str(tmp_path / "raw"), "--out", str(out), "--workers", "1"]) == 0
    for cid, (image, label) in arrays.items():
        got = np.load(out / "npy" / f"{cid}_image.npy")
        assert got.dtype == np.float32 and np.array_equal(got, image.astype(np.float32))
        lab = np.load(out / "npy" / f"{cid}_label.npy")
        assert lab.dtype == np.uint8 and np.array_equal(lab, label)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["axes"] == "xyz" and meta["num_classes"] == 2 and meta["labels"]["1"] == "left atrium"
    assert set(meta["cases"]) == set(arrays)
    assert (out / "split_txts" / "train.txt").read_text().endswith("\n")


def test_splits_follow_the_authors_on_80_cases(tmp_path, capsys):
    make_la(tmp_path / "raw", n_train=80, n_test=20, shape=(4, 4, 4))
    out = tmp_path / "out"
    assert la.prepare(tmp_path / "raw", out, seed=3) == 0
    train = sorted(la_id(i) for i in range(80))
    assert _split(out, "train") == train
    assert _split(out, "test") == sorted(la_id(i) for i in range(80, 100))
    for r, k in ((0.05, 4), (0.1, 8)):
        assert _split(out, f"labeled_{r}") == train[:k]
        assert _split(out, f"eval_{r}") == train[:k]  # the authors validate on the labeled cases
        assert _split(out, f"unlabeled_{r}") == train[k:]
        held = _split(out, f"heldout_eval_{r}")
        assert len(held) == k and set(held) <= set(train[k:])
    assert "heldout_eval" in capsys.readouterr().out


def test_small_set_takes_one_labeled_case_and_says_so(tmp_path, capsys):
    make_la(tmp_path / "raw", n_train=5, n_test=2)
    assert la.prepare(tmp_path / "raw", tmp_path / "out") == 0
    assert "rounds to 0; taking 1 case" in capsys.readouterr().out
    assert len(_split(tmp_path / "out", "labeled_0.05")) == 1


def test_bad_cases_are_skipped_and_listed(tmp_path, capsys):
    raw = tmp_path / "raw"
    make_la(raw, n_train=8, n_test=2)
    ids = (raw / "train.list").read_text().split()
    (raw / LA_SET / ids[0] / "mri_norm2.h5").unlink()                              # missing
    (raw / LA_SET / ids[1] / "mri_norm2.h5").write_bytes(b"not an hdf5 file")     # unreadable
    shape = (12, 10, 8)
    write_la_case(raw, ids[2], np.full(shape, np.nan), np.zeros(shape, np.uint8))  # NaN
    write_la_case(raw, ids[3], np.ones(shape), np.zeros(shape, np.uint8))          # constant
    write_la_case(raw, ids[4], np.random.rand(*shape), np.full(shape, 3, np.uint8))  # unknown code
    write_la_case(raw, ids[5], np.random.rand(*shape), np.zeros((12, 10, 7), np.uint8))  # shape mismatch
    assert la.prepare(raw, tmp_path / "out") == 1
    assert not (tmp_path / "out" / "split_txts").exists()
    assert la.prepare(raw, tmp_path / "out", allow_skips=True) == 0
    out = capsys.readouterr().out
    assert "skipped 6:" in out
    for cid, why in zip(ids, ("file missing", "cannot read", "NaN", "constant", "label codes [3]", "differs")):
        assert any(cid in line and why in line for line in out.splitlines()), (cid, why)
    assert _split(tmp_path / "out", "train") == sorted(ids[6:])
    assert not (tmp_path / "out" / "npy" / f"{ids[0]}_image.npy").exists()


def test_no_empty_split_lists(tmp_path):
    raw = tmp_path / "raw"
    make_la(raw, n_train=2, n_test=1)
    ids = (raw / "train.list").read_text().split()
    (raw / LA_SET / ids[1] / "mri_norm2.h5").unlink()
    with pytest.raises(UserError, match="unlabeled_0.05.*would be empty"):
        la.prepare(raw, tmp_path / "out", allow_skips=True)


def test_rerun_reuses_cases_and_force_redoes_them(tmp_path, capsys):
    make_la(tmp_path / "raw", n_train=3, n_test=1)
    out = tmp_path / "out"
    la.prepare(tmp_path / "raw", out)
    cid = la_id(0)
    first = os.stat(out / "npy" / f"{cid}_image.npy").st_mtime_ns
    capsys.readouterr()
    la.prepare(tmp_path / "raw", out)
    assert "4 reused" in capsys.readouterr().out
    assert os.stat(out / "npy" / f"{cid}_image.npy").st_mtime_ns == first
    la.prepare(tmp_path / "raw", out, force=True)
    assert "0 reused" in capsys.readouterr().out
    assert not [p for p in (out / "npy").iterdir() if p.name.endswith(".tmp")]


def test_parallel_workers_give_the_same_output(tmp_path):
    make_la(tmp_path / "raw", n_train=4, n_test=2)
    la.prepare(tmp_path / "raw", tmp_path / "one", workers=1)
    la.prepare(tmp_path / "raw", tmp_path / "two", workers=2)
    for p in sorted((tmp_path / "one" / "npy").iterdir()):
        assert np.array_equal(np.load(p), np.load(tmp_path / "two" / "npy" / p.name))
    for p in sorted((tmp_path / "one" / "split_txts").iterdir()):
        assert p.read_text() == (tmp_path / "two" / "split_txts" / p.name).read_text()


def test_published_lists_replace_generated_ones(tmp_path, capsys):
    make_la(tmp_path / "raw", n_train=5, n_test=2)
    mine = tmp_path / "authors"
    mine.mkdir()
    (mine / "labeled_0.05.txt").write_text(f"{la_id(3)}\n")
    (mine / "unlabeled_0.05.txt").write_text("".join(f"{la_id(i)}\n" for i in (0, 1, 2, 4)))
    assert cli(["prepare", "la", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                "--splits", str(mine), "--workers", "1"]) == 0
    assert _split(tmp_path / "out", "labeled_0.05") == [la_id(3)]
    (mine / "labeled_0.05.txt").write_text("NOSUCHCASE\n")
    assert cli(["prepare", "la", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
                "--splits", str(mine), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert "labeled_0.05.txt" in err and "NOSUCHCASE" in err


def test_missing_lists_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "raw").mkdir()
    assert cli(["prepare", "la", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "o")]) == 2
    assert "train.list" in capsys.readouterr().err
