"""The images of a ledger scale: its self-supervised training set, its labelled pool (the kNN bank
and the linear probes' training set) and its test set, as its ledger file's "scale" entry defines
them (dataset, classes, images per class). `bench/ledger.py` trains and measures on them; the
notebooks evaluate their own encoders on them, beside the ledger's.

    data = scale_data("cpu")                            # the ledger's protocol: every image
    data = scale_data("cpu", pool_per_class=500, test_per_class=200)  # a smaller, faster copy
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..validation import require_int_at_least

__all__ = ["ScaleData", "synthetic_dataset", "class_subset", "first_per_class", "scale_data"]


class ScaleData(NamedTuple):
    train_images: torch.Tensor     # the self-supervised training set, uint8
    train_labels: torch.Tensor
    pool_images: torch.Tensor      # the labelled pool: kNN bank and linear-probe training set
    pool_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def synthetic_dataset(num_classes: int, per_class: int,
                      seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images, each with a random tint and its class's tint, for the tests (kNN on mean
    colours: ~80%)."""
    colours = torch.rand(num_classes, 3, 1, 1, generator=torch.Generator().manual_seed(1234))
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    generator = torch.Generator().manual_seed(seed)
    tints = torch.rand(len(labels), 3, 1, 1, generator=generator)
    noise = torch.rand(len(labels), 3, 32, 32, generator=generator)
    images = 0.3 * colours[labels] + 0.3 * tints + 0.4 * noise
    return (images * 255).round().to(torch.uint8), labels


def class_subset(images: torch.Tensor, labels: torch.Tensor,
                 classes) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of `classes`, in their stored order, relabelled 0, 1, ... in the order of
    `classes`."""
    classes = list(classes)
    keep = torch.isin(labels, torch.tensor(classes))
    relabel = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
    relabel[classes] = torch.arange(len(classes))
    return images[keep], relabel[labels[keep]]


def first_per_class(labels: torch.Tensor, count: int | None) -> torch.Tensor:
    """Indices, in stored order, of the first `count` examples of each class (all when None)."""
    if count is None:
        return torch.arange(len(labels))
    return torch.cat([torch.nonzero(labels == c).flatten()[:count]
                      for c in torch.unique(labels)]).sort().values


def _scale_entry(scale) -> dict:
    """The "scale" entry of a ledger: from a scale name (its ledger file), a parsed ledger, or the
    entry itself."""
    if isinstance(scale, str):
        from . import load_ledger
        return load_ledger(scale)["scale"]
    if isinstance(scale, dict) and isinstance(scale.get("scale"), dict):
        return scale["scale"]
    if isinstance(scale, dict) and {"dataset", "classes", "images_per_class"} <= set(scale):
        return scale
    raise ValueError(f"scale must be a scale's name (e.g. 'cpu'), a ledger, or a ledger's "
                     f"\"scale\" entry (with dataset, classes and images_per_class), got {scale!r}")


def scale_data(scale="cpu", pool_per_class: int | None = None, test_per_class: int | None = None,
               device: str | torch.device | None = None) -> ScaleData:
    """The training set, labelled pool and test set of a ledger scale (`scale`: its name, its
    ledger, or the ledger's "scale" entry), labels 0, 1, ... in the order of the scale's classes:

    - pool: every training image of the scale's classes (their first `pool_per_class` each, when
      given);
    - test: every test image of those classes (their first `test_per_class` each, when given);
    - train: the first `images_per_class` of each class of the full pool, the self-supervised
      training set.

    Images are uint8, on `device` (default CPU). The "synthetic" dataset (the tests' coloured noise)
    needs no files."""
    from ..data import load_dataset

    entry = _scale_entry(scale)
    limits = {name: None if value is None else require_int_at_least(name, value, 1)
              for name, value in (("pool_per_class", pool_per_class),
                                  ("test_per_class", test_per_class))}
    classes = list(entry["classes"])
    if entry["dataset"] == "synthetic":
        pool = synthetic_dataset(len(classes), entry["images_per_class"], seed=0)
        test = synthetic_dataset(len(classes), max(entry["images_per_class"] // 4, 1), seed=1)
    else:
        pool = class_subset(*load_dataset(entry["dataset"], train=True), classes)
        test = class_subset(*load_dataset(entry["dataset"], train=False), classes)
    train = first_per_class(pool[1], entry["images_per_class"])
    chosen_pool = first_per_class(pool[1], limits["pool_per_class"])
    chosen_test = first_per_class(test[1], limits["test_per_class"])
    tensors = (pool[0][train], pool[1][train], pool[0][chosen_pool], pool[1][chosen_pool],
               test[0][chosen_test], test[1][chosen_test])
    return ScaleData(*(tensor.to(device or "cpu") for tensor in tensors))
