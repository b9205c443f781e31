"""Plots used across the notebooks: image grids, augmented views, training curves."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch

from .train import History


def to_display(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] uint8 or float in [0, 1] -> [N, H, W, 3] float on the CPU, ready for imshow."""
    images = images.detach().cpu()
    images = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    return images.clamp(0, 1).permute(0, 2, 3, 1)


def show_images(images: torch.Tensor, titles: Sequence[str] | None = None, ncols: int = 8,
                title: str | None = None, size: float = 1.4, title_colors: Sequence[str] | None = None):
    """A grid of images with optional per-image titles; returns the figure."""
    pixels = to_display(images)
    n = len(pixels)
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if title else 0)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(pixels[i], interpolation="nearest")
            if titles is not None:
                color = title_colors[i] if title_colors is not None else "black"
                ax.set_title(titles[i], fontsize=8, color=color)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_views(images: torch.Tensor, augment, n: int = 8, generator: torch.Generator | None = None,
               class_names: Sequence[str] | None = None, labels: torch.Tensor | None = None):
    """Each of the first `n` images above its two augmented views: what the contrastive loss sees."""
    images = images[:n]
    view1, view2 = augment(images, generator), augment(images, generator)
    fig, axes = plt.subplots(3, len(images), figsize=(1.4 * len(images), 4.6), squeeze=False)
    for row, (name, batch) in enumerate([("image", images), ("view 1", view1), ("view 2", view2)]):
        for col, pixels in enumerate(to_display(batch)):
            ax = axes[row, col]
            ax.imshow(pixels, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name)
            if row == 0 and labels is not None and class_names is not None:
                ax.set_title(class_names[int(labels[col])], fontsize=8)
    fig.tight_layout()
    return fig


def plot_histories(histories: dict[str, History] | History, title: str | None = None):
    """Training loss (per logged step) and kNN accuracy (per evaluated epoch) of one or several runs."""
    if isinstance(histories, History):
        histories = {"run": histories}
    fig, (loss_ax, knn_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, history in histories.items():
        steps, values = history.series("loss", per="step")
        if steps:
            steps_per_epoch = history.steps[-1]["step"] / history.steps[-1]["epoch"]
            loss_ax.plot([s / steps_per_epoch for s in steps], values, label=name)
        epochs, accuracies = history.series("knn_accuracy")
        if epochs:
            knn_ax.plot(epochs, [100 * a for a in accuracies], marker="o", label=name)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="loss")
    knn_ax.set(xlabel="epoch", ylabel="kNN top-1 (%)", title="kNN accuracy on held-out images")
    for ax in (loss_ax, knn_ax):
        ax.grid(alpha=0.3)
        if len(histories) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_similarity_matrix(similarities: torch.Tensor, batch_size: int, ax=None, title: str | None = None):
    """Heatmap of the 2B x 2B similarity matrix of views [z1; z2], with each view's positive outlined."""
    similarities = similarities.detach().float().cpu()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.6))
    image = ax.imshow(similarities, cmap="RdBu_r", vmin=-1, vmax=1)
    for row in range(2 * batch_size):
        col = (row + batch_size) % (2 * batch_size)
        ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=1.2))
    ax.axhline(batch_size - 0.5, color="gray", linewidth=0.8)
    ax.axvline(batch_size - 0.5, color="gray", linewidth=0.8)
    ax.set(xlabel="view", ylabel="view", title=title or "cosine similarity (boxes: positives)")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    return ax.figure
