"""Hard negatives, measured: which negatives an encoder finds hardest, how many of them are false
negatives, how the InfoNCE gradient spreads over them at a given temperature, and 2-D maps of the
embedding to look at it all.

Conventions:
- similarities are cosine similarities: every function L2-normalises its inputs, so callers may pass
  raw features or projector outputs;
- these are measuring tools, not losses: inputs are detached (computed under ``torch.no_grad``) and
  the arithmetic is float32 whatever the autocast dtype;
- everything runs on the device of its inputs; searches over large sets go in chunks so memory stays
  O(chunk x candidates), never O(anchors x candidates).

Terms. For an anchor u (a unit vector), a *negative* is any other image in the batch or set; a
*hard* negative is one with a high similarity s = u . v; a *false negative* is a negative that
shares the anchor's class, which self-supervised learning cannot know and still pushes away (Chuang
et al., "Debiased Contrastive Learning", NeurIPS 2020).
"""
from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .losses import _debiased_hard_loss  # the estimator the DCL and HCL losses train with (see hcl)
from .presets import no_autocast
from .validation import (
    describe_tensor,
    require_bool,
    require_embeddings,
    require_finite,
    require_in_range,
    require_int_at_least,
    require_labels,
    require_positive,
)

__all__ = ["SIMILARITY_BLOCK_ENTRIES", "hardest_negatives", "false_negative_rate",
           "similarity_distributions", "negative_weights_from_similarities", "negative_weights",
           "negative_gradient_weights", "view_pair_negatives", "same_class_gradient_share",
           "weight_entropy", "effective_negatives", "MAP_METHODS", "EmbeddingMap", "fit_pca",
           "fit_umap", "features_fingerprint", "MapCache", "DEFAULT_MAP_CACHE",
           "fit_embedding_map", "embedding_map", "off_diagonal", "rank_among_negatives"]

# A chunk of the anchor x candidate similarity matrix holds at most this many entries
# (64 MB in float32).
SIMILARITY_BLOCK_ENTRIES = 2 ** 24


def _unit_float32(z: torch.Tensor) -> torch.Tensor:
    return F.normalize(z.detach().float(), dim=1)


def _require_same_dim(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name_a} and {name_b} must have the same feature dimension, "
                         f"got {a.shape[1]} and {b.shape[1]}")


def _negatives_per_anchor(anchor_ids: torch.Tensor, candidate_ids: torch.Tensor) -> int:
    """The fewest negatives any anchor has: candidates minus those sharing the anchor's id."""
    unique_ids, counts = torch.unique(candidate_ids, return_counts=True)
    position = torch.searchsorted(unique_ids, anchor_ids).clamp(max=len(unique_ids) - 1)
    excluded = torch.where(unique_ids[position] == anchor_ids, counts[position],
                           torch.zeros_like(position))
    return len(candidate_ids) - int(excluded.max())


@torch.no_grad()
def hardest_negatives(anchors: torch.Tensor, candidates: torch.Tensor, k: int,
                      anchor_ids: torch.Tensor | None = None,
                      candidate_ids: torch.Tensor | None = None,
                      chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""For each anchor, the k candidates with the highest cosine similarity, hardest first.

        s_{ij} = \frac{a_i \cdot c_j}{\lVert a_i \rVert \lVert c_j \rVert}, \quad
        \text{result}_i = \operatorname{top-k}_{j : \mathrm{id}(c_j) \ne \mathrm{id}(a_i)} s_{ij}

    Candidates that share the anchor's id are not negatives and are skipped: pass the image index as
    the id to exclude the anchor itself (searching a set against itself) and its other views (when
    the candidates hold several views of each image). Without ids every candidate counts.

    The similarity matrix is computed `chunk_size` anchors at a time, so memory is
    O(chunk_size x N_candidates): 50k anchors against 10k candidates, or 10k against
    50k, fit easily.

    Args:
        anchors: [A, D] embeddings.
        candidates: [N, D] embeddings searched for negatives.
        k: negatives per anchor, in [1, the number of negatives every anchor has].
        anchor_ids, candidate_ids: optional integer ids of shape [A] and [N] (both or neither).
        chunk_size: anchors per chunk; by default a chunk holds about 2**24 similarities.

    Returns:
        (similarities [A, k] float32, indices into `candidates` [A, k] int64), each row sorted by
        decreasing similarity. Both are detached.
    """
    require_embeddings("anchors", anchors)
    require_embeddings("candidates", candidates)
    _require_same_dim("anchors", anchors, "candidates", candidates)
    if (anchor_ids is None) != (candidate_ids is None):
        raise ValueError("anchor_ids and candidate_ids must be given together (both or neither), "
                         f"got anchor_ids={'None' if anchor_ids is None else 'a tensor'} and "
                         f"candidate_ids={'None' if candidate_ids is None else 'a tensor'}")
    num_negatives = len(candidates)
    if anchor_ids is not None:
        anchor_ids = require_labels("anchor_ids", anchor_ids, len(anchors),
                                    "anchors").to(anchors.device)
        candidate_ids = require_labels("candidate_ids", candidate_ids, len(candidates),
                                       "candidates").to(anchors.device)
        num_negatives = _negatives_per_anchor(anchor_ids, candidate_ids)
    k = require_int_at_least("k", k, 1)
    if k > num_negatives:
        raise ValueError(f"k must be an integer in [1, {num_negatives}] (the number of negatives "
                         f"each anchor has), got {k!r}")
    if chunk_size is None:
        chunk_size = max(1, SIMILARITY_BLOCK_ENTRIES // len(candidates))
    chunk_size = require_int_at_least("chunk_size", chunk_size, 1)
    require_finite("anchors", anchors)  # top-k over NaN similarities returns arbitrary candidates
    require_finite("candidates", candidates)

    with no_autocast(anchors.device):
        unit_candidates = _unit_float32(candidates).to(anchors.device)
        top_similarities, top_indices = [], []
        for start in range(0, len(anchors), chunk_size):
            stop = start + chunk_size
            similarities = _unit_float32(anchors[start:stop]) @ unit_candidates.T
            if anchor_ids is not None:
                same_image = anchor_ids[start:stop, None] == candidate_ids[None, :]
                similarities.masked_fill_(same_image, float("-inf"))
            top = similarities.topk(k, dim=1, largest=True, sorted=True)
            top_similarities.append(top.values)
            top_indices.append(top.indices)
    return torch.cat(top_similarities), torch.cat(top_indices)


def false_negative_rate(neighbour_labels: torch.Tensor, anchor_labels: torch.Tensor,
                        ks: int | Iterable[int]) -> torch.Tensor:
    r"""Fraction of each anchor's k hardest negatives that share its label, averaged over anchors.

        \mathrm{FNR}(k) = \frac{1}{A} \sum_{i=1}^{A} \frac{1}{k} \sum_{r=1}^{k}
                          \mathbb{1}[y_{n_i(r)} = y_i]

    where n_i(r) is anchor i's r-th hardest negative. One search for the largest k serves every k:
    the rate at k only looks at the first k columns. For a random encoder FNR(k) is about the share
    of the anchor's class among the negatives (1/C for C balanced classes); a good encoder drives it
    up, because its hardest negatives are exactly the same-class images that the loss still repels.

    Args:
        neighbour_labels: [A, K] labels of each anchor's negatives, hardest first
            (``candidate_labels[indices]`` with ``indices`` from :func:`hardest_negatives`).
        anchor_labels: [A] labels of the anchors.
        ks: one k or several, each in [1, K].

    Returns:
        float32 tensor [len(ks)] on the labels' device.
    """
    if (not isinstance(neighbour_labels, torch.Tensor) or neighbour_labels.dim() != 2
            or neighbour_labels.is_floating_point()):
        raise ValueError(f"neighbour_labels must be a 2-D integer tensor [anchors, K], "
                         f"got {describe_tensor(neighbour_labels)}")
    require_labels("anchor_labels", anchor_labels, neighbour_labels.shape[0], "neighbour_labels")
    ks = [ks] if isinstance(ks, (int, np.integer)) and not isinstance(ks, bool) else list(ks)
    max_k = neighbour_labels.shape[1]
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer))
                     or not 1 <= k <= max_k for k in ks):
        raise ValueError(f"ks must be one or more integers in [1, {max_k}] (the columns of "
                         f"neighbour_labels), got {ks!r}")
    shares_label = (neighbour_labels == anchor_labels.to(neighbour_labels.device)[:, None]).float()
    # [K]: mean count in the top k
    false_negatives_within_k = shares_label.cumsum(dim=1).mean(dim=0)
    k_values = torch.tensor(ks, device=neighbour_labels.device)
    return false_negatives_within_k[k_values - 1] / k_values.float()


@torch.no_grad()
def _require_labelled_view_pair(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor) -> None:
    """Two views' embeddings [B, D] of the same B >= 2 labelled images."""
    require_embeddings("z1", z1)
    require_embeddings("z2", z2)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    require_labels("labels", labels, len(z1), "z1")
    if len(z1) < 2:
        raise ValueError("z1 must have at least 2 rows (a negative needs two "
                         f"images), got {len(z1)}")


def similarity_distributions(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor,
                             max_pairs: int = 200_000, seed: int = 0) -> dict[str, torch.Tensor]:
    """Cosine similarities of positive pairs, of negatives of other classes and of false negatives.

    For N images with two views each (embeddings z1, z2 of held-out data):
    - ``positive``: s(z1_i, z2_i), the two views of one image (N values);
    - ``negative_other_class``: s(z1_i, z2_j), i != j, y_i != y_j;
    - ``negative_same_class``: s(z1_i, z2_j), i != j, y_i == y_j, the false negatives.

    Negatives are cross-view pairs so they are measured exactly like the positives. When the N
    (N - 1) ordered negative pairs are at most `max_pairs`, all of them are used (row-major order);
    otherwise `max_pairs` pairs are drawn uniformly with replacement by a CPU generator seeded with
    `seed`, so the result is the same on every device and every run. Histograms of the two negative
    sets should be normalised separately (``density=True``): with C balanced classes only about 1/C
    of the negatives are false negatives.

    Returns:
        dict of 1-D float32 tensors on z1's device.
    """
    _require_labelled_view_pair(z1, z2, labels)
    require_int_at_least("max_pairs", max_pairs, 1)
    n, device = len(z1), z1.device
    labels = labels.to(device)
    with no_autocast(device):
        u1, u2 = _unit_float32(z1), _unit_float32(z2.to(device))
        positive = (u1 * u2).sum(dim=1)
        if n * (n - 1) <= max_pairs:
            similarities = u1 @ u2.T
            other_image = ~torch.eye(n, dtype=torch.bool, device=device)
            same_label = labels[:, None] == labels[None, :]
            return {"positive": positive,
                    "negative_other_class": similarities[~same_label],
                    "negative_same_class": similarities[same_label & other_image]}
        generator = torch.Generator().manual_seed(seed)
        i = torch.randint(0, n, (max_pairs,), generator=generator)
        j = (i + torch.randint(1, n, (max_pairs,), generator=generator)) % n  # uniform over j != i
        i, j = i.to(device), j.to(device)
        pairs_per_chunk = max(1, 2 ** 22 // u1.shape[1])  # ~16 MB per gathered block
        similarities = torch.cat([(u1[i_chunk] * u2[j_chunk]).sum(dim=1)
                                  for i_chunk, j_chunk in zip(i.split(pairs_per_chunk),
                                                              j.split(pairs_per_chunk))])
    same_label = labels[i] == labels[j]
    return {"positive": positive,
            "negative_other_class": similarities[~same_label],
            "negative_same_class": similarities[same_label]}


def negative_weights_from_similarities(positive_similarity: torch.Tensor | float,
                                       negative_similarities: torch.Tensor,
                                       temperature: float) -> torch.Tensor:
    r"""The weight InfoNCE's gradient puts on each negative, from similarities (batched).

    For an anchor u with positive similarity s_+ and negative similarities s_1..s_K,

        p = \operatorname{softmax}([s_+, s_1, \dots, s_K] / \tau), \qquad
        \text{weight}_k = p_k \quad (k = 1..K), \qquad \sum_k \text{weight}_k = 1 - p_+ .

    See :func:`negative_weights` for why p_k is the gradient's weight. Negatives with similarity
    -inf (excluded ones) get weight 0.

    Args:
        positive_similarity: [A] (or a number, for one anchor).
        negative_similarities: [A, K] (or [K], for one anchor).
        temperature: tau > 0.

    Returns:
        float32 tensor shaped like `negative_similarities`.
    """
    require_positive("temperature", temperature)
    if (not isinstance(negative_similarities, torch.Tensor)
            or negative_similarities.dim() not in (1, 2)):
        raise ValueError("negative_similarities must be a tensor of shape [K] or [A, K], got "
                         f"{describe_tensor(negative_similarities)}")
    one_anchor = negative_similarities.dim() == 1
    negatives = negative_similarities.float()[None] if one_anchor else negative_similarities.float()
    positive = torch.as_tensor(positive_similarity, dtype=torch.float32,
                               device=negatives.device).reshape(-1, 1)
    if positive.shape[0] != negatives.shape[0]:
        raise ValueError(f"positive_similarity has {positive.shape[0]} entries but "
                         f"negative_similarities has {negatives.shape[0]} rows; they must match")
    probabilities = torch.softmax(torch.cat([positive, negatives], dim=1) / temperature, dim=1)
    weights = probabilities[:, 1:]
    return weights[0] if one_anchor else weights


def negative_weights(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                     temperature: float) -> torch.Tensor:
    r"""The weight InfoNCE's gradient puts on each negative of one anchor.

    With unit vectors u (anchor), u_+ (positive), u_1..u_K (negatives), s_k = u . u_k and the loss

        \ell = -\log \frac{e^{s_+/\tau}}{e^{s_+/\tau} + \sum_k e^{s_k/\tau}},
        \qquad p = \operatorname{softmax}([s_+, s_1, \dots, s_K] / \tau),

    the gradient with respect to the anchor is

        \frac{\partial \ell}{\partial u}
            = \frac{1}{\tau}\Big(\sum_{k} p_k u_k - (1 - p_+) u_+\Big)
            = \frac{1}{\tau}\Big(\sum_{j \in \{+, 1..K\}} p_j u_j - u_+\Big).

    Gradient descent pulls u towards u_+ with weight (1 - p_+) and pushes it away from each negative
    u_k with weight p_k. The weights p_k are a softmax of s_k / tau: hard negatives (high s_k)
    dominate, and more so at low temperature, which is why tau acts as a hardness knob (Wang & Liu,
    "Understanding the Behaviour of Contrastive Loss", CVPR 2021). They sum to 1 - p_+.

    Args:
        anchor: [D], positive: [D], negatives: [K, D] (raw or unit; normalised here, detached).
        temperature: tau > 0.

    Returns:
        float32 tensor [K] of weights p_1..p_K.
    """
    require_positive("temperature", temperature)
    if not isinstance(anchor, torch.Tensor) or anchor.dim() != 1:
        raise ValueError(f"anchor must be a 1-D tensor [D], got {describe_tensor(anchor)}")
    require_embeddings("negatives", negatives)
    if not isinstance(positive, torch.Tensor) or positive.shape != anchor.shape:
        raise ValueError(f"positive must have the anchor's shape {tuple(anchor.shape)}, "
                         f"got {describe_tensor(positive)}")
    _require_same_dim("anchor", anchor[None], "negatives", negatives)
    with torch.no_grad(), no_autocast(anchor.device):
        u = _unit_float32(anchor[None])[0]
        positive_similarity = _unit_float32(positive[None])[0] @ u
        negative_similarities = _unit_float32(negatives) @ u
        return negative_weights_from_similarities(positive_similarity, negative_similarities,
                                                  temperature)


def negative_gradient_weights(positive_similarity: torch.Tensor,
                              negative_similarities: torch.Tensor, temperature: float,
                              tau_plus: float = 0.0, beta: float = 0.0) -> torch.Tensor:
    r"""How hard each anchor's loss pushes it away from each of its negatives:
    w_ik = dl_i / d(s_ik / t).

    For the SimCLR-form losses of the course, the debiased, hardness-weighted estimator of
    `clcourse.losses.hcl` (tau_plus = beta = 0: InfoNCE; beta = 0: DCL), differentiated by autograd
    with respect to each negative's logit s_ik / t. For InfoNCE w_ik = p_k of
    :func:`negative_weights_from_similarities`; DCL scales every negative's weight alike (by
    1 / (1 - tau^+) over a smaller denominator, and to 0 where its floor binds), so it leaves their
    proportions as they are; HCL multiplies weight k by about (1 + beta) e^{beta s_k / t} / mean_j
    e^{beta s_j / t} (its gradient through the importance weights included: negatives easier than
    the weighted average can get a small negative weight, a pull).

    Args:
        positive_similarity: [A] cosine similarity of each anchor to its positive.
        negative_similarities: [A, N] cosine similarities to its N negatives.
        temperature: t > 0; tau_plus in [0, 1); beta >= 0.

    Returns:
        float32 [A, N], detached.
    """
    require_positive("temperature", temperature)
    require_in_range("tau_plus", tau_plus, 0.0, 1.0, high_inclusive=False)
    require_in_range("beta", beta, 0.0, math.inf, high_inclusive=False)
    if not isinstance(negative_similarities, torch.Tensor) or negative_similarities.dim() != 2:
        raise ValueError("negative_similarities must be a tensor of shape [A, N], got "
                         f"{describe_tensor(negative_similarities)}")
    if (not isinstance(positive_similarity, torch.Tensor)
            or positive_similarity.shape != negative_similarities.shape[:1]):
        raise ValueError("positive_similarity must be a tensor of shape [A] = "
                         f"[{negative_similarities.shape[0]}], got "
                         f"{describe_tensor(positive_similarity)}")
    with torch.enable_grad(), no_autocast(negative_similarities.device):
        logits = (negative_similarities.detach().float() / temperature).requires_grad_()
        positive = positive_similarity.detach().float().to(logits.device) / temperature
        # the loss is a mean over anchors: times A, each anchor's own gradient
        loss = _debiased_hard_loss(positive, logits, temperature, tau_plus, beta) * len(logits)
        (weights,) = torch.autograd.grad(loss, logits)
    return weights


@torch.no_grad()
def view_pair_negatives(z1: torch.Tensor, z2: torch.Tensor,
                        labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch of two views laid out as SimCLR's loss sees it: the 2B anchors [z1; z2], each
    with its positive (the other view of its image) and its 2B - 2 negatives (both views of
    every other image).

    Returns:
        (positive similarities [2B], negative similarities [2B, 2B - 2], same_class [2B, 2B - 2]:
        whether each negative shares the anchor's label, a false negative), float32 cosines.
    """
    _require_labelled_view_pair(z1, z2, labels)
    batch_size, device = len(z1), z1.device
    with no_autocast(device):
        u = _unit_float32(torch.cat([z1, z2.to(device)]))
        similarities = u @ u.T
    anchors = torch.arange(2 * batch_size, device=device)
    partner = (anchors + batch_size) % (2 * batch_size)
    is_negative = (anchors[:, None] != anchors[None, :]) & (partner[:, None] != anchors[None, :])
    both_labels = labels.to(device).repeat(2)
    same_class = both_labels[:, None] == both_labels[None, :]
    shape = (2 * batch_size, 2 * batch_size - 2)
    return (similarities[anchors, partner], similarities[is_negative].view(shape),
            same_class[is_negative].view(shape))


def same_class_gradient_share(z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor,
                              temperature: float, tau_plus: float = 0.0, beta: float = 0.0,
                              batch_size: int = 256,
                              seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The share of a loss's push that falls on same-class negatives (false negatives), on
    labelled held-out views.

    The images are dealt into random batches of `batch_size` as in training (a permutation seeded by
    `seed`, whatever order the data is stored in; the last, partial batch is dropped); in each,
    every anchor's negatives are the 2B - 2 views of the other images (:func:`view_pair_negatives`)
    and their weights w_ik those of :func:`negative_gradient_weights`. Then

        \text{share} = \frac{1}{A} \sum_i \frac{\sum_{k: y_k = y_i} w_{ik}}{\sum_k w_{ik}},
        \qquad \text{chance} = \frac{1}{A} \sum_i \frac{|\{k: y_k = y_i\}|}{2B - 2}

    `chance` is the share with equal weights, what a loss blind to similarity would give (about 1/C
    for C balanced classes). A share above it means the loss pushes hardest on exactly the negatives
    it should not. Anchors whose loss pushes on no negative at all (where DCL's or HCL's floor
    binds) are left out of `share`.

    Args:
        z1, z2: [N, D] embeddings of two views of N labelled images; labels: [N].
        temperature, tau_plus, beta: the loss's (InfoNCE: tau_plus = beta = 0), see
            negative_gradient_weights.
        batch_size: images per batch, 2 <= batch_size <= N.
        seed: seeds the (CPU) permutation that makes the batches, so the result is the same
            on every device.

    Returns:
        (share, chance): float32 scalars.
    """
    require_labels("labels", labels, len(z1), "z1")
    require_int_at_least("batch_size", batch_size, 2)
    if batch_size > len(z1):
        raise ValueError("batch_size must be at most the number of images "
                         f"({len(z1)}), got {batch_size}")
    require_int_at_least("seed", seed, 0)
    order = torch.randperm(len(z1), generator=torch.Generator().manual_seed(seed)).to(z1.device)
    labels = labels.to(z1.device)
    shares, chances = [], []
    for start in range(0, len(z1) - batch_size + 1, batch_size):
        batch = order[start:start + batch_size]
        positive, negatives, same_class = view_pair_negatives(z1[batch], z2[batch], labels[batch])
        weights = negative_gradient_weights(positive, negatives, temperature, tau_plus, beta)
        push = weights.sum(1)
        pushed = push > 0          # where DCL's floor binds, an anchor pushes on no negative: no
                                   # share to take
        shares.append(((weights * same_class).sum(1) / push)[pushed])
        chances.append(same_class.float().mean(1))
    return torch.cat(shares).mean(), torch.cat(chances).mean()


def _normalised_weights(weights: torch.Tensor) -> torch.Tensor:
    if (not isinstance(weights, torch.Tensor) or weights.dim() < 1
            or not weights.is_floating_point()):
        raise ValueError("weights must be a floating-point tensor with at least one dimension, got "
                         f"{describe_tensor(weights)}")
    total = weights.sum(dim=-1, keepdim=True)
    negative, not_finite, zero_sum = torch.stack([(weights < 0).any(),
                                                  ~torch.isfinite(weights).all(),
                                                  (total == 0).any()]).tolist()   # one host sync
    if negative:
        raise ValueError("weights must be non-negative, got a negative entry")
    if not_finite:
        raise ValueError("weights must be finite, got a NaN or inf entry")
    if zero_sum:
        raise ValueError("weights must have a positive sum along the last dimension (a "
                         "distribution over the negatives), got a row of zeros: its entropy is "
                         "undefined (0 / 0). At a very small temperature negative_weights "
                         "underflows to zeros: pass softmax(s_k / tau) over the negatives instead")
    return weights / total


def weight_entropy(weights: torch.Tensor) -> torch.Tensor:
    r"""Entropy (in nats) of the gradient weights over the negatives, along the last dimension.

    The weights are first renormalised to a distribution q_k = w_k / \sum_j w_j (InfoNCE's negative
    weights sum to 1 - p_+, not 1), then H = -\sum_k q_k \log q_k, with 0 log 0 = 0. q equals
    softmax(s_k / tau) over the negatives alone; passing that directly avoids the underflow of
    :func:`negative_weights` to all zeros at very small tau.
    """
    q = _normalised_weights(weights)
    return -torch.special.xlogy(q, q).sum(dim=-1)


def effective_negatives(weights: torch.Tensor) -> torch.Tensor:
    r"""Effective number of negatives, exp(entropy of the weights), along the last dimension.

    exp(H) is the number of negatives that would give the same entropy if weighted equally: K
    when every negative gets the same weight (tau -> infinity), 1 when the hardest negative
    takes all the weight (tau -> 0). It says how many negatives the gradient actually "listens
    to" at a temperature.
    """
    return weight_entropy(weights).exp()


# --------------------------------------------------------------------------------------------------
# 2-D maps of an embedding

MAP_METHODS = ("pca", "umap")


@dataclass
class EmbeddingMap:
    """A fitted 2-D (or n-D) map of an embedding: the coordinates of the fitted points, and what is
    needed to place new points on the same map (:meth:`project`)."""

    coords: np.ndarray                      # [N, n_components] float32, one row per fitted point
    method: str                             # "pca" or "umap"
    normalize: bool                         # rows were L2-normalised before fitting
    feature_dim: int                        # D of the fitted features
    mean: np.ndarray | None = None          # PCA: mean of the fitted features [D]
    components: np.ndarray | None = None    # PCA: principal axes [n_components, D], unit rows
    reducer: Any = None                     # UMAP: the fitted umap.UMAP (kept in memory only)

    @property
    def can_project(self) -> bool:
        return self.method == "pca" or self.reducer is not None

    def project(self, features: torch.Tensor) -> np.ndarray:
        """Place new points (e.g. synthetic negatives) on this map: [M, D] -> [M, n_components].

        PCA: (x - mean) @ components.T, exact. UMAP: ``reducer.transform``, an approximation that
        needs the fitted reducer, so it is unavailable for a UMAP map loaded from the disk cache.
        """
        require_embeddings("features", features)
        if features.shape[1] != self.feature_dim:
            raise ValueError(f"features must have the fitted feature dimension {self.feature_dim}, "
                             f"got {features.shape[1]}")
        x = _map_input(features, self.normalize)
        if self.method == "pca":
            return (((x - torch.from_numpy(self.mean)) @ torch.from_numpy(self.components).T)
                    .numpy().astype(np.float32))
        if self.reducer is None:
            raise RuntimeError("this UMAP map was loaded from the disk cache without its fitted "
                               "reducer, so it cannot place new points; refit it with "
                               "cache=None, or use method='pca'")
        return np.asarray(self.reducer.transform(x.numpy().astype(np.float32)), dtype=np.float32)


def _map_input(features: torch.Tensor, normalize: bool) -> torch.Tensor:
    """Features as CPU float64 (maps are fitted on the CPU, where the results are reproducible)."""
    x = features.detach().to("cpu", torch.float64)
    return F.normalize(x, dim=1) if normalize else x


def fit_pca(x: torch.Tensor, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal component analysis of the rows of x [N, D] (float64).

    The principal axes are the top eigenvectors of the covariance (x - mean)^T (x - mean) / (N - 1)
    (equivalently the top right-singular vectors of the centred data). An eigenvector's sign is
    arbitrary, so each axis is flipped to make its largest-magnitude loading positive: the same data
    always gives the same map.

    Returns:
        (coords [N, n_components] float32, mean [D] float64, components [n_components, D] float64).
    """
    mean = x.mean(dim=0)
    centred = x - mean
    covariance = centred.T @ centred / max(len(x) - 1, 1)
    _, eigenvectors = torch.linalg.eigh(covariance)               # ascending eigenvalues
    components = eigenvectors.flip(dims=[1])[:, :n_components].T  # [n_components, D], largest first
    largest = components.abs().argmax(dim=1)
    signs = torch.sign(components[torch.arange(n_components), largest])
    components = components * signs[:, None]
    coords = centred @ components.T
    return coords.numpy().astype(np.float32), mean.numpy(), components.numpy()


def _import_umap():
    """Import umap-learn lazily: the import takes ~20 s and the first fit in a process ~40-60 s
    of numba compilation. Numba's on-disk cache goes to the repository's .cache/numba unless
    NUMBA_CACHE_DIR is set, so later processes compile less; it must be set before numba is
    first imported."""
    os.environ.setdefault("NUMBA_CACHE_DIR",
                          str(Path(__file__).resolve().parent.parent / ".cache" / "numba"))
    import umap
    return umap


def fit_umap(x: torch.Tensor, n_components: int, seed: int,
             **umap_kwargs) -> tuple[np.ndarray, Any]:
    """UMAP (McInnes et al. 2018) of the rows of x; seeded, hence deterministic
    (and single-threaded).

    Returns:
        (coords [N, n_components] float32, the fitted umap.UMAP).
    """
    umap = _import_umap()
    # a seeded UMAP runs single-threaded anyway; saying so up front silences umap's warning about it
    settings = {"n_neighbors": min(15, len(x) - 1), "min_dist": 0.1, "n_jobs": 1, **umap_kwargs}
    reducer = umap.UMAP(n_components=n_components, random_state=seed, **settings)
    coords = reducer.fit_transform(x.numpy().astype(np.float32))
    return np.asarray(coords, dtype=np.float32), reducer


def features_fingerprint(features: torch.Tensor, samples: int = 2 ** 16) -> str:
    """A short hash identifying a feature tensor: its shape, dtype and `samples`
    evenly strided values.

    A fingerprint, not a proof: two tensors that agree on every sampled value collide. Features of
    two different encoders (or checkpoints) differ almost everywhere, so they never do in practice.
    """
    flat = features.detach().reshape(-1)
    positions = torch.linspace(0, flat.numel() - 1, steps=min(samples, flat.numel()),
                               dtype=torch.float64, device=flat.device).long()
    sample = flat[positions].to("cpu", torch.float32).numpy()
    digest = hashlib.sha1(f"{tuple(features.shape)}|{features.dtype}|".encode())
    digest.update(sample.tobytes())
    return digest.hexdigest()[:20]


class MapCache:
    """Fitted maps by key, in memory and optionally as .npz files in `directory`, so that a map is
    computed once per encoder (per set of features) and method, even across kernel restarts when a
    directory is given. On disk, a UMAP map keeps its coordinates but not its reducer (see
    EmbeddingMap.project)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory is not None else None
        self._maps: dict[str, EmbeddingMap] = {}

    def __len__(self) -> int:
        return len(self._maps)

    def clear(self) -> None:
        """Forget the in-memory maps (files on disk stay)."""
        self._maps.clear()

    def _path(self, key: str) -> Path:
        return self.directory / f"map-{key}.npz"

    def get(self, key: str) -> EmbeddingMap | None:
        if key in self._maps:
            return self._maps[key]
        if self.directory is None or not self._path(key).exists():
            return None
        with np.load(self._path(key), allow_pickle=False) as stored:
            mean, components = stored["mean"], stored["components"]
            emb_map = EmbeddingMap(coords=stored["coords"], method=str(stored["method"]),
                                   normalize=bool(stored["normalize"]),
                                   feature_dim=int(stored["feature_dim"]),
                                   mean=mean if mean.size else None,
                                   components=components if components.size else None)
        self._maps[key] = emb_map
        return emb_map

    def put(self, key: str, emb_map: EmbeddingMap) -> None:
        self._maps[key] = emb_map
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            empty = np.zeros(0)
            np.savez(self._path(key), coords=emb_map.coords, method=np.array(emb_map.method),
                     normalize=np.array(emb_map.normalize),
                     feature_dim=np.array(emb_map.feature_dim),
                     mean=emb_map.mean if emb_map.mean is not None else empty,
                     components=emb_map.components if emb_map.components is not None else empty)


# The default cache: in memory, shared by every call in a process (one kernel).
DEFAULT_MAP_CACHE = MapCache()


def fit_embedding_map(features: torch.Tensor, method: str = "pca", n_components: int = 2,
                      seed: int = 0, normalize: bool = True,
                      cache: MapCache | None = DEFAULT_MAP_CACHE, **umap_kwargs) -> EmbeddingMap:
    """Fit a low-dimensional map of the features (rows), or fetch it from `cache`.

    Args:
        features: [N, D] features (any device; the map is fitted on the CPU).
        method: "pca" (exact, deterministic, ~0.1 s for 10k x 512) or "umap"
            (preserves neighbourhoods better; ~10 s per 10k points plus ~60 s of
            compilation in a fresh process).
        n_components: dimensions of the map, in [1, D].
        seed: UMAP's random_state (PCA is deterministic without one).
        normalize: L2-normalise the rows first, so the map shows the hypersphere the loss sees.
        cache: where fitted maps are kept, keyed by a fingerprint of the features and every setting;
            None fits every time.
        umap_kwargs: passed to umap.UMAP (e.g. n_neighbors, min_dist, metric).
    """
    normalize = require_bool("normalize", normalize)
    require_embeddings("features", features)
    if method not in MAP_METHODS:
        raise ValueError(f"method must be one of {MAP_METHODS}, got {method!r}")
    require_int_at_least("n_components", n_components, 1)
    if n_components > features.shape[1]:
        raise ValueError(f"n_components must be an integer in [1, {features.shape[1]}] (the "
                         f"feature dimension), got {n_components}")
    if method == "pca" and umap_kwargs:
        raise ValueError("umap_kwargs are only for method='umap', got "
                         f"{sorted(umap_kwargs)} with method='pca'")
    key = None
    if cache is not None:
        settings = f"{method}|{n_components}|{seed}|{normalize}|{sorted(umap_kwargs.items())}"
        key = hashlib.sha1(f"{features_fingerprint(features)}|{settings}".encode()).hexdigest()[:24]
        cached = cache.get(key)
        if cached is not None:
            return cached
    x = _map_input(features, normalize)
    if method == "pca":
        coords, mean, components = fit_pca(x, n_components)
        emb_map = EmbeddingMap(coords=coords, method="pca", normalize=normalize,
                               feature_dim=x.shape[1], mean=mean, components=components)
    else:
        coords, reducer = fit_umap(x, n_components, seed, **umap_kwargs)
        emb_map = EmbeddingMap(coords=coords, method="umap", normalize=normalize,
                               feature_dim=x.shape[1], reducer=reducer)
    if cache is not None:
        cache.put(key, emb_map)
    return emb_map


def embedding_map(features: torch.Tensor, method: str = "pca", n_components: int = 2, seed: int = 0,
                  normalize: bool = True, cache: MapCache | None = DEFAULT_MAP_CACHE,
                  **umap_kwargs) -> np.ndarray:
    """Coordinates [N, n_components] (float32 numpy) of a map of the features; see
    :func:`fit_embedding_map`, which also returns what is needed to place new points on the map."""
    normalize = require_bool("normalize", normalize)
    return fit_embedding_map(features, method, n_components, seed, normalize, cache,
                             **umap_kwargs).coords


# ---------------------------------------------------------------- how hard new negatives are (CLAE)

def off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The entries of a square matrix [B, B] off its diagonal, row by row in column order:
    [B, B - 1] (a gather of fixed shape, where a boolean mask would need a host
    synchronisation on a GPU)."""
    n = matrix.shape[0]
    columns = torch.arange(n - 1, device=matrix.device).expand(n, n - 1)
    columns = columns + (columns >= torch.arange(n, device=matrix.device)[:, None])
    return matrix.gather(1, columns)


@torch.no_grad()
def rank_among_negatives(anchors: torch.Tensor, negatives: Iterable[torch.Tensor],
                         candidates: torch.Tensor) -> torch.Tensor:
    r"""How hard new points are as negatives, measured against the real ones: for anchor k and each
    other image m, the fraction of anchor k's real negatives that are *less* similar to the anchor
    than the new point of image m,

        r_{km} = \frac{1}{V (B - 1)} \sum_{v=1}^{V} \sum_{n \ne k}
                 \mathbb{1}\big[ s(a_k, z^{(v)}_n) < s(a_k, c_m) \big],
        \qquad m \ne k,

    with s the cosine similarity, z^{(v)} the V views whose other-image rows are the real
    negatives, and c the candidates (row b of every tensor belongs to image b). r = 0: easier than
    every real negative; r = 1: harder than all of them; a real negative itself ranks about
    uniformly in [0, 1].

    CLAE: `rank_among_negatives(z1, (z1, z2), z_adv)` ranks each adversarial view among the
    negatives SimCLR's loss gives anchor z1_k (the 2B - 2 views of the other images). Sorting
    each anchor's real negatives once and binary-searching the candidates costs
    O(B V B log(V B)), not O(B^3 V).

    Args:
        anchors: [B, D] embeddings, B >= 2.
        negatives: one or more [B, D] views of the same B images.
        candidates: [B, D], the new point of each image.

    Returns:
        float32 [B, B - 1]: row k holds r_{km} for m = 0, ..., B - 1 without k, detached.
    """
    require_embeddings("anchors", anchors)
    negatives = list(negatives) if not isinstance(negatives, torch.Tensor) else [negatives]
    if not negatives:
        raise ValueError("negatives must hold at least one [B, D] view, got none")
    batch_size = anchors.shape[0]
    if batch_size < 2:
        raise ValueError("anchors must hold at least 2 images (an anchor needs other "
                         f"images), got {batch_size}")
    for name, t in ([("candidates", candidates)]
                    + [(f"negatives[{i}]", v) for i, v in enumerate(negatives)]):
        require_embeddings(name, t)
        if t.shape != anchors.shape:
            raise ValueError(f"{name} must have the shape of anchors "
                             f"{tuple(anchors.shape)}, got {tuple(t.shape)}")
    with no_autocast(anchors.device):
        a = _unit_float32(anchors)
        real = torch.cat([_unit_float32(view) for view in negatives])            # [V B, D]
        image = torch.arange(len(real), device=a.device) % batch_size
        own_image = image[None, :] == torch.arange(batch_size, device=a.device)[:, None]
        # The anchor's own views sort last (+inf) and are never counted as less similar
        # than a candidate.
        real_similarity = (a @ real.T).masked_fill(own_image, float("inf")).sort(dim=1).values
        candidate_similarity = a @ _unit_float32(candidates).T                     # [B, B]
        less_similar = torch.searchsorted(real_similarity, candidate_similarity.contiguous())
        return off_diagonal(less_similar.float() / (len(negatives) * (batch_size - 1)))
