"""Checkers for notebook 01 (SimCLR from scratch): similarity matrix, positive mask, InfoNCE."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import info_nce, positive_index
from ._core import as_tensor, call_student, diagnose, passed, same, seeded, ExerciseError


def _embeddings(seed: int, n: int, dim: int) -> torch.Tensor:
    # Rows of very different norms, so forgetting to normalise changes every number.
    g = seeded(seed)
    return torch.randn(n, dim, generator=g, dtype=torch.float64) * torch.rand(n, 1, generator=g, dtype=torch.float64).mul(3).add(0.5)


def check_similarity_matrix(fn, cases=((6, 4), (5, 9))) -> None:
    """fn(z [N, D]) -> [N, N] cosine similarities."""
    for seed, (n, dim) in enumerate(cases):
        z = _embeddings(seed, n, dim)
        student = as_tensor(call_student(fn, z.clone(), name="similarity_matrix"), "similarity_matrix")
        unit = F.normalize(z, dim=1)
        diagnose("similarity_matrix", student, unit @ unit.T, {
            "Normalise each row to unit length first (F.normalize(z, dim=1)): cosine similarity ignores norms.": z @ z.T,
            "Normalise the rows (dim=1), not the columns (dim=0).": F.normalize(z, dim=0) @ F.normalize(z, dim=0).T,
        }, context=f"N={n}, D={dim}")
        if student.shape == (dim, dim):
            raise ExerciseError("similarity_matrix returned D x D: compare rows with z @ z.T, not z.T @ z.")
    passed("similarity_matrix", "cosine similarities of every pair of rows")


def reference_positive_mask(batch_size: int) -> torch.Tensor:
    mask = torch.zeros(2 * batch_size, 2 * batch_size, dtype=torch.bool)
    mask[torch.arange(2 * batch_size), positive_index(batch_size)] = True
    return mask


def check_positive_mask(fn, cases=(1, 3, 4)) -> None:
    """fn(batch_size) -> bool [2B, 2B], True where column j is the other view of row i's image."""
    for batch_size in cases:
        student = as_tensor(call_student(fn, batch_size, name="positive_mask"), "positive_mask")
        reference = reference_positive_mask(batch_size)
        if student.shape != reference.shape:
            raise ExerciseError(f"positive_mask({batch_size}) returned shape {tuple(student.shape)}, "
                                f"expected {tuple(reference.shape)}: rows and columns index all 2B views.")
        student = student.bool()
        if torch.equal(student, reference):
            continue
        if student.diagonal().any():
            raise ExerciseError("positive_mask marks the diagonal: a view is not its own positive (that similarity is "
                                "always 1 and must be excluded).")
        if torch.equal(student, reference.triu()) or torch.equal(student, reference.tril()):
            raise ExerciseError("positive_mask marks only one direction: view i of the first half pairs with i + B, "
                                "and view i + B pairs back with i.")
        if student.sum(1).ne(1).any():
            raise ExerciseError("every row of positive_mask must hold exactly one True (one positive per view).")
        raise ExerciseError(f"positive_mask({batch_size}) pairs the wrong views: with views ordered [z1; z2], "
                            f"row i (< B) pairs with column i + B.")
    passed("positive_mask", "one positive per view, the other view of the same image")


def _info_nce_mistakes(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
    """What common wrong versions of InfoNCE return, each with the hint that fixes it."""
    def loss(u, temp, mask_self=True, keep_positive=True, reduce="mean", halves=2):
        n = u.shape[0] // 2
        logits = u @ u.T / temp
        if mask_self:
            logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
        targets = positive_index(n)
        if not keep_positive:
            positive = logits[torch.arange(2 * n), targets]
            logits = logits.masked_fill(reference_positive_mask(n), float("-inf"))
            per_anchor = torch.logsumexp(logits, 1) - positive
        else:
            per_anchor = F.cross_entropy(logits, targets, reduction="none")
        per_anchor = per_anchor[:n] if halves == 1 else per_anchor
        return per_anchor.sum() if reduce == "sum" else per_anchor.mean()

    unit = F.normalize(torch.cat([z1, z2]), dim=1)
    raw = torch.cat([z1, z2])
    return {
        "Normalise the embeddings to unit length before the dot products.": loss(raw, temperature),
        "Exclude each view's similarity with itself from the denominator (mask the diagonal with -inf).":
            loss(unit, temperature, mask_self=False),
        "Divide the similarities by the temperature; don't multiply.": loss(unit, 1 / temperature),
        "Apply the temperature once: it looks like you divided by it twice.": loss(unit, temperature ** 2),
        "Keep the positive in the denominator: InfoNCE is a softmax over the positive AND the negatives.":
            loss(unit, temperature, keep_positive=False),
        "Average over all 2B anchors (mean), not a sum.": loss(unit, temperature, reduce="sum"),
        "Use all 2B views as anchors: views of the second half are anchors too (the loss is symmetric).":
            loss(unit, temperature, halves=1),
    }


def check_info_nce(fn, cases=((4, 8, 0.5), (5, 3, 0.1), (2, 16, 1.0))) -> None:
    """fn(z1 [B, D], z2 [B, D], temperature) -> scalar NT-Xent loss, compared in value and gradient."""
    for seed, (batch_size, dim, temperature) in enumerate(cases):
        z1, z2 = _embeddings(2 * seed, batch_size, dim), _embeddings(2 * seed + 1, batch_size, dim)
        context = f"B={batch_size}, D={dim}, temperature={temperature}"
        student_z1, student_z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        student = as_tensor(call_student(fn, student_z1, student_z2, temperature, name="info_nce"), "info_nce")
        if student.dim() != 0:
            raise ExerciseError(f"info_nce must return a scalar (the mean over anchors), got shape {tuple(student.shape)}.")
        reference_z1, reference_z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        reference = info_nce(reference_z1, reference_z2, temperature)
        diagnose("info_nce", student, reference.to(student.dtype), _info_nce_mistakes(z1, z2, temperature), context)
        if not student.requires_grad:
            raise ExerciseError("info_nce returns the right number but no gradient flows: don't detach, "
                                "and don't convert to numpy or Python floats inside the loss.")
        student.backward()
        reference.backward()
        gradients_match = all(student_grad is not None and same(student_grad, reference_grad) for student_grad, reference_grad
                              in ((student_z1.grad, reference_z1.grad), (student_z2.grad, reference_z2.grad)))
        if not gradients_match:
            raise ExerciseError("info_nce has the right value but the wrong gradient: is one of the views detached?")
    passed("info_nce", f"value and gradient match the reference for {len(cases)} seeded batches")
