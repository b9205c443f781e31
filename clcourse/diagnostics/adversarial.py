"""How hard CLAE's adversarial views are, as positives and as negatives (Ho & Vasconcelos,
"Contrastive Learning with Adversarial Examples", NeurIPS 2020): `adversarial_views` sends one batch
through CLAE's attack and measures how much it raised the loss.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..attacks import contrastive_attack
from ..augment import require_images
from ..methods import CLAE, SimCLR
from ..negatives import negative_weights_from_similarities, off_diagonal, rank_among_negatives

__all__ = ["AdversarialViews", "adversarial_views"]

class AdversarialViews(NamedTuple):
    """One batch through CLAE's attack, and how hard its adversarial views are (see
    `adversarial_views`). Embeddings are unit vectors in float32; every tensor is detached."""
    view1: torch.Tensor                  # [B, 3, H, W] the attacked views x_i
    view2: torch.Tensor                  # [B, 3, H, W] their positives x_j
    adversarial: torch.Tensor            # [B, 3, H, W] x_i + delta
    z1: torch.Tensor                     # [B, D] clean embeddings of view1
    z2: torch.Tensor                     # [B, D] clean embeddings of view2
    z_adv: torch.Tensor                  # [B, D] adversarial-branch embeddings of x_i + delta
    z_zero: torch.Tensor                 # [B, D] adversarial-branch embeddings of x_i (delta = 0)
    loss_before: torch.Tensor            # L(z1, z_adv(x_i)): the adversarial term at delta = 0
    loss_after: torch.Tensor             # L(z1, z_adv(x_i + delta)): the adversarial term
    rank: torch.Tensor                   # [B, B - 1] rank of each adversarial view among anchor k's
                                         # real negatives
    adversarial_weight_share: torch.Tensor   # [B] share of anchor k's negative gradient weight on
                                             # adversarial views

    @property
    def attack_raise(self) -> torch.Tensor:
        return self.loss_after - self.loss_before


def _encoders(method):
    """(clean encoder, adversarial encoder, base loss) of a CLAE method, or of a SimCLR-family
    method whose one batch-norm serves both."""
    if isinstance(method, CLAE):
        return method.encode, method.encode_adversarial, method.pair_loss, method.base.temperature
    if isinstance(method, SimCLR):
        return (method.encode, method.encode, lambda z1, z2: method.contrastive_loss((z1, z2)),
                method.temperature)
    raise ValueError("method must be CLAE or a SimCLR-family method (SimCLR, DCL, HCL), got "
                     f"{type(method).__name__}")


def adversarial_views(method, images: torch.Tensor, epsilon: float, steps: int = 1,
                      step_size: float | None = None,
                      generator: torch.Generator | None = None) -> AdversarialViews:
    r"""CLAE's attack on one batch, measured: two views of `images` (the method's own augmentation,
    drawn from `generator`), the adversarial copy of the first
    (`clcourse.attacks.contrastive_attack` with `epsilon`, `steps`, `step_size`, through the
    adversarial batch-norm branch of a CLAE method), and

    - how much the attack raised the adversarial term, L(z_1, z_adv(x_1 + \delta)) against
      L(z_1, z_adv(x_1)) (L the method's loss, so InfoNCE for SimCLR);
    - the adversarial view as a hard positive: compare cos(z1, z_adv) with cos(z1, z2);
    - as a harder negative: `rank_among_negatives(z1, (z1, z2), z_adv)`, and the share of the
      InfoNCE gradient weight that anchor z1_k puts on the adversarial views among its negatives of
      the adversarial term (the views z1_m and z_adv_m of the other images;
      `negative_weights_from_similarities`), 0.5 where they count as much as the clean views.

    Everything runs on a copy of the method in training mode (batch statistics, as in training), so
    the method and its running statistics stay as they were. A SimCLR-family method is attacked
    through its single batch-norm. Without gradient in the result; one batch
    (memory grows with B^2).
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
        weights = negative_weights_from_similarities(
            (z1 * z_adv).sum(1), torch.cat([clean_negatives, adversarial_negatives], 1),
            temperature)
        share = weights[:, clean_negatives.shape[1]:].sum(1) / weights.sum(1)
        return AdversarialViews(view1, view2, x_adv, z1, z2, z_adv, z_zero, loss(z1, z_zero),
                                loss(z1, z_adv), rank_among_negatives(z1, (z1, z2), z_adv), share)
