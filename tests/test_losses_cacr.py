"""CACR and multi-view InfoNCE against slow references that loop over queries, views and negatives
in float64."""
import math

import pytest
import torch
import torch.nn.functional as F

from clcourse.losses import CACR_WEIGHTS, cacr, cacr_terms, info_nce, multiview_info_nce

SETTINGS = [  # (V views, B images, D)
    (2, 2, 3), (3, 4, 5), (5, 3, 8), (4, 6, 2)]


def random_views(seed, num_views, batch, dim):
    """View embeddings with rows of very different norms (the losses normalise them)."""
    generator = torch.Generator().manual_seed(seed)
    scale = torch.rand(num_views, batch, 1, generator=generator) * 3 + 0.3
    return torch.randn(num_views, batch, dim, generator=generator) * scale


def value_and_grad(loss_fn, views, dtype=torch.float32):
    leaf = views.detach().to(dtype).requires_grad_(True)
    loss = loss_fn(leaf)
    return loss.detach().double(), torch.autograd.grad(loss, leaf)[0].double()


def assert_same_value_and_grad(loss_fn, reference_fn, views, atol=1e-5, rtol=1e-4):
    loss, grad = value_and_grad(loss_fn, views)
    expected, expected_grad = value_and_grad(reference_fn, views, dtype=torch.float64)
    assert torch.allclose(loss, expected, atol=atol, rtol=rtol), (loss, expected)
    assert torch.allclose(grad, expected_grad, atol=atol, rtol=rtol), (
        (grad - expected_grad).abs().max())


# ---------------------------------------------------------------- references (one query at a time)

def squared_distance(x, y):
    return ((x - y) ** 2).sum()


def softmax(logits):
    e = torch.exp(logits - logits.max())
    return e / e.sum()


def reference_cacr(views, tau_pos, tau_neg, alpha, beta, weights="both", hold=None):
    """CACR as the authors' small-scale code computes it. `hold` = "weights" makes the weights
    constants (detach_weights=True); "costs" makes the costs constants, so that only the gradient
    through the weights remains."""
    u = [F.normalize(views[a], dim=1) for a in range(len(views))]
    num_views, batch = len(u), len(u[0])

    def combine(w, costs):
        if hold == "weights":
            w = w.detach()
        if hold == "costs":
            costs = costs.detach()
        return (w * costs).sum()

    attraction = []
    for a in range(num_views):                          # every view is a query
        for i in range(batch):
            positives = [b for b in range(num_views) if b != a]
            d2 = torch.stack([squared_distance(u[a][i], u[b][i]) for b in positives])
            w = (softmax(tau_pos * d2) if weights in ("both", "attraction_only")
                 else torch.ones_like(d2) / len(d2))
            attraction.append(combine(w, alpha * d2))
    repulsion = []
    for a in range(num_views):
        for b in range(a + 1, num_views):               # view pairs a < b only
            for i in range(batch):
                d2 = torch.stack(
                    [squared_distance(u[a][i], u[b][j]) for j in range(batch) if j != i])
                w = (softmax(-tau_neg * d2) if weights in ("both", "repulsion_only")
                     else torch.ones_like(d2) / len(d2))
                repulsion.append(combine(w, -beta * d2))
    return torch.stack(attraction).mean() + torch.stack(repulsion).mean()


def reference_multiview_info_nce(views, temperature):
    """For every view (a, i): -mean over its sibling views b of log exp(s_ab / t) / sum over all
    other views."""
    u = [F.normalize(views[a], dim=1) for a in range(len(views))]
    num_views, batch = len(u), len(u[0])
    losses = []
    for a in range(num_views):
        for i in range(batch):
            denominator = sum(torch.exp(u[a][i] @ u[b][j] / temperature)
                              for b in range(num_views) for j in range(batch) if (b, j) != (a, i))
            terms = [-torch.log(torch.exp(u[a][i] @ u[b][i] / temperature) / denominator)
                     for b in range(num_views) if b != a]
            losses.append(torch.stack(terms).mean())
    return torch.stack(losses).mean()


# ---------------------------------------------------------------- cacr

@pytest.mark.parametrize("num_views, batch, dim", SETTINGS)
@pytest.mark.parametrize("tau_pos, tau_neg, alpha, beta",
                         [(1.0, 0.9, 1.0, 1.0), (3.0, 0.2, 0.5, 2.0),
                          (0.1, 5.0, 2.0, 0.3)])
def test_cacr_value_and_gradient_match_the_loop(num_views, batch, dim, tau_pos, tau_neg, alpha,
                                                beta):
    for seed in range(2):
        assert_same_value_and_grad(lambda v: cacr(v, tau_pos, tau_neg, alpha, beta),
                                   lambda v: reference_cacr(v, tau_pos, tau_neg, alpha, beta),
                                   random_views(seed, num_views, batch, dim))


@pytest.mark.parametrize("weights", CACR_WEIGHTS)
@pytest.mark.parametrize("detach_weights", [False, True])
def test_every_variant_matches_the_loop(weights, detach_weights):
    views = random_views(3, 4, 5, 6)
    hold = "weights" if detach_weights else None
    assert_same_value_and_grad(
        lambda v: cacr(v, 2.0, 1.5, 1.0, 1.0, weights=weights, detach_weights=detach_weights),
        lambda v: reference_cacr(v, 2.0, 1.5, 1.0, 1.0, weights=weights, hold=hold), views)


def test_a_list_of_views_and_a_stacked_tensor_give_the_same_loss():
    views = random_views(0, 3, 4, 5)
    assert torch.equal(cacr(list(views.unbind(0))), cacr(views))
    assert torch.equal(multiview_info_nce(tuple(views.unbind(0))), multiview_info_nce(views))


def test_weights_none_is_the_plain_average_of_the_costs():
    views = random_views(1, 5, 6, 8)
    u = F.normalize(views, dim=2)
    num_views, batch = u.shape[:2]
    positive_d2 = torch.cdist(u.transpose(0, 1), u.transpose(0, 1)) ** 2            # [B, V, V]
    mean_positive = positive_d2.sum() / (batch * num_views * (num_views - 1))       # diagonal is 0
    pairs = [(a, b) for a in range(num_views) for b in range(a + 1, num_views)]
    off_diagonal = ~torch.eye(batch, dtype=torch.bool)
    mean_negative = torch.stack(
        [(torch.cdist(u[a], u[b]) ** 2)[off_diagonal].mean() for a, b in pairs]).mean()
    alpha, beta = 0.7, 1.3
    expected = alpha * mean_positive - beta * mean_negative
    assert torch.allclose(cacr(views, 2.0, 3.0, alpha, beta, weights="none"), expected, atol=1e-5)
    terms = cacr_terms(views, 2.0, 3.0, alpha, beta, weights="none")
    assert torch.allclose(terms.attraction, alpha * mean_positive, atol=1e-5)
    assert torch.allclose(terms.repulsion, -beta * mean_negative, atol=1e-5)


def test_zero_temperatures_give_uniform_weights():
    views = random_views(2, 5, 6, 8)
    terms = cacr_terms(views, tau_pos=0.0, tau_neg=0.0)
    num_views, batch = 5, 6
    positive_uniform = (1 - torch.eye(num_views)) / (num_views - 1)
    negative_uniform = (1 - torch.eye(batch)) / (batch - 1)
    assert torch.allclose(terms.attraction_weights, positive_uniform.expand(batch, -1, -1))
    assert torch.allclose(terms.repulsion_weights, negative_uniform.expand(10, -1, -1))
    assert torch.allclose(cacr(views, 0.0, 0.0), cacr(views, 1.0, 0.9, weights="none"), atol=1e-6)
    # and with temperatures the weights are not uniform, so the test above can tell
    weighted = cacr_terms(views)
    assert not torch.allclose(weighted.attraction_weights, positive_uniform.expand(batch, -1, -1),
                              atol=1e-3)
    assert not torch.allclose(weighted.repulsion_weights, negative_uniform.expand(10, -1, -1),
                              atol=1e-3)


def test_ablations_keep_one_kind_of_weights():
    views = random_views(4, 4, 5, 6)
    full, none = cacr_terms(views, 2.0, 1.5), cacr_terms(views, 2.0, 1.5, weights="none")
    attraction_only = cacr_terms(views, 2.0, 1.5, weights="attraction_only")
    repulsion_only = cacr_terms(views, 2.0, 1.5, weights="repulsion_only")
    assert torch.equal(attraction_only.attraction_weights, full.attraction_weights)
    assert torch.equal(attraction_only.repulsion_weights, none.repulsion_weights)
    assert torch.equal(repulsion_only.attraction_weights, none.attraction_weights)
    assert torch.equal(repulsion_only.repulsion_weights, full.repulsion_weights)


def test_detached_weights_differ_exactly_by_the_gradient_through_the_weights():
    views = random_views(5, 5, 6, 8)
    settings = (2.0, 1.5, 1.0, 1.0)
    value, grad = value_and_grad(lambda v: cacr(v, *settings), views)
    detached_value, detached_grad = value_and_grad(
        lambda v: cacr(v, *settings, detach_weights=True), views)
    _, through_weights = value_and_grad(lambda v: reference_cacr(v, *settings, hold="costs"), views,
                                        torch.float64)
    assert torch.allclose(value, detached_value)                      # the same number...
    # ...a gradient through the weights exists...
    assert through_weights.abs().max() > 1e-2
    # ...and is exactly the difference
    assert torch.allclose(grad - detached_grad, through_weights, atol=1e-5)


def test_weights_are_conditional_distributions_ranked_by_distance():
    views = random_views(6, 5, 7, 8)
    terms = cacr_terms(views, 1.0, 0.9)
    u = F.normalize(views, dim=2)
    assert torch.allclose(terms.attraction_weights.sum(dim=2), torch.ones(7, 5))
    assert torch.allclose(terms.repulsion_weights.sum(dim=2), torch.ones(10, 7))
    assert (terms.attraction_weights.diagonal(dim1=1, dim2=2) == 0).all()
    assert (terms.repulsion_weights.diagonal(dim1=1, dim2=2) == 0).all()
    assert terms.view_pairs.tolist() == [[a, b] for a in range(5) for b in range(a + 1, 5)]
    # one query: the farthest positive weighs most, the nearest negative weighs most
    a, b, i = 1, 3, 2
    positive_d2 = torch.stack([((u[a, i] - u[c, i]) ** 2).sum() for c in range(5)])
    positive_d2[a] = float("-inf")
    assert terms.attraction_weights[i, a].argmax() == positive_d2.argmax()
    pair = terms.view_pairs.tolist().index([a, b])
    negative_d2 = ((u[a, i] - u[b]) ** 2).sum(dim=1)
    negative_d2[i] = float("inf")
    assert terms.repulsion_weights[pair, i].argmax() == negative_d2.argmin()


def test_repulsion_weights_are_an_exponential_tilting_of_the_cosine():
    # d^2 = 2 - 2 s for unit vectors, so softmax(-tau d^2) = softmax(2 tau s): HCL's tilt with beta
    # = 2 tau.
    views = random_views(7, 3, 6, 4)
    tau_pos, tau_neg = 1.3, 0.9
    terms = cacr_terms(views, tau_pos, tau_neg)
    u = F.normalize(views, dim=2)
    excluded = torch.eye(6, dtype=torch.bool)
    for pair, (a, b) in enumerate(terms.view_pairs.tolist()):
        tilted = torch.softmax((2 * tau_neg * u[a] @ u[b].T).masked_fill(excluded, float("-inf")),
                               dim=1)
        assert torch.allclose(terms.repulsion_weights[pair], tilted, atol=1e-6)
    similarity = torch.einsum("aid,bid->iab", u, u)
    towards_dissimilar = torch.softmax(
        (-2 * tau_pos * similarity).masked_fill(torch.eye(3, dtype=torch.bool),
                                                float("-inf")), dim=2)
    assert torch.allclose(terms.attraction_weights, towards_dissimilar, atol=1e-6)


def test_cacr_is_float32_under_autocast_and_finite_for_sharp_weights():
    views = random_views(8, 5, 8, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = cacr(views.bfloat16(), 1.0, 0.9)
        multiview = multiview_info_nce(views.bfloat16(), 0.5)
    assert loss.dtype == torch.float32 and multiview.dtype == torch.float32
    sharp, grad = value_and_grad(lambda v: cacr(v, 200.0, 200.0), views)
    assert math.isfinite(sharp) and torch.isfinite(grad).all()


# ---------------------------------------------------------------- multi-view InfoNCE

@pytest.mark.parametrize("num_views, batch, dim", SETTINGS)
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_multiview_info_nce_value_and_gradient_match_the_loop(num_views, batch, dim, temperature):
    for seed in range(2):
        assert_same_value_and_grad(lambda v: multiview_info_nce(v, temperature),
                                   lambda v: reference_multiview_info_nce(v, temperature),
                                   random_views(seed, num_views, batch, dim))


@pytest.mark.parametrize("batch, dim", [(2, 3), (5, 16), (32, 8)])
@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_multiview_info_nce_with_two_views_is_info_nce(batch, dim, temperature):
    z1, z2 = random_views(batch, 2, batch, dim)
    assert_same_value_and_grad(lambda v: multiview_info_nce(v, temperature),
                               lambda v: info_nce(v[0], v[1], temperature), torch.stack([z1, z2]),
                               atol=1e-6, rtol=1e-6)


def test_more_views_change_the_loss():
    views = random_views(9, 4, 6, 8)
    assert not torch.allclose(multiview_info_nce(views), multiview_info_nce(views[:2]), atol=1e-3)


# ---------------------------------------------------------------- bad input

Z = torch.randn(4, 8)


@pytest.mark.parametrize("call, message", [
    (lambda: cacr([Z]), r"views must hold at least 2 views .*got 1"),
    (lambda: cacr([]), r"views must hold at least 2 views .*got 0"),
    (lambda: cacr(Z),
     r"views must be a sequence .* tensor \[V, B, D\], got a tensor of shape \(4, 8\)"),
    (lambda: cacr("views"), r"views must be a sequence .*got str"),
    (lambda: cacr([Z, Z[:3]]),
     r"views\[0\] and views\[1\] must have the same shape, got \(4, 8\) and \(3, 8\)"),
    (lambda: cacr([Z, Z, torch.randn(4, 7)]),
     r"views\[0\] and views\[2\] .* got \(4, 8\) and \(4, 7\)"),
    (lambda: cacr([Z, Z.long()]), r"views\[1\] must be a floating-point tensor"),
    (lambda: cacr([Z[:1], Z[:1]]), r"at least 2 images .*views\[0\] has 1 row"),
    (lambda: cacr([Z, Z], tau_pos=-0.5), r"tau_pos must be in \[0.0, inf\), got -0.5"),
    (lambda: cacr([Z, Z], tau_neg=-1), r"tau_neg must be in \[0.0, inf\), got -1"),
    (lambda: cacr([Z, Z], tau_neg=float("inf")), r"tau_neg must be in \[0.0, inf\), got inf"),
    (lambda: cacr([Z, Z], alpha=0), r"alpha must be a finite number > 0, got 0"),
    (lambda: cacr([Z, Z], beta=-1.0), r"beta must be a finite number > 0, got -1.0"),
    (lambda: cacr([Z, Z], weights="w1"),
     r"weights must be one of 'both', 'none', 'attraction_only', 'repulsion_only', got 'w1'"),
    (lambda: cacr([Z, Z], detach_weights="yes"),
     r"detach_weights must be True or False, got 'yes'"),
    (lambda: multiview_info_nce([Z]), r"views must hold at least 2 views"),
    (lambda: multiview_info_nce([Z, Z[:, :4]]),
     r"views\[0\] and views\[1\] must have the same shape"),
    (lambda: multiview_info_nce([Z, Z], temperature=0),
     r"temperature must be a finite number > 0, got 0"),
])
def test_bad_input_names_the_argument_the_value_and_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=message):
        call()
