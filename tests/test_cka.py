"""Linear CKA against its closed form, the unbiased HSIC against the U-statistic it is, minibatch
CKA, layer outputs through forward hooks, layer-wise CKA and probes of small networks, and bad
input."""
import itertools

import pytest
import torch
import torch.nn as nn

from clcourse.cka import (
    CKAResult,
    MinibatchCKA,
    default_layers,
    feature_attack,
    gram,
    hsic_unbiased,
    layer_cka,
    layer_probes,
    layer_redundancy,
    linear_cka,
    minibatch_cka,
    minibatches,
    pooled_layer_features,
    record_layers,
    require_layers,
    short_layer_names,
)
from clcourse.evaluate import linear_probe
from clcourse.models import Backbone, SmallCNN, build_backbone


def features(seed, n, p, q, dtype=torch.float64):
    """x [n, p] and y [n, q] that share a few directions, with non-zero means."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(n, 3, generator=g, dtype=dtype)
    x = (shared @ torch.randn(3, p, generator=g, dtype=dtype)
         + torch.randn(n, p, generator=g, dtype=dtype) + 1.0)
    y = (torch.relu(shared @ torch.randn(3, q, generator=g, dtype=dtype))
         + torch.randn(n, q, generator=g, dtype=dtype))
    return x, y


def closed_form_cka(x, y):
    """HSIC with an explicit centring matrix H = I - 11^T / n:
    tr(KHLH) / sqrt(tr(KHKH) tr(LHLH))."""
    x, y = x.double(), y.double()
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - torch.ones(n, n, dtype=torch.float64) / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: torch.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l) / torch.sqrt(hsic(k, k) * hsic(l, l))


def small_network(width=4, seed=0):
    torch.manual_seed(seed)
    return Backbone(SmallCNN(width=width))


def images(n, seed=0, size=16):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- linear CKA and the unbiased HSIC

# n > p, q: the feature-space form
@pytest.mark.parametrize("n, p, q, dtype", [(50, 5, 8, torch.float64),
                                            (12, 30, 20, torch.float64),   # n < p, q: the Gram form
                                            (40, 7, 7, torch.float32)])
def test_linear_cka_matches_the_closed_form_with_explicit_centring_matrices(n, p, q, dtype):
    x, y = features(0, n, p, q, dtype)
    value = linear_cka(x, y)
    assert value.dtype == torch.float64 and value.dim() == 0
    assert torch.allclose(value, closed_form_cka(x, y), atol=1e-6 if dtype == torch.float32
                          else 1e-12)
    assert 0 < value < 1


def test_unbiased_hsic_is_the_u_statistic_over_distinct_quadruples():
    x, y = features(1, 7, 3, 4)
    k, l = x @ x.T, y @ y.T
    terms = [k[u, v] * l[u, v] + k[u, v] * l[s, t] - 2 * k[u, v] * l[u, s]
             for u, v, s, t in itertools.permutations(range(7), 4)]
    assert torch.allclose(hsic_unbiased(k, l), torch.stack(terms).mean(), atol=1e-10)


def test_unbiased_hsic_ignores_a_shift_of_the_features_and_gram_centres_them():
    x, y = features(2, 9, 4, 5)
    shifted = x + torch.randn(4, dtype=torch.float64) * 10
    assert torch.allclose(hsic_unbiased(x @ x.T, y @ y.T),
                          hsic_unbiased(shifted @ shifted.T, y @ y.T), atol=1e-9)
    centred = gram(shifted)
    assert centred.dtype == torch.float32 and centred.shape == (9, 9)
    assert torch.allclose(centred.sum(0), torch.zeros(9), atol=1e-3)
    assert torch.allclose(hsic_unbiased(centred.double(), y @ y.T), hsic_unbiased(x @ x.T, y @ y.T),
                          rtol=1e-5)


@pytest.mark.parametrize("estimate", [linear_cka, lambda x, y: linear_cka(x, y, unbiased=True),
                                      lambda x, y: minibatch_cka(x, y, batch_size=16)])
def test_cka_of_a_representation_with_itself_is_one(estimate):
    x, _ = features(3, 64, 10, 2)
    assert torch.allclose(estimate(x, x), torch.ones((), dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_is_invariant_to_orthogonal_transforms_isotropic_scaling_and_shifts(unbiased):
    x, y = features(4, 60, 12, 9)
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=torch.float64))
    reference = linear_cka(x, y, unbiased)
    for transformed in (x @ q, 7.5 * x, 0.01 * x @ q, x + 3.0):
        assert torch.allclose(linear_cka(transformed, y, unbiased), reference, atol=1e-10)
    assert torch.allclose(linear_cka(x @ q, y @ q[:9, :9].T, unbiased),
                          linear_cka(x, y @ q[:9, :9].T, unbiased))


def test_cka_is_not_invariant_to_arbitrary_invertible_linear_maps():
    x, y = features(5, 200, 10, 6)
    g = torch.Generator().manual_seed(1)
    # invertible, not orthogonal
    stretch = torch.diag(torch.logspace(0, 2, 10, dtype=torch.float64))
    mixing = torch.randn(10, 10, generator=g, dtype=torch.float64)
    assert torch.linalg.matrix_rank(mixing) == 10
    assert linear_cka(x, x @ stretch) < 0.8
    assert linear_cka(x, x @ mixing) < 0.9
    assert abs(linear_cka(x @ stretch, y) - linear_cka(x, y)) > 0.05


def test_minibatch_cka_with_one_batch_is_the_unbiased_full_batch_value():
    x, y = features(6, 100, 20, 30)
    assert torch.allclose(minibatch_cka(x, y, batch_size=100), linear_cka(x, y, unbiased=True),
                          atol=1e-6)
    assert torch.allclose(minibatch_cka(x, y, batch_size=1000), linear_cka(x, y, unbiased=True),
                          atol=1e-6)


def test_minibatch_cka_converges_to_the_full_batch_value_as_the_batches_cover_the_data():
    errors = {covered: [] for covered in (1, 4, 16, 64)}
    for seed in range(6):
        x, y = features(10 + seed, 64 * 64, 16, 12, torch.float32)
        full = linear_cka(x, y)
        for covered in errors:         # the first `covered` batches of 64 examples
            rows = 64 * covered
            errors[covered].append(
                float((minibatch_cka(x[:rows], y[:rows], batch_size=64) - full).abs()))
    mean_error = {covered: sum(values) / len(values) for covered, values in errors.items()}
    assert mean_error[1] > mean_error[4] > mean_error[16] > mean_error[64]
    assert max(errors[64]) < 0.01 and mean_error[1] > 5 * mean_error[64]


def test_unbiased_estimate_removes_the_small_sample_bias_of_wide_features():
    # Independent representations: population CKA 0. With 50 examples of 2,000 features the biased
    # estimate says they are almost the same; the unbiased one does not.
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 2000, generator=g), torch.randn(50, 2000, generator=g)
    assert linear_cka(x, y) > 0.9
    assert (abs(linear_cka(x, y, unbiased=True)) < 0.1
            and abs(minibatch_cka(x, y, batch_size=25)) < 0.1)


def test_minibatches_are_nearly_equal_consecutive_and_have_at_least_four_rows():
    for n, size in [(10, 4), (1001, 500), (7, 100), (9, 4), (10_000, 500)]:
        bounds = minibatches(n, size)
        sizes = [stop - start for start, stop in bounds]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert min(sizes) >= 4 and max(sizes) - min(sizes) <= 1 and max(sizes) <= max(size, 7)
    assert len(minibatches(10_000, 500)) == 20 and len(minibatches(9, 4)) == 2


def test_minibatch_accumulator_with_a_given_hsic_matches_the_vectorised_one():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(3, 8, 6, generator=g), torch.randn(2, 8, 5, generator=g))
               for _ in range(3)]
    vectorised, looped = MinibatchCKA("abc", "de"), MinibatchCKA("abc", "de", hsic=hsic_unbiased)
    calls = []

    def counted(k, l):
        calls.append(k.dtype)
        return hsic_unbiased(k, l)

    counting = MinibatchCKA("abc", "de", hsic=counted)
    for xa, xb in batches:
        grams_a, grams_b = torch.stack([gram(x) for x in xa]), torch.stack([gram(x) for x in xb])
        for accumulator in (vectorised, looped, counting):
            accumulator.update(grams_a, grams_b)
    assert vectorised.value().shape == (3, 2)
    assert torch.allclose(vectorised.value(), looped.value(), atol=1e-12)
    # pairs + self terms, float64
    assert len(calls) == 3 * (3 * 2 + 3 + 2) and set(calls) == {torch.float64}


# ---------------------------------------------------------------- layers and hooks

def test_default_layers_are_the_residual_blocks_and_the_pooled_output():
    assert default_layers(build_backbone("resnet18")) == [
        "net.layer1.0", "net.layer1.1", "net.layer2.0", "net.layer2.1", "net.layer3.0",
        "net.layer3.1", "net.layer4.0", "net.layer4.1", "net.pool"]
    assert default_layers(small_network()) == ["net.layer1", "net.layer2", "net.layer3", "net.pool"]
    wrapped = nn.Sequential(nn.Identity(), small_network())
    assert default_layers(wrapped) == ["1.net.layer1", "1.net.layer2", "1.net.layer3", "1.net.pool"]
    assert short_layer_names(default_layers(wrapped)) == ["layer1", "layer2", "layer3", "pool"]
    assert (short_layer_names(["net.layer1.0", "net.layer1.1", "net.pool"])
            == ["layer1.0", "layer1.1", "pool"])


def snapshot(network):
    return ({name: value.clone() for name, value in network.state_dict().items()},
            [module.training for module in network.modules()],
            [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in network.modules()])


def assert_unchanged(network, before):
    state, modes, hooks = snapshot(network)
    assert modes == before[1] and hooks == before[2]
    assert all(torch.equal(state[name], value) for name, value in before[0].items())


def test_record_layers_records_each_output_and_leaves_the_model_as_it_was():
    network = small_network()
    x = images(6).float() / 255
    network.eval()
    expected = network(x)
    before = snapshot(network)
    with record_layers(network, ["net.layer2", "net.pool"]) as outputs:
        result = network(x)
    assert torch.equal(result, expected) and outputs["net.pool"].shape == (6, 16)
    assert outputs["net.layer2"].shape == (6, 8, 4, 4)
    assert torch.allclose(outputs["net.pool"], expected)
    assert_unchanged(network, before)
    with record_layers(network, ["net.layer1"], transform=lambda out: out.mean()) as outputs:
        network(x)
    assert outputs["net.layer1"].dim() == 0
    assert_unchanged(network, before)
    assert torch.equal(network(x), expected)


def test_hooks_are_removed_after_an_error_too():
    # the mode is the caller's business; eval leaves BN statistics alone
    network = small_network().eval()
    before = snapshot(network)
    with pytest.raises(RuntimeError, match="inside"):
        with record_layers(network, ["net.layer1", "net.layer3"]):
            network(images(4).float() / 255)
            raise RuntimeError("an error inside the context")
    assert_unchanged(network, before)
    with pytest.raises(ValueError, match="ran more than once"):
        with record_layers(network, ["net.layer1"]):
            network(images(4).float() / 255)
            network(images(4).float() / 255)
    assert_unchanged(network, before)


def test_layer_cka_leaves_the_networks_as_they_were_even_when_a_perturbation_fails():
    network = small_network()
    network.train()
    before = snapshot(network)
    layer_cka({"clean": network, "noisy": (network, lambda x, y: (x + 0.05).clamp(0, 1))},
              images(16), batch_size=8)
    # train mode back, BN statistics untouched (the pass ran in eval mode)
    assert_unchanged(network, before)

    def broken(x, y):
        raise RuntimeError("attack failed")

    with pytest.raises(RuntimeError, match="attack failed"):
        layer_cka({"clean": network, "broken": (network, broken)}, images(16), batch_size=8)
    assert_unchanged(network, before)


# ---------------------------------------------------------------- layer-wise CKA

def flattened_outputs(network, x, names):
    with torch.no_grad(), record_layers(network.eval(), names) as outputs:
        network(x)
    return [outputs[name].flatten(1) for name in names]


def test_layer_cka_is_minibatch_cka_of_each_pair_of_flattened_layer_outputs():
    a, b = small_network(seed=0), small_network(seed=1)
    data = images(40)
    x = data.float() / 255
    results = layer_cka({"a": a, "b": b}, data, pairs=[("a", "b")], batch_size=10)
    result = results[("a", "b")]
    assert list(results) == [("a", "b")] and result.num_images == 40 and result.num_batches == 4
    assert (result.layers_a == result.layers_b == tuple(default_layers(a))
            and result.matrix.shape == (4, 4))
    outputs_a, outputs_b = (flattened_outputs(a, x, result.layers_a),
                            flattened_outputs(b, x, result.layers_b))
    for i, j in itertools.product(range(4), range(4)):
        assert torch.allclose(result.matrix[i, j],
                              minibatch_cka(outputs_a[i], outputs_b[j], batch_size=10), atol=1e-5)


def test_layer_cka_of_a_network_with_itself_is_symmetric_with_a_unit_diagonal():
    network = small_network()
    results = layer_cka({"a": network, "b": network}, images(24), batch_size=12)
    assert list(results) == [("a", "a"), ("a", "b"), ("b", "b")]
    matrix = results[("a", "a")].matrix
    assert (torch.allclose(matrix.diagonal(), torch.ones(4, dtype=torch.float64))
            and torch.allclose(matrix, matrix.T))
    assert torch.allclose(results[("a", "b")].matrix, matrix)
    swapped = results[("a", "b")].transposed()
    assert (swapped.a, swapped.b) == ("b", "a") and torch.equal(swapped.matrix, matrix.T)


def test_layer_cka_applies_each_perturbation_to_each_batch_once_with_its_labels():
    network = small_network()
    data, labels = images(30), torch.arange(30) % 3
    seen = []

    def identity(x, y):
        seen.append((x.shape[0], y.clone()))
        return x.clone()

    results = layer_cka({"clean": network, "same": (network, identity)}, data, labels,
                        pairs=[("clean", "same")], batch_size=10)
    assert ([size for size, _ in seen] == [10, 10, 10]
            and torch.equal(torch.cat([y for _, y in seen]), labels))
    assert torch.allclose(results[("clean", "same")].matrix.diagonal(),
                          torch.ones(4, dtype=torch.float64))
    shuffled = layer_cka({"clean": network, "other": (network, lambda x, y: x.flip(0))}, data,
                         batch_size=10)
    # other images in each row: not the same
    assert shuffled[("clean", "other")].matrix.diagonal().max() < 0.99


def test_layer_cka_with_a_given_hsic_and_given_layers():
    a, b = small_network(seed=0), small_network(seed=1)
    layers = {"a": ["net.layer1", "net.pool"], "b": ["net.layer3"]}
    fast = layer_cka({"a": a, "b": b}, images(24), layers=layers, pairs=[("a", "b")], batch_size=12)
    slow = layer_cka({"a": a, "b": b}, images(24), layers=layers, pairs=[("a", "b")], batch_size=12,
                     hsic=hsic_unbiased)
    assert (fast[("a", "b")].layers_a == ("net.layer1", "net.pool")
            and fast[("a", "b")].layers_b == ("net.layer3",))
    assert torch.allclose(fast[("a", "b")].matrix, slow[("a", "b")].matrix, atol=1e-10)


def test_under_bf16_autocast_the_estimate_changes_only_slightly(monkeypatch):
    # On a GPU the forward passes run under autocast (bf16 here, as on an H100); bf16 autocast runs
    # on a CPU too.
    import clcourse.cka

    a, b = small_network(seed=0), small_network(seed=1)
    data = images(32)
    reference = layer_cka({"a": a, "b": b}, data, pairs=[("a", "b")],
                          batch_size=16)[("a", "b")].matrix
    monkeypatch.setattr(clcourse.cka, "autocast_dtype", lambda device: torch.bfloat16)
    seen = []
    monkeypatch.setattr(clcourse.cka, "gram", lambda out: seen.append(out.dtype) or gram(out))
    bf16 = layer_cka({"a": a, "b": b}, data, pairs=[("a", "b")], batch_size=16)[("a", "b")].matrix
    assert torch.bfloat16 in seen                      # the layers did run in bf16
    assert (bf16 - reference).abs().max() < 0.02 and not torch.equal(bf16, reference)


# ---------------------------------------------------------------- layer-wise probes

def coloured(n, seed=0):
    """Images whose class (0, 1, 2) is which colour channel is bright: linearly separable at any
    layer."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    pixels = torch.rand(n, 3, 16, 16, generator=g) * 0.3
    pixels[torch.arange(n), labels] += 0.6
    return (pixels * 255).round().to(torch.uint8), labels


def test_pooled_features_are_spatial_means_of_the_layer_outputs():
    network = small_network()
    data = images(12)
    pooled = pooled_layer_features(network, data, batch_size=5)
    outputs = flattened_outputs(network, data.float() / 255, ["net.layer2"])
    assert list(pooled) == default_layers(network) and pooled["net.layer2"].shape == (12, 8)
    assert torch.allclose(pooled["net.layer2"], outputs[0].view(12, 8, 16).mean(2), atol=1e-6)


def test_layer_probes_read_each_layer_and_fall_when_the_perturbation_removes_the_signal():
    network = small_network()
    train_images, train_labels = coloured(90)
    test_images, test_labels = coloured(60, seed=1)
    grey = lambda x, y: x.mean(1, keepdim=True).expand_as(x).contiguous()  # noqa: E731  (colour removed)
    probes = layer_probes(network, train_images, train_labels, test_images, test_labels,
                          inputs={"clean": None, "grey": grey}, epochs=30, batch_size=32)
    assert probes.layers == tuple(default_layers(network)) and len(probes.train_accuracy) == 4
    assert min(probes.test_accuracy["clean"]) > 0.9
    assert max(probes.test_accuracy["grey"]) < 0.7
    features_train = pooled_layer_features(network, train_images,
                                           layers=["net.layer1"])["net.layer1"]
    features_test = pooled_layer_features(network, test_images, layers=["net.layer1"])["net.layer1"]
    direct = linear_probe(features_train, train_labels, features_test, test_labels, epochs=30)
    assert probes.test_accuracy["clean"][0] == pytest.approx(direct.test_accuracy)
    assert probes.train_accuracy[0] == pytest.approx(direct.train_accuracy)


# ---------------------------------------------------------------- bad input

def test_bad_feature_matrices_raise_value_errors():
    x, y = features(0, 10, 3, 4)
    with pytest.raises(ValueError, match="same number of rows.*10 and 9"):
        linear_cka(x, y[:9])
    with pytest.raises(ValueError, match="same number of rows"):
        minibatch_cka(x, y[:9])
    with pytest.raises(ValueError, match="at least 4 rows.*got 3"):
        linear_cka(x[:3], y[:3], unbiased=True)
    with pytest.raises(ValueError, match="at least 4 rows"):
        minibatch_cka(x[:3], y[:3])
    with pytest.raises(ValueError, match="at least 2 rows"):
        linear_cka(x[:1], y[:1])
    with pytest.raises(ValueError, match="at least 4 x 4.*got b = 3"):
        hsic_unbiased(torch.eye(3), torch.eye(3))
    with pytest.raises(ValueError, match="same shape"):
        hsic_unbiased(torch.eye(5), torch.eye(6))
    with pytest.raises(ValueError, match="square"):
        hsic_unbiased(torch.ones(5, 4), torch.ones(5, 4))
    with pytest.raises(ValueError, match=r"x must be a floating-point tensor \[n, features\]"):
        linear_cka(x[0], y)
    with pytest.raises(ValueError, match="y must be a floating-point"):
        linear_cka(x, torch.ones(10, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        linear_cka(x, y.masked_fill(y > 1, float("nan")))
    with pytest.raises(ValueError, match="'x' has HSIC with itself 0 <= 0.*constant"):
        linear_cka(torch.ones(10, 3), y)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 4"):
        minibatch_cka(x, y, batch_size=3)
    with pytest.raises(ValueError, match="unbiased must be True or False, got 'no'"):
        linear_cka(x, y, unbiased="no")       # a non-empty string is truthy: it would mean yes


def test_bad_gram_matrices_are_refused_by_hsic_unbiased():
    x, y = features(0, 8, 3, 4)
    k, l = x @ x.T, y @ y.T
    assert torch.isfinite(hsic_unbiased(k, l))
    with pytest.raises(ValueError, match=r"k holds 1 NaN or infinite values \(of 64\)"):
        hsic_unbiased(k.index_put((torch.tensor(0), torch.tensor(1)),
                                  torch.tensor(float("nan"), dtype=k.dtype)), l)
    with pytest.raises(ValueError, match=r"l holds 64 NaN or infinite values"):
        hsic_unbiased(k, torch.full_like(l, float("inf")))
    upper = torch.triu(torch.randn(8, 8, generator=torch.Generator().manual_seed(0), dtype=k.dtype))
    with pytest.raises(ValueError,
                       match=r"l must be a symmetric Gram matrix \(K = X X\^T\), but l - l.T has "
                             r"entries up to [0-9.]+"):
        hsic_unbiased(k, upper)
    # the last bits of X X^T may differ across the diagonal
    rounding = k + 1e-9 * torch.triu(torch.ones_like(k), 1)
    assert torch.isclose(hsic_unbiased(rounding, l), hsic_unbiased(k, l))


@pytest.mark.parametrize("returned, says", [
    (lambda k, l: [1.0, 2.0], "hsic must return one number .* got list"),
    (lambda k, l: torch.ones(2), r"hsic must return one number .* got shape \(2,\)"),
    (lambda k, l: torch.tensor(float("nan")), "hsic returned a NaN or infinite estimate"),
])
def test_a_users_hsic_that_returns_no_number_is_refused(returned, says):
    x, y = features(0, 12, 3, 4)
    with pytest.raises(ValueError, match=says):
        minibatch_cka(x, y, batch_size=6, hsic=returned)
    assert (minibatch_cka(x, y, batch_size=6, hsic=lambda k, l: float(hsic_unbiased(k, l)))
            == pytest.approx(float(minibatch_cka(x, y, batch_size=6))))


def test_unknown_layer_names_list_the_available_ones():
    network = small_network()
    with pytest.raises(ValueError,
                       match=r"\['net.layer9'\].*available names are: normalize, net, net.layer1, "
                             r"net.layer1.0, net.layer1.0.0"):
        require_layers(network, ["net.layer1", "net.layer9"])
    with pytest.raises(ValueError, match="not modules of this Backbone.*net.pool"):
        layer_cka({"a": network}, images(8), layers=["layer1"])
    with pytest.raises(ValueError, match="available names"):
        pooled_layer_features(network, images(8), layers=["nope"])
    with pytest.raises(ValueError, match="must not repeat"):
        require_layers(network, ["net.layer1", "net.layer1"])
    with pytest.raises(ValueError, match="non-empty list of module names"):
        require_layers(network, "net.layer1")
    with pytest.raises(ValueError,
                       match="layers must be given for a Sequential.*its modules are: 0, 1"):
        default_layers(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_bad_layer_cka_arguments_raise_value_errors():
    network = small_network()
    with pytest.raises(ValueError, match="at least 4 images"):
        layer_cka({"a": network}, images(3))
    with pytest.raises(ValueError, match="non-empty dict"):
        layer_cka({}, images(8))
    with pytest.raises(ValueError, match=r"representations\['a'\] must be a network"):
        layer_cka({"a": (network, "attack")}, images(8))
    with pytest.raises(ValueError, match="pairs must hold pairs of representation names"):
        layer_cka({"a": network}, images(8), pairs=[("a", "b")])
    with pytest.raises(ValueError, match="labels has 7 entries but images has 8"):
        layer_cka({"a": network}, images(8), torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="float pixels in"):
        layer_cka({"a": network}, images(8).float())
    with pytest.raises(ValueError, match="must return images shaped like its input"):
        layer_cka({"a": (network, lambda x, y: x[:2])}, images(8))
    with pytest.raises(ValueError, match=r"layers \['unused'\] produced no output"):
        layer_cka({"a": UnusedBranch()}, images(8), layers=["used", "unused"])
    with pytest.raises(ValueError, match="batch_size must be an integer >= 4"):
        layer_cka({"a": network}, images(8), batch_size=2)
    with pytest.raises(ValueError, match="no minibatch"):
        MinibatchCKA(["a"], ["b"]).value()
    with pytest.raises(ValueError, match=r"grams_a must be a tensor \[2, b, b\]"):
        MinibatchCKA(["a", "b"], ["c"]).update(torch.zeros(1, 5, 5), torch.zeros(1, 5, 5))
    with pytest.raises(ValueError, match="hsic must be a function"):
        MinibatchCKA(["a"], ["b"], hsic=3)
    with pytest.raises(ValueError, match="inputs must be a non-empty dict"):
        layer_probes(network, images(8), torch.zeros(8, dtype=torch.long), images(8),
                     torch.zeros(8, dtype=torch.long), inputs={})


class UnusedBranch(nn.Module):
    """A network with a module its forward pass never runs."""

    def __init__(self):
        super().__init__()
        self.used, self.unused = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.used(x)



def test_feature_attack_stays_in_the_ball_moves_the_features_more_than_noise_and_is_seeded():
    network = small_network().eval()
    x = images(16, seed=3).float() / 255
    epsilon = 8 / 255
    attacked = feature_attack(network, epsilon, steps=3, seed=0)(x, None)
    assert attacked.shape == x.shape and (attacked - x).abs().max() <= epsilon + 1e-6
    assert attacked.min() >= 0 and attacked.max() <= 1
    g = torch.Generator().manual_seed(1)
    signs = torch.randint(0, 2, x.shape, generator=g).float().mul(2).sub(1)
    noise = (x + epsilon * signs).clamp(0, 1)
    with torch.no_grad():
        moved = lambda other: (network(other) - network(x)).square().sum()  # noqa: E731
        assert moved(attacked) > 2 * moved(noise)
    again = feature_attack(network, epsilon, steps=3, seed=0)(x, None)
    assert torch.equal(attacked, again)
    with pytest.raises(ValueError, match="steps"):
        feature_attack(network, epsilon, steps=0)


# ---------------------------------------------------------------- redundancy between layers

def test_layer_redundancy_is_the_mean_cka_over_pairs_of_distinct_layers():
    layers = ("a", "b", "c")
    matrix = torch.tensor([[1.0, 0.8, 0.5], [0.8, 1.0, 0.6], [0.5, 0.6, 1.0]], dtype=torch.float64)
    assert (layer_redundancy(CKAResult("x", "x", layers, layers, matrix, 100, 2))
            == pytest.approx((0.8 + 0.5 + 0.6) / 3))
    torch.manual_seed(0)
    network = Backbone(SmallCNN(width=4))
    images = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    itself = layer_cka({"net": network}, images, batch_size=32)[("net", "net")]
    names = itself.layers_a
    by_loop = sum(itself.matrix[i, j] for i in range(len(names)) for j in range(i + 1, len(names)))
    assert (layer_redundancy(itself)
            == pytest.approx(float(by_loop) / (len(names) * (len(names) - 1) / 2)))
    with pytest.raises(ValueError, match="must compare a representation with itself"):
        layer_redundancy(CKAResult("x", "y", layers, layers[:2], matrix[:, :2], 100, 2))
    with pytest.raises(ValueError, match="must compare a representation with itself"):
        layer_redundancy(CKAResult("x", "x", ("a",), ("a",), matrix[:1, :1], 100, 2))

