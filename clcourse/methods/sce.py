"""SCE: Similarity Contrastive Estimation on MoCo v2, a soft target over the key and the queue."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from ..losses import sce
from ..presets import no_autocast
from ..validation import require_in_range, require_positive
from .base import require_function
from .moco import MoCo

__all__ = ["SCE"]


class SCE(MoCo):
    """Similarity Contrastive Estimation (Denize et al., WACV 2023) on MoCo v2: the query
    q = g(f(strong view)) predicts, over its key and the queue, a soft target that the momentum
    encoder makes from a weak view of the same image: lambda on the key, 1 - lambda spread over the
    queue entries the key finds similar (`clcourse.losses.sce`). Negatives that look like the image
    are pushed less; lambda = 1 is MoCo v2's loss.

    What SCE changes in MoCo v2, as in the authors' CIFAR-10 configuration:
    - the views: the strong one (`augment`, default the course's SimCLR recipe) goes to the online
      encoder, the weak one (`key_augment`, default crop + flip, `clcourse.augment.weak`) to the
      momentum encoder, which makes the key and the target (a target from a strong view is a
      noisier relation);
    - split BN in the momentum encoder only: keys are computed on a shuffled batch in `bn_splits`
      groups, as in MoCo, while the online encoder keeps ordinary batch-norm over the whole batch
      (`bn_splits` times more samples per statistic than a split). A query and its key are still
      never normalised with the same statistics, which is all that shuffle BN is for, so the
      authors' choice is kept;
    - the defaults: lambda = 0.5, tau = 0.1, tau_m = 0.05, K = 4096, m = 0.99, non-symmetric,
      learning rate 0.06 per 256 images.

    Kept from the course's MoCo v2, unlike the authors' code: the projector has no batch-norm
    (theirs: 512-512 with BN and ReLU, then 128) and the strong view is the course's SimCLR recipe,
    which crops 8-100% of the image and does not blur (theirs crops 20-100% and blurs with
    p = 0.5: ``augment=clcourse.augment.sce_strong()``), so that SCE differs from MoCo v2 only in
    the loss, the key's view and where BN is split.

    `loss(q, k, queue, temperature, temperature_momentum, lam, queue_mask=None) -> scalar` is
    `clcourse.losses.sce` unless given, e.g. the function a student wrote in notebook 07; it
    receives unit vectors in float32, with autocast off, and `queue_mask` (keys of the query's
    own image) when `mask_same_image` is on. SCE makes its logits inside its loss, so MoCo's
    `logits=` is not taken.
    """

    lr = 0.06   # the authors' CIFAR-10 configuration: SGD 0.06 for a batch of 256
    # Split batch-norm in the momentum encoder only (the online encoder keeps the whole
    # batch's statistics).
    split_batchnorm_in = ("key_backbone",)

    def __init__(self, backbone: nn.Module, lam: float = 0.5, temperature: float = 0.1,
                 temperature_momentum: float = 0.05, bn_splits: int = 8, augment=None,
                 key_augment=None, loss: Callable | None = None, **options):
        if "logits" in options:
            raise ValueError("logits is not an option of SCE, which makes its logits inside its "
                             "loss: give loss(q, k, queue, temperature, temperature_momentum, "
                             "lam, queue_mask=None) instead")
        lam = require_in_range("lam", lam, 0.0, 1.0)
        temperature_momentum = require_positive("temperature_momentum", temperature_momentum)
        require_function("loss", loss, "loss(q, k, queue, temperature, temperature_momentum, lam, "
                                       "queue_mask=None)")
        if key_augment is None:
            from ..augment import weak
            key_augment = weak()
        super().__init__(backbone, temperature=temperature, bn_splits=bn_splits, augment=augment,
                         key_augment=key_augment, **options)
        self.lam, self.temperature_momentum = lam, temperature_momentum
        self.loss = loss or sce
        self.hyperparameters.update(lam=lam, temperature_momentum=temperature_momentum)

    def functions(self) -> dict[str, Callable]:
        # SCE makes its logits inside its loss: the loss takes the place of MoCo's logits.
        return {"loss": self.loss, "momentum_update": self.momentum_update_fn,
                "enqueue": self.enqueue_fn, "step": self.step_fn}

    def query_loss(self, q: torch.Tensor, k: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # The library's loss skips its mask check (a host read) once on_train_start settled it.
        checked = ({"check_mask": not self.enough_unmasked_entries} if self.loss is sce else {})
        # float32 with autocast off, so that no loss, a student's included, runs its exponentials
        # in half precision
        with no_autocast(q.device):
            return self.loss(q.float(), k.float(), self.queue.float(), self.temperature,
                             self.temperature_momentum, self.lam,
                             queue_mask=self.same_image_mask(index), **checked)
