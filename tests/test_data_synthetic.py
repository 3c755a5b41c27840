"""The synthetic task generator: layout, determinism, domains, settings."""
import dataclasses
import json

import numpy as np
import pytest

from genericssl.config import load_config
from genericssl.data.cases import load_case, normalize_intensity, read_split
from genericssl.data.synthetic import (DomainProfile, SyntheticSpec, make_case, make_synthetic_dataset,
                                       named_spec, semidg_spec, uda_spec)
from genericssl.errors import UserError


def _small(spec, size=24, **counts):
    spec.shape = (size,) * len(spec.shape)
    spec.counts = {d.name: dict(counts or {"train": 4, "eval": 1, "test": 1}) for d in spec.domains}
    return spec


def test_writes_prepared_layout_and_a_loadable_task(tmp_path):
    spec = _small(named_spec("demo"), size=32)
    summary = make_synthetic_dataset(tmp_path / "d", spec)
    root = tmp_path / "d"
    assert summary["splits"] == {"labeled": 4, "unlabeled": 4, "eval": 2, "test": 2, "train_all": 8}
    assert summary["cases"] == {"A": {"train": 4, "eval": 1, "test": 1}, "B": {"train": 4, "eval": 1, "test": 1}}
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["num_classes"] == 4 and len(meta["cases"]) == 12
    assert meta["cases"]["B_test_000"]["domain"] == "B"
    labeled = read_split(root, "labeled")
    assert not set(labeled) & set(read_split(root, "unlabeled"))
    assert {meta["cases"][i]["domain"] for i in labeled} == {"A", "B"}   # stratified
    for case_id in meta["cases"]:
        raw = np.load(root / "npy" / f"{case_id}_image.npy")
        assert raw.dtype == np.float32 and raw.shape == (32, 32, 32)
        assert np.load(root / "npy" / f"{case_id}_label.npy").dtype == np.uint8
    cfg = load_config(config_file=root / "task.yaml")
    assert cfg.data_dir == str(root) and cfg.num_classes == 4 and cfg.patch_size == (32, 32, 32)
    assert cfg.splits["labeled"] == "labeled" and cfg.spatial_dims == 3
    image, label = load_case(root, labeled[0], cfg.intensity, cfg.num_classes)
    assert set(np.unique(label)) == {0, 1, 2, 3}     # every class drawn, the small one too
    counts = np.bincount(label.ravel())
    assert counts[3] < 0.25 * counts[1]               # imbalanced


def test_deterministic_per_seed(tmp_path):
    spec = _small(named_spec("demo"))
    make_synthetic_dataset(tmp_path / "a", spec)
    make_synthetic_dataset(tmp_path / "b", spec)
    make_synthetic_dataset(tmp_path / "c", dataclasses.replace(spec, seed=1))
    for name in ("A_train_002_image", "B_test_000_label"):
        a, b, c = (np.load(tmp_path / d / "npy" / f"{name}.npy") for d in "abc")
        assert np.array_equal(a, b) and not np.array_equal(a, c)
    for split in ("labeled", "test"):
        assert read_split(tmp_path / "a", split) == read_split(tmp_path / "b", split)


def test_regenerating_replaces_but_foreign_folders_are_refused(tmp_path):
    spec = _small(named_spec("demo"))
    make_synthetic_dataset(tmp_path / "d", spec)
    fewer = dataclasses.replace(spec, counts={"A": {"train": 2, "eval": 1, "test": 1}, "B": {"train": 2, "eval": 0, "test": 1}})
    make_synthetic_dataset(tmp_path / "d", fewer)
    assert len(list((tmp_path / "d" / "npy").glob("*_image.npy"))) == 7
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="not empty"):
        make_synthetic_dataset(tmp_path / "mine", spec)


def _class_means(spec, domain_index, n=3):
    out = []
    for k in range(n):
        image, label = make_case(spec, domain_index, "train", k)
        image = normalize_intensity(image, spec.intensity)
        out.append([image[label == c].mean() for c in range(spec.num_classes)])
    return np.mean(out, axis=0)


def test_uda_target_maps_intensity_non_monotonically_and_splits_by_domain(tmp_path):
    spec = _small(uda_spec())
    src, tgt = _class_means(spec, 0), _class_means(spec, 1)
    # class 2 is far darker than class 1 in the source and as bright in the target (class 0,
    # air and tissue, stays dark); class 3 stays the brightest
    assert src[1] - src[2] > 0.5 and abs(tgt[1] - tgt[2]) < 0.1 and tgt[2] - tgt[0] > 0.3
    for m in (src, tgt):
        assert m[3] > max(m[:3])
    summary = make_synthetic_dataset(tmp_path, spec)
    assert summary["task"]["intensity"]["percentile"] == [0.5, 99.5]
    assert all(i.startswith("src_") for i in read_split(tmp_path, "labeled"))
    for split in ("unlabeled", "eval", "test"):
        assert all(i.startswith("tgt_") for i in read_split(tmp_path, split))


def test_semidg_domains_differ_and_hold_one_out(tmp_path):
    spec = _small(semidg_spec(labeled=0.25), size=24, train=4, eval=1, test=1)
    stats = []
    for d in range(4):
        image, _ = make_case(spec, d, "train", 0)
        norm = normalize_intensity(image, spec.intensity)
        stats.append((image.max(), norm.mean(), norm.std()))
    stats = np.array(stats)
    assert len(np.unique(np.round(stats[:, 0], -1))) == 4          # raw units differ
    assert np.ptp(stats[:, 1]) > 0.03 or np.ptp(stats[:, 2]) > 0.03
    summary = make_synthetic_dataset(tmp_path, spec)
    assert sorted(summary["tasks"]) == [f"semidg_0.25_to{x}" for x in "ABCD"]
    for held in "ABCD":
        test = read_split(tmp_path, f"to{held}_test")
        assert len(test) == 6 and all(i.startswith(held + "_") for i in test)
        train = read_split(tmp_path, f"to{held}_labeled") + read_split(tmp_path, f"to{held}_unlabeled")
        assert len(train) == 12 and not any(i.startswith(held + "_") for i in train)
        assert len(read_split(tmp_path, f"to{held}_labeled")) == 3   # ceil(4 * 0.25) per domain
        task = summary["tasks"][f"semidg_0.25_to{held}"]
        assert task["splits"]["test"] == f"to{held}_test"


def test_two_dimensional_and_many_class_specs(tmp_path):
    spec = SyntheticSpec(shape=(40, 40), num_classes=6, labeled=2,
                         domains=[DomainProfile("A", gamma=1.3)],
                         default_counts={"train": 4, "eval": 1, "test": 1})
    summary = make_synthetic_dataset(tmp_path, spec)
    assert summary["spatial_dims"] == 2 and summary["task"]["patch_size"] == [32, 32]
    assert summary["splits"]["labeled"] == 2
    image, label = make_case(spec, 0, "train", 0)
    assert image.shape == (40, 40) and label.max() <= 5
    ib = named_spec("ibssl", size=32)
    _, label = make_case(ib, 0, "train", 0)
    counts = np.bincount(label.ravel(), minlength=ib.num_classes)
    assert counts[1:].max() > 20 * max(counts[-1], 1)    # very different sizes
    assert 0 < counts[-1] < 200                          # a tiny class, present


def test_bad_specs_are_user_errors():
    with pytest.raises(UserError, match="structure_sizes"):
        SyntheticSpec(num_classes=3, structure_sizes=(0.2,)).validate()
    with pytest.raises(UserError, match="unknown synthetic spec"):
        named_spec("nope")
    with pytest.raises(UserError, match="setting"):
        SyntheticSpec(setting="fancy").validate()
