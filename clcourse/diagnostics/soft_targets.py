"""SCE's soft target of a query over the queue (Denize et al., "Similarity Contrastive Estimation
for Self-Supervised Soft Contrastive Learning", WACV 2023): how far it spreads and how much of it
lands on (and how hard the loss pushes) entries of the query's own class; `same_class_similarity`:
how close same-class images end up in an embedding.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..losses import moco_logits, sce_target
from ..methods import MoCo
from ..presets import no_autocast
from ..validation import require_labels, require_probability
from .queue import _require_moco, filled_queue, keys, queries

__all__ = ["SoftTargets", "soft_targets_from_embeddings", "soft_targets", "TargetSpread",
           "target_spread", "same_class_similarity"]

class SoftTargets(NamedTuple):
    r"""SCE's target and the online encoder's prediction for N queries over their candidates: their
    own key (column 0) and the K queue entries (float32, detached).

        relation = softmax_j(k \cdot n_j / \tau_m)        (masked entries: 0)
        target   = [\lambda, (1 - \lambda) relation]       (`clcourse.losses.sce_target`)
        prediction = softmax([q \cdot k, q \cdot n_j] / \tau)

    The gradient of the loss of one query on its logits is (prediction - target) / tau per unit of
    logit (`push`): positive entries are pushed away from the query, negative ones pulled towards
    it. InfoNCE (lambda = 1) pushes every queue entry, by its prediction.
    """
    relation: torch.Tensor            # [N, K] the key's similarity distribution over the queue
    lam: float
    prediction: torch.Tensor          # [N, 1 + K]
    queue_index: torch.Tensor         # [K] training-set index of the image behind each queue entry
    queue_mask: torch.Tensor | None   # [N, K] True where an entry is a key of the query's own image
                                      # (left out)

    @property
    def target(self) -> torch.Tensor:
        """[N, 1 + K]: lambda on the query's own key, (1 - lambda) times `relation` on the queue."""
        return torch.cat([torch.full_like(self.relation[:, :1], self.lam),
                          (1 - self.lam) * self.relation], dim=1)

    @property
    def push(self) -> torch.Tensor:
        """[N, 1 + K] prediction - target: the loss's gradient on each logit, times tau."""
        return self.prediction - self.target


def soft_targets_from_embeddings(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
                                 queue_index: torch.Tensor, temperature: float,
                                 temperature_momentum: float, lam: float,
                                 queue_mask: torch.Tensor | None = None) -> SoftTargets:
    """`SoftTargets` of queries q [N, D] with keys k [N, D] over a queue [K, D] (unit vectors), as
    SCE's loss sees them (`clcourse.losses.sce_target`, `clcourse.losses.moco_logits`)."""
    require_labels("queue_index", queue_index, len(queue), "queue")
    lam = require_probability("lam", lam)
    with torch.no_grad(), no_autocast(q.device):
        q, k, queue = (nn.functional.normalize(t.detach().float(), dim=1) for t in (q, k, queue))
        relation = sce_target(k, queue, temperature_momentum, 0.0, queue_mask)[:, 1:]
        logits = moco_logits(q, k, queue, temperature)
        if queue_mask is not None:
            logits[:, 1:] = logits[:, 1:].masked_fill(queue_mask, float("-inf"))
        return SoftTargets(relation, lam, torch.softmax(logits, dim=1), queue_index, queue_mask)


@torch.no_grad()
def soft_targets(method: MoCo, images: torch.Tensor, index: torch.Tensor | None = None,
                 lam: float | None = None,
                 temperature_momentum: float | None = None) -> SoftTargets:
    """`SoftTargets` of images against the method's queue (its entries that hold a key of an image).

    The images themselves stand in for both views: q is the query encoder's embedding, k the
    momentum encoder's, both in eval mode. With `index` (the images' positions in the training set)
    a key of the query's own image is left out, as in training with `mask_same_image`. `lam` and
    `temperature_momentum` default to an SCE method's own; a MoCo method (no soft target) defaults
    to lambda = 1, its own one-hot target, and tau_m = 0.05 (what SCE's relation would be)."""
    _require_moco(method)
    lam = getattr(method, "lam", 1.0) if lam is None else lam
    if temperature_momentum is None:
        temperature_momentum = getattr(method, "temperature_momentum", 0.05)
    queue, queue_index = filled_queue(method)
    queue_mask = None
    if index is not None:
        require_labels("index", index, len(images), "images")
        queue_mask = index.to(queue.device)[:, None] == queue_index[None, :]
    return soft_targets_from_embeddings(queries(method, images), keys(method, images), queue,
                                        queue_index, method.temperature, temperature_momentum, lam,
                                        queue_mask)


class TargetSpread(NamedTuple):
    """How each query's soft target spreads over the queue, and how much of it lands on its own
    class, with the class labels self-supervised training never sees (float32 [N] each)."""
    same_class_mass: torch.Tensor     # share of the relation (the target's queue part) on entries
                                      # of the query's class
    same_class_share: torch.Tensor    # share of the query's candidates that are of its class: a
                                      # uniform relation's mass
    effective_entries: torch.Tensor   # exp(entropy) of the relation: how many entries it is spread
                                      # over
    same_class_push: torch.Tensor     # sum over same-class entries of prediction - target: the
                                      # loss's net push on them
    infonce_same_class_push: torch.Tensor   # the same with a one-hot target (lambda = 1): sum of
                                            # their prediction


def target_spread(targets: SoftTargets, labels: torch.Tensor,
                  train_labels: torch.Tensor) -> TargetSpread:
    r"""Class-oracle summary of `SoftTargets`: for query i with label y_i and queue entries n_j from
    training images of labels y(n_j),

        \text{same-class mass}_i = \sum_{j: y(n_j) = y_i} \text{relation}_{ij},
        \qquad \text{same-class push}_i = \sum_{j: y(n_j) = y_i} (p_{ij} - w_{ij}),

    beside the InfoNCE push \sum_{j: y(n_j) = y_i} p_{ij} and the share of same-class entries among
    the query's candidates (masked entries left out everywhere). Same-class entries are the false
    negatives that notebooks 02-04 count among the hardest negatives: SCE gives them target mass, so
    the loss pushes them less.

    Args:
        targets: from `soft_targets` (or `soft_targets_from_embeddings`).
        labels: [N] labels of the queries.
        train_labels: labels of the training set, indexed by `targets.queue_index`.
    """
    require_labels("labels", labels, len(targets.relation), "targets")
    train_labels = require_labels("train_labels", train_labels, len(train_labels), "train_labels")
    if len(targets.queue_index) and int(targets.queue_index.max()) >= len(train_labels):
        raise ValueError(f"train_labels has {len(train_labels)} entries, but the queue holds a key "
                         f"of training image {int(targets.queue_index.max())}: pass the labels of "
                         "the whole training set the queue's images come from")
    key_labels = train_labels.to(targets.relation.device)[targets.queue_index]
    same_class = labels.to(key_labels.device)[:, None] == key_labels[None, :]
    candidates = (~targets.queue_mask if targets.queue_mask is not None
                  else torch.ones_like(same_class))
    same_class = same_class & candidates
    relation = targets.relation
    entropy = -torch.special.xlogy(relation, relation).sum(dim=1)
    return TargetSpread(
        same_class_mass=(relation * same_class).sum(dim=1),
        same_class_share=same_class.sum(dim=1) / candidates.sum(dim=1),
        effective_entries=entropy.exp(),
        same_class_push=(targets.push[:, 1:] * same_class).sum(dim=1),
        infonce_same_class_push=(targets.prediction[:, 1:] * same_class).sum(dim=1))


@torch.no_grad()
def same_class_similarity(z: torch.Tensor,
                          labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cosine similarity of pairs of distinct images of the same class, and of pairs of
    different classes, in an embedding z [N, D] (normalised here): how close same-class
    images end up."""
    require_labels("labels", labels, len(z), "z")
    if len(z) < 2:
        raise ValueError(f"z must have at least 2 rows to form a pair, got {len(z)}")
    with no_autocast(z.device):
        u = nn.functional.normalize(z.detach().float(), dim=1)
        similarity = u @ u.T
        labels = labels.to(u.device)
        same = labels[:, None] == labels[None, :]
        distinct = ~torch.eye(len(u), dtype=torch.bool, device=u.device)
        return similarity[same & distinct].mean(), similarity[~same].mean()


# ---------------------------------------------------------------- adversarial views (CLAE)
