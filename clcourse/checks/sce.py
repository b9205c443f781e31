"""Checkers for notebook 07 (SCE, soft targets): the soft target of a query over its key and the
queue, and the SCE loss, the cross-entropy between that target and the query's prediction."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import moco_info_nce, moco_logits, sce, sce_target
from ._core import ExerciseError, as_tensor, call_student, diagnose, exercise, passed, same, seeded

__all__ = ["soft_target_variant", "check_soft_target", "check_sce_loss"]


def _unit(generator: torch.Generator, n: int, dim: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=generator, dtype=torch.float64), dim=1)


def _mask(generator: torch.Generator, batch: int, size: int) -> torch.Tensor:
    """A few masked entries per query (about a quarter), never all of them."""
    mask = torch.rand(batch, size, generator=generator) < 0.25
    mask[:, 0] = False
    return mask


def _inputs(seed: int, batch: int, size: int, dim: int, masked: bool):
    g = seeded(seed)
    q, k, queue = _unit(g, batch, dim), _unit(g, batch, dim), _unit(g, size, dim)
    return q, k, queue, (_mask(g, batch, size) if masked else None)


# ---------------------------------------------------------------- the soft target

def soft_target_variant(k: torch.Tensor, queue: torch.Tensor, temperature_momentum: float,
                        lam: float, queue_mask: torch.Tensor | None, *, self_slot: str = "excluded",
                        scale: str = "divide", swap: bool = False, one_minus: bool = True,
                        dim: int = 1, use_mask: bool = True,
                        renormalise: bool = True) -> torch.Tensor:
    """The soft target written out term by term, with switches that reproduce the usual mistakes.

    With the defaults this is `clcourse.losses.sce_target`; each switch changes one thing."""
    similarity = k @ queue.T
    scores = {"divide": similarity / temperature_momentum, "none": similarity,
              "multiply": similarity * temperature_momentum}[scale]
    if self_slot != "excluded":   # the key itself as a candidate of the relation: logit 0, or its
                                  # own k . k / tau_m
        own = (torch.zeros_like(scores[:, :1]) if self_slot == "zero"
               else (k * k).sum(1, keepdim=True) / temperature_momentum)
        scores = torch.cat([own, scores], dim=1)
    mask = queue_mask
    if mask is not None and self_slot != "excluded":
        mask = torch.cat([torch.zeros_like(mask[:, :1]), mask], dim=1)
    if mask is not None and use_mask and renormalise:
        scores = scores.masked_fill(mask, float("-inf"))
    relation = torch.softmax(scores, dim=dim)
    if mask is not None and use_mask and not renormalise:
        relation = relation.masked_fill(mask, 0.0)
    positive, rest = (1 - lam, lam) if swap else (lam, 1 - lam)
    relation = relation * (rest if one_minus else 1.0)
    if self_slot != "excluded":
        relation = relation.clone()
        relation[:, 0] += positive
        return relation
    return torch.cat([torch.full_like(relation[:, :1], positive), relation], dim=1)


@exercise(stands_for=sce_target)
def check_soft_target(fn, cases=None) -> None:
    """fn(k [B, D], queue [K, D], temperature_momentum, lam, queue_mask=None) -> target [B, 1 + K]:
    lambda in column 0 (the key itself), (1 - lambda) softmax_j(k . n_j / tau_m) over the queue
    entries the mask leaves, 0 on masked ones; no gradient. Inputs are unit vectors."""
    cases = cases or [(4, 10, 8, 0.2, 0.5, False), (3, 12, 5, 0.1, 0.3, True),
                      (5, 6, 16, 0.05, 0.8, True), (2, 9, 4, 0.5, 0.0, False)]
    for seed, (batch, size, dim, temperature_momentum, lam, masked) in enumerate(cases):
        _, k, queue, mask = _inputs(seed, batch, size, dim, masked)
        context = (f"B={batch}, K={size}, D={dim}, τm={temperature_momentum}, λ={lam}"
                   + (", with a mask" if masked else ""))
        student_k, student_queue = k.clone().requires_grad_(), queue.clone().requires_grad_()
        args = ((student_k, student_queue, temperature_momentum, lam)
                + ((mask.clone(), ) if masked else ()))
        try:
            target = call_student(fn, *args, name="soft_target", raising=(RuntimeError,))
        except RuntimeError as error:
            raise ExerciseError(f"soft_target failed ({context}): {error}. Shapes to aim for: k @ "
                                "queue.T is [B, K]; the positive's column "
                                "torch.full((B, 1), lam) goes in front of it.") from None
        target = as_tensor(target, "soft_target")
        if target.shape == (batch, size):
            raise ExerciseError(f"soft_target ({context}) returned shape {tuple(target.shape)}: "
                                "the candidates are the key itself and the K queue entries, so "
                                "put λ in a column 0 in front: [B, 1 + K].")
        if target.requires_grad:
            raise ExerciseError("The target carries a gradient: compute it under "
                                "torch.no_grad() (or from k.detach() and queue.detach()). SCE's "
                                "target is a constant for the loss; the momentum encoder that "
                                "made k is not trained by gradient.")
        variant = lambda **wrong: soft_target_variant(k, queue, temperature_momentum, lam, mask,
                                                      **wrong)
        mistakes = {
            "The key's own slot gets logit 0 in the relation's softmax, as in the authors' "
            "code (CEA-LIST/SCE and eztorch). The course leaves it out (a small "
            "difference, its own choice): the relation is a softmax over the queue entries "
            "only, so the positive gets exactly λ.": variant(self_slot="zero"),
            "The key itself is in the relation's softmax (k · k / τm = 1 / τm takes "
            "nearly all of it). The relation is over the queue entries only; the "
            "positive gets exactly λ.": variant(self_slot="similarity"),
            "Divide the similarities k · n by τm before the softmax.": variant(scale="none"),
            "Divide the similarities by τm; don't multiply.": variant(scale="multiply"),
            "λ goes on the key (column 0) and 1 − λ on the queue, not the other way round.":
                variant(swap=True),
            "Scale the queue's softmax by 1 − λ, so that the row sums to 1.":
                variant(one_minus=False),
            "Take the softmax over the queue entries of each key (dim=1), not "
            "over the batch (dim=0).": variant(dim=0),
        }
        if masked:
            mistakes.update({
                "Masked entries (queue_mask True: keys of the query's own "
                "image) must get weight 0.":
                    variant(use_mask=False),
                "Set the masked scores to −inf before the softmax, so that the other "
                "entries share all of 1 − λ; zeroing them afterwards leaves the row "
                "summing to less than 1.": variant(renormalise=False),
                "queue_mask is True where an entry must be left out, not where it is kept.":
                    soft_target_variant(k, queue, temperature_momentum, lam, ~mask),
            })
        diagnose("soft_target", target, sce_target(k, queue, temperature_momentum, lam, mask),
                 mistakes, context)
    passed("soft_target", "λ on the key, (1 − λ) softmax(k · n / τm) over the unmasked queue, "
                          "rows summing to 1, no gradient")


# ---------------------------------------------------------------- the loss

def _soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                        reduce: str = "mean") -> torch.Tensor:
    log_p = torch.log_softmax(logits, dim=1).masked_fill(target == 0, 0.0)
    per_query = -(target * log_p).sum(dim=1)
    return per_query.sum() if reduce == "sum" else per_query.mean()


def _masked_logits(q, k, queue, temperature, mask):
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / temperature
    if mask is not None:
        logits = torch.cat([logits[:, :1], logits[:, 1:].masked_fill(mask, float("-inf"))], dim=1)
    return logits


def _loss_mistakes(q, k, queue, temperature, temperature_momentum, lam,
                   mask) -> dict[str, torch.Tensor]:
    target = sce_target(k, queue, temperature_momentum, lam, mask)
    logits = _masked_logits(q, k, queue, temperature, mask)
    entropy = -torch.special.xlogy(target, target).sum(1).mean()
    mistakes = {
        "This is MoCo's InfoNCE, a one-hot target on the key (λ = 1). Use the "
        "soft target: the cross-entropy −Σ_c w_c log p_c with "
        "w = soft_target(k, queue, τm, λ).": moco_info_nce(q, k, queue, temperature, mask),
        "Divide the logits [q · k, q · n] by the temperature τ.":
            sce(q, k, queue, 1.0, temperature_momentum, lam, mask),
        "The temperatures are swapped: the prediction uses τ, the target τm (the sharper one).":
            sce(q, k, queue, temperature_momentum, temperature, lam, mask),
        "The target comes from the key k (momentum encoder, weak view), not from the query: "
        "soft_target(k, queue, ...).":
            _soft_cross_entropy(logits, sce_target(q, queue, temperature_momentum, lam, mask)),
        "Take log_softmax of the logits: the loss is −Σ_c w_c log p_c with p = softmax(logits).":
            -(target * logits.masked_fill(target == 0, 0.0)).sum(1).mean(),
        "Average over the queries (mean), not a sum.":
            _soft_cross_entropy(logits, target, reduce="sum"),
        "This is the KL divergence KL(w ‖ p) = cross-entropy − H(w). Its "
        "gradient is the same (H(w) is a constant), but SCE's loss is the "
        "cross-entropy −Σ_c w_c log p_c.": _soft_cross_entropy(logits, target) - entropy,
        "The loss is minus the sum of w log p: you have the sign backwards.":
            -_soft_cross_entropy(logits, target),
    }
    if mask is not None:
        mistakes.update({
            "Pass queue_mask on: masked entries leave both the target (weight 0) and the "
            "prediction (logit −inf).": sce(q, k, queue, temperature, temperature_momentum, lam),
            "Masked entries must leave the prediction too: set their logits to −inf, so they "
            "are not in the softmax's denominator.":
                _soft_cross_entropy(_masked_logits(q, k, queue, temperature, None), target),
        })
    return mistakes


@exercise(stands_for=sce, allowed=(moco_logits,))
def check_sce_loss(fn, cases=None) -> None:
    """fn(q [B, D], k [B, D], queue [K, D], temperature, temperature_momentum, lam,
    queue_mask=None) -> scalar: mean over queries of −Σ_c w_c log softmax([q · k, q · n_1..K] / τ)_c
    with w the soft target; masked queue entries left out of both; gradient into q only. Inputs are
    unit vectors."""
    cases = cases or [(4, 10, 8, 0.1, 0.05, 0.5, False), (3, 12, 5, 0.2, 0.1, 0.3, True),
                      (5, 6, 16, 0.5, 0.2, 0.0, True), (4, 7, 8, 0.1, 0.05, 1.0, False)]
    for seed, (batch, size, dim, temperature, temperature_momentum, lam,
               masked) in enumerate(cases):
        q, k, queue, mask = _inputs(10 + seed, batch, size, dim, masked)
        context = (f"B={batch}, K={size}, D={dim}, τ={temperature}, "
                   f"τm={temperature_momentum}, λ={lam}"
                   + (", with a mask" if masked else ""))
        student_q, student_k, student_queue = (t.clone().requires_grad_() for t in (q, k, queue))
        args = (student_q, student_k, student_queue, temperature, temperature_momentum, lam)
        try:
            loss = call_student(fn, *args, *((mask.clone(),) if masked else ()), name="sce_loss",
                                raising=(RuntimeError,))
        except RuntimeError as error:
            raise ExerciseError(f"sce_loss failed ({context}): {error}. Shapes to aim for: logits "
                                "[B, 1 + K] (the positive q · k in column 0, then q @ queue.T), "
                                "and the soft target of the same shape.") from None
        loss = as_tensor(loss, "sce_loss")
        if loss.dim() != 0:
            raise ExerciseError(f"sce_loss must return a scalar (the mean over queries), "
                                f"got shape {tuple(loss.shape)}.")
        if torch.isnan(loss):
            hint = ("Masked entries have target 0 and log-probability −inf, and 0 · (−inf) is "
                    "NaN in floating point: leave them out of the sum, e.g. "
                    "log_p.masked_fill(target == 0, 0) before multiplying."
                    if masked else "Look for a log of 0 or a 0 · inf.")
            raise ExerciseError(f"sce_loss ({context}) returned NaN. {hint}")
        reference_q = q.clone().requires_grad_()
        reference = sce(reference_q, k, queue, temperature, temperature_momentum, lam, mask)
        diagnose("sce_loss", loss, reference.detach(),
                 _loss_mistakes(q, k, queue, temperature, temperature_momentum, lam, mask), context)
        if not loss.requires_grad:
            raise ExerciseError("sce_loss returns the right number but no gradient flows into q: "
                                "don't detach the queries (only the keys, the queue and the "
                                "target are constants).")
        loss.backward()
        reference.backward()
        for name, tensor in (("k", student_k), ("queue", student_queue)):
            if tensor.grad is not None and tensor.grad.abs().sum() > 0:
                raise ExerciseError(f"Gradient flows into {name}: the keys and the queue come "
                                    "from the momentum encoder and are constants. Detach them "
                                    "in the logits (as moco_logits does) and compute the "
                                    "target without gradient.")
        # Compared on the sphere: the queries are unit vectors, so a gradient along q itself changes
        # nothing (normalising q inside the loss, or not, gives the same training).
        tangent = lambda g: g - (g * q).sum(1, keepdim=True) * q
        if student_q.grad is None or not same(tangent(student_q.grad), tangent(reference_q.grad)):
            raise ExerciseError(f"sce_loss ({context}) has the right value but not the right "
                                "gradient with respect to q: the loss must reach q only through "
                                "the logits [q · k, q · n] / τ.")
    passed("sce_loss", "cross-entropy between the soft target and softmax([q · k, q · n] / τ), "
                       "masked entries left out, gradient into q only")
