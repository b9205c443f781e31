"""Checkers for notebook 02 (embedding geometry and hard negatives): the false-negative rate of the
top-k hardest negatives, and the weight InfoNCE's gradient puts on each negative."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._core import ExerciseError, call_student, diagnose, passed, seeded


def _result(value, name: str) -> torch.Tensor:
    """The student's return value as a float64 tensor (a Python number is accepted too)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64)
    if not isinstance(value, torch.Tensor):
        raise ExerciseError(f"{name} must return a torch.Tensor (or a number), got {type(value).__name__}.")
    return value.detach().to(torch.float64)


# ---------------------------------------------------------------------- false-negative rate of the top k

def _clustered_similarities(seed: int, n: int, num_classes: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities [n, n] of unit vectors drawn around one centre per class, and their labels.

    The classes overlap (the noise is as large as the centres), so an anchor's hardest negatives mix its
    own class and others, and every wrong way of counting them gives a different number."""
    g = seeded(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    centres = F.normalize(torch.randn(num_classes, dim, generator=g, dtype=torch.float64), dim=1)
    points = F.normalize(centres[labels] + 0.9 * torch.randn(n, dim, generator=g, dtype=torch.float64) / dim ** 0.5,
                         dim=1)
    return points @ points.T, labels


def _top_k_share(similarities: torch.Tensor, labels: torch.Tensor, k: int, exclude_self: bool = True,
                 largest: bool = True) -> torch.Tensor:
    """[n, k] bool: does each of the anchor's k most (or least) similar candidates share its label."""
    if exclude_self:
        fill = float("-inf") if largest else float("inf")
        similarities = similarities.masked_fill(torch.eye(len(labels), dtype=torch.bool), fill)
    neighbours = similarities.topk(k, dim=1, largest=largest).indices
    return labels[neighbours] == labels[:, None]


def reference_top_k_false_negative_rate(similarities: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over anchors of the fraction of the k most similar other images that share the anchor's label."""
    return _top_k_share(similarities, labels, k).double().mean()


def _false_negative_rate_mistakes(similarities: torch.Tensor, labels: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    """What common wrong versions return, each with the hint that fixes it."""
    n = len(labels)
    shares = _top_k_share(similarities, labels, k).double()                          # [n, k]
    others = torch.arange(n)[None, :].expand(n, n)[~torch.eye(n, dtype=torch.bool)].view(n, n - 1)
    first_k = labels[others[:, :k]] == labels[:, None]
    mistakes = {
        "The anchor is its own most similar image (s = 1) and is not a negative: exclude it, e.g. fill the "
        "diagonal with -inf before taking the top k.":
            _top_k_share(similarities, labels, k, exclude_self=False).double().mean(),
        "Rank the negatives by similarity (topk / argsort, descending) before taking k of them: the first k "
        "columns are just the first k images of the set.": first_k.double().mean(),
        "The hardest negatives are the MOST similar ones: sort in descending order (topk's default "
        "largest=True).": _top_k_share(similarities, labels, k, largest=False).double().mean(),
        "Divide each anchor's count of false negatives by k: the rate is a fraction of the k negatives, "
        "not a count.": shares.sum(dim=1).mean(),
        "Count false negatives per anchor (a fraction of its k), then average over anchors: this looks like "
        "the share of anchors with at least one false negative.": shares.any(dim=1).double().mean(),
        "Divide by k, the number of negatives you looked at, not by all N - 1 negatives.": shares.sum(dim=1).mean() / (n - 1),
    }
    if k + 1 <= n - 1:
        mistakes[f"Take exactly k = {k} negatives: this looks like k + 1."] = \
            _top_k_share(similarities, labels, k + 1).double().mean()
    if k >= 2:
        mistakes[f"Take exactly k = {k} negatives: this looks like k - 1."] = \
            _top_k_share(similarities, labels, k - 1).double().mean()
    return mistakes


def check_false_negative_rate(fn, cases=((30, 4, 8, (5, 1, 12)), (17, 3, 5, (3, 16)))) -> None:
    """fn(similarities [N, N], labels [N], k) -> the mean over anchors of the fraction of each anchor's k
    hardest negatives (most similar other images) that share its label."""
    for seed, (n, num_classes, dim, ks) in enumerate(cases):
        similarities, labels = _clustered_similarities(seed, n, num_classes, dim)
        for k in ks:
            context = f"N={n}, {num_classes} classes, k={k}"
            student = _result(call_student(fn, similarities.clone(), labels.clone(), k,
                                           name="top_k_false_negative_rate"), "top_k_false_negative_rate")
            if student.shape == (n,):
                raise ExerciseError(f"top_k_false_negative_rate ({context}) returned one value per anchor: "
                                    "average over the anchors and return a single number.")
            student = student.reshape(()) if student.numel() == 1 else student
            diagnose("top_k_false_negative_rate", student, reference_top_k_false_negative_rate(similarities, labels, k),
                     _false_negative_rate_mistakes(similarities, labels, k), context)
    passed("top_k_false_negative_rate", "matches the reference for 5 (N, k) settings, the anchor left out")


# ---------------------------------------------------------------------- InfoNCE's gradient weights

def _vectors(seed: int, n: int, dim: int) -> torch.Tensor:
    # Rows of very different norms, so forgetting to normalise changes every number.
    g = seeded(seed)
    return (torch.randn(n, dim, generator=g, dtype=torch.float64)
            * torch.rand(n, 1, generator=g, dtype=torch.float64).mul(3).add(0.3))


def reference_negative_weights(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                               temperature: float) -> torch.Tensor:
    """p_k = softmax([s_+, s_1..s_K] / tau)_k for k = 1..K, with cosine similarities s."""
    u = F.normalize(anchor, dim=0)
    similarities = torch.cat([(F.normalize(positive, dim=0) @ u)[None], F.normalize(negatives, dim=1) @ u])
    return torch.softmax(similarities / temperature, dim=0)[1:]


def _negative_weights_mistakes(anchor, positive, negatives, temperature) -> dict[str, torch.Tensor]:
    u = F.normalize(anchor, dim=0)
    unit_similarities = torch.cat([(F.normalize(positive, dim=0) @ u)[None], F.normalize(negatives, dim=1) @ u])
    raw_similarities = torch.cat([(positive @ anchor)[None], negatives @ anchor])
    return {
        "Divide the similarities by the temperature: this looks like tau = 1 (no temperature).":
            torch.softmax(unit_similarities, dim=0)[1:],
        "Divide the similarities by the temperature; don't multiply.":
            torch.softmax(unit_similarities * temperature, dim=0)[1:],
        "Apply the temperature once: it looks like you divided by it twice.":
            torch.softmax(unit_similarities / temperature ** 2, dim=0)[1:],
        "Put the positive in the softmax too: p = softmax([s_+, s_1, ..., s_K] / tau), then keep the K "
        "negatives' entries (they sum to 1 - p_+, not to 1).":
            torch.softmax(unit_similarities[1:] / temperature, dim=0),
        "Normalise the anchor, positive and negatives to unit length before the dot products: "
        "s is a cosine similarity.": torch.softmax(raw_similarities / temperature, dim=0)[1:],
        "Normalise the exponentials: divide exp(s_k / tau) by the sum over the positive AND the negatives "
        "(that is what softmax does).": torch.exp(unit_similarities[1:] / temperature),
    }


def check_negative_weights(fn, cases=((7, 6, 0.2), (12, 4, 0.5), (5, 16, 2.0))) -> None:
    """fn(anchor [D], positive [D], negatives [K, D], temperature) -> [K] gradient weights
    p_k = softmax([s_+, s_1..s_K] / tau)_k on the negatives."""
    for seed, (num_negatives, dim, temperature) in enumerate(cases):
        vectors = _vectors(seed, num_negatives + 2, dim)
        anchor, positive, negatives = vectors[0], vectors[1], vectors[2:]
        context = f"K={num_negatives}, D={dim}, temperature={temperature}"
        student = _result(call_student(fn, anchor.clone(), positive.clone(), negatives.clone(), temperature,
                                       name="negative_weights"), "negative_weights")
        if student.shape == (num_negatives + 1,):
            raise ExerciseError(f"negative_weights ({context}) returned K + 1 = {num_negatives + 1} values: the "
                                "softmax runs over the positive and the negatives, but return only the K "
                                "negatives' weights (drop the positive's entry).")
        diagnose("negative_weights", student, reference_negative_weights(anchor, positive, negatives, temperature),
                 _negative_weights_mistakes(anchor, positive, negatives, temperature), context)
    passed("negative_weights", "softmax of s / tau over the positive and the negatives, for 3 temperatures")
