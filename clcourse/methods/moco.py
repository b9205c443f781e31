"""MoCo v2 (a momentum key encoder and a queue of past keys as negatives) and MoCHi
(hard negative mixing)."""
from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..distributed import encode_shuffled, gather, is_distributed, world
from ..losses import mochi_negatives, moco_info_nce, moco_logits
from ..models import projection_mlp, use_split_batchnorm
from ..validation import require_bool, require_in_range, require_int_at_least, require_positive
from .base import Batch, Method, StepOutput, require_function

__all__ = ["MoCo", "MoCHi", "update_key_encoder", "ring_buffer_enqueue", "moco_step"]


@torch.no_grad()
def update_key_encoder(key_encoder: nn.Module, query_encoder: nn.Module, momentum: float) -> None:
    """theta_k <- m theta_k + (1 - m) theta_q for every parameter of the key encoder, in place (one
    fused update over all parameters; the query encoder is left alone)."""
    torch._foreach_lerp_(list(key_encoder.parameters()), list(query_encoder.parameters()),
                         1.0 - momentum)


def moco_step(method: MoCo, query_views: torch.Tensor, key_views: torch.Tensor,
              index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One direction of a MoCo step: queries q = normalize(g(f(query_views))), keys from the
    momentum encoder on a shuffled batch without gradient (`MoCo.keys`), and the InfoNCE of q
    against its key and the queue, with the keys of each query's own image masked
    (`MoCo.query_loss`). Returns (loss, q, k); the keys are enqueued after the optimiser step
    (`MoCo.on_step_end`)."""
    q, k = method.queries(query_views), method.keys(key_views)
    return method.query_loss(q, k, index), q, k


def ring_buffer_enqueue(queue: torch.Tensor, pointer: torch.Tensor | int,
                        rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | int]:
    """Write `rows` [B, ...] over the B oldest rows of `queue` [K, ...], starting at `pointer`,
    wrapping around (a ring buffer: no data moves, the pointer advances). Returns
    (queue, new pointer)."""
    slots = (pointer + torch.arange(len(rows), device=queue.device)) % len(queue)
    queue[slots] = rows.to(queue.dtype)
    return queue, (pointer + len(rows)) % len(queue)


class MoCo(Method):
    """MoCo v2 (He et al. 2020; Chen et al. 2020): a query encoder trained by gradient, a
    key encoder that follows it as an exponential moving average, and a FIFO queue of past
    keys as negatives.

    Per step: q = g(f(v1)), k = g_k(f_k(v2)) without gradient, the InfoNCE of q against k and the
    queue (`moco_info_nce`). After the optimiser step (`on_step_end`), theta_k <- m
    theta_k + (1 - m) theta_q and the keys are enqueued, replacing the oldest. The queue remembers
    which image each key came from, and a query never uses a key of its own image as a negative (a
    stale copy of its positive).

    On one device, shuffled BN is emulated as in the MoCo CIFAR-10 demo: every BatchNorm2d becomes a
    SplitBatchNorm2d with `bn_splits` groups and keys are computed on a shuffled batch, so a query
    and its key never share batch statistics. In several processes (torchrun) the shuffle is MoCo's
    own: the key views of the global batch are shuffled across the processes (`keys`), each
    process's share again in `bn_splits` groups, and the keys of every process are enqueued, so
    that all of them hold the same queue (`on_step_end`).

    `symmetric=True` also uses (v2, v1) as a (query, key) pair, adds its loss (the demo sums the two
    directions) and enqueues both keys ("behaves like 2x epochs", per the demo).

    The moving parts can be replaced by a student's own (notebook 03), each with the signature of
    the library's: `logits(q, k, queue, temperature) -> [B, 1 + K]` (`clcourse.losses.moco_logits`),
    `momentum_update(key_encoder, query_encoder, momentum)` (`update_key_encoder`), `enqueue(queue,
    pointer, rows) -> (queue, pointer)` (`ring_buffer_enqueue`, used for the keys and for their
    image indices), and the step itself, `step(method, query_views, key_views,
    index) -> (loss, q, k)` (`moco_step`; a given step replaces `queries`, `keys` and `query_loss`,
    MoCHi's mixing included).

    Both views are made with `augment` unless `key_augment` gives the key view (views[1]) its own
    recipe, as SCE's weak view.

    Defaults follow the MoCo CIFAR-10 demo (queue 4096, momentum 0.99, temperature 0.1, 8 BN splits,
    learning rate 0.06 for a batch of 512) with MoCo v2's MLP head (no batch-norm in the head).
    """

    lr = 0.03   # the MoCo CIFAR-10 demo's 0.06 for a batch of 512
    # The encoders whose batch-norm is split into `bn_splits` groups (MoCo: both; SCE: the
    # key encoder only).
    split_batchnorm_in: tuple[str, ...] = ("backbone", "key_backbone")

    def __init__(self, backbone: nn.Module, temperature: float = 0.1, queue_size: int = 4096,
                 momentum: float = 0.99, bn_splits: int = 8, symmetric: bool = False,
                 mask_same_image: bool = True, projector_hidden: int = 512,
                 projector_out: int = 128, augment=None, key_augment=None,
                 logits: Callable | None = None, momentum_update: Callable | None = None,
                 enqueue: Callable | None = None, step: Callable | None = None):
        symmetric = require_bool("symmetric", symmetric)
        mask_same_image = require_bool("mask_same_image", mask_same_image)
        if augment is None:
            from ..augment import simclr_cifar
            augment = simclr_cifar()
        super().__init__(backbone, (augment, key_augment or augment))
        temperature = require_positive("temperature", temperature)
        queue_size = require_int_at_least("queue_size", queue_size, 1)
        momentum = require_in_range("momentum", momentum, 0.0, 1.0)
        bn_splits = require_int_at_least("bn_splits", bn_splits, 1)
        for name, fn in (("logits", logits), ("momentum_update", momentum_update),
                         ("enqueue", enqueue), ("step", step)):
            require_function(name, fn)
        self.temperature, self.momentum, self.symmetric = temperature, momentum, symmetric
        self.mask_same_image, self.bn_splits = mask_same_image, bn_splits
        self.logits_fn = logits or moco_logits
        self.momentum_update_fn = momentum_update or update_key_encoder
        self.enqueue_fn = enqueue or ring_buffer_enqueue
        self.step_fn = step or moco_step
        self.projector = projection_mlp(backbone.feature_dim, projector_hidden, projector_out,
                                        batch_norm=False)
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_projector = copy.deepcopy(self.projector)
        if bn_splits > 1:
            for name in self.split_batchnorm_in:
                use_split_batchnorm(getattr(self, name), bn_splits)
        for parameter in self.key_encoder().parameters():
            parameter.requires_grad_(False)
        # Initial negatives: random unit vectors, as in MoCo; -1 marks "no image".
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, projector_out), dim=1))
        self.register_buffer("queue_index", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        # How many queue entries can be keys of a query's own image (masked), and whether that
        # leaves every query a negative: both settled once in on_train_start, so that steps need no
        # host sync to check the mask.
        self.most_masked_entries = queue_size
        self.enough_unmasked_entries = False
        self.hyperparameters = dict(temperature=temperature, queue_size=queue_size,
                                    momentum=momentum, bn_splits=bn_splits, symmetric=symmetric,
                                    mask_same_image=mask_same_image,
                                    projector_hidden=projector_hidden, projector_out=projector_out)

    def functions(self) -> dict[str, Callable]:
        return {"logits": self.logits_fn, "momentum_update": self.momentum_update_fn,
                "enqueue": self.enqueue_fn, "step": self.step_fn}

    def query_encoder(self) -> nn.Module:
        """The encoder trained by gradient, backbone then projector (a container made on the fly, so
        that the modules are not registered twice)."""
        return nn.ModuleList([self.backbone, self.projector])

    def key_encoder(self) -> nn.Module:
        """The momentum encoder, laid out like `query_encoder`."""
        return nn.ModuleList([self.key_backbone, self.key_projector])

    def key_parameters(self) -> list[nn.Parameter]:
        return list(self.key_encoder().parameters())

    def query_parameters(self) -> list[nn.Parameter]:
        return list(self.query_encoder().parameters())

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        self.enough_unmasked_entries = False
        if not self.mask_same_image and self.queue.shape[0] >= num_images:
            raise ValueError(
                f"queue_size must be smaller than the training set ({num_images} images) when "
                f"mask_same_image=False, got {self.queue.shape[0]}: the queue would hold a stale "
                "key of every query's own image")
        processes = world().size
        per_process = batch_size // processes
        if per_process % self.bn_splits:
            where = f" per process ({batch_size} / {processes})" if processes > 1 else ""
            raise ValueError(f"batch_size{where} must be divisible by "
                             f"bn_splits={self.bn_splits}, got {per_process}")
        queue_size = self.queue.shape[0]
        self.most_masked_entries = 0
        if self.mask_same_image:
            # An epoch enqueues each image's key once per direction, and a query's own key of this
            # epoch is not enqueued yet: the K keys in the queue reach back over at most
            # ceil(K / keys per epoch) earlier epochs, each holding at most one key of the query's
            # image per direction.
            keys_per_epoch = batch_size * (num_images // batch_size)
            self.most_masked_entries = (1 + self.symmetric) * math.ceil(queue_size / keys_per_epoch)
            if self.most_masked_entries >= queue_size:
                raise ValueError(f"queue_size must be larger than {self.most_masked_entries}, the "
                                 "keys of a query's own image it can hold (masked), so that "
                                 f"every query keeps a negative; got {queue_size}")
        self.enough_unmasked_entries = True

    def queries(self, views: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encode(views).float(), dim=1)

    @torch.no_grad()
    def keys(self, views: torch.Tensor) -> torch.Tensor:
        """Keys from the momentum encoder, computed on a shuffled batch so BN splits differ
        from the queries'. In several processes, MoCo's own shuffle BN: the global batch is
        shuffled across the processes (`clcourse.distributed.encode_shuffled`), and each process's
        share is normalised in `bn_splits` groups, as one process holding the global batch with
        `bn_splits` times the number of processes groups would."""
        if is_distributed():
            keys = encode_shuffled(lambda x: self.key_projector(self.key_backbone(x)), views)
            return F.normalize(keys.float(), dim=1)
        shuffle = torch.randperm(views.shape[0], device=views.device)
        keys = self.key_projector(self.key_backbone(views[shuffle]))
        return F.normalize(keys.float(), dim=1)[torch.argsort(shuffle)]

    def same_image_mask(self, index: torch.Tensor) -> torch.Tensor | None:
        """[B, K], True where a queue entry is a key of the query's own image."""
        return index[:, None] == self.queue_index[None, :] if self.mask_same_image else None

    def query_loss(self, q: torch.Tensor, k: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return moco_info_nce(q, k, self.queue, self.temperature,
                             queue_mask=self.same_image_mask(index), logits=self.logits_fn,
                             check_mask=not self.enough_unmasked_entries)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, index: torch.Tensor) -> None:
        """Write `keys` and the index of their images over the oldest entries, with `enqueue_fn`."""
        if keys.shape[0] > self.queue.shape[0]:
            # more keys than slots would write some slots twice, and which key wins is undefined
            raise ValueError(f"queue_size ({self.queue.shape[0]}) must be at least the number of "
                             f"keys enqueued at once (the batch size), got {keys.shape[0]} keys")
        for buffer, rows in ((self.queue, keys), (self.queue_index[:, None], index[:, None])):
            written, pointer = self.enqueue_fn(buffer, self.queue_pointer.clone(), rows)
            if written is not buffer:      # a function that returns a new tensor instead of writing
                                           # in place
                buffer.copy_(written)
        self.queue_pointer.fill_(pointer)

    def training_step(self, batch: Batch) -> StepOutput:
        view1, view2 = batch.views
        loss, q1, k2 = self.step_fn(self, view1, view2, batch.index)
        keys = [k2.detach().float()]
        if self.symmetric:
            loss2, _, k1 = self.step_fn(self, view2, view1, batch.index)
            loss = loss + loss2   # summed, as in the MoCo CIFAR-10 demo
            keys.append(k1.detach().float())
        q1 = q1.detach().float()
        logs = {"positive_similarity": (q1 * keys[0]).sum(1).mean(),
                "queue_similarity": (q1 @ self.queue.T).mean()}
        return StepOutput(loss, logs, {"keys": torch.stack(keys)})

    @torch.no_grad()
    def on_step_end(self, batch: Batch, output: StepOutput) -> None:
        # After the optimiser step, as in MoCo's pseudo-code: the momentum update, then this step's
        # keys enqueued. Enqueuing here rather than in training_step keeps the queue fixed while the
        # loss still needs it, and the compiled step free of buffer writes.
        # In several processes, the keys and images of the whole global batch, in its order, as
        # one process holding it enqueues them: every process keeps the same queue.
        self.momentum_update_fn(self.key_encoder(), self.query_encoder(), self.momentum)
        keys, index = output.outputs["keys"], batch.index
        if is_distributed():
            keys, index = gather(keys.transpose(0, 1)).transpose(0, 1), gather(index)
        for direction in keys:
            self.enqueue(direction, index)


class MoCHi(MoCo):
    """MoCo v2 with hard negative mixing (Kalantidis et al. 2020), MoCHi(N, s, s'): each query
    also meets `n_mix_negatives` (s) mixes of two of its N hardest queue negatives and
    `n_mix_query` (s') mixes of itself with one of them (`clcourse.losses.mochi_negatives`). The
    synthetic negatives are detached and never enqueued. Mixing starts after
    `mixing_warmup_epochs` epochs of plain MoCo.

    The paper has no CIFAR experiments; the defaults keep N/K small as on ImageNet
    (N = 64 of K = 4096).
    """

    def __init__(self, backbone: nn.Module, n_hardest: int = 64, n_mix_negatives: int = 128,
                 n_mix_query: int = 32, mixing_warmup_epochs: int = 0, **options):
        super().__init__(backbone, **options)
        n_hardest = require_int_at_least("n_hardest", n_hardest, 1)
        if n_hardest > self.queue.shape[0]:
            raise ValueError("n_hardest must be at most queue_size "
                             f"({self.queue.shape[0]}), got {n_hardest}")
        n_mix_negatives = require_int_at_least("n_mix_negatives", n_mix_negatives, 0)
        n_mix_query = require_int_at_least("n_mix_query", n_mix_query, 0)
        mixing_warmup_epochs = require_int_at_least("mixing_warmup_epochs", mixing_warmup_epochs, 0)
        self.n_hardest, self.n_mix_negatives = n_hardest, n_mix_negatives
        self.n_mix_query = n_mix_query
        self.mixing_warmup_epochs = mixing_warmup_epochs
        self.mixing = mixing_warmup_epochs == 0
        self.hyperparameters.update(n_hardest=n_hardest, n_mix_negatives=n_mix_negatives,
                                    n_mix_query=n_mix_query,
                                    mixing_warmup_epochs=mixing_warmup_epochs)

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        super().on_train_start(num_images, batch_size)   # bounds the masked entries
                                                         # (most_masked_entries)
        queue_size, most_masked = self.queue.shape[0], self.most_masked_entries
        if self.n_hardest > queue_size - most_masked:
            self.enough_unmasked_entries = False
            raise ValueError(
                f"n_hardest must be at most {queue_size - most_masked} (queue_size "
                f"{queue_size} minus up to {most_masked} masked keys of the query's own "
                f"image), got {self.n_hardest}")

    def on_epoch_start(self, epoch: int) -> None:
        self.mixing = epoch >= self.mixing_warmup_epochs

    def query_loss(self, q: torch.Tensor, k: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        queue_mask = self.same_image_mask(index)
        synthetic = None
        if self.mixing:
            synthetic = mochi_negatives(q, self.queue, self.n_hardest, self.n_mix_negatives,
                                        self.n_mix_query, queue_mask=queue_mask,
                                        check_mask=not self.enough_unmasked_entries)
        return moco_info_nce(q, k, self.queue, self.temperature, queue_mask=queue_mask,
                             extra_negatives=synthetic, logits=self.logits_fn,
                             check_mask=not self.enough_unmasked_entries)
