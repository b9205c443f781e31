"""Self-supervised methods. A method is a small object that says how a batch of images becomes a loss;
one training loop (clcourse.train.train) serves every method.

A method owns
- `backbone`: the encoder whose features are evaluated (kNN, linear probe);
- `augment`: how views are made (clcourse.augment), used by `make_views`;
- `training_step(batch) -> (loss, logs)`: the loss of one batch, and scalar tensors worth logging;
- `on_step_end()`: anything that happens after the optimiser step (e.g. a momentum update, enqueuing keys).
"""
from __future__ import annotations

from typing import NamedTuple

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .losses import dcl, hcl, info_nce, mochi_negatives, moco_info_nce
from .models import projection_mlp, use_split_batchnorm
from .validation import require_in_range, require_int_at_least, require_positive


class Batch(NamedTuple):
    views: tuple[torch.Tensor, ...]   # augmented views, float [B, 3, H, W] in [0, 1]
    images: torch.Tensor              # the original images, uint8 [B, 3, H, W]
    labels: torch.Tensor | None       # class labels [B] (unused by self-supervised methods)
    index: torch.Tensor               # position of each image in the training set [B]


class Method(nn.Module):
    """Base class: a backbone, an augmentation recipe, and a loss per batch."""

    def __init__(self, backbone: nn.Module, augment=None):
        super().__init__()
        if augment is None:
            from .augment import simclr_cifar
            augment = simclr_cifar()
        self.backbone = backbone
        self.augment = augment

    def make_views(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Two independently augmented views of every image."""
        return self.augment(images, generator), self.augment(images, generator)

    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        """Called once by the training loop with the size of the training set and of a batch."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called at the start of every epoch (counted from 0), also when a run resumes."""

    def on_step_end(self) -> None:
        """Called after every optimiser step."""


class SimCLR(Method):
    """SimCLR (Chen et al., ICML 2020): both views go through backbone f and projector g in one batch of
    2B (so batch-norm statistics are shared, as with SimCLR's global BN), then `contrastive_loss`
    compares z1 = g(f(v1)) with z2 = g(f(v2)). Subclasses change only `contrastive_loss`."""

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, projector_hidden: int = 512,
                 projector_out: int = 128, augment=None):
        super().__init__(backbone, augment)
        require_positive("temperature", temperature)
        self.temperature = temperature
        self.projector = projection_mlp(backbone.feature_dim, projector_hidden, projector_out)

    def contrastive_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return info_nce(z1, z2, self.temperature)

    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        view1, view2 = batch.views
        z1, z2 = self.projector(self.backbone(torch.cat([view1, view2]))).chunk(2)
        loss = self.contrastive_loss(z1, z2)
        positive_similarity = F.cosine_similarity(z1.detach().float(), z2.detach().float()).mean()
        return loss, {"positive_similarity": positive_similarity}


class DCL(SimCLR):
    """SimCLR trained with Debiased Contrastive Learning (Chuang et al. 2020), see `clcourse.losses.dcl`."""

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, tau_plus: float = 0.1, **options):
        super().__init__(backbone, temperature, **options)
        require_in_range("tau_plus", tau_plus, 0.0, 1.0, high_inclusive=False)
        self.tau_plus = tau_plus

    def contrastive_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return dcl(z1, z2, self.temperature, self.tau_plus)


class HCL(SimCLR):
    """SimCLR trained with hard negative sampling (Robinson et al. 2021), see `clcourse.losses.hcl`."""

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, tau_plus: float = 0.1, beta: float = 1.0,
                 **options):
        super().__init__(backbone, temperature, **options)
        require_in_range("tau_plus", tau_plus, 0.0, 1.0, high_inclusive=False)
        require_in_range("beta", beta, 0.0, float("inf"), high_inclusive=False)
        self.tau_plus, self.beta = tau_plus, beta

    def contrastive_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        return hcl(z1, z2, self.temperature, self.tau_plus, self.beta)


class MoCo(Method):
    """MoCo v2 (He et al. 2020; Chen et al. 2020): a query encoder trained by gradient, a key encoder that
    follows it as an exponential moving average, and a FIFO queue of past keys as negatives.

    Per step: q = g(f(v1)), k = g_k(f_k(v2)) without gradient, the InfoNCE of q against k and the queue
    (`moco_info_nce`). After the optimiser step (`on_step_end`), theta_k <- m theta_k + (1 - m) theta_q and
    the keys are enqueued, replacing the oldest. The queue remembers which image each key came from, and a
    query never uses a key of its own image as a negative (a stale copy of its positive).

    On one device, shuffled BN is emulated as in the MoCo CIFAR-10 demo: every BatchNorm2d becomes a
    SplitBatchNorm2d with `bn_splits` groups and keys are computed on a shuffled batch, so a query and its
    key never share batch statistics. `symmetric=True` also uses (v2, v1) as a (query, key) pair,
    adds its loss (the demo sums the two directions) and enqueues both keys ("behaves like 2x epochs",
    per the demo).

    Defaults follow the MoCo CIFAR-10 demo (queue 4096, momentum 0.99, temperature 0.1, 8 BN splits) with
    MoCo v2's MLP head (no batch-norm in the head).
    """

    def __init__(self, backbone: nn.Module, temperature: float = 0.1, queue_size: int = 4096, momentum: float = 0.99,
                 bn_splits: int = 8, symmetric: bool = False, mask_same_image: bool = True,
                 projector_hidden: int = 512, projector_out: int = 128, augment=None):
        super().__init__(backbone, augment)
        require_positive("temperature", temperature)
        require_int_at_least("queue_size", queue_size, 1)
        require_in_range("momentum", momentum, 0.0, 1.0)
        require_int_at_least("bn_splits", bn_splits, 1)
        self.temperature, self.momentum, self.symmetric = temperature, momentum, symmetric
        self.mask_same_image, self.bn_splits = mask_same_image, bn_splits
        if bn_splits > 1:
            use_split_batchnorm(self.backbone, bn_splits)
        self.projector = projection_mlp(backbone.feature_dim, projector_hidden, projector_out, batch_norm=False)
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_projector = copy.deepcopy(self.projector)
        for parameter in self.key_parameters():
            parameter.requires_grad_(False)
        # Initial negatives: random unit vectors, as in MoCo; -1 marks "no image".
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, projector_out), dim=1))
        self.register_buffer("queue_index", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        self.pending_keys: list[torch.Tensor] = []   # keys of the current step, enqueued in on_step_end

    def key_parameters(self) -> list[nn.Parameter]:
        return list(self.key_backbone.parameters()) + list(self.key_projector.parameters())

    def query_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters()) + list(self.projector.parameters())

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        if not self.mask_same_image and self.queue.shape[0] >= num_images:
            raise ValueError(
                f"queue_size must be smaller than the training set ({num_images} images) when mask_same_image=False, "
                f"got {self.queue.shape[0]}: the queue would hold a stale key of every query's own image")

    def queries(self, views: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(self.backbone(views)).float(), dim=1)

    @torch.no_grad()
    def keys(self, views: torch.Tensor) -> torch.Tensor:
        """Keys from the momentum encoder, computed on a shuffled batch so BN splits differ from the queries'."""
        shuffle = torch.randperm(views.shape[0], device=views.device)
        keys = self.key_projector(self.key_backbone(views[shuffle]))
        return F.normalize(keys.float(), dim=1)[torch.argsort(shuffle)]

    def same_image_mask(self, index: torch.Tensor) -> torch.Tensor | None:
        """[B, K], True where a queue entry is a key of the query's own image."""
        return index[:, None] == self.queue_index[None, :] if self.mask_same_image else None

    def query_loss(self, q: torch.Tensor, k: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return moco_info_nce(q, k, self.queue, self.temperature, queue_mask=self.same_image_mask(index))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, index: torch.Tensor) -> None:
        """Write `keys` over the oldest entries (a ring buffer: no data moves, the pointer advances)."""
        if keys.shape[0] > self.queue.shape[0]:
            # more keys than slots would write some slots twice, and which key wins is undefined
            raise ValueError(f"queue_size ({self.queue.shape[0]}) must be at least the number of keys enqueued "
                             f"at once (the batch size), got {keys.shape[0]} keys")
        slots = (self.queue_pointer + torch.arange(keys.shape[0], device=keys.device)) % self.queue.shape[0]
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_index[slots] = index
        self.queue_pointer.copy_((self.queue_pointer + keys.shape[0]) % self.queue.shape[0])

    def training_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        view1, view2 = batch.views
        if view1.shape[0] % self.bn_splits:
            raise ValueError(f"batch size must be divisible by bn_splits={self.bn_splits}, got {view1.shape[0]}")
        q1, k2 = self.queries(view1), self.keys(view2)
        loss = self.query_loss(q1, k2, batch.index)
        self.pending_keys = [k2]
        if self.symmetric:
            q2, k1 = self.queries(view2), self.keys(view1)
            loss = loss + self.query_loss(q2, k1, batch.index)   # summed, as in the MoCo CIFAR-10 demo
            self.pending_keys.append(k1)
        self.pending_index = batch.index
        logs = {"positive_similarity": (q1.detach() * k2).sum(1).mean(),
                "queue_similarity": (q1.detach() @ self.queue.T).mean()}
        return loss, logs

    @torch.no_grad()
    def on_step_end(self) -> None:
        # After the optimiser step, as in MoCo's pseudo-code: theta_k <- m theta_k + (1 - m) theta_q (one fused
        # update over all parameters), then enqueue this step's keys. Enqueuing here rather than in
        # training_step keeps the queue fixed while the loss still needs it, and the compiled step free of
        # buffer writes.
        torch._foreach_lerp_(self.key_parameters(), self.query_parameters(), 1.0 - self.momentum)
        for keys in self.pending_keys:
            self.enqueue(keys, self.pending_index)
        self.pending_keys = []


class MoCHi(MoCo):
    """MoCo v2 with hard negative mixing (Kalantidis et al. 2020), MoCHi(N, s, s'): each query also meets
    `n_mix_negatives` (s) mixes of two of its N hardest queue negatives and `n_mix_query` (s') mixes of
    itself with one of them (`clcourse.losses.mochi_negatives`). The synthetic negatives are detached and
    never enqueued. Mixing starts after `mixing_warmup_epochs` epochs of plain MoCo.

    The paper has no CIFAR experiments; the defaults keep N/K small as on ImageNet (N = 64 of K = 4096).
    """

    def __init__(self, backbone: nn.Module, n_hardest: int = 64, n_mix_negatives: int = 128, n_mix_query: int = 32,
                 mixing_warmup_epochs: int = 0, **options):
        super().__init__(backbone, **options)
        require_int_at_least("n_hardest", n_hardest, 1)
        if n_hardest > self.queue.shape[0]:
            raise ValueError(f"n_hardest must be at most queue_size ({self.queue.shape[0]}), got {n_hardest}")
        require_int_at_least("n_mix_negatives", n_mix_negatives, 0)
        require_int_at_least("n_mix_query", n_mix_query, 0)
        require_int_at_least("mixing_warmup_epochs", mixing_warmup_epochs, 0)
        self.n_hardest, self.n_mix_negatives, self.n_mix_query = n_hardest, n_mix_negatives, n_mix_query
        self.mixing_warmup_epochs = mixing_warmup_epochs
        self.mixing = mixing_warmup_epochs == 0
        self.enough_unmasked_entries = False   # proven once in on_train_start, so steps need no host sync

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        super().on_train_start(num_images, batch_size)
        if self.mask_same_image:
            # An epoch enqueues each image's key once per direction, and a query's own key of this epoch is
            # not enqueued yet: the K keys in the queue reach back over at most ceil(K / keys per epoch)
            # earlier epochs, each holding at most one key of the query's image per direction.
            queue_size = self.queue.shape[0]
            keys_per_epoch = batch_size * (num_images // batch_size)
            most_masked = (1 + self.symmetric) * math.ceil(queue_size / keys_per_epoch)
            if self.n_hardest > queue_size - most_masked:
                raise ValueError(
                    f"n_hardest must be at most {queue_size - most_masked} (queue_size {queue_size} minus up to "
                    f"{most_masked} masked keys of the query's own image), got {self.n_hardest}")
        self.enough_unmasked_entries = True

    def on_epoch_start(self, epoch: int) -> None:
        self.mixing = epoch >= self.mixing_warmup_epochs

    def query_loss(self, q: torch.Tensor, k: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        queue_mask = self.same_image_mask(index)
        synthetic = None
        if self.mixing:
            synthetic = mochi_negatives(q, self.queue, self.n_hardest, self.n_mix_negatives, self.n_mix_query,
                                        queue_mask=queue_mask, check_mask=not self.enough_unmasked_entries)
        return moco_info_nce(q, k, self.queue, self.temperature, queue_mask=queue_mask, extra_negatives=synthetic)


METHODS: dict[str, type[Method]] = {"simclr": SimCLR, "dcl": DCL, "hcl": HCL, "moco": MoCo, "mochi": MoCHi}


def build_method(name: str, backbone: nn.Module, **options) -> Method:
    """A method by name (see METHODS) around `backbone`, with its own defaults unless `options` say otherwise."""
    if name not in METHODS:
        raise ValueError(f"method name must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name](backbone, **options)
