"""What MoCo's queue holds and where MoCHi's synthetic negatives sit, measured with the class labels that
self-supervised training never sees (a *class oracle*, as in MoCHi's analysis); and how hard CLAE's
adversarial views are, as positives and as negatives.

- `queries`: the unit query embeddings q = normalize(g(f(x))) of images, in eval mode;
- `queue_hardest_negatives`: each query's k hardest queue entries, skipping keys of its own image;
- `queue_false_negative_rate`: how many of those share the query's class (false negatives);
- `queue_false_negative_rate_over_training`: the same, for every per-epoch snapshot of a run (each
  snapshot holds the queue and the index of the image behind every key);
- `synthetic_negative_similarities`: the similarity to their query of MoCHi's synthetic negatives,
  next to that of the real queue negatives;
- `soft_targets` and `target_spread`: SCE's soft target of a query over the queue, how far it spreads and
  how much of it lands on (and how hard the loss pushes) entries of the query's own class;
  `same_class_similarity`: how close same-class images end up in an embedding.
- `adversarial_views`: one batch through CLAE's attack, with how much it raised the loss and how hard
  the adversarial views are as positives and as negatives.

Everything here is a measurement: computed without gradient, in float32, on the method's device, and the
method's weights and queue are left as they were.

Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", NeurIPS 2020 (sections 3 and 4);
Ho & Vasconcelos, "Contrastive Learning with Adversarial Examples", NeurIPS 2020.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import contrastive_attack
from .augment import require_images
from .evaluate import extract_features
from .losses import mochi_mix, moco_logits, sce_target
from .methods import CLAE, MoCHi, MoCo, SimCLR
from .negatives import (false_negative_rate, hardest_negatives, negative_weights_from_similarities, off_diagonal,
                        rank_among_negatives)
from .presets import no_autocast
from .train import list_checkpoints, load_weights
from .validation import require_int_at_least, require_labels


def _require_moco(method) -> None:
    if not isinstance(method, MoCo):
        raise ValueError(f"method must be a MoCo (or MoCHi) method with a queue, got {type(method).__name__}")


def queries(method: MoCo, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Unit query embeddings q = normalize(g(f(x))) [N, D] of uint8 (or [0, 1] float) images, computed by the
    query encoder in eval mode (batch-norm running statistics, so the result does not depend on batching)."""
    return method.embed(images, batch_size=batch_size)


def filled_queue(method: MoCo) -> tuple[torch.Tensor, torch.Tensor]:
    """The queue entries that hold a real key (the initial random vectors have image index -1): (keys [K', D],
    training-set index of the image behind each [K'])."""
    filled = method.queue_index >= 0
    if not bool(filled.any()):
        raise ValueError("the queue holds no key yet (every entry is an initial random vector): train first")
    return method.queue[filled], method.queue_index[filled]


@torch.no_grad()
def queue_hardest_negatives(method: MoCo, images: torch.Tensor, k: int,
                            index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    r"""For each image's query, the k queue keys with the highest similarity q . n, hardest first.

    Only keys of images are searched (not the random vectors the queue starts with). With `index` (the
    images' positions in the training set) a key of the query's own image is skipped, as the loss does
    with `mask_same_image=True`.

    Returns:
        (similarities [N, k] float32, training-set index of the image behind each key [N, k]).
    """
    _require_moco(method)
    keys, key_index = filled_queue(method)
    q = queries(method, images)
    if index is not None:
        index = require_labels("index", index, len(images), "images")
        similarities, rows = hardest_negatives(q, keys, k, anchor_ids=index.to(q.device), candidate_ids=key_index)
    else:
        similarities, rows = hardest_negatives(q, keys, k)
    return similarities, key_index[rows]


@torch.no_grad()
def queue_false_negative_rate(method: MoCo, images: torch.Tensor, labels: torch.Tensor,
                              train_labels: torch.Tensor, ks: int | Iterable[int],
                              index: torch.Tensor | None = None) -> torch.Tensor:
    r"""Class-oracle false-negative rate among each query's k hardest queue negatives, for every k in `ks`.

        \mathrm{FNR}(k) = \frac{1}{N} \sum_i \frac{1}{k} \sum_{r \le k} \mathbb{1}[y(n_i^{(r)}) = y_i]

    where n_i^{(r)} is the r-th hardest key for image i and y(n) the label of the training image the key
    was computed from (`train_labels[queue_index]`). With C balanced classes a random queue gives about
    1/C; MoCHi's analysis finds it much higher among the hardest keys of a trained encoder.

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
def queue_false_negative_rate_over_training(method: MoCo, checkpoint_dir: str | Path, images: torch.Tensor,
                                            labels: torch.Tensor, train_labels: torch.Tensor,
                                            ks: int | Iterable[int],
                                            index: torch.Tensor | None = None) -> tuple[list[int], torch.Tensor]:
    """`queue_false_negative_rate` for every per-epoch snapshot (`epoch_XXXX.pt`) of a training run.

    The snapshots are loaded into a copy of `method`, which is left as it was.

    Returns:
        (epochs, rates): the epoch of each snapshot, oldest first, and float32 rates [snapshots, len(ks)].
    """
    _require_moco(method)
    snapshots = list_checkpoints(checkpoint_dir)
    if not snapshots:
        raise ValueError(f"checkpoint_dir {checkpoint_dir} holds no epoch_XXXX.pt snapshot: train with it first")
    probe = copy.deepcopy(method)
    epochs, rates = [], []
    for path in snapshots:
        epochs.append(load_weights(probe, path)["epoch"])
        rates.append(queue_false_negative_rate(probe, images, labels, train_labels, ks, index))
    return epochs, torch.stack(rates)


@torch.no_grad()
def synthetic_negative_similarities(method: MoCHi, images: torch.Tensor, index: torch.Tensor | None = None,
                                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    r"""Similarity q . n of each query to its negatives: real ones and MoCHi's synthetic ones.

    The queries are the images' query embeddings; the synthetic negatives are drawn as in training
    (`clcourse.losses.mochi_mix` with the method's N, s, s'). With `index`, keys of a query's own image are
    left out, as in training.

    Returns:
        dict of 1-D float32 tensors: ``queue`` (every real queue entry), ``hardest`` (the N hardest),
        ``mixed negatives`` (type 1, s per query), ``mixed with query`` (type 2, s' per query).
    """
    if not isinstance(method, MoCHi):
        raise ValueError(f"method must be a MoCHi method, got {type(method).__name__}")
    q = queries(method, images)
    queue = nn.functional.normalize(method.queue.float(), dim=1)
    queue_mask = None
    if index is not None:
        index = require_labels("index", index, len(images), "images")
        queue_mask = index.to(q.device)[:, None] == method.queue_index[None, :]
    mix = mochi_mix(q, queue, method.n_hardest, method.n_mix_negatives, method.n_mix_query, generator, queue_mask)
    similarity = q @ queue.T
    synthetic = torch.einsum("bd,bmd->bm", q, mix.negatives)
    real = similarity[~queue_mask] if queue_mask is not None else similarity.flatten()
    return {"queue": real,
            "hardest": similarity.gather(1, mix.hardest_index).flatten(),
            "mixed negatives": synthetic[:, :method.n_mix_negatives].flatten(),
            "mixed with query": synthetic[:, method.n_mix_negatives:].flatten()}


# ---------------------------------------------------------------- SCE: where the soft target puts its mass

@torch.no_grad()
def keys(method: MoCo, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Unit key embeddings k = normalize(g_k(f_k(x))) [N, D] of uint8 (or [0, 1] float) images, computed by the
    momentum encoder in eval mode (the encoder that makes MoCo's keys and SCE's targets)."""
    _require_moco(method)
    key_encoder = nn.Sequential(method.key_backbone, method.key_projector)
    return nn.functional.normalize(extract_features(key_encoder, images, batch_size), dim=1)


class SoftTargets(NamedTuple):
    r"""SCE's target and the online encoder's prediction for N queries over their candidates: their own key
    (column 0) and the K queue entries (float32, detached).

        relation = softmax_j(k \cdot n_j / \tau_m)        (masked entries: 0)
        target   = [\lambda, (1 - \lambda) relation]       (`clcourse.losses.sce_target`)
        prediction = softmax([q \cdot k, q \cdot n_j] / \tau)

    The gradient of the loss of one query on its logits is (prediction - target) / tau per unit of logit
    (`push`): positive entries are pushed away from the query, negative ones pulled towards it. InfoNCE
    (lambda = 1) pushes every queue entry, by its prediction.
    """
    relation: torch.Tensor            # [N, K] the key's similarity distribution over the queue
    lam: float
    prediction: torch.Tensor          # [N, 1 + K]
    queue_index: torch.Tensor         # [K] training-set index of the image behind each queue entry
    queue_mask: torch.Tensor | None   # [N, K] True where an entry is a key of the query's own image (left out)

    @property
    def target(self) -> torch.Tensor:
        """[N, 1 + K]: lambda on the query's own key, (1 - lambda) times `relation` on the queue."""
        return torch.cat([torch.full_like(self.relation[:, :1], self.lam), (1 - self.lam) * self.relation], dim=1)

    @property
    def push(self) -> torch.Tensor:
        """[N, 1 + K] prediction - target: the loss's gradient on each logit, times tau."""
        return self.prediction - self.target


def soft_targets_from_embeddings(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, queue_index: torch.Tensor,
                                 temperature: float, temperature_momentum: float, lam: float,
                                 queue_mask: torch.Tensor | None = None) -> SoftTargets:
    """`SoftTargets` of queries q [N, D] with keys k [N, D] over a queue [K, D] (unit vectors), as SCE's loss sees
    them (`clcourse.losses.sce_target`, `clcourse.losses.moco_logits`)."""
    require_labels("queue_index", queue_index, len(queue), "queue")
    with torch.no_grad(), no_autocast(q.device):
        q, k, queue = (nn.functional.normalize(t.detach().float(), dim=1) for t in (q, k, queue))
        relation = sce_target(k, queue, temperature_momentum, 0.0, queue_mask)[:, 1:]
        logits = moco_logits(q, k, queue, temperature)
        if queue_mask is not None:
            logits[:, 1:] = logits[:, 1:].masked_fill(queue_mask, float("-inf"))
        return SoftTargets(relation, lam, torch.softmax(logits, dim=1), queue_index, queue_mask)


@torch.no_grad()
def soft_targets(method: MoCo, images: torch.Tensor, index: torch.Tensor | None = None, lam: float | None = None,
                 temperature_momentum: float | None = None) -> SoftTargets:
    """`SoftTargets` of images against the method's queue (its entries that hold a key of an image).

    The images themselves stand in for both views: q is the query encoder's embedding, k the momentum
    encoder's, both in eval mode. With `index` (the images' positions in the training set) a key of the query's
    own image is left out, as in training with `mask_same_image`. `lam` and `temperature_momentum` default to
    an SCE method's own; a MoCo method (no soft target) defaults to lambda = 1, its own one-hot target, and
    tau_m = 0.05 (what SCE's relation would be)."""
    _require_moco(method)
    lam = getattr(method, "lam", 1.0) if lam is None else lam
    if temperature_momentum is None:
        temperature_momentum = getattr(method, "temperature_momentum", 0.05)
    queue, queue_index = filled_queue(method)
    queue_mask = None
    if index is not None:
        require_labels("index", index, len(images), "images")
        queue_mask = index.to(queue.device)[:, None] == queue_index[None, :]
    return soft_targets_from_embeddings(queries(method, images), keys(method, images), queue, queue_index,
                                        method.temperature, temperature_momentum, lam, queue_mask)


class TargetSpread(NamedTuple):
    """How each query's soft target spreads over the queue, and how much of it lands on its own class, with
    the class labels self-supervised training never sees (float32 [N] each)."""
    same_class_mass: torch.Tensor     # share of the relation (the target's queue part) on entries of the query's class
    same_class_share: torch.Tensor    # share of the query's candidates that are of its class: a uniform relation's mass
    effective_entries: torch.Tensor   # exp(entropy) of the relation: how many entries it is spread over
    same_class_push: torch.Tensor     # sum over same-class entries of prediction - target: the loss's net push on them
    infonce_same_class_push: torch.Tensor   # the same with a one-hot target (lambda = 1): sum of their prediction


def target_spread(targets: SoftTargets, labels: torch.Tensor, train_labels: torch.Tensor) -> TargetSpread:
    r"""Class-oracle summary of `SoftTargets`: for query i with label y_i and queue entries n_j from training
    images of labels y(n_j),

        \text{same-class mass}_i = \sum_{j: y(n_j) = y_i} \text{relation}_{ij},
        \qquad \text{same-class push}_i = \sum_{j: y(n_j) = y_i} (p_{ij} - w_{ij}),

    beside the InfoNCE push \sum_{j: y(n_j) = y_i} p_{ij} and the share of same-class entries among the query's
    candidates (masked entries left out everywhere). Same-class entries are the false negatives that notebooks
    02-04 count among the hardest negatives: SCE gives them target mass, so the loss pushes them less.

    Args:
        targets: from `soft_targets` (or `soft_targets_from_embeddings`).
        labels: [N] labels of the queries.
        train_labels: labels of the training set, indexed by `targets.queue_index`.
    """
    require_labels("labels", labels, len(targets.relation), "targets")
    key_labels = train_labels.to(targets.relation.device)[targets.queue_index]
    same_class = labels.to(key_labels.device)[:, None] == key_labels[None, :]
    candidates = ~targets.queue_mask if targets.queue_mask is not None else torch.ones_like(same_class)
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
def same_class_similarity(z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cosine similarity of pairs of distinct images of the same class, and of pairs of different classes,
    in an embedding z [N, D] (normalised here): how close same-class images end up."""
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

class AdversarialViews(NamedTuple):
    """One batch through CLAE's attack, and how hard its adversarial views are (see `adversarial_views`).
    Embeddings are unit vectors in float32; every tensor is detached."""
    view1: torch.Tensor                  # [B, 3, H, W] the attacked views x_i
    view2: torch.Tensor                  # [B, 3, H, W] their positives x_j
    adversarial: torch.Tensor            # [B, 3, H, W] x_i + delta
    z1: torch.Tensor                     # [B, D] clean embeddings of view1
    z2: torch.Tensor                     # [B, D] clean embeddings of view2
    z_adv: torch.Tensor                  # [B, D] adversarial-branch embeddings of x_i + delta
    z_zero: torch.Tensor                 # [B, D] adversarial-branch embeddings of x_i (delta = 0)
    loss_before: torch.Tensor            # L(z1, z_adv(x_i)): the adversarial term at delta = 0
    loss_after: torch.Tensor             # L(z1, z_adv(x_i + delta)): the adversarial term
    rank: torch.Tensor                   # [B, B - 1] rank of each adversarial view among anchor k's real negatives
    adversarial_weight_share: torch.Tensor   # [B] share of anchor k's negative gradient weight on adversarial views

    @property
    def attack_raise(self) -> torch.Tensor:
        return self.loss_after - self.loss_before


def _encoders(method):
    """(clean encoder, adversarial encoder, base loss) of a CLAE method, or of a SimCLR-family method whose one
    batch-norm serves both."""
    if isinstance(method, CLAE):
        return method.encode, method.encode_adversarial, method.base.contrastive_loss, method.base.temperature
    if isinstance(method, SimCLR):
        def encode(x):
            return method.projector(method.backbone(x))
        return encode, encode, method.contrastive_loss, method.temperature
    raise ValueError(f"method must be CLAE or a SimCLR-family method (SimCLR, DCL, HCL), got {type(method).__name__}")


def adversarial_views(method, images: torch.Tensor, epsilon: float, steps: int = 1, step_size: float | None = None,
                      generator: torch.Generator | None = None) -> AdversarialViews:
    r"""CLAE's attack on one batch, measured: two views of `images` (the method's own augmentation, drawn
    from `generator`), the adversarial copy of the first (`clcourse.attacks.contrastive_attack` with
    `epsilon`, `steps`, `step_size`, through the adversarial batch-norm branch of a CLAE method), and

    - how much the attack raised the adversarial term, L(z_1, z_adv(x_1 + \delta)) against
      L(z_1, z_adv(x_1)) (L the method's loss, so InfoNCE for SimCLR);
    - the adversarial view as a hard positive: compare cos(z1, z_adv) with cos(z1, z2);
    - as a harder negative: `rank_among_negatives(z1, (z1, z2), z_adv)`, and the share of the InfoNCE
      gradient weight that anchor z1_k puts on the adversarial views among its negatives of the adversarial
      term (the views z1_m and z_adv_m of the other images; `negative_weights_from_similarities`), 0.5
      where they count as much as the clean views.

    Everything runs on a copy of the method in training mode (batch statistics, as in training), so the
    method and its running statistics stay as they were. A SimCLR-family method is attacked through its
    single batch-norm. Without gradient in the result; one batch (memory grows with B^2).
    """
    require_images("images", images)
    probe = copy.deepcopy(method).train()
    encode, encode_adversarial, loss, temperature = _encoders(probe)
    device = next(probe.parameters()).device
    view1, view2 = probe.make_views(images.to(device), generator)[:2]

    def attack_loss(z_anchor, z):        # summed over the anchors, as CLAE's training attack
        return loss(z_anchor, z) * (2 * z.shape[0])

    x_adv = contrastive_attack(encode_adversarial, view1, epsilon, attack_loss, steps, step_size)
    with torch.no_grad():
        z1, z2 = (F.normalize(z.float(), dim=1) for z in encode(torch.cat([view1, view2])).chunk(2))
        z_zero = F.normalize(encode_adversarial(view1).float(), dim=1)
        z_adv = F.normalize(encode_adversarial(x_adv).float(), dim=1)
        clean_negatives, adversarial_negatives = off_diagonal(z1 @ z1.T), off_diagonal(z1 @ z_adv.T)
        weights = negative_weights_from_similarities((z1 * z_adv).sum(1),
                                                     torch.cat([clean_negatives, adversarial_negatives], 1),
                                                     temperature)
        share = weights[:, clean_negatives.shape[1]:].sum(1) / weights.sum(1)
        return AdversarialViews(view1, view2, x_adv, z1, z2, z_adv, z_zero, loss(z1, z_zero), loss(z1, z_adv),
                                rank_among_negatives(z1, (z1, z2), z_adv), share)
