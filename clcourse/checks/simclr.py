"""Checkers for notebook 01 (SimCLR from scratch): positive mask, InfoNCE,
alignment and uniformity."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..evaluate import alignment, uniformity
from ..losses import info_nce, positive_index
from ._core import ExerciseError, as_tensor, call_student, diagnose, exercise, passed, same, seeded

__all__ = ["reference_positive_mask", "check_positive_mask", "check_info_nce", "check_alignment",
           "check_uniformity"]


def _embeddings(seed: int, n: int, dim: int) -> torch.Tensor:
    # Rows of very different norms, so forgetting to normalise changes every number.
    g = seeded(seed)
    return (torch.randn(n, dim, generator=g, dtype=torch.float64)
            * torch.rand(n, 1, generator=g, dtype=torch.float64).mul(3).add(0.5))


def reference_positive_mask(batch_size: int) -> torch.Tensor:
    mask = torch.zeros(2 * batch_size, 2 * batch_size, dtype=torch.bool)
    mask[torch.arange(2 * batch_size), positive_index(batch_size)] = True
    return mask


@exercise()
def check_positive_mask(fn, cases=(1, 3, 4)) -> None:
    """fn(batch_size) -> bool [2B, 2B], True where column j is the other view of row i's image."""
    for batch_size in cases:
        student = as_tensor(call_student(fn, batch_size, name="positive_mask"), "positive_mask")
        reference = reference_positive_mask(batch_size)
        if student.shape != reference.shape:
            raise ExerciseError(f"positive_mask({batch_size}) returned shape "
                                f"{tuple(student.shape)}, expected {tuple(reference.shape)}: rows "
                                "and columns index all 2B views.")
        student = student.bool()
        if torch.equal(student, reference):
            continue
        if student.diagonal().any():
            raise ExerciseError("positive_mask marks the diagonal: a view is not its own "
                                "positive (that similarity is always 1 and must be excluded).")
        if torch.equal(student, reference.triu()) or torch.equal(student, reference.tril()):
            raise ExerciseError("positive_mask marks only one direction: view i of the first "
                                "half pairs with i + B, and view i + B pairs back with i.")
        if student.sum(1).ne(1).any():
            raise ExerciseError("every row of positive_mask must hold exactly one True "
                                "(one positive per view).")
        raise ExerciseError(f"positive_mask({batch_size}) pairs the wrong views: with views "
                            "ordered [z1; z2], row i (< B) pairs with column i + B.")
    passed("positive_mask", "one positive per view, the other view of the same image")


def _info_nce_mistakes(z1: torch.Tensor, z2: torch.Tensor,
                       temperature: float) -> dict[str, torch.Tensor]:
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

    def cross_view(u1, u2):   # anchors of one view against the other view only, a B x B softmax
        return F.cross_entropy(u1 @ u2.T / temperature, torch.arange(u1.shape[0]))

    unit = F.normalize(torch.cat([z1, z2]), dim=1)
    unit1, unit2 = unit.chunk(2)
    raw = torch.cat([z1, z2])
    return {
        "Normalise the embeddings to unit length before the dot products.": loss(raw, temperature),
        "Exclude each view's similarity with itself from the denominator (mask "
        "the diagonal with -inf).":
            loss(unit, temperature, mask_self=False),
        "Divide the similarities by the temperature; don't multiply.": loss(unit, 1 / temperature),
        "Apply the temperature once: it looks like you divided by it twice.":
            loss(unit, temperature ** 2),
        "Keep the positive in the denominator: InfoNCE is a softmax over the "
        "positive AND the negatives.":
            loss(unit, temperature, keep_positive=False),
        "Average over all 2B anchors (mean), not a sum.": loss(unit, temperature, reduce="sum"),
        "Use all 2B views as anchors: views of the second half are anchors too "
        "(the loss is symmetric).":
            loss(unit, temperature, halves=1),
        "Your anchors are the first view only and their candidates the second view only (a B x B "
        "matrix z1 z2^T): stack both views into 2B rows, so that every view is an anchor and "
        "all 2B - 2 other views, of either view, are its negatives.":
            cross_view(unit1, unit2),
        "Both directions, but each anchor meets only the other view (two B x B matrices): the "
        "B - 1 other images' views on the anchor's own side are negatives too. Use the 2B x 2B "
        "matrix of all views, the diagonal masked.":
            (cross_view(unit1, unit2) + cross_view(unit2, unit1)) / 2,
    }


@exercise(stands_for=info_nce)
def check_info_nce(fn, cases=((4, 8, 0.5), (5, 3, 0.1), (2, 16, 1.0))) -> None:
    """fn(z1 [B, D], z2 [B, D], temperature) -> scalar NT-Xent loss, compared in
    value and gradient."""
    for seed, (batch_size, dim, temperature) in enumerate(cases):
        z1, z2 = _embeddings(2 * seed, batch_size, dim), _embeddings(2 * seed + 1, batch_size, dim)
        context = f"B={batch_size}, D={dim}, temperature={temperature}"
        student_z1, student_z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        student = as_tensor(call_student(fn, student_z1, student_z2, temperature, name="info_nce"),
                            "info_nce")
        if student.dim() != 0:
            raise ExerciseError("info_nce must return a scalar (the mean over anchors), got "
                                f"shape {tuple(student.shape)}.")
        reference_z1, reference_z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        reference = info_nce(reference_z1, reference_z2, temperature)
        diagnose("info_nce", student, reference.to(student.dtype),
                 _info_nce_mistakes(z1, z2, temperature), context)
        if not student.requires_grad:
            raise ExerciseError("info_nce returns the right number but no gradient flows: "
                                "don't detach, and don't convert to numpy or Python "
                                "floats inside the loss.")
        student.backward()
        reference.backward()
        gradients_match = all(student_grad is not None and same(student_grad, reference_grad)
                              for student_grad, reference_grad
                              in ((student_z1.grad, reference_z1.grad),
                                  (student_z2.grad, reference_z2.grad)))
        if not gradients_match:
            raise ExerciseError("info_nce has the right value but the wrong gradient: is one "
                                "of the views detached?")
    passed("info_nce", f"value and gradient match the reference for {len(cases)} seeded batches")


# ----------------------------------------------------- alignment and uniformity (Wang & Isola 2020)

def _check_gradient(name: str, student: torch.Tensor, inputs: tuple[torch.Tensor, ...],
                    reference: torch.Tensor, reference_inputs: tuple[torch.Tensor, ...]) -> None:
    if not student.requires_grad:
        raise ExerciseError(f"{name} returns the right number but no gradient flows: it is a loss "
                            "too (Wang & Isola train with it), so don't detach, and don't "
                            "convert to numpy or Python floats.")
    student.backward()
    reference.backward()
    if not all(s.grad is not None and same(s.grad, r.grad)
               for s, r in zip(inputs, reference_inputs)):
        raise ExerciseError(f"{name} has the right value but the wrong gradient: "
                            "is something detached?")


@exercise(stands_for=alignment)
def check_alignment(fn, cases=((6, 4), (9, 16))) -> None:
    """fn(z1 [N, D], z2 [N, D]) -> scalar mean over pairs of ||u1 - u2||^2, u = z / ||z|| (row i of
    z1 and of z2 are a positive pair)."""
    for seed, (n, dim) in enumerate(cases):
        z1, z2 = _embeddings(10 + 2 * seed, n, dim), _embeddings(11 + 2 * seed, n, dim)
        context = f"N={n}, D={dim}"
        student_z1, student_z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        student = as_tensor(call_student(fn, student_z1, student_z2, name="alignment_loss"),
                            "alignment_loss")
        if student.shape == (n,):
            raise ExerciseError(f"alignment_loss ({context}) returned one value per pair: "
                                "average over the pairs.")
        reference_z1, reference_z2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
        reference = alignment(reference_z1, reference_z2).double()
        u1, u2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        distance = (u1 - u2).norm(dim=1)
        diagnose("alignment_loss", student, reference, {
            "Normalise the embeddings to unit length first (F.normalize(z, "
            "dim=1)): alignment is measured on the sphere, where "
            "||u - v||^2 = 2 - 2 u·v.": (z1 - z2).norm(dim=1).pow(2).mean(),
            "Normalise each row (dim=1), not each column (dim=0).":
                (F.normalize(z1, dim=0) - F.normalize(z2, dim=0)).norm(dim=1).pow(2).mean(),
            "Square the distance: the alignment loss is E ||u - v||^2 (α = 2), not E ||u - v||.":
                distance.mean(),
            "||u - v||^2 = 2 - 2 u·v for unit vectors: this looks like 1 - u·v, half of it.":
                (1 - (u1 * u2).sum(1)).mean(),
            "This looks like the mean cosine similarity of the pairs: alignment is a distance, E "
            "||u - v||^2 (lower is better).": (u1 * u2).sum(1).mean(),
            "Average over the pairs (mean), not a sum.": distance.pow(2).sum(),
            "Take the squared distance of each pair, then the mean; not the squared length "
            "of the mean difference.":
                (u1 - u2).mean(0).pow(2).sum(),
        }, context)
        _check_gradient("alignment_loss", student, (student_z1, student_z2), reference,
                        (reference_z1, reference_z2))
    passed("alignment_loss", "E ||u - v||^2 over positive pairs of unit "
                             "vectors, value and gradient")


def _uniformity_variant(z: torch.Tensor, t: float, *, normalise: bool = True,
                        include_self: bool = False, squared: bool = True, log_of_mean: bool = True,
                        reduce: str = "mean") -> torch.Tensor:
    """The uniformity loss written out over the N x N matrix, with switches for
    the usual mistakes."""
    u = F.normalize(z, dim=1) if normalise else z
    distance = torch.cdist(u, u).pow(2) if squared else torch.cdist(u, u)
    n = len(u)
    pairs = distance.flatten() if include_self else distance[~torch.eye(n, dtype=torch.bool)]
    if not log_of_mean:
        return (-t * pairs).mean()
    kernel = torch.exp(-t * pairs)
    return torch.log(kernel.sum() if reduce == "sum" else kernel.mean())


@exercise(stands_for=uniformity)
def check_uniformity(fn, cases=((7, 3, 2.0), (10, 8, 2.0), (6, 5, 0.5))) -> None:
    """fn(z [N, D], t) -> scalar log of the mean over pairs i != j of
    exp(-t ||u_i - u_j||^2), u = z / ||z||."""
    for seed, (n, dim, t) in enumerate(cases):
        z = _embeddings(20 + seed, n, dim)
        context = f"N={n}, D={dim}, t={t}"
        student_z = z.clone().requires_grad_()
        student = as_tensor(call_student(fn, student_z, t, name="uniformity_loss"),
                            "uniformity_loss")
        if student.shape in ((n,), (n, n), (n * (n - 1),), (n * (n - 1) // 2,)):
            raise ExerciseError(f"uniformity_loss ({context}) returned shape "
                                f"{tuple(student.shape)}: reduce over all pairs to one number, "
                                "log of the mean of exp(-t ||u_i - u_j||^2).")
        reference_z = z.clone().requires_grad_()
        reference = uniformity(reference_z, t).double()
        variant = lambda **wrong: _uniformity_variant(z, t, **wrong)
        mistakes = {
            "Leave out the pairs of a point with itself (i = j): their distance is 0 and their "
            "kernel 1, which pulls the value towards 0. Average over the N (N - 1) pairs i != j "
            "(torch.pdist gives each pair once).":
                variant(include_self=True),
            "Normalise the embeddings to unit length first: uniformity is measured on the sphere.":
                variant(normalise=False),
            "Use the squared distance: exp(-t ||u_i - u_j||^2).": variant(squared=False),
            "Take the log of the mean of the kernel, log E exp(-t d^2); the mean of "
            "the log is just -t E d^2.":
                variant(log_of_mean=False),
            "Average the kernel over the pairs (mean), not a sum, before the log.":
                variant(reduce="sum"),
        }
        if t != 2.0:
            mistakes["Use the t you are given: this looks like t = 2 whatever the argument."] = (
                _uniformity_variant(z, 2.0)
            )
        diagnose("uniformity_loss", student, reference, mistakes, context)
        _check_gradient("uniformity_loss", student, (student_z,), reference, (reference_z,))
    passed("uniformity_loss", "log E exp(-t ||u_i - u_j||^2) over pairs i != j of unit "
                              "vectors, value and gradient")
