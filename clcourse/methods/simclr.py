"""SimCLR and its loss variants: DCL, HCL, and multi-view SimCLR (CACR's baseline)."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn

from ..losses import dcl, hcl, info_nce, multiview_info_nce
from ..validation import require_in_range, require_int_at_least, require_positive
from .base import ContrastiveMethod

__all__ = ["SimCLR", "DCL", "HCL", "MultiViewSimCLR"]


class SimCLR(ContrastiveMethod):
    """SimCLR (Chen et al., ICML 2020): both views go through backbone f and projector g in one
    batch of 2B (so batch-norm statistics are shared, as with SimCLR's global BN), then the loss
    compares z1 = g(f(v1)) with z2 = g(f(v2)).

    `loss(z1, z2, temperature)` is `clcourse.losses.info_nce` unless given, e.g. the function a
    student wrote in notebook 01. Subclasses (DCL, HCL) pass their own hyperparameters to their loss
    through `loss_arguments`.
    """

    default_loss = staticmethod(info_nce)
    loss_signature = "loss(z1, z2, temperature, ...)"

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, projector_hidden: int = 512,
                 projector_out: int = 128, augment=None, loss: Callable | None = None):
        super().__init__(backbone, 2, projector_hidden, projector_out, augment, loss)
        self.temperature = require_positive("temperature", temperature)
        self.hyperparameters = dict(temperature=self.temperature, projector_hidden=projector_hidden,
                                    projector_out=projector_out)

    def loss_arguments(self) -> tuple:
        """The loss's arguments after the embeddings."""
        return (self.temperature,)

    def apply_loss(self, views: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        z1, z2 = views
        return self.loss(z1, z2, *self.loss_arguments())


class DCL(SimCLR):
    """SimCLR trained with Debiased Contrastive Learning (Chuang et al. 2020), see
    `clcourse.losses.dcl`; `loss(z1, z2, temperature, tau_plus)`."""

    default_loss = staticmethod(dcl)

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, tau_plus: float = 0.1,
                 **options):
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

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, tau_plus: float = 0.1,
                 beta: float = 1.0, **options):
        super().__init__(backbone, temperature, **options)
        tau_plus = require_in_range("tau_plus", tau_plus, 0.0, 1.0, high_inclusive=False)
        beta = require_in_range("beta", beta, 0.0, math.inf, high_inclusive=False)
        self.tau_plus, self.beta = tau_plus, beta
        self.hyperparameters.update(tau_plus=tau_plus, beta=beta)

    def loss_arguments(self) -> tuple:
        return (self.temperature, self.tau_plus, self.beta)


class MultiViewSimCLR(ContrastiveMethod):
    """SimCLR with `num_views` = M + 1 views of every image, every pair of views of an image a
    positive pair (`clcourse.losses.multiview_info_nce`): CACR's baseline with the same views and
    no weighting, so that a comparison separates "more views" from "weighting". With
    num_views = 2 it is SimCLR.

    All views go through backbone and projector in one batch of (M + 1) B images.
    `loss(views, temperature)` is `multiview_info_nce` unless given.
    """

    default_loss = staticmethod(multiview_info_nce)
    loss_signature = "loss(views, temperature)"

    def __init__(self, backbone: nn.Module, temperature: float = 0.5, num_views: int = 5,
                 projector_hidden: int = 512, projector_out: int = 128, augment=None,
                 loss: Callable | None = None):
        require_int_at_least("num_views", num_views, 2)
        super().__init__(backbone, num_views, projector_hidden, projector_out, augment, loss)
        self.temperature = require_positive("temperature", temperature)
        self.hyperparameters = dict(temperature=self.temperature, projector_hidden=projector_hidden,
                                    projector_out=projector_out, num_views=num_views)

    def apply_loss(self, views: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        return self.loss(views, self.temperature)
