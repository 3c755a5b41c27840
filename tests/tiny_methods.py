"""Tiny configurations and batches shared by the method tests (16^3, 3 classes, 4 filters)."""
import torch

from genericssl.config import TaskConfig, apply_overrides

C = 3


def tiny_cfg(**kw):
    base = dict(patch_size=(16, 16, 16), num_classes=C, base_filters=4, batch_size=2, max_epoch=9,
                rampup_epochs=3, unsup_weight=1.0, num_workers=0, seed=0, patience=100)
    base.update(kw)
    return apply_overrides(TaskConfig(), base).validate()


def batches(seed=0, b=2):
    g = torch.Generator().manual_seed(seed)
    return ({"image": torch.rand(b, 1, 16, 16, 16, generator=g),
             "label": torch.randint(0, C, (b, 16, 16, 16), generator=g)},
            {"image": torch.rand(b, 1, 16, 16, 16, generator=g)})
