"""Training/validation loaders: repeat semantics, seeding, bad split lists."""
import numpy as np
import pytest
import torch

from genericssl.config import TaskConfig
from genericssl.data.loaders import EvalDataset, TrainDataset, make_eval_loader, make_train_loaders
from genericssl.errors import UserError


def _dataset(root, n_labeled, n_unlabeled, shape=(20, 20, 20)):
    """Case ``l<k>`` has exactly k+1 foreground voxels, so a label identifies its case."""
    (root / "npy").mkdir(parents=True)
    (root / "split_txts").mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("l", n_labeled), ("u", n_unlabeled)):
        for k in range(n):
            np.save(root / "npy" / f"{prefix}{k}_image.npy", rng.normal(0, 1, shape).astype(np.float32))
            label = np.zeros(shape, np.uint8)
            label.flat[:k + 1] = 1
            np.save(root / "npy" / f"{prefix}{k}_label.npy", label)
    (root / "split_txts" / "lab.txt").write_text("".join(f"l{k}\n" for k in range(n_labeled)))
    (root / "split_txts" / "unl.txt").write_text("".join(f"u{k}\n" for k in range(n_unlabeled)))
    (root / "split_txts" / "ev.txt").write_text("l0\nl1\n")


def _cfg(root, **kw):
    fields = dict(data_dir=str(root), patch_size=(16, 16, 16), num_classes=2, batch_size=2,
                  seed=0, num_workers=0, repeat="labeled",
                  splits={"labeled": "lab", "unlabeled": "unl", "eval": "ev", "test": "ev"})
    fields.update(kw)
    return TaskConfig.from_dict(fields)


def _identity(image, label, rng):
    return image, label


def test_repeated_dataset_reads_case_i_mod_n(tmp_path):
    _dataset(tmp_path, 3, 0)
    ds = TrainDataset(tmp_path, ["l0", "l1", "l2"], _cfg(tmp_path), length=10, transform=_identity)
    assert len(ds) == 10
    assert [int(ds[i]["label"].sum()) - 1 for i in range(10)] == [i % 3 for i in range(10)]
    item = ds[0]
    assert item["image"].shape == (1, 20, 20, 20) and item["image"].dtype == torch.float32
    assert item["label"].dtype == torch.int64
    unl = TrainDataset(tmp_path, ["l2"], _cfg(tmp_path), labeled=False, transform=_identity)
    assert not unl[0]["label"].any()


@pytest.mark.parametrize("repeat, batch, items", [("labeled", 4, 10), ("unlabeled", 2, 5)])
def test_repeat_sets_both_lengths_and_iterations(tmp_path, repeat, batch, items):
    _dataset(tmp_path, 5, 10)       # 5 labeled, 10 unlabeled cases
    cfg = _cfg(tmp_path, repeat=repeat, batch_size=batch)
    if repeat == "unlabeled":       # unlabeled cut to 5 items: cases 6..10 unused
        with pytest.warns(UserWarning, match="cases 6..10 .* never used"):
            lab, unl = make_train_loaders(cfg)
    else:
        lab, unl = make_train_loaders(cfg)
    assert len(lab.dataset) == len(unl.dataset) == items
    assert len(lab) == len(unl) == items // batch
    batches = list(zip(lab, unl))
    assert len(batches) == items // batch
    bl, bu = batches[0]
    assert bl["image"].shape == (batch, 1, 16, 16, 16) and bl["label"].shape == (batch, 16, 16, 16)
    assert not bu["label"].any()


def test_labeled_repeated_epoch_covers_every_case(tmp_path):
    _dataset(tmp_path, 3, 9)
    cfg = _cfg(tmp_path, batch_size=3, patch_size=(20, 20, 20))
    lab, _ = make_train_loaders(cfg, transform=_identity)
    seen = [int(s) - 1 for b in lab for s in b["label"].sum(dim=(1, 2, 3))]
    assert sorted(seen) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def _batches(loaders, epochs=2):
    out = []
    for _ in range(epochs):
        for bl, bu in zip(*loaders):
            out.append((bl["image"], bl["label"], bu["image"]))
    return out


def test_same_seed_same_batches_any_worker_count(tmp_path):
    _dataset(tmp_path, 4, 6)
    a = _batches(make_train_loaders(_cfg(tmp_path)))
    b = _batches(make_train_loaders(_cfg(tmp_path, num_workers=2)))
    c = _batches(make_train_loaders(_cfg(tmp_path, seed=1)))
    assert len(a) == 6
    for x, y in zip(a, b):
        assert all(torch.equal(u, v) for u, v in zip(x, y))
    assert not torch.equal(a[0][0], c[0][0])
    assert not torch.equal(a[0][0], a[3][0])   # epochs differ


def test_set_epoch_reproduces_an_epoch(tmp_path):
    _dataset(tmp_path, 4, 6)
    loaders = make_train_loaders(_cfg(tmp_path))
    _batches(loaders, epochs=2)
    third = _batches(loaders, epochs=1)
    fresh = make_train_loaders(_cfg(tmp_path))
    for loader in fresh:
        loader.sampler.set_epoch(2)
    again = _batches(fresh, epochs=1)
    assert all(torch.equal(u, v) for x, y in zip(third, again) for u, v in zip(x, y))


def test_empty_or_missing_split_lists_say_what_to_change(tmp_path):
    _dataset(tmp_path, 3, 4)
    (tmp_path / "split_txts" / "lab.txt").write_text("\n")
    with pytest.raises(UserError, match=r"lab\.txt is empty.*labeled cases come from split 'lab'.*splits\.labeled"):
        make_train_loaders(_cfg(tmp_path))
    (tmp_path / "split_txts" / "lab.txt").write_text("l0\nl1\n")
    cfg = _cfg(tmp_path, splits={"labeled": "lab", "unlabeled": "nothing"})
    with pytest.raises(UserError, match=r"nothing\.txt does not exist.*splits\.unlabeled"):
        make_train_loaders(cfg)
    lab, unl = make_train_loaders(cfg, require_unlabeled=False)
    assert unl is None and len(lab) == 1
    with pytest.raises(UserError, match="batch_size is 8"):
        make_train_loaders(_cfg(tmp_path, batch_size=8))


def test_bad_case_surfaces_as_user_error_naming_file(tmp_path):
    _dataset(tmp_path, 2, 2)
    np.save(tmp_path / "npy" / "l1_label.npy", np.full((20, 20, 20), 5, np.uint8))
    lab, _ = make_train_loaders(_cfg(tmp_path))
    with pytest.raises(UserError, match=r"l1_label\.npy: label values \[5\]"):
        list(lab)


def test_eval_dataset_whole_and_centre_crop(tmp_path):
    _dataset(tmp_path, 2, 0, shape=(20, 12, 24))
    cfg = _cfg(tmp_path)
    whole = EvalDataset(tmp_path, ["l0", "l1"], cfg)
    item = whole[1]
    assert item["id"] == "l1" and item["image"].shape == (1, 20, 12, 24)
    assert item["label"].shape == (20, 12, 24) and int(item["label"].sum()) == 2
    loader = make_eval_loader(cfg, split="eval", crop=True)
    batch = next(iter(loader))
    assert batch["image"].shape == (1, 1, 16, 16, 16) and batch["label"].shape == (1, 16, 16, 16)
    assert batch["id"] == ["l0"]
    nolabel = EvalDataset(tmp_path, ["l0"], cfg, need_label=False)
    assert "label" not in nolabel[0]
