"""Checkers for notebook 02 (embedding geometry and hard negatives): the false-negative rate of the
top-k hardest negatives, and InfoNCE's gradient with respect to the anchor."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._core import ExerciseError, call_student, diagnose, exercise, passed, seeded

__all__ = ["reference_top_k_false_negative_rate", "check_false_negative_rate",
           "reference_anchor_gradient", "check_anchor_gradient"]


def _result(value, name: str) -> torch.Tensor:
    """The student's return value as a float64 tensor (a Python number is accepted too)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    if not isinstance(value, torch.Tensor):
        raise ExerciseError(f"{name} must return a torch.Tensor (or a number), got "
                            f"{type(value).__name__}.")
    return value.detach().to(torch.float64)


# ----------------------------------------------------------------- false-negative rate of the top k

def _clustered_similarities(seed: int, n: int, num_classes: int,
                            dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities [n, n] of unit vectors drawn around one centre per class,
    and their labels.

    The classes overlap (the noise is as large as the centres), so an anchor's hardest negatives mix
    its own class and others, and every wrong way of counting them gives a different number."""
    g = seeded(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    centres = F.normalize(torch.randn(num_classes, dim, generator=g, dtype=torch.float64), dim=1)
    points = F.normalize(
        centres[labels] + 0.9 * torch.randn(n, dim, generator=g, dtype=torch.float64) / dim**0.5,
        dim=1)
    return points @ points.T, labels


def _top_k_share(similarities: torch.Tensor, labels: torch.Tensor, k: int,
                 exclude_self: bool = True, largest: bool = True) -> torch.Tensor:
    """[n, k] bool: does each of the anchor's k most (or least) similar candidates
    share its label."""
    if exclude_self:
        fill = float("-inf") if largest else float("inf")
        similarities = similarities.masked_fill(torch.eye(len(labels), dtype=torch.bool), fill)
    neighbours = similarities.topk(k, dim=1, largest=largest).indices
    return labels[neighbours] == labels[:, None]


def reference_top_k_false_negative_rate(similarities: torch.Tensor, labels: torch.Tensor,
                                        k: int) -> torch.Tensor:
    """Mean over anchors of the fraction of the k most similar other images that share
    the anchor's label."""
    return _top_k_share(similarities, labels, k).double().mean()


def _false_negative_rate_mistakes(similarities: torch.Tensor, labels: torch.Tensor,
                                  k: int) -> dict[str, torch.Tensor]:
    """What common wrong versions return, each with the hint that fixes it."""
    n = len(labels)
    shares = _top_k_share(similarities, labels, k).double()                          # [n, k]
    others = torch.arange(n)[None, :].expand(n, n)[~torch.eye(n, dtype=torch.bool)].view(n, n - 1)
    first_k = labels[others[:, :k]] == labels[:, None]
    mistakes = {
        "The anchor is its own most similar image (s = 1) and is not a negative: exclude it, "
        "e.g. fill the diagonal with -inf before taking the top k.":
            _top_k_share(similarities, labels, k, exclude_self=False).double().mean(),
        "Rank the negatives by similarity (topk / argsort, descending) before taking k of them: "
        "the first k columns are just the first k images of the set.": first_k.double().mean(),
        "The hardest negatives are the MOST similar ones: sort in descending order (topk's default "
        "largest=True).": _top_k_share(similarities, labels, k, largest=False).double().mean(),
        "Divide each anchor's count of false negatives by k: the rate is a fraction of the k "
        "negatives, not a count.": shares.sum(dim=1).mean(),
        "Count false negatives per anchor (a fraction of its k), then "
        "average over anchors: this looks like the share of anchors with at "
        "least one false negative.": shares.any(dim=1).double().mean(),
        "Divide by k, the number of negatives you looked at, not by all N - 1 negatives.":
            shares.sum(dim=1).mean() / (n - 1),
    }
    if k + 1 <= n - 1:
        mistakes[f"Take exactly k = {k} negatives: this looks like k + 1."] = \
            _top_k_share(similarities, labels, k + 1).double().mean()
    if k >= 2:
        mistakes[f"Take exactly k = {k} negatives: this looks like k - 1."] = \
            _top_k_share(similarities, labels, k - 1).double().mean()
    return mistakes


@exercise()
def check_false_negative_rate(fn, cases=((30, 4, 8, (5, 1, 12)), (17, 3, 5, (3, 16)))) -> None:
    """fn(similarities [N, N], labels [N], k) -> the mean over anchors of the fraction of each
    anchor's k hardest negatives (most similar other images) that share its label."""
    for seed, (n, num_classes, dim, ks) in enumerate(cases):
        similarities, labels = _clustered_similarities(seed, n, num_classes, dim)
        for k in ks:
            context = f"N={n}, {num_classes} classes, k={k}"
            student = _result(call_student(fn, similarities.clone(), labels.clone(), k,
                                           name="top_k_false_negative_rate"),
                              "top_k_false_negative_rate")
            if student.shape == (n,):
                raise ExerciseError(f"top_k_false_negative_rate ({context}) returned one "
                                    "value per anchor: average over the anchors and "
                                    "return a single number.")
            student = student.reshape(()) if student.numel() == 1 else student
            diagnose("top_k_false_negative_rate", student,
                     reference_top_k_false_negative_rate(similarities, labels, k),
                     _false_negative_rate_mistakes(similarities, labels, k), context)
    passed("top_k_false_negative_rate", "matches the reference for 5 (N, k) "
                                        "settings, the anchor left out")


# ---------------------------------------------------- InfoNCE's gradient with respect to the anchor

def _unit_vectors(seed: int, n: int, dim: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, dim, generator=seeded(seed), dtype=torch.float64), dim=1)


def reference_anchor_gradient(u: torch.Tensor, u_positive: torch.Tensor, u_negatives: torch.Tensor,
                              temperature: float) -> torch.Tensor:
    """dl/du by autograd, for l = -log softmax([u.u+, u.u_1, ..., u.u_K] / tau)_0."""
    u = u.detach().clone().requires_grad_()
    logits = torch.cat([(u @ u_positive)[None], u_negatives @ u]) / temperature
    (gradient,) = torch.autograd.grad(-torch.log_softmax(logits, dim=0)[0], u)
    return gradient


def _anchor_gradient_mistakes(u, u_positive, u_negatives, temperature) -> dict[str, torch.Tensor]:
    similarities = torch.cat([(u @ u_positive)[None], u_negatives @ u])
    p = torch.softmax(similarities / temperature, dim=0)
    p_positive, p_negatives = p[0], p[1:]
    push = (p_negatives[:, None] * u_negatives).sum(0)
    reference = (push - (1 - p_positive) * u_positive) / temperature
    among_negatives = torch.softmax(similarities[1:] / temperature, dim=0)
    unnormalised = torch.exp(similarities[1:] / temperature)
    return {
        "The gradient carries a factor 1/τ: every logit is s / τ.": reference * temperature,
        "Divide by τ once: this looks like 1/τ².": reference / temperature,
        "The sign is flipped: that is the direction that INCREASES the loss. dl/du points "
        "towards the negatives (weights p_k) and away from the positive.": -reference,
        "The positive is in the softmax too: p = softmax([s+, s_1..s_K] / τ), so the weights of "
        "the negatives are p_k, not a softmax over the negatives alone.":
            ((among_negatives[:, None] * u_negatives).sum(0) - (1 - p_positive) * u_positive)
            / temperature,
        "Normalise the weights: p_k = exp(s_k / τ) / (exp(s+ / τ) + Σ_j exp(s_j / τ)) (a softmax).":
            ((unnormalised[:, None] * u_negatives).sum(0) - (1 - p_positive) * u_positive)
            / temperature,
        "The positive also sits in the denominator: its term is -(1 - p+) u+ / τ, not -u+ / τ.":
            (push - u_positive) / temperature,
        "The positive's weight is 1 - p+, not p+: -log p+ pulls harder the smaller p+ is.":
            (push - p_positive * u_positive) / temperature,
        "Keep the negatives: the denominator holds them, so each pushes with weight p_k / τ.":
            -(1 - p_positive) * u_positive / temperature,
    }


@exercise()
def check_anchor_gradient(fn, cases=((5, 8, 0.2), (9, 4, 0.5), (3, 16, 1.0))) -> None:
    """fn(u [D], u_positive [D], u_negatives [K, D], temperature) -> [D]: the gradient of l = -log
    softmax([u.u+, u.u_1, ..., u.u_K] / tau)_0 with respect to the anchor u, written out
    (not autograd), compared with autograd's."""
    for seed, (num_negatives, dim, temperature) in enumerate(cases):
        vectors = _unit_vectors(seed, num_negatives + 2, dim)
        u, u_positive, u_negatives = vectors[0], vectors[1], vectors[2:]
        context = f"K={num_negatives}, D={dim}, temperature={temperature}"
        student = _result(call_student(fn, u.clone(), u_positive.clone(),
                                       u_negatives.clone(), temperature,
                                       name="anchor_gradient"), "anchor_gradient")
        if student.shape == (num_negatives,) or student.shape == (num_negatives + 1,):
            raise ExerciseError(f"anchor_gradient ({context}) returned {tuple(student.shape)}: "
                                "one weight per candidate. Return the gradient itself, a vector "
                                f"of the anchor's size [D = {dim}]: Σ_k p_k u_k / τ minus the "
                                "pull towards the positive.")
        diagnose("anchor_gradient", student,
                 reference_anchor_gradient(u, u_positive, u_negatives, temperature),
                 _anchor_gradient_mistakes(u, u_positive, u_negatives, temperature), context)
    passed("anchor_gradient", "your formula for dl/du agrees with autograd at "
                              f"{len(cases)} temperatures")
