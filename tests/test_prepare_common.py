"""The machinery every dataset shares: splits, rounding, atomic writes, the re-runnable loop."""
import json
import os

import numpy as np
import pytest

from genericssl.errors import UserError
from genericssl.prepare import common
from genericssl.prepare.common import CaseError


def test_seeded_permutation_depends_on_seed_and_tag_only():
    ids = [f"c{i:02d}" for i in range(20)]
    a = common.seeded_permutation(ids, 0, "x")
    assert a == common.seeded_permutation(list(reversed(ids)), 0, "x")  # input order does not matter
    assert sorted(a) == sorted(ids)
    assert a != common.seeded_permutation(ids, 1, "x")
    assert a != common.seeded_permutation(ids, 0, "y")


def test_count_of_rounds_like_the_authors_but_never_to_zero(capsys):
    assert common.count_of(80, 0.05, "t") == 4
    assert common.count_of(80, 0.1, "t") == 8
    assert common.count_of(100, 0.29, "t") == 29  # 0.29 * 100 = 28.999... in floating point
    assert common.count_of(50, 0.02, "t", rounding="ceil") == 1
    assert common.count_of(51, 0.02, "t", rounding="ceil") == 2
    assert common.count_of(5, 0.05, "LA labeled") == 1
    assert "rounds to 0; taking 1" in capsys.readouterr().out


def test_atomic_write_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "a.npy"
    common.save_npy(target, np.arange(3))

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        common.atomic_write(target, boom)
    assert np.array_equal(np.load(target), np.arange(3))  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_affines_match_tolerates_rounding_but_not_a_flip():
    a = np.diag([0.8, 0.8, 2.0, 1.0])
    b = a.copy()
    b[:3, 3] += 1e-4
    assert common.affines_match(a, b, (10, 10, 5))
    c = a.copy()
    c[0, 0] = -0.8
    assert not common.affines_match(a, c, (10, 10, 5))


def test_save_case_refuses_nan_constant_and_out_of_range(tmp_path):
    img, lab = np.random.rand(4, 4, 4), np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(CaseError, match="NaN"):
        common.save_case(tmp_path, "x", np.where(img > 0.5, np.nan, img), lab, 2)
    with pytest.raises(CaseError, match="constant"):
        common.save_case(tmp_path, "x", np.ones((4, 4, 4)), lab, 2)
    with pytest.raises(CaseError, match="outside 0..1"):
        common.save_case(tmp_path, "x", img, lab + 2, 2)
    assert not list(tmp_path.iterdir())
    common.save_case(tmp_path, "x", img, lab, 2)
    assert np.load(tmp_path / "x_image.npy").dtype == np.float32
    assert np.load(tmp_path / "x_label.npy").dtype == np.uint8


def test_supplied_lists_are_checked(tmp_path):
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "labeled.txt").write_text("a\nb\n")
    supplied = common.read_split_dir(tmp_path / "lists")
    common.write_splits(tmp_path / "out", {"labeled": ["a"], "test": ["c"]}, supplied, {"a", "b", "c"},
                        supplied_dir=tmp_path / "lists")
    assert (tmp_path / "out" / "split_txts" / "labeled.txt").read_text() == "a\nb\n"
    with pytest.raises(UserError, match=r"labeled\.txt.*zz"):
        common.write_splits(tmp_path / "out", {}, {"labeled": ["a", "zz"]}, {"a"}, supplied_dir=tmp_path / "lists")
    with pytest.raises(UserError, match="test would be empty"):
        common.write_splits(tmp_path / "out", {"test": []}, {}, {"a"})
    (tmp_path / "lists" / "empty.txt").write_text("\n")
    with pytest.raises(UserError, match="empty.txt is empty"):
        common.read_split_dir(tmp_path / "lists")


def _double(item):
    if item["key"] == "bad":
        raise CaseError("bad: cannot read it")
    if item["key"] == "crash":
        raise ValueError("unexpected")
    x = np.load(item["inputs"][0])
    common.save_case(item["npy_dir"], item["key"], x * 2, np.zeros(x.shape, np.uint8), 2)
    return {"cases": {item["key"]: {"n": int(x.size)}}}


def test_run_items_skips_bad_items_and_reuses_finished_ones(tmp_path):
    items = []
    for key in ("a", "b", "bad", "crash"):
        np.save(tmp_path / f"{key}.npy", np.arange(8.0) + ord(key[0]))
        items.append({"key": key, "inputs": [str(tmp_path / f"{key}.npy")]})
    out = tmp_path / "out"
    res = common.run_items(_double, items, out, params={"v": 1}, workers=1, force=False, desc="t")
    assert list(res.cases) == ["a", "b"] and res.prepared == 2
    assert [k for k, _ in res.failed] == ["bad", "crash"]
    assert "ValueError: unexpected" in res.failed[1][1]

    before = os.stat(out / "npy" / "a_image.npy").st_mtime_ns
    res = common.run_items(_double, items, out, params={"v": 1}, workers=1, force=False, desc="t")
    assert res.reused == 2 and res.prepared == 0
    assert os.stat(out / "npy" / "a_image.npy").st_mtime_ns == before

    np.save(tmp_path / "b.npy", np.arange(8.0) * 10)  # a changed input is redone
    res = common.run_items(_double, items, out, params={"v": 1}, workers=1, force=False, desc="t")
    assert res.reused == 1 and res.prepared == 1
    assert np.load(out / "npy" / "b_image.npy")[1] == 20
    res = common.run_items(_double, items, out, params={"v": 2}, workers=1, force=False, desc="t")
    assert res.prepared == 2  # other settings: nothing reused
    (out / "npy" / "a_label.npy").unlink()  # a half-finished case is redone
    res = common.run_items(_double, items, out, params={"v": 2}, workers=1, force=False, desc="t")
    assert res.prepared == 1 and (out / "npy" / "a_label.npy").is_file()
    res = common.run_items(_double, items, out, params={"v": 2}, workers=1, force=True, desc="t")
    assert res.prepared == 2 and res.reused == 0
    rec = json.loads((out / common.RECORDS / "a.json").read_text())
    assert rec["cases"] == {"a": {"n": 8}}


def test_summary_exit_status(capsys):
    res = common.Results(cases={}, failed=[("x", "x: label missing")])
    assert common.summarize(res, "T") == 1
    out = capsys.readouterr()
    assert "x: label missing" in out.out and "nothing could be prepared" in out.err
    res = common.Results(cases={"y": {}}, failed=[("x", "label missing")], prepared=1)
    assert common.summarize(res, "T") == 1  # a skipped case: the dataset is not finished
    out = capsys.readouterr()
    assert "x: label missing" in out.out and "--allow-skips" in out.err
    assert common.summarize(res, "T", allow_skips=True) == 0
    assert "1 cases written, 1 skipped" in capsys.readouterr().out


def _die_on_crash(item):
    if item["key"] == "crash":
        os._exit(3)  # what the kernel's out-of-memory killer does to a worker
    return _double(item)


def test_a_killed_worker_does_not_abort_the_run(tmp_path):
    items = []
    for key in ("a", "crash", "b"):
        np.save(tmp_path / f"{key}.npy", np.arange(8.0) + 1)
        items.append({"key": key, "inputs": [str(tmp_path / f"{key}.npy")]})
    res = common.run_items(_die_on_crash, items, tmp_path / "out", params={}, workers=2, force=False, desc="t")
    assert any(k == "crash" and "worker process failed" in why for k, why in res.failed)
    res = common.run_items(_double, [i for i in items if i["key"] != "crash"], tmp_path / "out", params={},
                           workers=1, force=False, desc="t")
    assert sorted(res.cases) == ["a", "b"]  # a re-run finishes what the broken pool left
