"""Datasets and loaders for training, validation and testing.

Training (METHOD.md, "One training iteration"): a labeled and an unlabeled loader,
both shuffled with ``drop_last``; one of them is "repeated" to the other set's case
count (index ``i`` reads case ``i mod n``), so zipping them gives
``floor(N / batch_size)`` iterations per epoch.

Reproducibility: every sample's augmentation draws from its own
``numpy.random.Generator`` seeded by ``(seed, stream, epoch, index)``. The epoch
travels inside the index the sampler yields (``epoch * length + i``), so a batch
does not depend on the number of workers or on which worker built it, and a
resumed run reproduces an epoch after ``loader.sampler.set_epoch(epoch)``.
"""
from __future__ import annotations

import os
import random
import warnings
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import UserError
from .augment import StrongAugment, center_crop
from .cases import case_paths, load_case, read_split, spatial_shape, split_path

# Cache a dataset's normalised cases in memory when its files take at most this
# much; each loader worker keeps its own copy, so stay well below RAM.
CACHE_LIMIT_BYTES = 1 << 30

LABELED_STREAM, UNLABELED_STREAM = 0, 1


def _files_size(data_dir, ids, need_label: bool) -> int:
    total = 0
    for case_id in ids:
        for k, path in enumerate(case_paths(data_dir, case_id)):
            if (k == 0 or need_label) and path.is_file():
                total += os.path.getsize(path)
    return total


class _CaseStore:
    """Loads, validates and normalises cases; keeps them when the set is small."""

    def __init__(self, data_dir, ids, intensity, num_classes, need_label, cache, ndim, channels=1):
        self.data_dir, self.intensity, self.ndim, self.channels = data_dir, intensity, ndim, channels
        self.num_classes, self.need_label = num_classes, need_label
        if cache is None:
            cache = _files_size(data_dir, ids, need_label) <= CACHE_LIMIT_BYTES
        self.cache = {} if cache else None

    def get(self, case_id):
        if self.cache is not None and case_id in self.cache:
            return self.cache[case_id]
        case = load_case(self.data_dir, case_id, self.intensity, self.num_classes, self.need_label,
                         self.channels)
        axes = case[0].ndim - (self.channels > 1)
        if axes != self.ndim:
            raise UserError(f"{case_paths(self.data_dir, case_id)[0]}: image has {axes} spatial axes "
                            f"but the task's patch_size has {self.ndim} (spatial_dims); "
                            f"use a {axes}D task configuration for this data")
        if self.cache is not None:
            self.cache[case_id] = case
        return case


def as_channels(image: np.ndarray, channels: int) -> torch.Tensor:
    """float32 (C, *S) tensor: a channel axis added to a one-channel image, kept for K > 1."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    return x if channels > 1 else x[None]


class TrainDataset(Dataset):
    """Strongly augmented training patches.

    Item ``k`` reads case ``ids[(k % length) % len(ids)]`` (``k // length`` is the
    epoch, see the module docstring) and returns
    ``{"image": float32 (C, *patch), "label": int64 (*patch)}`` (C = in_channels); unlabeled cases get
    an all-zero dummy label (their label files are not read).

    Args:
        data_dir: prepared data folder.
        ids: case ids.
        cfg: the TaskConfig (patch_size, crop_pad_extra, intensity, num_classes, seed).
        labeled: read labels (else dummy zeros).
        length: items per epoch; ``None`` is ``len(ids)``, a larger value repeats.
        transform: ``f(image, label, rng) -> (image, label)``; default
            :class:`StrongAugment` with the task's patch size and padding.
        stream: separates the random draws of datasets sharing a seed (default 0
            for labeled, 1 for unlabeled).
        cache: keep normalised cases in memory; ``None`` decides by total file size.
    """

    def __init__(self, data_dir, ids, cfg, labeled: bool = True, length: int | None = None,
                 transform: Callable | None = None, stream: int | None = None,
                 cache: bool | None = None):
        self.ids = list(ids)
        if not self.ids:
            raise UserError(f"no {'labeled' if labeled else 'unlabeled'} cases to train on")
        self.length = len(self.ids) if length is None else int(length)
        self.labeled = labeled
        self.seed = int(cfg.seed)
        self.stream = (LABELED_STREAM if labeled else UNLABELED_STREAM) if stream is None else stream
        self.transform = transform if transform is not None else StrongAugment(
            cfg.patch_size, cfg.crop_pad_extra)
        self.channels = int(cfg.in_channels)
        self.store = _CaseStore(data_dir, self.ids, cfg.intensity, cfg.num_classes, labeled, cache,
                                len(cfg.patch_size), self.channels)

    def __len__(self):
        return self.length

    def rng_for(self, index: int) -> np.random.Generator:
        epoch, i = divmod(int(index), self.length)
        return np.random.default_rng([self.seed, self.stream, epoch, i])

    def __getitem__(self, index):
        case_id = self.ids[(int(index) % self.length) % len(self.ids)]
        image, label = self.store.get(case_id)
        if not self.labeled:
            label = np.zeros(spatial_shape(image.shape, self.channels), dtype=np.uint8)
        image, label = self.transform(image, label, self.rng_for(index))
        return {"image": as_channels(image, self.channels),
                "label": torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))}


class EpochShuffleSampler(Sampler):
    """A fresh seeded permutation each epoch, yielding ``epoch * length + i``.

    The epoch advances each time the sampler is iterated; call
    :meth:`set_epoch` to jump (resume).

    With ``world_size`` processes, ``global_batch`` (a multiple of ``world_size``)
    cuts the one permutation into global batches and process ``rank`` takes its
    consecutive share of each: together the processes see exactly the batches one
    process sees, every process the same number of them (a zipped loader or a
    collective never waits for a process that has run out). The permutation depends
    on the seed and the epoch only, never on the number of processes.
    """

    def __init__(self, length: int, seed: int, stream: int = 0, rank: int = 0, world_size: int = 1,
                 global_batch: int | None = None):
        self.length, self.seed, self.stream = int(length), int(seed), int(stream)
        self.rank, self.world_size = int(rank), int(world_size)
        self.global_batch = int(global_batch or world_size)
        if self.global_batch % self.world_size:
            raise UserError(f"a global batch of {self.global_batch} cannot be shared equally by "
                            f"{self.world_size} processes")
        self.share = self.global_batch // self.world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self):
        if self.world_size == 1:
            return self.length
        return (self.length // self.global_batch) * self.share

    def __iter__(self):
        state = np.random.SeedSequence([self.seed, self.stream, self.epoch]).generate_state(1)[0]
        generator = torch.Generator().manual_seed(int(state))
        order = torch.randperm(self.length, generator=generator) + self.epoch * self.length
        self.epoch += 1
        if self.world_size > 1:
            n_batches = self.length // self.global_batch
            start = self.rank * self.share
            order = order[: n_batches * self.global_batch].view(n_batches, self.global_batch)
            order = order[:, start:start + self.share].reshape(-1)
        return iter(order.tolist())


def seed_worker(worker_id: int) -> None:
    """Seed the global NumPy and ``random`` state of a loader worker.

    Our own draws do not use them (see the module docstring); this keeps
    user-supplied transforms that do repeatable. ``torch.initial_seed()`` differs
    per worker and per loader iterator and follows the loader's generator.
    """
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def _loader(dataset, batch_size, sampler, num_workers, drop_last, pin_memory, seed):
    kwargs = {}
    if num_workers > 0:
        kwargs = {"worker_init_fn": seed_worker, "persistent_workers": True,
                  "generator": torch.Generator().manual_seed(int(seed))}
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=drop_last, pin_memory=pin_memory, **kwargs)


def _split_ids(cfg, data_dir, role: str) -> list[str]:
    name = cfg.splits.get(role, role)
    path = split_path(data_dir, name)
    try:
        return read_split(data_dir, name)
    except UserError as e:
        raise UserError(f"{e}. The task's {role} cases come from split '{name}' "
                        f"(splits.{role}); list {role} case ids in {path} or set splits.{role} "
                        f"to another list") from None


def per_process_batch(batch_size: int, world_size: int) -> int:
    """``batch_size`` is the global batch; each of ``world_size`` processes takes an equal share."""
    if batch_size % world_size:
        lower, upper = (batch_size // world_size) * world_size, -(-batch_size // world_size) * world_size
        options = " or ".join(str(b) for b in dict.fromkeys((lower, upper)) if b > 0)
        raise UserError(f"batch_size {batch_size} is the global batch and must be shared equally by the "
                        f"{world_size} processes: use a multiple of {world_size} (e.g. {options}), or "
                        f"another number of processes")
    return batch_size // world_size


def make_train_loaders(cfg, data_dir=None, *, require_unlabeled: bool = True,
                       transform: Callable | None = None, pin_memory: bool | None = None,
                       rank: int = 0, world_size: int = 1):
    """``(labeled_loader, unlabeled_loader)`` for one task.

    The set named by ``cfg.repeat`` is repeated to the other set's case count, so
    both loaders yield ``floor(N / cfg.batch_size)`` batches of
    ``{"image": (B, 1, *patch), "label": (B, *patch)}`` per epoch. With
    ``require_unlabeled=False`` a missing or empty unlabeled list gives
    ``(labeled_loader, None)`` over the labeled cases alone (supervised training).

    With ``world_size`` processes, ``cfg.batch_size`` is the global batch: process
    ``rank`` gets batches of ``batch_size / world_size``, its share of each global
    batch (see :class:`EpochShuffleSampler`).
    """
    data_dir = cfg.data_dir if data_dir is None else data_dir
    labeled_ids = _split_ids(cfg, data_dir, "labeled")
    try:
        unlabeled_ids = _split_ids(cfg, data_dir, "unlabeled")
    except UserError:
        if require_unlabeled:
            raise
        unlabeled_ids = []
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()

    n_l, n_u = len(labeled_ids), len(unlabeled_ids)
    if not unlabeled_ids:
        length_l = length_u = n_l
    elif cfg.repeat == "labeled":
        length_l = length_u = n_u
    elif cfg.repeat == "unlabeled":
        length_l = length_u = n_l
    else:
        raise UserError(f"repeat must be 'labeled' or 'unlabeled', got {cfg.repeat!r}")
    if length_l < cfg.batch_size:
        raise UserError(f"an epoch has {length_l} cases (labeled {n_l}, unlabeled {n_u}, "
                        f"repeat={cfg.repeat}) but batch_size is {cfg.batch_size}: with drop_last "
                        f"that is no iteration; lower batch_size or add cases")

    for name, n, length in (("labeled", n_l, length_l), ("unlabeled", n_u, length_u)):
        if length < n:
            # The authors' rule: index i reads case i mod n, so with fewer items than
            # cases the last ones are never read.
            warnings.warn(f"repeat={cfg.repeat!r} gives {length} {name} items per epoch for {n} "
                          f"{name} cases: cases {length + 1}..{n} of split "
                          f"'{cfg.splits.get(name, name)}' are never used; set repeat to "
                          f"{'unlabeled' if cfg.repeat == 'labeled' else 'labeled'} to use them all",
                          stacklevel=2)

    share = per_process_batch(cfg.batch_size, world_size)

    def sampler(length, stream):
        return EpochShuffleSampler(length, cfg.seed, stream, rank, world_size, cfg.batch_size)

    labeled = TrainDataset(data_dir, labeled_ids, cfg, labeled=True, length=length_l, transform=transform)
    lab_loader = _loader(labeled, share, sampler(length_l, LABELED_STREAM), cfg.num_workers, True,
                         pin_memory, cfg.seed)
    if not unlabeled_ids:
        return lab_loader, None
    unlabeled = TrainDataset(data_dir, unlabeled_ids, cfg, labeled=False, length=length_u,
                             transform=transform)
    unl_loader = _loader(unlabeled, share, sampler(length_u, UNLABELED_STREAM), cfg.num_workers, True,
                         pin_memory, cfg.seed + 1)
    return lab_loader, unl_loader


class EvalDataset(Dataset):
    """Whole prepared volumes (normalised) for validation and testing.

    Items: ``{"id": str, "image": float32 (C, *shape), "label": int64 (*shape)}``
    (no ``"label"`` with ``need_label=False``). With ``crop=True`` the volume is
    cut to the centre patch (METHOD.md, "Validation").
    """

    def __init__(self, data_dir, ids, cfg, crop: bool = False, need_label: bool = True,
                 cache: bool | None = None):
        self.ids = list(ids)
        self.crop = crop
        self.need_label = need_label
        self.patch_size = tuple(cfg.patch_size)
        self.pad_extra = cfg.crop_pad_extra
        self.channels = int(cfg.in_channels)
        self.store = _CaseStore(data_dir, self.ids, cfg.intensity, cfg.num_classes, need_label, cache,
                                len(cfg.patch_size), self.channels)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        case_id = self.ids[index]
        image, label = self.store.get(case_id)
        if self.crop:
            image, label = center_crop(image, label, self.patch_size, self.pad_extra)
        item = {"id": case_id, "image": as_channels(image, self.channels)}
        if self.need_label:
            item["label"] = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
        return item


def make_eval_loader(cfg, data_dir=None, split: str = "eval", crop: bool = True,
                     need_label: bool = True) -> DataLoader:
    """Batch-1, in-order loader over a split.

    ``split`` is a role in ``cfg.splits`` ("eval", "test") or a split file name;
    ``crop=True`` gives validation's centre patch, ``crop=False`` whole volumes.
    """
    data_dir = cfg.data_dir if data_dir is None else data_dir
    ids = _split_ids(cfg, data_dir, split)
    return DataLoader(EvalDataset(data_dir, ids, cfg, crop=crop, need_label=need_label),
                      batch_size=1, shuffle=False, num_workers=0)
