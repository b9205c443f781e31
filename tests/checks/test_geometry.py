"""The notebook-02 checkers accept correct solutions, written several
ways, and name each mistake."""
import pytest
import torch
import torch.nn.functional as F

from clcourse.checks import ExerciseError, check_anchor_gradient, check_false_negative_rate
from clcourse.checks.geometry import (
    _clustered_similarities,
    reference_anchor_gradient,
    reference_top_k_false_negative_rate,
)
from clcourse.negatives import false_negative_rate, hardest_negatives, negative_weights

# ----------------------------------------------------------------- false-negative rate of the top k

def make_false_negative_rate(mask_self=True, ranked=True, largest=True, average="fraction",
                             k_offset=0, as_float=False, per_anchor=False):
    """A student's top_k_false_negative_rate, correct by default, with one mistake switched on."""
    def top_k_false_negative_rate(similarities, labels, k):
        n = len(labels)
        if mask_self:
            fill = float("-inf") if largest else float("inf")
            similarities = similarities.masked_fill(torch.eye(n, dtype=torch.bool), fill)
        count = k + k_offset
        if ranked:
            neighbours = similarities.topk(count, dim=1, largest=largest).indices
        else:   # the first `count` other images, whatever their similarity
            neighbours = torch.stack([torch.tensor([j for j in range(n) if j != i][:count])
                                      for i in range(n)])
        shares = (labels[neighbours] == labels[:, None]).float()
        if average == "count":
            per_row = shares.sum(dim=1)
        elif average == "any":
            per_row = shares.amax(dim=1)
        elif average == "all_negatives":
            per_row = shares.sum(dim=1) / (n - 1)
        else:
            per_row = shares.mean(dim=1)
        if per_anchor:
            return per_row
        return per_row.mean().item() if as_float else per_row.mean()
    return top_k_false_negative_rate


def loop_false_negative_rate(similarities, labels, k):
    """Obviously correct: for each anchor, sort the other images by similarity and count."""
    total = 0.0
    for i in range(len(labels)):
        others = sorted((j for j in range(len(labels)) if j != i),
                        key=lambda j: -float(similarities[i, j]))
        total += sum(int(labels[j] == labels[i]) for j in others[:k]) / k
    return total / len(labels)


def test_reference_matches_a_loop_and_the_package():
    similarities, labels = _clustered_similarities(0, 30, 4, 8)
    points_seed = torch.Generator().manual_seed(3)
    for k in (1, 5, 12):
        assert reference_top_k_false_negative_rate(similarities, labels, k).item() == pytest.approx(
            loop_false_negative_rate(similarities, labels, k), abs=1e-12)
    # the package's two-step version (search, then count) on embeddings
    # agrees with the matrix version
    z = F.normalize(torch.randn(40, 6, generator=points_seed, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 3, (40,), generator=points_seed)
    ids = torch.arange(40)
    _, indices = hardest_negatives(z, z, 10, anchor_ids=ids, candidate_ids=ids)
    package = false_negative_rate(labels[indices], labels, [1, 4, 10])
    for k, value in zip((1, 4, 10), package):
        assert reference_top_k_false_negative_rate(z @ z.T, labels, k).item() == \
            pytest.approx(value.item(), abs=1e-6)


def test_correct_false_negative_rates_pass(capsys):
    check_false_negative_rate(make_false_negative_rate())
    check_false_negative_rate(make_false_negative_rate(as_float=True))
    # another correct way: take k + 1 and drop the first column (the
    # anchor, s = 1, always ranks first)
    check_false_negative_rate(
        lambda s, y, k: (y[s.topk(k + 1, dim=1).indices[:, 1:]] == y[:, None]).float().mean())
    check_false_negative_rate(lambda s, y, k: loop_false_negative_rate(s, y, k))
    assert capsys.readouterr().out.count("✓") == 4


@pytest.mark.parametrize("wrong, hint", [
    (dict(mask_self=False), "its own most similar image"),
    (dict(ranked=False), "Rank the negatives by similarity"),
    (dict(largest=False), "MOST similar"),
    (dict(average="count"), "not a count"),
    (dict(average="any"), "at least one false negative"),
    (dict(average="all_negatives"), "not by all N - 1"),
    (dict(k_offset=1), "k \\+ 1"),
    (dict(k_offset=-1), "k - 1"),
    (dict(per_anchor=True), "one value per anchor"),
])
def test_false_negative_rate_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        check_false_negative_rate(make_false_negative_rate(**wrong))


def test_false_negative_rate_other_errors():
    with pytest.raises(ExerciseError, match="does not match the reference"):
        check_false_negative_rate(lambda s, y, k: torch.tensor(0.5))
    with pytest.raises(ExerciseError, match="must return a torch.Tensor"):
        check_false_negative_rate(lambda s, y, k: "0.5")

    def stub(similarities, labels, k):
        raise NotImplementedError
    with pytest.raises(ExerciseError, match="not implemented"):
        check_false_negative_rate(stub)


# ------------------------------------------------------------- InfoNCE's gradient w.r.t. the anchor

def make_anchor_gradient(mistake=None):
    """A student's anchor_gradient, the formula written out, correct by default,
    with one mistake switched on."""
    def anchor_gradient(u, u_positive, u_negatives, temperature):
        similarities = torch.cat([(u @ u_positive)[None], u_negatives @ u])
        tau = {"no_temperature": 1.0, "twice": temperature ** 2}.get(mistake, temperature)
        p = torch.softmax(similarities / temperature, dim=0)
        weights = p[1:]
        if mistake == "softmax_over_negatives":
            weights = torch.softmax(similarities[1:] / temperature, dim=0)
        elif mistake == "unnormalised":
            weights = torch.exp(similarities[1:] / temperature)
        pull = {"forgot_p_positive": 1.0, "p_positive": p[0]}.get(mistake, 1 - p[0])
        push = 0 * u if mistake == "no_negatives" else (weights[:, None] * u_negatives).sum(0)
        gradient = (push - pull * u_positive) / tau
        if mistake == "weights_only":
            return weights
        return -gradient if mistake == "sign" else gradient
    return anchor_gradient


def loop_anchor_gradient(u, u_positive, u_negatives, temperature):
    """Obviously correct: central finite differences of the loss, one coordinate at a time."""
    def loss(v):
        logits = torch.cat([(v @ u_positive)[None], u_negatives @ v]) / temperature
        return -torch.log_softmax(logits, dim=0)[0]
    step = 1e-6
    return torch.stack([(loss(u + step * e) - loss(u - step * e)) / (2 * step)
                        for e in torch.eye(len(u), dtype=u.dtype)])


def test_reference_anchor_gradient_matches_finite_differences_and_the_package_weights():
    generator = torch.Generator().manual_seed(1)
    vectors = F.normalize(torch.randn(9, 5, generator=generator, dtype=torch.float64), dim=1)
    u, u_positive, u_negatives = vectors[0], vectors[1], vectors[2:]
    gradient = reference_anchor_gradient(u, u_positive, u_negatives, 0.3)
    assert torch.allclose(gradient, loop_anchor_gradient(u, u_positive, u_negatives, 0.3),
                          atol=1e-6)
    # the push on each negative is the package's InfoNCE weight p_k, over tau
    # they sum to 1 - p+, the pull's weight
    p = negative_weights(u, u_positive, u_negatives, 0.3).double()
    assert torch.allclose(gradient,
                          ((p[:, None] * u_negatives).sum(0) - p.sum() * u_positive) / 0.3,
                          atol=1e-5)


def test_correct_anchor_gradients_pass(capsys):
    check_anchor_gradient(make_anchor_gradient())
    # another correct way: sum over all candidates (positive included) minus the positive
    def all_candidates(u, u_positive, u_negatives, temperature):
        candidates = torch.cat([u_positive[None], u_negatives])
        p = torch.softmax(candidates @ u / temperature, dim=0)
        return ((p[:, None] * candidates).sum(0) - u_positive) / temperature
    check_anchor_gradient(all_candidates)
    assert capsys.readouterr().out.count("✓") == 2


@pytest.mark.parametrize("mistake, hint", [
    ("no_temperature", "factor 1/τ"),
    ("twice", "1/τ²"),
    ("sign", "sign is flipped"),
    ("softmax_over_negatives", "positive is in the softmax too"),
    ("unnormalised", "Normalise the weights"),
    ("forgot_p_positive", r"not -u\+ / τ"),
    ("p_positive", r"1 - p\+, not p\+"),
    ("no_negatives", "Keep the negatives"),
    ("weights_only", "Return the gradient itself"),
])
def test_anchor_gradient_mistakes_are_named(mistake, hint):
    with pytest.raises(ExerciseError, match=hint):
        check_anchor_gradient(make_anchor_gradient(mistake))


def test_unimplemented_anchor_gradient_says_so():
    def stub(u, u_positive, u_negatives, temperature):
        raise NotImplementedError
    with pytest.raises(ExerciseError, match="not implemented"):
        check_anchor_gradient(stub)
