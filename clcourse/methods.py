"""Self-supervised methods. A method is a small object that says how a batch of images becomes a loss;
one training loop (clcourse.train.train) serves every method.

A method owns
- `backbone`: the encoder whose features are evaluated (kNN, linear probe);
- `augment`: how views are made (clcourse.augment), used by `make_views`;
- `training_step(batch) -> (loss, logs)`: the loss of one batch, and scalar tensors worth logging;
- `on_step_end()`: anything that happens after the optimiser step (e.g. a momentum update).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .losses import info_nce
from .models import projection_mlp
from .validation import require_positive


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
