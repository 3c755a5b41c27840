"""Pictures a person would rather look at: training curves and slice overlays."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_curves(history: list[dict], path: str | Path, title: str = "", series: dict | None = None) -> None:
    """Loss terms and validation Dice per epoch. ``series`` adds runs to compare:
    {label: history}."""
    plt = _pyplot()
    runs = {"": history} if series is None else series
    fig, (ax_l, ax_d) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, hist in runs.items():
        if not hist:
            continue
        ep = [r["epoch"] for r in hist]
        for key in ("loss", "loss_deno", "loss_diff", "loss_u"):
            if key in hist[0]:
                ax_l.plot(ep, [r[key] for r in hist], label=f"{label} {key}".strip())
        val = [(r["epoch"], r["val_dice"]) for r in hist if "val_dice" in r]
        if val:
            ax_d.plot(*zip(*val), marker=".", label=label or "val Dice")
    ax_l.set_xlabel("epoch"); ax_l.set_title("training loss"); ax_l.legend(fontsize=7)
    ax_d.set_xlabel("epoch"); ax_d.set_title("validation Dice (D_theta)"); ax_d.set_ylim(0, 1)
    ax_d.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _label_rgba(label: np.ndarray, num_classes: int, alpha: float = 0.45) -> np.ndarray:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    rgba = np.zeros((*label.shape, 4))
    for c in range(1, num_classes):
        rgba[label == c] = (*cmap((c - 1) % 10)[:3], alpha)
    return rgba


def plot_overlays(image: np.ndarray, labels: dict[str, np.ndarray], path: str | Path, num_classes: int,
                  title: str = "", axis: int = 0) -> None:
    """One row: the image, then each label map overlaid on it, on the slice (along
    ``axis``) with the most foreground in the first label map."""
    plt = _pyplot()
    first = next(iter(labels.values()))
    if image.ndim == 3:
        fg = (first > 0).sum(axis=tuple(a for a in range(3) if a != axis))
        idx = int(np.argmax(fg)) if fg.any() else image.shape[axis] // 2
        take = lambda a: np.take(a, idx, axis=axis)  # noqa: E731
    else:
        idx, take = None, (lambda a: a)
    fig, axes = plt.subplots(1, 1 + len(labels), figsize=(3 * (1 + len(labels)), 3.2))
    img = take(image)
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title("image" + (f" (slice {idx})" if idx is not None else ""), fontsize=9)
    for ax, (name, lab) in zip(axes[1:], labels.items()):
        ax.imshow(img, cmap="gray")
        ax.imshow(_label_rgba(take(lab), num_classes))
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
