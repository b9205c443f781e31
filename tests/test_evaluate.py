"""Tests for clcourse.evaluate against slow, obviously-correct loop references; edges found by
tools/mutate.py; the kNN accuracy on a GPU."""
import inspect
import math

import pytest
import torch
import torch.nn as nn

import clcourse.evaluate as evaluate
from clcourse.evaluate import (
    ProbeResult,
    alignment,
    extract_features,
    knn_accuracy,
    knn_predict,
    linear_probe,
    per_class_accuracy,
    uniformity,
)


def random_problem(seed, n_train=60, n_test=25, dim=8, classes=5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n_train, dim, generator=g),
            torch.randint(0, classes, (n_train,), generator=g),
            torch.randn(n_test, dim, generator=g),
            torch.randint(0, classes, (n_test,), generator=g))


# ---------------------------------------------------------------- kNN

def knn_reference(train_features, train_labels, test_features, k, temperature):
    """One test point at a time: cosine similarity to every train point, the k largest, a vote
    exp(s / T) per neighbour, the class with the largest total (lowest index on ties)."""
    predictions = []
    for q in test_features.double():
        similarities = []
        for i, x in enumerate(train_features.double()):
            similarities.append((float(q @ x / (q.norm() * x.norm())), i))
        neighbours = sorted(similarities, reverse=True)[:k]
        votes = {}
        for s, i in neighbours:
            label = int(train_labels[i])
            votes[label] = votes.get(label, 0.0) + math.exp(s / temperature)
        best = max(votes.values())
        predictions.append(min(c for c, v in votes.items() if v == best))
    return predictions


@pytest.mark.parametrize("k, temperature", [(1, 0.1), (7, 0.1), (7, 0.5), (60, 1.0), (20, 0.02)])
def test_knn_matches_loop_reference(k, temperature):
    train_x, train_y, test_x, test_y = random_problem(seed=k)
    expected = knn_reference(train_x, train_y, test_x, k, temperature)
    assert knn_predict(train_x, train_y, test_x, k=k, temperature=temperature).tolist() == expected
    accuracy = knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=temperature)
    assert isinstance(accuracy, float)
    assert (accuracy
            == pytest.approx(sum(p == int(y) for p, y in zip(expected, test_y)) / len(test_y)))


def test_knn_weighting_by_hand():
    """Test point at angle 0. Neighbours (k=3): one class-1 point at 5 degrees, two class-0 points
    at +-40 degrees; a class-2 point at 180 degrees is not among them.
    T = 0.1: exp(cos 5 / 0.1) = 21,150 > 2 exp(cos 40 / 0.1) = 4,243 -> class 1 (closest wins).
    T = 1:   exp(cos 5) = 2.71 < 2 exp(cos 40) = 4.30 -> class 0 (majority wins)."""
    def point(degrees):
        return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]
    train_x = torch.tensor([point(5), point(40), point(-40), point(180)])
    train_y = torch.tensor([1, 0, 0, 2])
    test_x = torch.tensor([point(0)]) * 3.0            # the scale of a feature does not matter
    assert knn_predict(train_x, train_y, test_x, k=3, temperature=0.1).tolist() == [1]
    assert knn_predict(train_x, train_y, test_x, k=3, temperature=1.0).tolist() == [0]
    assert knn_accuracy(train_x, train_y, test_x, torch.tensor([1]), k=3, temperature=0.1) == 1.0
    assert knn_accuracy(train_x, train_y, test_x, torch.tensor([1]), k=3, temperature=1.0) == 0.0
    # k = 4 adds the class-2 point with weight exp(-1 / T): it does not change the vote.
    assert knn_predict(train_x, train_y, test_x, k=4, temperature=1.0).tolist() == [0]


def test_knn_chunking_does_not_change_predictions():
    train_x, train_y, test_x, _ = random_problem(seed=3, n_test=37)
    full = knn_predict(train_x, train_y, test_x, k=9, chunk_size=1024)
    for chunk_size in [1, 4, 36, 37]:
        assert torch.equal(knn_predict(train_x, train_y, test_x, k=9, chunk_size=chunk_size), full)


def test_knn_k1_returns_label_of_nearest_train_point():
    train_x, train_y, _, _ = random_problem(seed=4, n_train=40)
    g = torch.Generator().manual_seed(0)
    scales = torch.rand(40, 1, generator=g) + 0.5
    # rescaled, slightly moved copies
    test_x = train_x * scales + 1e-3 * torch.randn(40, 8, generator=g)
    assert torch.equal(knn_predict(train_x, train_y, test_x, k=1), train_y)
    assert knn_accuracy(train_x, train_y, test_x, train_y, k=1) == 1.0


def test_knn_under_autocast_matches_float32():
    train_x, train_y, test_x, test_y = random_problem(seed=6, n_train=200, n_test=50)
    expected = knn_predict(train_x, train_y, test_x, k=20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(knn_predict(train_x, train_y, test_x, k=20), expected)
        assert torch.equal(knn_predict(train_x.bfloat16(), train_y, test_x.bfloat16(), k=20),
                           knn_predict(train_x.bfloat16().float(), train_y,
                                       test_x.bfloat16().float(), k=20))


def test_knn_number_of_classes_from_largest_train_label():
    train_x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    train_y = torch.tensor([0, 7])
    assert knn_predict(train_x, train_y, torch.tensor([[0.1, 1.0]]), k=2).tolist() == [7]


def test_knn_tiny_temperature_does_not_overflow():
    """s / T reaches 1000, far beyond float32's exp range; the nearest neighbour's vote
    dominates."""
    train_x, train_y, test_x, _ = random_problem(seed=5)
    predictions = knn_predict(train_x, train_y, test_x, k=5, temperature=1e-3)
    assert predictions.tolist() == knn_reference(train_x, train_y, test_x, 1, 1.0)


@pytest.mark.parametrize("kwargs, argname", [
    (dict(k=61), "k must be at most the train-set size 60, got 61"),
    (dict(k=0), "k must be an integer >= 1"),
    (dict(k=2.0), "k must be an integer"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-0.1), "temperature"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_knn_bad_arguments(kwargs, argname):
    train_x, train_y, test_x, test_y = random_problem(seed=0)
    kwargs = {"k": 5, **kwargs}
    with pytest.raises(ValueError, match=argname):
        knn_accuracy(train_x, train_y, test_x, test_y, **kwargs)
    with pytest.raises(ValueError, match=argname):
        knn_predict(train_x, train_y, test_x, **kwargs)


def test_knn_bad_inputs():
    train_x, train_y, test_x, test_y = random_problem(seed=0, n_train=300)
    with pytest.raises(ValueError, match="train_labels has 299 entries but train_features has 300"):
        knn_accuracy(train_x, train_y[:-1], test_x, test_y)
    with pytest.raises(ValueError, match="test_labels has 24 entries but test_features has 25"):
        knn_accuracy(train_x, train_y, test_x, test_y[:-1])
    with pytest.raises(ValueError, match="test_features has dimension 7 but train_features has 8"):
        knn_accuracy(train_x, train_y, test_x[:, :7], test_y)
    with pytest.raises(ValueError, match="train_labels must be class indices >= 0"):
        knn_accuracy(train_x, train_y - 1, test_x, test_y)
    with pytest.raises(ValueError, match="train_labels must be a 1-D integer tensor"):
        knn_accuracy(train_x, train_y.float(), test_x, test_y)
    with pytest.raises(ValueError, match="train_features must be a floating-point tensor"):
        knn_accuracy(train_x[0], train_y, test_x, test_y)


@pytest.mark.cuda
def test_knn_accuracy_on_the_gpu_matches_the_cpu():
    generator = torch.Generator().manual_seed(0)
    train_features = torch.randn(2000, 64, generator=generator)
    test_features = torch.randn(300, 64, generator=generator)
    train_labels = torch.randint(0, 10, (2000,), generator=generator)
    test_labels = torch.randint(0, 10, (300,), generator=generator)
    on_cpu = knn_accuracy(train_features, train_labels, test_features, test_labels, k=50)
    on_gpu = knn_accuracy(train_features.cuda(), train_labels.cuda(), test_features.cuda(),
                          test_labels.cuda(), k=50)
    # a near-tie vote may fall the other way in another summation order
    assert abs(on_gpu - on_cpu) <= 1 / 300


# ---------------------------------------------------------------- linear probe

def separable_problem(seed, n_train=300, n_test=200, dim=10, classes=4):
    """Gaussian blobs with well-separated means, shifted and scaled unevenly per dimension."""
    g = torch.Generator().manual_seed(seed)
    means = 6.0 * torch.randn(classes, dim, generator=g)
    scale = torch.rand(dim, generator=g) * 10 + 0.1
    offset = torch.randn(dim, generator=g) * 50

    def sample(n):
        y = torch.arange(n) % classes
        return (means[y] + torch.randn(n, dim, generator=g)) * scale + offset, y
    return (*sample(n_train), *sample(n_test))


def test_linear_probe_separable_data():
    train_x, train_y, test_x, test_y = separable_problem(seed=0)
    result = linear_probe(train_x, train_y, test_x, test_y, epochs=30, batch_size=64)
    assert isinstance(result, ProbeResult) and isinstance(result.test_accuracy, float)
    assert result.train_accuracy >= 0.99 and result.test_accuracy >= 0.99
    # The returned classifier takes raw features and reproduces the reported accuracy.
    assert isinstance(result.classifier, nn.Linear) and result.classifier.out_features == 4
    with torch.no_grad():
        predictions = result.classifier(test_x).argmax(dim=1)
    assert (predictions == test_y).float().mean().item() == pytest.approx(result.test_accuracy)


def test_linear_probe_random_labels_is_at_chance():
    g = torch.Generator().manual_seed(1)
    train_x, test_x = torch.randn(2000, 8, generator=g), torch.randn(2000, 8, generator=g)
    train_y, test_y = (torch.randint(0, 4, (2000,), generator=g),
                       torch.randint(0, 4, (2000,), generator=g))
    result = linear_probe(train_x, train_y, test_x, test_y, epochs=5, batch_size=256)
    assert abs(result.test_accuracy - 0.25) < 0.04


def test_linear_probe_is_deterministic_and_does_not_touch_inputs():
    train_x, train_y, test_x, test_y = separable_problem(seed=2, n_train=100)
    train_x.requires_grad_()
    snapshot = train_x.detach().clone()
    first = linear_probe(train_x, train_y, test_x, test_y, epochs=3, batch_size=16, seed=5)
    with torch.no_grad():                              # works inside no_grad too
        second = linear_probe(train_x, train_y, test_x, test_y, epochs=3, batch_size=16, seed=5)
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    assert torch.equal(first.classifier.bias, second.classifier.bias)
    other_seed = linear_probe(train_x, train_y, test_x, test_y, epochs=3, batch_size=16, seed=6)
    assert not torch.equal(first.classifier.weight, other_seed.classifier.weight)
    assert train_x.grad is None and torch.equal(train_x.detach(), snapshot)


@pytest.mark.parametrize("kwargs, argname", [
    (dict(epochs=0), "epochs"), (dict(lr=0.0), "lr"), (dict(lr=-1.0), "lr"),
    (dict(weight_decay=-1e-4), "weight_decay"), (dict(batch_size=0), "batch_size"),
    (dict(seed=-1), "seed"),
])
def test_linear_probe_bad_arguments(kwargs, argname):
    train_x, train_y, test_x, test_y = separable_problem(seed=0, n_train=20, n_test=8)
    with pytest.raises(ValueError, match=argname):
        linear_probe(train_x, train_y, test_x, test_y, **kwargs)


def test_linear_probe_bad_inputs():
    train_x, train_y, test_x, test_y = separable_problem(seed=0, n_train=20, n_test=8)
    with pytest.raises(ValueError, match="train_labels has 19 entries"):
        linear_probe(train_x, train_y[1:], test_x, test_y)
    with pytest.raises(ValueError, match="test_labels has 7 entries"):
        linear_probe(train_x, train_y, test_x, test_y[1:])
    with pytest.raises(ValueError, match="test_features has dimension 9 but train_features has 10"):
        linear_probe(train_x, train_y, test_x[:, 1:], test_y)
    with pytest.raises(ValueError, match="train_labels must be class indices >= 0"):
        linear_probe(train_x, train_y - 1, test_x, test_y)
    with pytest.raises(ValueError, match="test_features must be a floating-point tensor"):
        linear_probe(train_x, train_y, test_x.long(), test_y)


# ---------------------------------------------------------------- alignment and uniformity

def unit_rows(z):
    return [row / row.norm() for row in z.double()]


def alignment_reference(z1, z2, alpha):
    pairs = list(zip(unit_rows(z1), unit_rows(z2)))
    return sum(float((a - b).norm()) ** alpha for a, b in pairs) / len(pairs)


def uniformity_reference(z, t):
    """log of the mean of exp(-t ||u_i - u_j||^2) over ordered pairs i != j."""
    u = unit_rows(z)
    terms = [math.exp(-t * float((u[i] - u[j]).norm()) ** 2) for i in range(len(u))
             for j in range(len(u)) if i != j]
    return math.log(sum(terms) / len(terms))


@pytest.mark.parametrize("alpha", [1, 2, 3.5])
def test_alignment_matches_loop(alpha):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(9, 5, generator=g), torch.randn(9, 5, generator=g)
    value = alignment(z1, z2, alpha=alpha)
    assert value.dim() == 0
    assert value.item() == pytest.approx(alignment_reference(z1, z2, alpha), rel=1e-5)


def test_alignment_known_values():
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    assert alignment(z, 2.5 * z).item() == pytest.approx(0.0, abs=1e-6)     # same direction
    one, minus_three = torch.tensor([[1.0]]), torch.tensor([[-3.0]])         # antipodal in 1-D
    assert alignment(one, minus_three).item() == pytest.approx(4.0)
    assert alignment(one, minus_three, alpha=1).item() == pytest.approx(2.0)


@pytest.mark.parametrize("t", [0.5, 2.0, 5.0])
def test_uniformity_matches_loop_for_every_chunk_size(t):
    z = torch.randn(11, 3, generator=torch.Generator().manual_seed(2))
    expected = uniformity_reference(z, t)
    for chunk_size in [1, 2, 5, 11, 1024]:
        value = uniformity(z, t=t, chunk_size=chunk_size)
        assert value.dim() == 0
        assert value.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_alignment_and_uniformity_are_float32_under_autocast():
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(30, 16, generator=g), torch.randn(30, 16, generator=g)
    expected = (alignment(z1, z2), uniformity(z1, chunk_size=7))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values = (alignment(z1, z2), uniformity(z1, chunk_size=7))
    for value, reference in zip(values, expected):
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, reference)


def test_uniformity_gradient_matches_reference():
    z = torch.randn(10, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    chunked = z.float().clone().requires_grad_()
    uniformity(chunked, t=2, chunk_size=3).backward()
    reference = z.clone().requires_grad_()
    u = reference / reference.norm(dim=1, keepdim=True)
    squared = ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1)
    off_diagonal = ~torch.eye(10, dtype=torch.bool)
    torch.log(torch.exp(-2 * squared[off_diagonal]).mean()).backward()
    torch.testing.assert_close(chunked.grad.double(), reference.grad, rtol=1e-4, atol=1e-5)


def test_uniformity_known_values():
    # antipodal: exp(-2 * 4)
    assert uniformity(torch.tensor([[2.0], [-0.5]]), t=2).item() == pytest.approx(-8.0)
    # all identical
    assert uniformity(torch.ones(5, 3), t=2).item() == pytest.approx(0.0, abs=1e-6)
    for n in [3, 8, 13]:
        angles = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
        circle = torch.stack([angles.cos(), angles.sin()], dim=1)
        # Every point sees the same distances 2 - 2 cos(2 pi m / n), m = 1 .. n-1.
        expected = math.log(sum(math.exp(-2 * (2 - 2 * math.cos(2 * math.pi * m / n)))
                                for m in range(1, n)) / (n - 1))
        assert uniformity(circle, t=2, chunk_size=2).item() == pytest.approx(expected, rel=1e-5)


def test_alignment_and_uniformity_bad_inputs():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="alpha"):
        alignment(z, z, alpha=0)
    with pytest.raises(ValueError, match="z1 and z2 must have the same shape"):
        alignment(z, z[:3])
    with pytest.raises(ValueError, match="z2 must be a floating-point tensor"):
        alignment(z, z[0])
    with pytest.raises(ValueError, match="z must have at least 2 rows"):
        uniformity(z[:1])
    with pytest.raises(ValueError, match="t must be"):
        uniformity(z, t=0)
    with pytest.raises(ValueError, match="chunk_size"):
        uniformity(z, chunk_size=0)
    with pytest.raises(ValueError, match="z must be a floating-point tensor"):
        uniformity(z.long())


# ---------------------------------------------------------------- feature extraction

class RecordingBackbone(nn.Module):
    """Conv -> BatchNorm -> pooled features, remembering the batches it saw."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                    nn.AdaptiveAvgPool2d(1), nn.Flatten())
        # eval mode must use these, not batch stats
        self.layers[1].running_mean.uniform_(-0.5, 0.5)
        self.layers[1].running_var.uniform_(0.5, 2.0)
        self.seen = []

    def forward(self, x):
        self.seen.append((x.dtype, x.shape[0], float(x.max())))
        return self.layers(x)


def test_extract_features_batch_size_invariant_and_in_eval_mode():
    images = torch.randint(0, 256, (10, 3, 6, 6), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    backbone = RecordingBackbone()
    state = {name: value.clone() for name, value in backbone.state_dict().items()}
    with torch.no_grad():
        expected = backbone.eval()(images.float() / 255)
    backbone.train()
    for batch_size in [1, 3, 10, 1024]:
        backbone.seen.clear()
        features = extract_features(backbone, images, batch_size=batch_size)
        assert (features.dtype == torch.float32 and features.shape == (10, 4)
                and not features.requires_grad)
        torch.testing.assert_close(features, expected)
        # one batch at a time
        assert max(size for _, size, _ in backbone.seen) == min(batch_size, 10)
        assert all(dtype == torch.float32 and top <= 1.0 for dtype, _, top in backbone.seen)
    torch.testing.assert_close(extract_features(backbone, images.float() / 255, batch_size=4),
                               expected)
    # BatchNorm statistics untouched
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_extract_features_restores_every_module_mode():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    backbone = RecordingBackbone()
    for make_mode in [lambda m: m.train(), lambda m: m.eval(),
                      lambda m: (m.train(), m.layers[1].eval())]:
        make_mode(backbone)
        before = [module.training for module in backbone.modules()]
        extract_features(backbone, images)
        assert [module.training for module in backbone.modules()] == before


def test_extract_features_restores_mode_after_an_error():
    class Failing(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")
    backbone = Failing().train()
    with pytest.raises(RuntimeError, match="boom"):
        extract_features(backbone, torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    assert backbone.training


def test_extract_features_bad_inputs():
    backbone = RecordingBackbone()
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(backbone, images, batch_size=0)
    with pytest.raises(ValueError,
                       match=r"images must be .* of shape \[N, 3, H, W\] with N >= 1, got shape "
                             r"\(3, 4, 4\)"):
        extract_features(backbone, images[0])
    with pytest.raises(ValueError,
                       match=r"images must be .* with N >= 1, got shape \(0, 3, 4, 4\)"):
        extract_features(backbone, images[:0])
    with pytest.raises(ValueError,
                       match="images must be a uint8 or floating-point tensor.*dtype torch.int32"):
        extract_features(backbone, images.int())
    with pytest.raises(ValueError, match="backbone must be a torch.nn.Module"):
        extract_features(lambda x: x, images)


# ---------------------------------------------------------------- per-class accuracy

def test_per_class_accuracy_matches_a_loop_over_classes():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (200,), generator=generator)
    predictions = torch.where(torch.rand(200, generator=generator) < 0.6, labels,
                              torch.randint(0, 6, (200,), generator=generator))
    expected = [(predictions[labels == c] == c).float().mean() for c in range(6)]
    assert torch.allclose(per_class_accuracy(predictions, labels), torch.stack(expected))
    with_empty_class = per_class_accuracy(predictions, labels, num_classes=8)
    assert with_empty_class.shape == (8,) and torch.isnan(with_empty_class[6:]).all()
    one_class = per_class_accuracy(torch.tensor([0, 0, 0]), torch.tensor([0, 0, 0]), num_classes=1)
    assert one_class.dtype == torch.float32 and torch.equal(one_class, torch.tensor([1.0]))


def test_per_class_accuracy_bad_inputs():
    with pytest.raises(ValueError, match="predictions must be a 1-D integer tensor"):
        per_class_accuracy(torch.rand(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels has 3 entries but predictions has 4"):
        per_class_accuracy(torch.zeros(4, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError,
                       match=r"labels must be class indices in \[0, 2\] \(num_classes=3\), got "
                             r"labels from 0 to 5"):
        per_class_accuracy(torch.tensor([0, 1]), torch.tensor([0, 5]), num_classes=3)


# ---------------------------------------------------------------- edges found by tools/mutate.py

def signal_beside_noise(seed, n=200):
    """Two classes told apart only by the last dimension (1e-3 +- 1e-4); the 4 others are noise of
    spread 100 around 50. Standardised, (x - mean) / std, the signal is at the scale of the noise;
    scaled by std instead, its gradient falls below Adam's epsilon and the probe cannot learn it."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    noise = 50 + 100 * torch.randn(n, 4, generator=g)
    signal = 1e-3 + 1e-4 * (2 * labels - 1 + 0.2 * torch.randn(n, generator=g))
    return torch.cat([noise, signal[:, None]], dim=1), labels


def test_probe_finds_a_low_variance_signal_beside_high_variance_noise():
    train_x, train_y = signal_beside_noise(0)
    test_x, test_y = signal_beside_noise(1)
    result = linear_probe(train_x, train_y, test_x, test_y, epochs=10, batch_size=32)
    assert result.train_accuracy > 0.97 and result.test_accuracy > 0.97


def test_probe_lr_follows_one_cosine_over_all_steps(monkeypatch):
    used = []
    step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    train_x, train_y = signal_beside_noise(0, n=10)
    # 3 x ceil(10 / 4) = 9 steps
    linear_probe(train_x, train_y, train_x, train_y, epochs=3, lr=0.1, batch_size=4)
    expected = [0.05 * (1 + math.cos(math.pi * t / 9)) for t in range(9)]
    assert used == pytest.approx(expected)


def test_probe_argument_minimums_are_accepted_and_infinite_weight_decay_is_not():
    x, y = signal_beside_noise(0, n=6)
    result = linear_probe(x, y, x, y, epochs=1, batch_size=1, weight_decay=0.0, seed=0)
    assert 0 <= result.test_accuracy <= 1
    with pytest.raises(ValueError, match=r"weight_decay must be in \[0.0, inf\), got inf"):
        linear_probe(x, y, x, y, weight_decay=math.inf)


class Recorder(nn.Module):
    """A backbone that records the dtype its layer computes in (autocast's choice) and the batch
    sizes."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3 * 2 * 2, 4)
        self.dtypes, self.sizes = [], []

    def forward(self, x):
        out = self.layer(x.flatten(1))
        self.dtypes.append(out.dtype)
        self.sizes.append(len(x))
        return out


@pytest.mark.parametrize("amp_dtype", [None, torch.bfloat16])
def test_extract_features_autocasts_exactly_when_the_device_has_an_autocast_type(
        monkeypatch, amp_dtype):
    # a GPU's answer, on the CPU
    monkeypatch.setattr(evaluate, "autocast_dtype", lambda device: amp_dtype)
    backbone = Recorder()
    images = torch.randint(0, 256, (5, 3, 2, 2), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    features = extract_features(backbone, images, batch_size=1)
    assert backbone.dtypes == [amp_dtype or torch.float32] * 5 and backbone.sizes == [1] * 5
    assert features.dtype == torch.float32 and features.shape == (5, 4)


def test_documented_defaults():
    def defaults(function):
        return {name: p.default for name, p in inspect.signature(function).parameters.items()
                if p.default is not inspect.Parameter.empty}

    assert defaults(extract_features) == dict(batch_size=1024)
    assert (defaults(knn_predict) == defaults(knn_accuracy)
            == dict(k=200, temperature=0.1, chunk_size=1024))
    assert defaults(linear_probe) == dict(epochs=100, lr=3e-2, weight_decay=1e-5, batch_size=1024,
                                          seed=0)
    assert (defaults(alignment) == dict(alpha=2)
            and defaults(uniformity) == dict(t=2, chunk_size=1024))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_features_are_measured_in_float32(dtype):
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(30, 16, generator=g).to(dtype), torch.randn(30, 16, generator=g).to(dtype)
    value = alignment(z1, z2)
    assert value.dtype == torch.float32 and torch.equal(value, alignment(z1.float(), z2.float()))
    value = uniformity(z1, chunk_size=7)
    assert value.dtype == torch.float32 and torch.equal(value, uniformity(z1.float(), chunk_size=7))
    train_x, test_x = (torch.randn(40, 8, generator=g).to(dtype),
                       torch.randn(20, 8, generator=g).to(dtype))
    train_y, test_y = torch.arange(40) % 3, torch.arange(20) % 3
    probe = linear_probe(train_x, train_y, test_x, test_y, epochs=5)
    same = linear_probe(train_x.float(), train_y, test_x.float(), test_y, epochs=5)
    assert (probe.test_accuracy, probe.train_accuracy) == (same.test_accuracy, same.train_accuracy)
    assert torch.equal(probe.classifier.weight, same.classifier.weight)
