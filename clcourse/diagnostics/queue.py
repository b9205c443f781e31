"""What MoCo's queue holds and where MoCHi's synthetic negatives sit, measured with the class labels
that self-supervised training never sees (a *class oracle*, as in MoCHi's analysis; Kalantidis et
al., "Hard Negative Mixing for Contrastive Learning", NeurIPS 2020, sections 3 and 4).

- `queries` and `keys`: the unit embeddings of images by the query and the key
  encoder, in eval mode;
- `queue_hardest_negatives`: each query's k hardest queue entries, skipping keys of its own image;
- `queue_false_negative_rate`: how many of those share the query's class (false negatives);
- `queue_false_negative_rate_over_training`: the same, for every per-epoch snapshot of a run (each
  snapshot holds the queue and the index of the image behind every key);
- `synthetic_negative_similarities`: the similarity to their query of MoCHi's synthetic negatives,
  next to that of the real queue negatives.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn as nn

from ..evaluate import extract_features
from ..losses import mochi_mix
from ..methods import MoCHi, MoCo
from ..negatives import false_negative_rate, hardest_negatives
from ..runs import list_checkpoints, load_weights
from ..validation import require_int_at_least, require_labels

__all__ = ["queries", "filled_queue", "queue_hardest_negatives", "queue_false_negative_rate",
           "queue_false_negative_rate_over_training", "synthetic_negative_similarities", "keys"]

def _require_moco(method) -> None:
    if not isinstance(method, MoCo):
        raise ValueError("method must be a MoCo (or MoCHi) method with a queue, got "
                         f"{type(method).__name__}")


def queries(method: MoCo, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Unit query embeddings q = normalize(g(f(x))) [N, D] of uint8 (or [0, 1] float) images,
    computed by the query encoder in eval mode (batch-norm running statistics, so the result does
    not depend on batching)."""
    return method.embed(images, batch_size=batch_size)


def filled_queue(method: MoCo) -> tuple[torch.Tensor, torch.Tensor]:
    """The queue entries that hold a real key (the initial random vectors have image index -1):
    (keys [K', D], training-set index of the image behind each [K'])."""
    filled = method.queue_index >= 0
    if not bool(filled.any()):
        raise ValueError("the queue holds no key yet (every entry is an initial "
                         "random vector): train first")
    return method.queue[filled], method.queue_index[filled]


@torch.no_grad()
def queue_hardest_negatives(method: MoCo, images: torch.Tensor, k: int,
                            index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""For each image's query, the k queue keys with the highest similarity q . n, hardest first.

    Only keys of images are searched (not the random vectors the queue starts with). With `index`
    (the images' positions in the training set) a key of the query's own image is skipped, as the
    loss does with `mask_same_image=True`.

    Returns:
        (similarities [N, k] float32, training-set index of the image behind each key [N, k]).
    """
    _require_moco(method)
    keys, key_index = filled_queue(method)
    q = queries(method, images)
    if index is not None:
        index = require_labels("index", index, len(images), "images")
        similarities, rows = hardest_negatives(q, keys, k, anchor_ids=index.to(q.device),
                                               candidate_ids=key_index)
    else:
        similarities, rows = hardest_negatives(q, keys, k)
    return similarities, key_index[rows]


@torch.no_grad()
def queue_false_negative_rate(method: MoCo, images: torch.Tensor, labels: torch.Tensor,
                              train_labels: torch.Tensor, ks: int | Iterable[int],
                              index: torch.Tensor | None = None) -> torch.Tensor:
    r"""Class-oracle false-negative rate among each query's k hardest queue negatives, for
    every k in `ks`.

        \mathrm{FNR}(k) = \frac{1}{N} \sum_i \frac{1}{k}
                          \sum_{r \le k} \mathbb{1}[y(n_i^{(r)}) = y_i]

    where n_i^{(r)} is the r-th hardest key for image i and y(n) the label of the training image
    the key was computed from (`train_labels[queue_index]`). With C balanced classes a random
    queue gives about 1/C; MoCHi's analysis finds it much higher among the hardest keys of a
    trained encoder.

    Args:
        images, labels: the query images (uint8 [N, 3, H, W]) and their labels [N].
        train_labels: labels of the whole training set, indexed by the queue's image indices.
        ks: one k or several, each at least 1 and at most the number of keys searched.
        index: optional training-set positions of `images`, to skip keys of a query's own image.

    Returns:
        float32 tensor [len(ks)].
    """
    labels = require_labels("labels", labels, len(images), "images")
    ks = [ks] if isinstance(ks, int) else list(ks)
    if not ks:
        raise ValueError("ks must hold at least one k, got an empty list")
    for k in ks:
        require_int_at_least("ks", k, 1)
    _, key_index = queue_hardest_negatives(method, images, max(ks), index)
    key_labels = train_labels.to(key_index.device)[key_index]
    return false_negative_rate(key_labels, labels.to(key_index.device), ks)


@torch.no_grad()
def queue_false_negative_rate_over_training(
        method: MoCo, checkpoint_dir: str | Path, images: torch.Tensor, labels: torch.Tensor,
        train_labels: torch.Tensor, ks: int | Iterable[int],
        index: torch.Tensor | None = None) -> tuple[list[int], torch.Tensor]:
    """`queue_false_negative_rate` for every per-epoch snapshot (`epoch_XXXX.pt`) of a training run.

    The snapshots are loaded into a copy of `method`, which is left as it was.

    Returns:
        (epochs, rates): the epoch of each snapshot, oldest first, and float32 rates
            [snapshots, len(ks)].
    """
    _require_moco(method)
    snapshots = list_checkpoints(checkpoint_dir)
    if not snapshots:
        raise ValueError(f"checkpoint_dir {checkpoint_dir} holds no epoch_XXXX.pt "
                         "snapshot: train with it first")
    probe = copy.deepcopy(method)
    epochs, rates = [], []
    for path in snapshots:
        epochs.append(load_weights(probe, path)["epoch"])
        rates.append(queue_false_negative_rate(probe, images, labels, train_labels, ks, index))
    return epochs, torch.stack(rates)


@torch.no_grad()
def synthetic_negative_similarities(
        method: MoCHi, images: torch.Tensor, index: torch.Tensor | None = None,
        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    r"""Similarity q . n of each query to its negatives: real ones and MoCHi's synthetic ones.

    The queries are the images' query embeddings; the synthetic negatives are drawn as in training
    (`clcourse.losses.mochi_mix` with the method's N, s, s'). With `index`, keys of a query's own
    image are left out, as in training.

    Returns:
        dict of 1-D float32 tensors: ``queue`` (every real queue entry), ``hardest``
        (the N hardest), ``mixed negatives`` (type 1, s per query), ``mixed with query``
        (type 2, s' per query).
    """
    if not isinstance(method, MoCHi):
        raise ValueError(f"method must be a MoCHi method, got {type(method).__name__}")
    q = queries(method, images)
    queue = nn.functional.normalize(method.queue.float(), dim=1)
    queue_mask = None
    if index is not None:
        index = require_labels("index", index, len(images), "images")
        queue_mask = index.to(q.device)[:, None] == method.queue_index[None, :]
    mix = mochi_mix(q, queue, method.n_hardest, method.n_mix_negatives, method.n_mix_query,
                    generator, queue_mask)
    similarity = q @ queue.T
    synthetic = torch.einsum("bd,bmd->bm", q, mix.negatives)
    real = similarity[~queue_mask] if queue_mask is not None else similarity.flatten()
    return {"queue": real,
            "hardest": similarity.gather(1, mix.hardest_index).flatten(),
            "mixed negatives": synthetic[:, :method.n_mix_negatives].flatten(),
            "mixed with query": synthetic[:, method.n_mix_negatives:].flatten()}


# --------------------------------------------------------- SCE: where the soft target puts its mass

@torch.no_grad()
def keys(method: MoCo, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Unit key embeddings k = normalize(g_k(f_k(x))) [N, D] of uint8 (or [0, 1] float)
    images, computed by the momentum encoder in eval mode (the encoder that makes MoCo's keys
    and SCE's targets)."""
    _require_moco(method)
    key_encoder = nn.Sequential(method.key_backbone, method.key_projector)
    return nn.functional.normalize(extract_features(key_encoder, images, batch_size), dim=1)
