"""Self-supervised methods. A method is a small object that says how a batch of images becomes a loss;
one training loop (clcourse.train.train) serves every method.

A method owns
- `backbone`: the encoder whose features are evaluated (kNN, linear probe), and `projector`, the head
  whose output the loss compares (`embed` gives either, in eval mode);
- `view_recipes`: one augmentation per view it wants of every image (`make_views` makes them all);
- `training_step(batch) -> StepOutput(loss, logs, outputs)`: the loss of one batch, scalar tensors worth
  logging, and whatever `on_step_end` needs;
- `on_step_end(batch, output)`: what happens after the optimiser step (a momentum update, enqueuing keys);
- class-level defaults the training loop reads: `lr` (peak SGD learning rate per 256 images, the course's
  recipe for this method), `requires_labels` (the loop refuses to start without labels) and
  `compilable` (False: the step always runs eagerly, e.g. when it takes input gradients that
  torch.compile would break the graph on);
- `config()`: its class, hyperparameters, views and architecture, stored with every run so that a run is
  never resumed with other settings.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import contrastive_attack, contrastive_objective, cross_entropy_objective, pgd
from .augment import to_float_images
from .evaluate import extract_features
from .losses import (cacr, dcl, hcl, info_nce, mochi_negatives, moco_info_nce, moco_logits, multiview_info_nce,
                     require_cacr_arguments, sce, supcon)
from .models import (adversarial_batchnorm, batchnorm_statistics_frozen, projection_mlp, use_dual_batchnorm,
                     use_split_batchnorm)
from .negatives import rank_among_negatives
from .presets import no_autocast
from .validation import require_bool, require_in_range, require_int_at_least, require_positive


class Batch(NamedTuple):
    views: tuple[torch.Tensor, ...]   # augmented views, float [B, 3, H, W] in [0, 1], one per view recipe
    images: torch.Tensor              # the original images, uint8 [B, 3, H, W]
    labels: torch.Tensor | None       # class labels [B] (None unless the training loop was given labels)
    index: torch.Tensor               # position of each image in the training set [B]


class StepOutput(NamedTuple):
    """What `Method.training_step` returns."""
    loss: torch.Tensor                           # the scalar to minimise
    logs: dict[str, torch.Tensor]                # scalar tensors the loop averages and records
    outputs: dict[str, torch.Tensor] | None = None   # what `on_step_end` needs (e.g. MoCo's keys)


def describe(component) -> str:
    """A stable description of a function or an object for a run's configuration: a function by its
    qualified name (its repr would hold a memory address), anything else by its repr."""
    if hasattr(component, "__qualname__"):
        return f"{component.__module__}.{component.__qualname__}"
    return repr(component)


class Method(nn.Module):
    """Base class: a backbone, a projection head, the views to make of each image, and a loss per batch."""

    lr: float = 0.12                 # peak SGD learning rate per 256 images (scaled with the batch size)
    requires_labels: bool = False    # supervised methods set True; `train` then refuses to start without labels
    compilable: bool = True          # False: `train(compile=True)` runs this method's step eagerly

    def __init__(self, backbone: nn.Module, view_recipes: Sequence[Callable]):
        super().__init__()
        if not view_recipes or not all(callable(recipe) for recipe in view_recipes):
            raise ValueError(f"view_recipes must be a non-empty sequence of augmentations (callables), "
                             f"got {view_recipes!r}")
        self.backbone = backbone
        self.projector: nn.Module = nn.Identity()
        self.view_recipes = tuple(view_recipes)
        self.hyperparameters: dict = {}      # subclasses record what defines them, for `config`

    # ------------------------------------------------------------ views and embeddings

    def make_views(self, images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """One view of every image per recipe in `view_recipes`. Views that share a recipe are made in one
        batched call (on a batch of the images repeated), so M views cost one augmentation call, not M."""
        views: list[torch.Tensor | None] = [None] * len(self.view_recipes)
        for recipe in dict.fromkeys(self.view_recipes, None):            # distinct recipes, in order
            positions = [i for i, r in enumerate(self.view_recipes) if r is recipe]
            made = recipe(images.repeat(len(positions), 1, 1, 1), generator)
            for position, view in zip(positions, made.chunk(len(positions))):
                views[position] = view
        return tuple(views)

    def embed(self, images: torch.Tensor, projected: bool = True, batch_size: int = 1024) -> torch.Tensor:
        """Embeddings of images (uint8, or float in [0, 1]) in eval mode, without gradient, float32:
        unit vectors z = normalize(g(f(x))), what the loss compares (`projected=True`), or the backbone's
        features h = f(x), what kNN and the linear probe read (`projected=False`)."""
        if not projected:
            return extract_features(self.backbone, images, batch_size)
        return F.normalize(extract_features(nn.Sequential(self.backbone, self.projector), images, batch_size), dim=1)

    # ------------------------------------------------------------ the step and its hooks

    def training_step(self, batch: Batch) -> StepOutput:
        raise NotImplementedError

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        """Called once by the training loop with the size of the training set and of a batch."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called at the start of every epoch (counted from 0), also when a run resumes."""

    def on_step_end(self, batch: Batch, output: StepOutput) -> None:
        """Called after every optimiser step with the step's batch and output."""

    # ------------------------------------------------------------ configuration

    def config(self) -> dict:
        """What defines this method in a run's configuration: class, hyperparameters, views, architecture.

        Under "functions", the pluggable pieces a method was given (a student's loss, say) are recorded
        by name; `train` does not compare them when a run resumes, since a checked exercise computes the
        same function as the library's (notebook 02 reuses the run notebook 01 trained with the student's
        InfoNCE)."""
        values = sum(p.numel() for p in self.state_dict().values())
        return {"name": type(self).__name__, **self.hyperparameters,
                "views": [describe(recipe) for recipe in self.view_recipes],
                "architecture": f"{describe_module(self.backbone)}, {values:,} values in the state dict"}


def describe_module(module: nn.Module) -> str:
    """`Backbone(SmallCNN)`-style name of a module and, for a `Backbone`, of the network it wraps."""
    inner = getattr(module, "net", None)
    return f"{type(module).__name__}({type(inner).__name__})" if inner is not None else type(module).__name__


# ---------------------------------------------------------------- SimCLR and its loss variants

class TwoViewContrastive(Method):
    """What SimCLR (and its loss variants) and SupCon share: two views of every image made by one augmentation
    (`augment`, default `clcourse.augment.simclr_cifar`), a projection MLP g, and a `loss` at `temperature`,
    `default_loss` unless given (a student's function, recorded in `config` by name). Each subclass keeps its
    own defaults and says how a batch becomes its loss."""

    default_loss: Callable                # the library's loss, unless `loss=` is given
    loss_signature: str                   # how `loss` is called, for the error a non-function gets

    def __init__(self, backbone: nn.Module, temperature: float, projector_hidden: int, projector_out: int,
                 augment, loss: Callable | None):
        if augment is None:
            from .augment import simclr_cifar
            augment = simclr_cifar()
        super().__init__(backbone, (augment, augment))
        temperature = require_positive("temperature", temperature)
        if loss is not None and not callable(loss):
            raise ValueError(f"loss must be a function {self.loss_signature}, got {loss!r}")
        self.temperature = temperature
        self.loss = loss or self.default_loss
        self.projector = projection_mlp(backbone.feature_dim, projector_hidden, projector_out)
        self.hyperparameters = dict(temperature=temperature, projector_hidden=projector_hidden,
                                    projector_out=projector_out)

    def config(self) -> dict:
        return {**super().config(), "functions": {"loss": describe(self.loss)}}


class SimCLR(TwoViewContrastive):
    """SimCLR (Chen et al., ICML 2020): both views go through backbone f and projector g in one batch of
    2B (so batch-norm statistics are shared, as with SimCLR's global BN), then the loss compares
    z1 = g(f(v1)) with z2 = g(f(v2)).

    `loss(z1, z2, temperature)` is `clcourse.losses.info_nce` unless given, e.g. the function a student
    wrote in notebook 01. Subclasses (DCL, HCL) pass their own hyperparameters to their loss through
    `loss_arguments`.
    """

    default_loss = staticmethod(info_nce)
    loss_signature = "loss(z1, z2, temperature, ...)"

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, projector_hidden: int = 512,
                 projector_out: int = 128, augment=None, loss: Callable | None = None):
        super().__init__(backbone, temperature, projector_hidden, projector_out, augment, loss)

    def loss_arguments(self) -> tuple:
        """The loss's arguments after (z1, z2)."""
        return (self.temperature,)

    def contrastive_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The loss on float32 embeddings with autocast off, so that no loss, a student's included, runs its
        exponentials in half precision."""
        with no_autocast(z1.device):
            return self.loss(z1.float(), z2.float(), *self.loss_arguments())

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        if batch_size < 2:
            # One image has no negatives: its only other view is the positive, and the loss is 0.
            raise ValueError(f"batch_size must be at least 2 for {type(self).__name__} (the other images of the "
                             f"batch are the negatives), got {batch_size}")

    def training_step(self, batch: Batch) -> StepOutput:
        view1, view2 = batch.views
        z1, z2 = self.projector(self.backbone(torch.cat([view1, view2]))).chunk(2)
        loss = self.contrastive_loss(z1, z2)
        positive_similarity = F.cosine_similarity(z1.detach().float(), z2.detach().float()).mean()
        return StepOutput(loss, {"positive_similarity": positive_similarity})


class DCL(SimCLR):
    """SimCLR trained with Debiased Contrastive Learning (Chuang et al. 2020), see `clcourse.losses.dcl`;
    `loss(z1, z2, temperature, tau_plus)`."""

    default_loss = staticmethod(dcl)

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, tau_plus: float = 0.1, **options):
        super().__init__(backbone, temperature, **options)
        tau_plus = require_in_range("tau_plus", tau_plus, 0.0, 1.0, high_inclusive=False)
        self.tau_plus = tau_plus
        self.hyperparameters["tau_plus"] = tau_plus

    def loss_arguments(self) -> tuple:
        return (self.temperature, self.tau_plus)


class HCL(SimCLR):
    """SimCLR trained with hard negative sampling (Robinson et al. 2021), see `clcourse.losses.hcl`;
    `loss(z1, z2, temperature, tau_plus, beta)`."""

    default_loss = staticmethod(hcl)

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, tau_plus: float = 0.1, beta: float = 1.0,
                 **options):
        super().__init__(backbone, temperature, **options)
        tau_plus = require_in_range("tau_plus", tau_plus, 0.0, 1.0, high_inclusive=False)
        beta = require_in_range("beta", beta, 0.0, math.inf, high_inclusive=False)
        self.tau_plus, self.beta = tau_plus, beta
        self.hyperparameters.update(tau_plus=tau_plus, beta=beta)

    def loss_arguments(self) -> tuple:
        return (self.temperature, self.tau_plus, self.beta)


# ---------------------------------------------------------------- MoCo v2 and MoCHi

@torch.no_grad()
def update_key_encoder(key_encoder: nn.Module, query_encoder: nn.Module, momentum: float) -> None:
    """theta_k <- m theta_k + (1 - m) theta_q for every parameter of the key encoder, in place (one fused
    update over all parameters; the query encoder is left alone)."""
    torch._foreach_lerp_(list(key_encoder.parameters()), list(query_encoder.parameters()), 1.0 - momentum)


def moco_step(method: "MoCo", query_views: torch.Tensor, key_views: torch.Tensor,
              index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One direction of a MoCo step: queries q = normalize(g(f(query_views))), keys from the momentum encoder
    on a shuffled batch without gradient (`MoCo.keys`), and the InfoNCE of q against its key and the queue,
    with the keys of each query's own image masked (`MoCo.query_loss`). Returns (loss, q, k); the keys are
    enqueued after the optimiser step (`MoCo.on_step_end`)."""
    q, k = method.queries(query_views), method.keys(key_views)
    return method.query_loss(q, k, index), q, k


def ring_buffer_enqueue(queue: torch.Tensor, pointer: torch.Tensor | int,
                        rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | int]:
    """Write `rows` [B, ...] over the B oldest rows of `queue` [K, ...], starting at `pointer`, wrapping
    around (a ring buffer: no data moves, the pointer advances). Returns (queue, new pointer)."""
    slots = (pointer + torch.arange(len(rows), device=queue.device)) % len(queue)
    queue[slots] = rows.to(queue.dtype)
    return queue, (pointer + len(rows)) % len(queue)


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

    The moving parts can be replaced by a student's own (notebook 03), each with the signature of the
    library's: `logits(q, k, queue, temperature) -> [B, 1 + K]` (`clcourse.losses.moco_logits`),
    `momentum_update(key_encoder, query_encoder, momentum)` (`update_key_encoder`),
    `enqueue(queue, pointer, rows) -> (queue, pointer)` (`ring_buffer_enqueue`, used for the keys and for
    their image indices), and the step itself, `step(method, query_views, key_views, index) -> (loss, q, k)`
    (`moco_step`; a given step replaces `queries`, `keys` and `query_loss`, MoCHi's mixing included).

    Both views are made with `augment` unless `key_augment` gives the key view (views[1]) its own recipe, as
    SCE's weak view.

    Defaults follow the MoCo CIFAR-10 demo (queue 4096, momentum 0.99, temperature 0.1, 8 BN splits, learning
    rate 0.06 for a batch of 512) with MoCo v2's MLP head (no batch-norm in the head).
    """

    lr = 0.03   # the MoCo CIFAR-10 demo's 0.06 for a batch of 512

    def __init__(self, backbone: nn.Module, temperature: float = 0.1, queue_size: int = 4096, momentum: float = 0.99,
                 bn_splits: int = 8, symmetric: bool = False, mask_same_image: bool = True,
                 projector_hidden: int = 512, projector_out: int = 128, augment=None, key_augment=None,
                 logits: Callable | None = None, momentum_update: Callable | None = None,
                 enqueue: Callable | None = None, step: Callable | None = None):
        if augment is None:
            from .augment import simclr_cifar
            augment = simclr_cifar()
        super().__init__(backbone, (augment, key_augment or augment))
        temperature = require_positive("temperature", temperature)
        queue_size = require_int_at_least("queue_size", queue_size, 1)
        momentum = require_in_range("momentum", momentum, 0.0, 1.0)
        bn_splits = require_int_at_least("bn_splits", bn_splits, 1)
        for name, fn in (("logits", logits), ("momentum_update", momentum_update), ("enqueue", enqueue),
                         ("step", step)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be a function, got {fn!r}")
        self.temperature, self.momentum, self.symmetric = temperature, momentum, symmetric
        self.mask_same_image, self.bn_splits = mask_same_image, bn_splits
        self.logits_fn = logits or moco_logits
        self.momentum_update_fn = momentum_update or update_key_encoder
        self.enqueue_fn = enqueue or ring_buffer_enqueue
        self.step_fn = step or moco_step
        if bn_splits > 1:
            use_split_batchnorm(self.backbone, bn_splits)
        self.projector = projection_mlp(backbone.feature_dim, projector_hidden, projector_out, batch_norm=False)
        self.key_backbone = copy.deepcopy(self.backbone)
        self.key_projector = copy.deepcopy(self.projector)
        for parameter in self.key_encoder().parameters():
            parameter.requires_grad_(False)
        # Initial negatives: random unit vectors, as in MoCo; -1 marks "no image".
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, projector_out), dim=1))
        self.register_buffer("queue_index", torch.full((queue_size,), -1, dtype=torch.long))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.long))
        # How many queue entries can be keys of a query's own image (masked), and whether that leaves every query
        # a negative: both settled once in on_train_start, so that steps need no host sync to check the mask.
        self.most_masked_entries = queue_size
        self.enough_unmasked_entries = False
        self.hyperparameters = dict(temperature=temperature, queue_size=queue_size, momentum=momentum,
                                    bn_splits=bn_splits, symmetric=symmetric, mask_same_image=mask_same_image,
                                    projector_hidden=projector_hidden, projector_out=projector_out)

    def config(self) -> dict:
        return {**super().config(), "functions": {"logits": describe(self.logits_fn),
                                                  "momentum_update": describe(self.momentum_update_fn),
                                                  "enqueue": describe(self.enqueue_fn),
                                                  "step": describe(self.step_fn)}}

    def query_encoder(self) -> nn.Module:
        """The encoder trained by gradient, backbone then projector (a container made on the fly, so that
        the modules are not registered twice)."""
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
                f"queue_size must be smaller than the training set ({num_images} images) when mask_same_image=False, "
                f"got {self.queue.shape[0]}: the queue would hold a stale key of every query's own image")
        if batch_size % self.bn_splits:
            raise ValueError(f"batch_size must be divisible by bn_splits={self.bn_splits}, got {batch_size}")
        queue_size = self.queue.shape[0]
        self.most_masked_entries = 0
        if self.mask_same_image:
            # An epoch enqueues each image's key once per direction, and a query's own key of this epoch is
            # not enqueued yet: the K keys in the queue reach back over at most ceil(K / keys per epoch)
            # earlier epochs, each holding at most one key of the query's image per direction.
            keys_per_epoch = batch_size * (num_images // batch_size)
            self.most_masked_entries = (1 + self.symmetric) * math.ceil(queue_size / keys_per_epoch)
            if self.most_masked_entries >= queue_size:
                raise ValueError(f"queue_size must be larger than {self.most_masked_entries}, the keys of a query's "
                                 f"own image it can hold (masked), so that every query keeps a negative; got "
                                 f"{queue_size}")
        self.enough_unmasked_entries = True

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
        return moco_info_nce(q, k, self.queue, self.temperature, queue_mask=self.same_image_mask(index),
                             logits=self.logits_fn, check_mask=not self.enough_unmasked_entries)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, index: torch.Tensor) -> None:
        """Write `keys` and the index of their images over the oldest entries, with `enqueue_fn`."""
        if keys.shape[0] > self.queue.shape[0]:
            # more keys than slots would write some slots twice, and which key wins is undefined
            raise ValueError(f"queue_size ({self.queue.shape[0]}) must be at least the number of keys enqueued "
                             f"at once (the batch size), got {keys.shape[0]} keys")
        for buffer, rows in ((self.queue, keys), (self.queue_index[:, None], index[:, None])):
            written, pointer = self.enqueue_fn(buffer, self.queue_pointer.clone(), rows)
            if written is not buffer:      # a function that returns a new tensor instead of writing in place
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
        logs = {"positive_similarity": (q1 * keys[0]).sum(1).mean(), "queue_similarity": (q1 @ self.queue.T).mean()}
        return StepOutput(loss, logs, {"keys": torch.stack(keys)})

    @torch.no_grad()
    def on_step_end(self, batch: Batch, output: StepOutput) -> None:
        # After the optimiser step, as in MoCo's pseudo-code: the momentum update, then this step's keys
        # enqueued. Enqueuing here rather than in training_step keeps the queue fixed while the loss still
        # needs it, and the compiled step free of buffer writes.
        self.momentum_update_fn(self.key_encoder(), self.query_encoder(), self.momentum)
        for keys in output.outputs["keys"]:
            self.enqueue(keys, batch.index)


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
        n_hardest = require_int_at_least("n_hardest", n_hardest, 1)
        if n_hardest > self.queue.shape[0]:
            raise ValueError(f"n_hardest must be at most queue_size ({self.queue.shape[0]}), got {n_hardest}")
        n_mix_negatives = require_int_at_least("n_mix_negatives", n_mix_negatives, 0)
        n_mix_query = require_int_at_least("n_mix_query", n_mix_query, 0)
        mixing_warmup_epochs = require_int_at_least("mixing_warmup_epochs", mixing_warmup_epochs, 0)
        self.n_hardest, self.n_mix_negatives, self.n_mix_query = n_hardest, n_mix_negatives, n_mix_query
        self.mixing_warmup_epochs = mixing_warmup_epochs
        self.mixing = mixing_warmup_epochs == 0
        self.hyperparameters.update(n_hardest=n_hardest, n_mix_negatives=n_mix_negatives, n_mix_query=n_mix_query,
                                    mixing_warmup_epochs=mixing_warmup_epochs)

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        super().on_train_start(num_images, batch_size)   # bounds the masked entries (most_masked_entries)
        queue_size, most_masked = self.queue.shape[0], self.most_masked_entries
        if self.n_hardest > queue_size - most_masked:
            self.enough_unmasked_entries = False
            raise ValueError(
                f"n_hardest must be at most {queue_size - most_masked} (queue_size {queue_size} minus up to "
                f"{most_masked} masked keys of the query's own image), got {self.n_hardest}")

    def on_epoch_start(self, epoch: int) -> None:
        self.mixing = epoch >= self.mixing_warmup_epochs

    def query_loss(self, q: torch.Tensor, k: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        queue_mask = self.same_image_mask(index)
        synthetic = None
        if self.mixing:
            synthetic = mochi_negatives(q, self.queue, self.n_hardest, self.n_mix_negatives, self.n_mix_query,
                                        queue_mask=queue_mask, check_mask=not self.enough_unmasked_entries)
        return moco_info_nce(q, k, self.queue, self.temperature, queue_mask=queue_mask, extra_negatives=synthetic,
                             logits=self.logits_fn, check_mask=not self.enough_unmasked_entries)


class SCE(MoCo):
    """Similarity Contrastive Estimation (Denize et al., WACV 2023) on MoCo v2: the query q = g(f(strong view))
    predicts, over its key and the queue, a soft target that the momentum encoder makes from a weak view of the
    same image: lambda on the key, 1 - lambda spread over the queue entries the key finds similar
    (`clcourse.losses.sce`). Negatives that look like the image are pushed less; lambda = 1 is MoCo v2's loss.

    What SCE changes in MoCo v2, as in the authors' CIFAR-10 configuration:
    - the views: the strong one (`augment`, default the course's SimCLR recipe) goes to the online encoder, the
      weak one (`key_augment`, default crop + flip, `clcourse.augment.weak`) to the momentum encoder, which
      makes the key and the target (a target from a strong view is a noisier relation);
    - split BN in the momentum encoder only: keys are computed on a shuffled batch in `bn_splits` groups, as in
      MoCo, while the online encoder keeps ordinary batch-norm over the whole batch (`bn_splits` times more
      samples per statistic than a split). A query and its key are still never normalised with the same
      statistics, which is all that shuffle BN is for, so the authors' choice is kept;
    - the defaults: lambda = 0.5, tau = 0.1, tau_m = 0.05, K = 4096, m = 0.99, non-symmetric, learning rate
      0.06 per 256 images.

    Kept from the course's MoCo v2, unlike the authors' code: the projector has no batch-norm (theirs: 512-512
    with BN and ReLU, then 128) and the strong view no Gaussian blur (theirs: p = 0.5), so that SCE differs from
    MoCo v2 only in the loss, the key's view and where BN is split.

    `loss(q, k, queue, temperature, temperature_momentum, lam, queue_mask=None) -> scalar` is
    `clcourse.losses.sce` unless given, e.g. the function a student wrote in notebook 07; it receives unit
    vectors in float32, with autocast off, and `queue_mask` (keys of the query's own image) when
    `mask_same_image` is on. SCE makes its logits inside its loss, so MoCo's `logits=` is not taken.
    """

    lr = 0.06   # the authors' CIFAR-10 configuration: SGD 0.06 for a batch of 256

    def __init__(self, backbone: nn.Module, lam: float = 0.5, temperature: float = 0.1,
                 temperature_momentum: float = 0.05, bn_splits: int = 8, augment=None, key_augment=None,
                 loss: Callable | None = None, **options):
        if "logits" in options:
            raise ValueError("logits is not an option of SCE, which makes its logits inside its loss: give "
                             "loss(q, k, queue, temperature, temperature_momentum, lam, queue_mask=None) instead")
        lam = require_in_range("lam", lam, 0.0, 1.0)
        temperature_momentum = require_positive("temperature_momentum", temperature_momentum)
        bn_splits = require_int_at_least("bn_splits", bn_splits, 1)
        if loss is not None and not callable(loss):
            raise ValueError(f"loss must be a function loss(q, k, queue, temperature, temperature_momentum, lam, "
                             f"queue_mask=None), got {loss!r}")
        if key_augment is None:
            from .augment import weak
            key_augment = weak()
        # bn_splits=1: MoCo would split both encoders; only the momentum encoder is split, below.
        super().__init__(backbone, temperature=temperature, bn_splits=1, augment=augment, key_augment=key_augment,
                         **options)
        if bn_splits > 1:
            use_split_batchnorm(self.key_backbone, bn_splits)
            for parameter in self.key_encoder().parameters():    # the new layers' parameters, too: no gradient
                parameter.requires_grad_(False)
        self.bn_splits = bn_splits
        self.lam, self.temperature_momentum = lam, temperature_momentum
        self.loss = loss or sce
        self.hyperparameters.update(bn_splits=bn_splits, lam=lam, temperature_momentum=temperature_momentum)

    def config(self) -> dict:
        return {**Method.config(self), "functions": {"loss": describe(self.loss),
                                                     "momentum_update": describe(self.momentum_update_fn),
                                                     "enqueue": describe(self.enqueue_fn)}}

    def query_loss(self, q: torch.Tensor, k: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # float32 with autocast off, so that no loss, a student's included, runs its exponentials in half precision
        with no_autocast(q.device):
            return self.loss(q.float(), k.float(), self.queue.float(), self.temperature, self.temperature_momentum,
                             self.lam, queue_mask=self.same_image_mask(index))


METHODS: dict[str, type[Method]] = {"simclr": SimCLR, "dcl": DCL, "hcl": HCL, "moco": MoCo, "mochi": MoCHi, "sce": SCE}


# ---------------------------------------------------------------- CLAE: adversarial examples as positives

class ClaeOutput(NamedTuple):
    """What `clae_objective` returns: the loss and the three embeddings it compares."""
    loss: torch.Tensor      # L(z1, z2) + alpha L(z1, z_adv)
    z1: torch.Tensor        # g(f(x_i)), clean branch
    z2: torch.Tensor        # g(f(x_j)), clean branch
    z_adv: torch.Tensor     # g(f_adv(x_i + delta)), adversarial branch


def clae_objective(encode: Callable, encode_adversarial: Callable, attack: Callable, loss: Callable,
                   view1: torch.Tensor, view2: torch.Tensor, alpha: float) -> ClaeOutput:
    r"""CLAE's loss for one batch of two views (Ho & Vasconcelos, "Contrastive Learning with Adversarial
    Examples", NeurIPS 2020, https://arxiv.org/abs/2010.12050; the SimCLR variant of the authors' code):

        z_i, z_j = g(f(x_i)), g(f(x_j))                 one clean forward pass of the 2B views
        x_adv    = attack(encode_adversarial, x_i)      x_i + delta, delta from FGSM on L (`contrastive_attack`)
        z_adv    = g(f_adv(x_adv))                      through the adversarial batch-norm branch
        L_CLAE   = L(z_i, z_j) + \alpha L(z_i, z_adv)

    The adversarial view is a perturbed copy of the *same* crop x_i, so z_adv is a hard positive for z_i;
    through the batch it is also a negative for every other image. z_i is the clean anchor of both terms
    and gets gradient from both; x_adv carries none (the attack's gradient is discarded).

    Args:
        encode, encode_adversarial: pixels -> embeddings through the clean / adversarial BN branch.
        attack: (encode, x) -> adversarial x, detached.
        loss: (z1, z2) -> scalar contrastive loss (InfoNCE, DCL, HCL, ...).
        view1, view2: the two views x_i, x_j [B, 3, H, W].
        alpha: weight of the adversarial term.
    """
    z1, z2 = encode(torch.cat([view1, view2])).chunk(2)
    x_adv = attack(encode_adversarial, view1)
    z_adv = encode_adversarial(x_adv)
    return ClaeOutput(loss(z1, z2) + alpha * loss(z1, z_adv), z1, z2, z_adv)


class _FirstOutput:
    """`encode` that keeps (detached) the first embeddings it computes: the attack's forward pass at
    delta = 0, which the method compares with the adversarial one at no extra cost."""

    def __init__(self, encode: Callable):
        self.encode, self.first = encode, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encode(x)
        if self.first is None:
            self.first = z.detach()
        return z


class CLAE(Method):
    r"""Contrastive Learning with Adversarial Examples (Ho & Vasconcelos, NeurIPS 2020) on top of any
    two-view method whose loss compares (z1, z2): SimCLR (the paper's setting), DCL or HCL (`base`), whose
    backbone, projector, views and loss it uses (`base_options` go to that method):

        L = L(z_i, z_j) + \alpha L(z_i, z_adv(x_i + \delta)),
        \delta = \epsilon \, \mathrm{sign} \nabla_{x} L(\mathrm{sg}[z_adv(x_i)], z_adv(x)) |_{x = x_i}

    (`clae_objective`, `clcourse.attacks.contrastive_attack`). `epsilon` is in [0, 1] pixel units: the
    default 0.015 is CLAE's 0.03 on inputs normalised with mean 0.5 / std 0.5 (pixels in [-1, 1]).
    `attack_steps` = 1 is the paper's FGSM step; more steps run PGD (step `attack_step_size`, default
    2.5 epsilon / steps).

    Dual batch-norm (`dual_batchnorm=True`, AdvProp): every BN layer of backbone and projector gets an
    adversarial twin (momentum `adversarial_momentum`, 0.01 as in CLAE's code); the attack's forward pass
    and the adversarial term go through it, in training mode, so they update *that* branch's running
    statistics, as the authors' code does; the clean branch serves the clean term and every evaluation
    (kNN, linear probe, `embed`). `dual_batchnorm=False` shares one BN for the ablation.

    The attack raises the base loss summed over the 2B anchors instead of averaged: the gradient's sign is
    the same, and on fp16 GPUs (T4) the input gradient stays clear of underflow.

    Logs, per batch: `clean_loss` and `adversarial_loss` (the two terms); `attack_raise`, how much the
    perturbation raised the adversarial term over delta = 0, L(z_i, z_adv(x_i + delta)) - L(z_i, z_adv(x_i))
    (z_adv(x_i) is the attack's own first forward pass, so this costs no extra pass);
    `positive_similarity` cos(z_i, z_j) beside `adversarial_similarity` cos(z_i, z_adv); and
    `adversarial_negative_rank`, the mean rank of the adversarial views among each anchor's real
    negatives (`clcourse.negatives.rank_among_negatives`: 0.5 is as hard as a typical real negative).

    Exercises plug in here: `attack(encode, x, epsilon, loss) -> x_adv` replaces the FGSM step (then
    `attack_steps` must be 1) and `objective` replaces `clae_objective` (same signature).

    `compilable = False`: the attack takes an input gradient (torch.autograd.grad) inside the step, which
    TorchDynamo does not trace, so the training loop runs this step eagerly; the dual batch-norm layers
    themselves compile.

    Differences from the authors' SimCLR code: the two views share one clean forward pass (theirs: one pass
    per view); the attack makes one forward pass (theirs: two with identical outputs, which move the
    adversarial running statistics twice); x_adv is clipped to [0, 1] (theirs is not); the projector has
    batch-norm, which gets its adversarial twin too (theirs has none); the optimiser is the course's SGD
    recipe (theirs: Adam, lr 3e-4).
    """

    compilable = False

    def __init__(self, backbone: nn.Module, base: str = "simclr", epsilon: float = 0.015, alpha: float = 1.0,
                 attack_steps: int = 1, attack_step_size: float | None = None, dual_batchnorm: bool = True,
                 adversarial_momentum: float = 0.01, attack: Callable | None = None,
                 objective: Callable | None = None, **base_options):
        bases = {name: cls for name, cls in METHODS.items()        # the two-view SimCLR family
                 if issubclass(cls, SimCLR) and not issubclass(cls, MultiViewSimCLR)}
        if base not in bases:
            raise ValueError(f"base must be one of {sorted(bases)} (a two-view method whose loss compares z1 and z2), "
                             f"got {base!r}")
        base_method = bases[base](backbone, **base_options)
        super().__init__(base_method.backbone, base_method.view_recipes)
        require_in_range("epsilon", epsilon, 0.0, math.inf, high_inclusive=False)
        require_in_range("alpha", alpha, 0.0, math.inf, high_inclusive=False)
        require_int_at_least("attack_steps", attack_steps, 1)
        if attack_step_size is not None:
            require_positive("attack_step_size", attack_step_size)
        elif attack_steps > 1 and epsilon == 0:
            raise ValueError("epsilon must be > 0 for a PGD attack (attack_steps > 1), whose default step size is "
                             "2.5 epsilon / attack_steps; got epsilon=0")
        require_in_range("adversarial_momentum", adversarial_momentum, 0.0, 1.0)
        for name, fn in (("attack", attack), ("objective", objective)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be a function, got {fn!r}")
        if attack is not None and attack_steps != 1:
            raise ValueError(f"attack replaces the one-step attack: attack_steps must be 1 when attack is given, "
                             f"got {attack_steps}")
        # Held, not registered as a submodule: its backbone and projector are this method's own.
        self.__dict__["base"] = base_method
        self.projector = base_method.projector
        self.lr = base_method.lr
        self.epsilon, self.alpha, self.dual_batchnorm = epsilon, alpha, dual_batchnorm
        self.attack_steps, self.attack_step_size = attack_steps, attack_step_size
        self.attack_fn, self.objective_fn = attack, objective or clae_objective
        if dual_batchnorm:
            use_dual_batchnorm(self.backbone, adversarial_momentum)
            use_dual_batchnorm(self.projector, adversarial_momentum)
        self.hyperparameters = dict(base=base, **base_method.hyperparameters, epsilon=epsilon, alpha=alpha,
                                    attack_steps=attack_steps, attack_step_size=attack_step_size,
                                    dual_batchnorm=dual_batchnorm,
                                    adversarial_momentum=adversarial_momentum if dual_batchnorm else None)

    def config(self) -> dict:
        functions = {**self.base.config()["functions"],
                     "attack": describe(self.attack_fn or contrastive_attack), "objective": describe(self.objective_fn)}
        return {**super().config(), "functions": functions}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """z = g(f(x)) through the clean batch-norm branch (unnormalised: the losses normalise)."""
        return self.projector(self.backbone(x))

    def encode_adversarial(self, x: torch.Tensor) -> torch.Tensor:
        """g(f(x)) through the adversarial batch-norm branch (the shared one with dual_batchnorm=False)."""
        if not self.dual_batchnorm:
            return self.encode(x)
        with adversarial_batchnorm(self):
            return self.encode(x)

    def attack_loss(self, z_anchor: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The base loss summed over the 2B anchors: the attack's objective (same gradient sign as the mean)."""
        return self.base.contrastive_loss(z_anchor, z) * (2 * z.shape[0])

    def perturb(self, encode: Callable, x: torch.Tensor) -> torch.Tensor:
        """x + delta: FGSM (or PGD) on `attack_loss` through `encode`, or the given `attack`."""
        if self.attack_fn is not None:
            return self.attack_fn(encode, x, self.epsilon, self.attack_loss)
        return contrastive_attack(encode, x, self.epsilon, self.attack_loss, self.attack_steps, self.attack_step_size)

    def training_step(self, batch: Batch) -> StepOutput:
        view1, view2 = batch.views
        encode_adversarial = _FirstOutput(self.encode_adversarial)
        loss, z1, z2, z_adv = self.objective_fn(self.encode, encode_adversarial, self.perturb,
                                                self.base.contrastive_loss, view1, view2, self.alpha)
        if encode_adversarial.first is None:
            raise ValueError(f"objective ({describe(self.objective_fn)}) never called encode_adversarial: the "
                             "attack and the adversarial view must go through it")
        with torch.no_grad():
            z1, z2, z_adv = (F.normalize(z.detach().float(), dim=1) for z in (z1, z2, z_adv))
            adversarial_loss = self.base.contrastive_loss(z1, z_adv)
            logs = {"clean_loss": self.base.contrastive_loss(z1, z2),
                    "adversarial_loss": adversarial_loss,
                    "attack_raise": adversarial_loss - self.base.contrastive_loss(z1, encode_adversarial.first),
                    "positive_similarity": (z1 * z2).sum(1).mean(),
                    "adversarial_similarity": (z1 * z_adv).sum(1).mean(),
                    "adversarial_negative_rank": rank_among_negatives(z1, (z1, z2), z_adv).mean()}
        return StepOutput(loss, logs)


METHODS["clae"] = CLAE


# ---------------------------------------------------------------- many views: multi-view SimCLR and CACR

def project_views(method: Method, views: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """g(f(v)) for every view: all V views of the B images go through the backbone and the projector as one
    batch of V B images (one forward; batch-norm statistics shared by all views, as SimCLR's two share
    theirs), then are split back into V embeddings [B, D]."""
    return method.projector(method.backbone(torch.cat(list(views)))).chunk(len(views))


def mean_view_similarity(embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean cosine similarity of two different views of the same image, over all view pairs and images (a log,
    detached)."""
    u = F.normalize(torch.stack([z.detach().float() for z in embeddings]), dim=2)        # [V, B, D]
    num_views = len(u)
    pair_sums = torch.einsum("aid,bid->i", u, u) - num_views                    # the V self-pairs have s = 1
    return pair_sums.mean() / (num_views * (num_views - 1))


class MultiViewSimCLR(SimCLR):
    """SimCLR with `num_views` = M + 1 views of every image, every pair of views of an image a positive pair
    (`clcourse.losses.multiview_info_nce`): CACR's baseline with the same views and no weighting, so that a
    comparison separates "more views" from "weighting". With num_views = 2 it is SimCLR.

    All views go through backbone and projector in one batch of (M + 1) B images. `loss(views, temperature)`
    is `multiview_info_nce` unless given.
    """

    default_loss = staticmethod(multiview_info_nce)

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, num_views: int = 5, **options):
        require_int_at_least("num_views", num_views, 2)
        super().__init__(backbone, temperature, **options)
        self.view_recipes = self.view_recipes[:1] * num_views
        self.hyperparameters["num_views"] = num_views

    def contrastive_loss(self, *embeddings: torch.Tensor) -> torch.Tensor:
        """The loss on the float32 embeddings of all views, autocast off (see SimCLR.contrastive_loss)."""
        with no_autocast(embeddings[0].device):
            return self.loss([z.float() for z in embeddings], *self.loss_arguments())

    def training_step(self, batch: Batch) -> StepOutput:
        embeddings = project_views(self, batch.views)
        return StepOutput(self.contrastive_loss(*embeddings),
                          {"positive_similarity": mean_view_similarity(embeddings)})


class CACR(Method):
    """Contrastive attraction and contrastive repulsion (Zheng et al., TMLR 2023), see `clcourse.losses.cacr`:
    `num_views` = M + 1 views of every image (5, as in the paper), all through backbone f and projector g in
    one batch of (M + 1) B images; the far views of an image attract harder, the near views of other images
    repel harder.

    `loss(views, tau_pos, tau_neg, alpha, beta)` is `cacr` with this method's `weights` and `detach_weights`
    unless given, e.g. the function a student wrote in notebook 06 (which then decides its own weights).
    Defaults are the authors' CIFAR-10 settings (README): tau+ = 1, tau- = 0.9, alpha = beta = 1, weights not
    detached, learning rate 0.12 per 256 images. The paper's small-scale encoder is an AlexNet variant that
    forwards each view as its own batch (per-view batch-norm statistics); here the course's backbones and
    projector, with one batch for all views.
    """

    def __init__(self, backbone: nn.Module, num_views: int = 5, tau_pos: float = 1.0, tau_neg: float = 0.9,
                 alpha: float = 1.0, beta: float = 1.0, weights: str = "both", detach_weights: bool = False,
                 projector_hidden: int = 512, projector_out: int = 128, augment=None, loss: Callable | None = None):
        if augment is None:
            from .augment import simclr_cifar
            augment = simclr_cifar()
        require_int_at_least("num_views", num_views, 2)
        require_cacr_arguments(tau_pos, tau_neg, alpha, beta, weights, detach_weights)
        if loss is not None and not callable(loss):
            raise ValueError(f"loss must be a function loss(views, tau_pos, tau_neg, alpha, beta), got {loss!r}")
        if loss is not None and (weights != "both" or detach_weights):
            raise ValueError(f"weights and detach_weights choose a variant of clcourse.losses.cacr; a loss given as "
                             f"loss= decides its own weights, so leave them at 'both' and False (got "
                             f"weights={weights!r}, detach_weights={detach_weights!r})")
        super().__init__(backbone, (augment,) * num_views)
        self.tau_pos, self.tau_neg, self.alpha, self.beta = tau_pos, tau_neg, alpha, beta
        self.weights, self.detach_weights = weights, detach_weights
        self.loss = loss or self.default_loss
        self.projector = projection_mlp(backbone.feature_dim, projector_hidden, projector_out)
        self.hyperparameters = dict(num_views=num_views, tau_pos=tau_pos, tau_neg=tau_neg, alpha=alpha, beta=beta,
                                    weights=weights, detach_weights=detach_weights,
                                    projector_hidden=projector_hidden, projector_out=projector_out)

    def default_loss(self, views, tau_pos: float, tau_neg: float, alpha: float, beta: float) -> torch.Tensor:
        """`clcourse.losses.cacr` with this method's `weights` and `detach_weights`."""
        return cacr(views, tau_pos, tau_neg, alpha, beta, weights=self.weights, detach_weights=self.detach_weights)

    def config(self) -> dict:
        return {**super().config(), "functions": {"loss": describe(self.loss)}}

    def training_step(self, batch: Batch) -> StepOutput:
        embeddings = project_views(self, batch.views)
        with no_autocast(embeddings[0].device):
            loss = self.loss([z.float() for z in embeddings], self.tau_pos, self.tau_neg, self.alpha, self.beta)
        return StepOutput(loss, {"positive_similarity": mean_view_similarity(embeddings)})


METHODS["simclr_multiview"] = MultiViewSimCLR
METHODS["cacr"] = CACR


def build_method(name: str, backbone: nn.Module, **options) -> Method:
    """A method by name (see METHODS) around `backbone`, with its own defaults unless `options` say otherwise."""
    if name not in METHODS:
        raise ValueError(f"method name must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name](backbone, **options)


# ---------------------------------------------------------------- SupCon, supervised, adversarial pretraining
# The three learning schemes of CL-Robustness (notebook 08): CL (SimCLR), SCL (SupCon), SL (cross-entropy), and
# adversarial pretraining for each.

class SupCon(TwoViewContrastive):
    """Supervised contrastive learning (Khosla et al., NeurIPS 2020): SimCLR's views, backbone and projector, but
    every view of the anchor's class is a positive (`clcourse.losses.supcon`, L_out). Needs labels.

    `loss(z1, z2, labels, temperature)` is `clcourse.losses.supcon` unless given, e.g. the function a student
    wrote in notebook 08; it receives float32 embeddings with autocast off. Defaults: temperature 0.1 and the
    learning rate of SupContrast's CIFAR recipe (0.5 for a batch of 1024)."""

    requires_labels = True
    lr = 0.125
    default_loss = staticmethod(supcon)
    loss_signature = "loss(z1, z2, labels, temperature)"

    def __init__(self, backbone: nn.Module, temperature: float = 0.1, projector_hidden: int = 512,
                 projector_out: int = 128, augment=None, loss: Callable | None = None):
        super().__init__(backbone, temperature, projector_hidden, projector_out, augment, loss)

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        if batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 for SupCon (the other images of the batch are the "
                             f"negatives and the other positives), got {batch_size}")

    def contrastive_loss(self, z1: torch.Tensor, z2: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss on float32 embeddings with autocast off."""
        with no_autocast(z1.device):
            return self.loss(z1.float(), z2.float(), labels, self.temperature)

    def training_step(self, batch: Batch) -> StepOutput:
        view1, view2 = batch.views
        z1, z2 = self.projector(self.backbone(torch.cat([view1, view2]))).chunk(2)
        loss = self.contrastive_loss(z1, z2, batch.labels)
        positive_similarity = F.cosine_similarity(z1.detach().float(), z2.detach().float()).mean()
        return StepOutput(loss, {"positive_similarity": positive_similarity})


class Supervised(Method):
    """The supervised baseline (SL): a linear classifier on the backbone's features, trained end to end with
    cross-entropy on one view of each image (`augment`, default crop + flip: `clcourse.augment.weak`). Needs labels.

    The classifier sits where the other methods have their projector: `embed(projected=True)` gives its
    L2-normalised logits, which threat model I attacks (notebook 08). The loss takes the raw logits, an ordinary
    classifier. CL-Robustness' baseline L2-normalises them first (a cosine classifier with temperature 1, whose
    logits stay in [-1, 1]), which handicaps it; the authors' SL also crops with 5 pixels of padding, not ours."""

    requires_labels = True
    lr = 0.1

    def __init__(self, backbone: nn.Module, num_classes: int = 10, augment=None):
        if augment is None:
            from .augment import weak
            augment = weak()
        super().__init__(backbone, (augment,))
        num_classes = require_int_at_least("num_classes", num_classes, 2)
        self.projector = nn.Linear(backbone.feature_dim, num_classes)
        self.hyperparameters = dict(num_classes=num_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))

    def training_step(self, batch: Batch) -> StepOutput:
        logits = self.logits(batch.views[0])
        with no_autocast(logits.device):
            loss = F.cross_entropy(logits.float(), batch.labels)
        accuracy = (logits.detach().argmax(1) == batch.labels).float().mean()
        return StepOutput(loss, {"train_accuracy": accuracy})


METHODS["supcon"] = SupCon
METHODS["supervised"] = Supervised

SCHEMES = {"cl": "simclr", "scl": "supcon", "sl": "supervised"}   # CL-Robustness' schemes -> our methods


class AdversarialPretraining(Method):
    r"""Adversarial pretraining of any of the three schemes of CL-Robustness (Ghofrani, Yaghouti & Jamshidi,
    "Rethinking Robust Contrastive Learning from the Adversarial Perspective", https://arxiv.org/abs/2302.02502):
    each step perturbs the clean, un-augmented images x^0 within the L-infinity ball of radius epsilon so that
    the scheme's own loss rises, and trains on the perturbed copy besides the scheme's usual views,

        \delta^* = \mathrm{PGD}_T\big[\max_{\lVert\delta\rVert_\infty \le \epsilon} L(x^0, x^0 + \delta)\big]
        CL, SCL:  \mathcal{L} = L(x^0, x^0 + \delta^*) + L(x^1, x^2)
        SL:       \mathcal{L} = CE(x^0 + \delta^*) + CE(x^1)

    with L the scheme's loss (`scheme`: "cl" SimCLR's InfoNCE, "scl" SupCon with the labels, "sl" the
    cross-entropy of `Supervised`) and x^1, x^2 its augmented views. For CL and SCL the attack raises
    L(sg[z(x^0)], z(x')) (`clcourse.attacks.contrastive_objective`: the clean embeddings are constants), for SL
    CE(x') (`cross_entropy_objective`). The attack's result carries no gradient; the loss sees the adversarial
    pair (x^0, x^0 + delta*) through the scheme's own training step, in one pass of 2B as its views.

    Attack: PGD with `steps` steps of `step_size` (defaults: the paper's 8/255, 5 steps of 2/255, in [0, 1]
    pixels) from a random point of the ball (`random_start`; the authors' code starts at delta = 0, where the
    positive term of the contrastive objective has no gradient). It runs in training mode, so with the
    batch's statistics, but with the running averages of batch-norm frozen (`models.batchnorm_statistics_frozen`;
    the authors' attack passes move them). `attack(loss_fn, x, epsilon, step_size, steps, random_start=...)`
    replaces `clcourse.attacks.pgd`, e.g. the one a student builds in notebook 08.

    `scheme_options` go to the scheme's method (SimCLR, SupCon or Supervised), whose backbone, projector, views,
    learning rate and loss this method uses; it needs labels when the scheme does. Cost per step: the
    attack's `steps` forward and backward passes of B images and one forward pass for the anchors, on top of
    twice the scheme's own step (about 4.5x a SimCLR step at 5 steps).

    `compilable = False`: the attack takes input gradients inside the step.
    """

    compilable = False

    def __init__(self, backbone: nn.Module, scheme: str = "cl", epsilon: float = 8 / 255, steps: int = 5,
                 step_size: float = 2 / 255, random_start: bool = True, attack: Callable | None = None,
                 **scheme_options):
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {sorted(SCHEMES)} (CL: SimCLR, SCL: SupCon, SL: cross-entropy), "
                             f"got {scheme!r}")
        base = METHODS[SCHEMES[scheme]](backbone, **scheme_options)
        super().__init__(base.backbone, base.view_recipes)
        epsilon = require_in_range("epsilon", epsilon, 0.0, math.inf, high_inclusive=False)
        steps = require_int_at_least("steps", steps, 1)
        step_size = require_positive("step_size", step_size)
        random_start = require_bool("random_start", random_start)
        if attack is not None and not callable(attack):
            raise ValueError(f"attack must be a function attack(loss_fn, x, epsilon, step_size, steps, "
                             f"random_start=...), got {attack!r}")
        # Held, not registered as a submodule: its backbone and projector are this method's own.
        self.__dict__["base"] = base
        self.projector = base.projector
        self.scheme, self.lr, self.requires_labels = scheme, base.lr, base.requires_labels
        self.epsilon, self.steps, self.step_size, self.random_start = epsilon, steps, step_size, random_start
        self.attack_fn = attack or pgd
        self.hyperparameters = dict(scheme=scheme, **base.hyperparameters, epsilon=epsilon, steps=steps,
                                    step_size=step_size, random_start=random_start)

    def config(self) -> dict:
        functions = {**self.base.config().get("functions", {}), "attack": describe(self.attack_fn)}
        return {**super().config(), "functions": functions}

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        self.base.on_train_start(num_images, batch_size)

    def attack_objective(self, clean: torch.Tensor, labels: torch.Tensor | None) -> Callable:
        """x' -> the scheme's loss at x' against the clean batch, summed over its anchors (the attack raises it;
        a sum has the mean's gradient sign and keeps fp16 input gradients clear of underflow)."""
        if self.scheme == "sl":
            return cross_entropy_objective(self.base.logits, labels)
        extra = (labels,) if self.scheme == "scl" else ()
        return contrastive_objective(self.encode, clean,
                                     lambda z_anchor, z: self.base.contrastive_loss(z_anchor, z, *extra) * 2 * len(z))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))

    def training_step(self, batch: Batch) -> StepOutput:
        clean = to_float_images(batch.images)                     # x^0: the images themselves, un-augmented
        if batch.views[0].is_contiguous(memory_format=torch.channels_last):
            clean = clean.contiguous(memory_format=torch.channels_last)
        with batchnorm_statistics_frozen(self):
            adversarial = self.attack_fn(self.attack_objective(clean, batch.labels), clean, self.epsilon,
                                         self.step_size, self.steps, random_start=self.random_start)
        standard = self.base.training_step(batch)
        pair = (adversarial,) if self.scheme == "sl" else (clean, adversarial)
        attacked = self.base.training_step(batch._replace(views=pair))
        logs = {**standard.logs, **{f"adversarial_{key}": value for key, value in attacked.logs.items()},
                "standard_loss": standard.loss.detach(), "adversarial_loss": attacked.loss.detach()}
        return StepOutput(standard.loss + attacked.loss, logs)


METHODS["adversarial"] = AdversarialPretraining
