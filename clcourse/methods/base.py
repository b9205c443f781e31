"""What every method is: a backbone, a projection head, the views to make of each image, and
a loss per batch.

A method owns
- `backbone`: the encoder whose features are evaluated (kNN, linear probe), and `projector`, the
  head whose output the loss compares; `encode(x) = projector(backbone(x))` is that output in
  training (with gradient), `embed` gives either in eval mode;
- `view_recipes`: one augmentation per view it wants of every image (`make_views` makes them all);
- `training_step(batch) -> StepOutput(loss, logs, outputs)`: the loss of one batch, scalar tensors
  worth logging, and whatever `on_step_end` needs;
- `on_step_end(batch, output)`: what happens after the optimiser step (a momentum update,
  enqueuing keys);
- class-level defaults the training loop reads: `lr` (peak SGD learning rate per 256 images, the
  course's recipe for this method), `requires_labels` (the loop refuses to start without labels) and
  `compilable` (False: the step always runs eagerly, e.g. when it takes input gradients that
  torch.compile would break the graph on);
- `config()`: its class, hyperparameters, views, architecture and the functions it was given (by
  name and code fingerprint), stored with every run so that a run is never resumed with other
  settings or other functions.

`ContrastiveMethod` adds what the methods whose loss compares the embeddings of an image's views
share (SimCLR and its loss variants, multi-view SimCLR, CACR, SupCon): a projection MLP, a loss
function that may be a student's, and one way to call it, `contrastive_loss(views, labels)`.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..attacks import require_attack_result
from ..distributed import gather, gather_with_grad, is_distributed
from ..evaluate import extract_features
from ..identity import function_record
from ..models import projection_mlp
from ..presets import no_autocast
from ..validation import require_bool

__all__ = ["Batch", "StepOutput", "Method", "ContrastiveMethod", "describe", "describe_module",
           "require_function", "mean_view_similarity"]


class Batch(NamedTuple):
    views: tuple[torch.Tensor, ...]   # augmented views, float [B, 3, H, W] in [0, 1], one per view
                                      # recipe
    images: torch.Tensor              # the original images, uint8 [B, 3, H, W]
    labels: torch.Tensor | None       # class labels [B] (None unless the training loop was given
                                      # labels)
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


def describe_module(module: nn.Module) -> str:
    """`Backbone(SmallCNN)`-style name of a module and, for a `Backbone`, of the
    network it wraps."""
    inner = getattr(module, "net", None)
    return (f"{type(module).__name__}({type(inner).__name__})" if inner is not None
            else type(module).__name__)


def require_function(name: str, fn, signature: str = "") -> None:
    """A pluggable piece (a student's loss, say) must be callable; None means "the library's"."""
    if fn is not None and not callable(fn):
        raise ValueError(f"{name} must be a "
                         f"function{' ' + signature if signature else ''}, got {fn!r}")


def mean_view_similarity(embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean cosine similarity of two different views of the same image, over all view pairs and
    images (a log, detached)."""
    u = F.normalize(torch.stack([z.detach().float() for z in embeddings]), dim=2)        # [V, B, D]
    num_views = len(u)
    pair_sums = torch.einsum("aid,bid->i", u, u) - num_views  # the V self-pairs have s = 1
    return pair_sums.mean() / (num_views * (num_views - 1))


class Method(nn.Module):
    """Base class: a backbone, a projection head, the views to make of each image, and
    a loss per batch."""

    lr: float = 0.12                 # peak SGD learning rate per 256 images (scaled with the batch
                                     # size)
    requires_labels: bool = False    # supervised methods set True; `train` then refuses to start
                                     # without labels
    compilable: bool = True          # False: a compiled training loop runs this method's step
                                     # eagerly
    num_classes: int | None = None   # a classifier's classes: `train` checks the labels
                                     # against them

    def __init__(self, backbone: nn.Module, view_recipes: Sequence[Callable]):
        super().__init__()
        if not view_recipes or not all(callable(recipe) for recipe in view_recipes):
            raise ValueError("view_recipes must be a non-empty sequence of augmentations "
                             f"(callables), got {view_recipes!r}")
        self.backbone = backbone
        self.projector: nn.Module = nn.Identity()
        self.view_recipes = tuple(view_recipes)
        self.hyperparameters: dict = {}      # subclasses record what defines them, for `config`

    # ------------------------------------------------------------ views and embeddings

    def make_views(self, images: torch.Tensor,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """One view of every image per recipe in `view_recipes`. Views that share a recipe are
        made in one batched call (on a batch of the images repeated), so M views cost one
        augmentation call, not M."""
        views: list[torch.Tensor | None] = [None] * len(self.view_recipes)
        for recipe in dict.fromkeys(self.view_recipes, None):  # distinct recipes, in order
            positions = [i for i, r in enumerate(self.view_recipes) if r is recipe]
            made = recipe(images.repeat(len(positions), 1, 1, 1), generator)
            for position, view in zip(positions, made.chunk(len(positions))):
                views[position] = view
        return tuple(views)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """g(f(x)): what the loss compares, in the current mode and with gradient (unnormalised: the
        losses normalise)."""
        return self.projector(self.backbone(x))

    def encode_views(self, views: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """g(f(v)) for every view: all V views of the B images go through the backbone and the
        projector as one batch of V B images (one forward; batch-norm statistics shared by all
        views, as SimCLR's two share theirs), then are split back into V embeddings [B, D]."""
        return self.encode(torch.cat(list(views))).chunk(len(views))

    def embed(self, images: torch.Tensor, projected: bool = True,
              batch_size: int = 1024) -> torch.Tensor:
        """Embeddings of images (uint8, or float in [0, 1]) in eval mode, without gradient, float32:
        unit vectors z = normalize(g(f(x))), what the loss compares (`projected=True`), or the
        backbone's features h = f(x), what kNN and the linear probe read (`projected=False`)."""
        projected = require_bool("projected", projected)
        if not projected:
            return extract_features(self.backbone, images, batch_size)
        encoder = nn.Sequential(self.backbone, self.projector)
        return F.normalize(extract_features(encoder, images, batch_size), dim=1)

    # ------------------------------------------------------------ the step and its hooks

    def training_step(self, batch: Batch) -> StepOutput:
        raise NotImplementedError

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        """Called once by the training loop with the size of the training set and of a batch."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called at the start of every epoch (counted from 0), also when a run resumes."""

    def on_step_end(self, batch: Batch, output: StepOutput) -> None:
        """Called after every optimiser step with the step's batch and output."""

    def attack_result(self, attack: Callable, x_adv, x: torch.Tensor) -> torch.Tensor:
        """What a user's `attack` returned in a training step for the clean images x, checked
        (`clcourse.attacks.require_attack_result`): its shape every step, its pixels (finite, in
        [0, 1]: a host read) on the first step only."""
        require_attack_result(f"attack ({describe(attack)})", x_adv, x,
                              values=not self.__dict__.get("_attack_values_checked", False))
        self.__dict__["_attack_values_checked"] = True
        return x_adv

    # ------------------------------------------------------------ configuration

    def functions(self) -> dict[str, Callable]:
        """The pluggable pieces this method computes with (a student's loss, say, or the library's
        own), by role; recorded in `config`."""
        return {}

    def config(self) -> dict:
        """What defines this method in a run's configuration: class, hyperparameters, views,
        architecture and, under "functions", the pluggable pieces, each by name and by a fingerprint
        of its code (`clcourse.identity.function_record`): a run is the same run only with the same
        functions (`clcourse.runs` says when one that passed its exercise's checker stands in for
        the library's)."""
        values = sum(p.numel() for p in self.state_dict().values())
        config = {"name": type(self).__name__, **self.hyperparameters,
                  "views": [describe(recipe) for recipe in self.view_recipes],
                  "architecture": f"{describe_module(self.backbone)}, {values:,} "
                                  "values in the state dict"}
        functions = self.functions()
        if functions:
            config["functions"] = {role: function_record(fn) for role, fn in functions.items()}
        return config


class ContrastiveMethod(Method):
    """A method whose loss compares the embeddings of the views of each image (`num_views` views
    made by one augmentation, `augment`, default `clcourse.augment.simclr_cifar`), through a
    projection MLP g.

    `loss` is the function the method trains with, `default_loss` unless given (a student's
    function, recorded in `config` by name and code fingerprint); `contrastive_loss(views, labels)`
    calls it in float32 with autocast off, so that no loss, a student's included, runs its
    exponentials in half precision. Each subclass says how its loss is called (`apply_loss`); the
    default `training_step` encodes all views in one batch and returns that loss."""

    default_loss: Callable                # the library's loss, unless `loss=` is given
    loss_signature: str                   # how `loss` is called, for the error a non-function gets

    def __init__(self, backbone: nn.Module, num_views: int, projector_hidden: int,
                 projector_out: int, augment, loss: Callable | None):
        if augment is None:
            from ..augment import simclr_cifar
            augment = simclr_cifar()
        super().__init__(backbone, (augment,) * num_views)
        require_function("loss", loss, self.loss_signature)
        self.loss = loss or self.default_loss
        self.projector = projection_mlp(backbone.feature_dim, projector_hidden, projector_out)

    def functions(self) -> dict[str, Callable]:
        return {"loss": self.loss}

    def apply_loss(self, views: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        """`self.loss` on the float32 embeddings of the views, with this method's arguments."""
        raise NotImplementedError

    def contrastive_loss(self, views: Sequence[torch.Tensor],
                         labels: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of the embeddings `views` ([B, D] each, one per view; `labels` [B] where the
        loss uses them), in float32 with autocast off.

        Trained in several processes, the loss sees the global batch: the embeddings and labels of
        every process, gathered (`clcourse.distributed.gather_with_grad`), so that each process
        computes the loss of one process holding the whole batch, and its negatives."""
        if is_distributed():
            views = gather_with_grad(torch.stack(list(views), dim=1)).unbind(1)
            labels = gather(labels) if labels is not None else None
        with no_autocast(views[0].device):
            return self.apply_loss([z.float() for z in views], labels)

    def on_train_start(self, num_images: int, batch_size: int) -> None:
        if batch_size < 2:
            # One image has no negatives: its only other views are positives, and the loss is 0.
            raise ValueError(f"batch_size must be at least 2 for {type(self).__name__} (the other "
                             f"images of the batch are the negatives), got {batch_size}")

    def training_step(self, batch: Batch) -> StepOutput:
        embeddings = self.encode_views(batch.views)
        return StepOutput(self.contrastive_loss(embeddings, batch.labels),
                          {"positive_similarity": mean_view_similarity(embeddings)})
