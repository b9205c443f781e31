"""CACR: contrastive attraction and contrastive repulsion over many views (Zheng et
al., TMLR 2023)."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from ..losses import cacr, require_cacr_arguments
from ..validation import require_int_at_least
from .base import ContrastiveMethod

__all__ = ["CACR"]


class CACR(ContrastiveMethod):
    """Contrastive attraction and contrastive repulsion (Zheng et al., TMLR 2023), see
    `clcourse.losses.cacr`: `num_views` = M + 1 views of every image (5, as in the paper), all
    through backbone f and projector g in one batch of (M + 1) B images; the far views of an image
    attract harder, the near views of other images repel harder.

    `loss(views, tau_pos, tau_neg, alpha, beta)` is `cacr` with this method's `weights` and
    `detach_weights` unless given, e.g. the function a student wrote in notebook 06 (which
    then decides its own weights). Defaults are the authors' CIFAR-10 settings (README):
    tau+ = 1, tau- = 0.9, alpha = beta = 1, weights not detached, learning rate 0.12 per 256
    images. The paper's small-scale encoder is an AlexNet variant that forwards each view as
    its own batch (per-view batch-norm statistics); here the course's backbones and projector,
    with one batch for all views.
    """

    loss_signature = "loss(views, tau_pos, tau_neg, alpha, beta)"

    def __init__(self, backbone: nn.Module, num_views: int = 5, tau_pos: float = 1.0,
                 tau_neg: float = 0.9, alpha: float = 1.0, beta: float = 1.0, weights: str = "both",
                 detach_weights: bool = False, projector_hidden: int = 512,
                 projector_out: int = 128, augment=None, loss: Callable | None = None):
        require_int_at_least("num_views", num_views, 2)
        require_cacr_arguments(tau_pos, tau_neg, alpha, beta, weights, detach_weights)
        if loss is not None and (weights != "both" or detach_weights):
            raise ValueError("weights and detach_weights choose a variant of "
                             "clcourse.losses.cacr; a loss given as loss= decides its own "
                             "weights, so leave them at 'both' and False (got "
                             f"weights={weights!r}, detach_weights={detach_weights!r})")
        super().__init__(backbone, num_views, projector_hidden, projector_out, augment, loss)
        self.tau_pos, self.tau_neg, self.alpha, self.beta = tau_pos, tau_neg, alpha, beta
        self.weights, self.detach_weights = weights, detach_weights
        self.hyperparameters = dict(num_views=num_views, tau_pos=tau_pos, tau_neg=tau_neg,
                                    alpha=alpha, beta=beta, weights=weights,
                                    detach_weights=detach_weights,
                                    projector_hidden=projector_hidden, projector_out=projector_out)

    def default_loss(self, views, tau_pos: float, tau_neg: float, alpha: float,
                     beta: float) -> torch.Tensor:
        """`clcourse.losses.cacr` with this method's `weights` and `detach_weights`."""
        return cacr(views, tau_pos, tau_neg, alpha, beta, weights=self.weights,
                    detach_weights=self.detach_weights)

    def apply_loss(self, views: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        return self.loss(views, self.tau_pos, self.tau_neg, self.alpha, self.beta)
