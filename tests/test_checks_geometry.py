"""The notebook-02 checkers accept correct solutions, written several ways, and name each mistake."""
import pytest
import torch
import torch.nn.functional as F

from clcourse.checks import ExerciseError, check_false_negative_rate, check_negative_weights
from clcourse.checks.geometry import (_clustered_similarities, reference_negative_weights,
                                      reference_top_k_false_negative_rate)
from clcourse.negatives import false_negative_rate, hardest_negatives, negative_weights


# ---------------------------------------------------------------------- false-negative rate of the top k

def make_false_negative_rate(mask_self=True, ranked=True, largest=True, average="fraction", k_offset=0,
                             as_float=False, per_anchor=False):
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
            neighbours = torch.stack([torch.tensor([j for j in range(n) if j != i][:count]) for i in range(n)])
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
        others = sorted((j for j in range(len(labels)) if j != i), key=lambda j: -float(similarities[i, j]))
        total += sum(int(labels[j] == labels[i]) for j in others[:k]) / k
    return total / len(labels)


def test_reference_matches_a_loop_and_the_package():
    similarities, labels = _clustered_similarities(0, 30, 4, 8)
    points_seed = torch.Generator().manual_seed(3)
    for k in (1, 5, 12):
        assert reference_top_k_false_negative_rate(similarities, labels, k).item() == pytest.approx(
            loop_false_negative_rate(similarities, labels, k), abs=1e-12)
    # the package's two-step version (search, then count) on embeddings agrees with the matrix version
    z = F.normalize(torch.randn(40, 6, generator=points_seed, dtype=torch.float64), dim=1)
    labels = torch.randint(0, 3, (40,), generator=points_seed)
    ids = torch.arange(40)
    _, indices = hardest_negatives(z, z, 10, anchor_ids=ids, candidate_ids=ids)
    package = false_negative_rate(labels[indices], labels, [1, 4, 10])
    for k, value in zip((1, 4, 10), package):
        assert reference_top_k_false_negative_rate(z @ z.T, labels, k).item() == pytest.approx(value.item(), abs=1e-6)


def test_correct_false_negative_rates_pass(capsys):
    check_false_negative_rate(make_false_negative_rate())
    check_false_negative_rate(make_false_negative_rate(as_float=True))
    # another correct way: take k + 1 and drop the first column (the anchor, s = 1, always ranks first)
    check_false_negative_rate(lambda s, y, k: (y[s.topk(k + 1, dim=1).indices[:, 1:]] == y[:, None]).float().mean())
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


# ---------------------------------------------------------------------- InfoNCE's gradient weights

def make_negative_weights(normalise=True, temperature_mode="divide", include_positive=True, keep_positive=False,
                          normalise_exp=True):
    def negative_weights_student(anchor, positive, negatives, temperature):
        if normalise:
            anchor, positive, negatives = (F.normalize(anchor, dim=0), F.normalize(positive, dim=0),
                                           F.normalize(negatives, dim=1))
        similarities = torch.cat([(positive @ anchor)[None], negatives @ anchor])
        if not include_positive:
            similarities = similarities[1:]
        logits = {"divide": similarities / temperature, "multiply": similarities * temperature,
                  "none": similarities, "twice": similarities / temperature ** 2}[temperature_mode]
        weights = torch.softmax(logits, dim=0) if normalise_exp else logits.exp()
        if keep_positive or not include_positive:
            return weights
        return weights[1:]
    return negative_weights_student


def test_reference_weights_are_the_infonce_gradient_coefficients():
    """-d loss / d s_k = p_k / tau: the weights are the gradient of InfoNCE w.r.t. each negative's similarity."""
    generator = torch.Generator().manual_seed(1)
    anchor, positive = torch.randn(5, generator=generator, dtype=torch.float64), torch.randn(5, generator=generator,
                                                                                            dtype=torch.float64)
    negatives = torch.randn(9, 5, generator=generator, dtype=torch.float64)
    temperature = 0.3
    similarities = torch.cat([(F.normalize(positive, dim=0) @ F.normalize(anchor, dim=0))[None],
                              F.normalize(negatives, dim=1) @ F.normalize(anchor, dim=0)]).requires_grad_()
    loss = -torch.log_softmax(similarities / temperature, dim=0)[0]
    loss.backward()
    expected = similarities.grad[1:] * temperature
    assert torch.allclose(reference_negative_weights(anchor, positive, negatives, temperature), expected)
    assert torch.allclose(reference_negative_weights(anchor, positive, negatives, temperature),
                          negative_weights(anchor, positive, negatives, temperature).double(), atol=1e-6)


def test_correct_negative_weights_pass(capsys):
    check_negative_weights(make_negative_weights())
    check_negative_weights(lambda a, p, n, t: negative_weights(a, p, n, t))   # the package's float32 version
    assert capsys.readouterr().out.count("✓") == 2


@pytest.mark.parametrize("wrong, hint", [
    (dict(temperature_mode="none"), "no temperature"),
    (dict(temperature_mode="multiply"), "don't multiply"),
    (dict(temperature_mode="twice"), "twice"),
    (dict(include_positive=False), "Put the positive in the softmax"),
    (dict(normalise=False), "unit length"),
    (dict(normalise_exp=False), "Normalise the exponentials"),
    (dict(keep_positive=True), "drop the positive's entry"),
])
def test_negative_weights_mistakes_are_named(wrong, hint):
    with pytest.raises(ExerciseError, match=hint):
        check_negative_weights(make_negative_weights(**wrong))
