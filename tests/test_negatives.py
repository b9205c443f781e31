import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clcourse.negatives as negatives
from clcourse.negatives import (
    EmbeddingMap,
    MapCache,
    effective_negatives,
    embedding_map,
    false_negative_rate,
    features_fingerprint,
    fit_embedding_map,
    hardest_negatives,
    negative_gradient_weights,
    negative_weights,
    negative_weights_from_similarities,
    off_diagonal,
    rank_among_negatives,
    same_class_gradient_share,
    similarity_distributions,
    view_pair_negatives,
    weight_entropy,
)


def on_circle(degrees, radius=1.0):
    """Points at the given angles, with a different length each, padded to 3-D: cosine similarity
    only sees the angle."""
    angles = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    radii = radius * (1.0 + torch.arange(len(degrees), dtype=torch.float64))
    xy = torch.stack([angles.cos(), angles.sin(), torch.zeros_like(angles)], dim=1) * radii[:, None]
    return xy.float()


def brute_force_hardest(anchors, candidates, k, anchor_ids=None, candidate_ids=None):
    """Reference: one anchor at a time, every similarity, a full sort."""
    sims, idx = [], []
    for a in range(len(anchors)):
        s = torch.tensor([F.cosine_similarity(anchors[a], candidates[c], dim=0).item()
                          for c in range(len(candidates))])
        allowed = [c for c in range(len(candidates))
                   if anchor_ids is None or candidate_ids[c] != anchor_ids[a]]
        order = sorted(allowed, key=lambda c: -s[c].item())[:k]
        sims.append(s[order])
        idx.append(torch.tensor(order))
    return torch.stack(sims), torch.stack(idx)


# ------------------------------------------------------------------ hardest_negatives

def test_hardest_negatives_on_a_circle_follow_the_angle():
    candidates = on_circle([0, 10, 25, 45, 70, 100])
    anchor = on_circle([12], radius=7.0)
    sims, idx = hardest_negatives(anchor, candidates, k=6)
    # angular distances from 12 degrees: 2, 12, 13, 33, 58, 88
    assert idx[0].tolist() == [1, 0, 2, 3, 4, 5]
    expected = torch.tensor([2, 12, 13, 33, 58, 88], dtype=torch.float64) * math.pi / 180
    torch.testing.assert_close(sims[0], expected.cos().float(), atol=1e-6, rtol=0)
    assert sims.dtype == torch.float32 and idx.dtype == torch.int64


def test_searching_a_set_against_itself_skips_the_anchor_by_id():
    points = on_circle([0, 10, 25, 45, 70, 100])
    ids = torch.arange(6)
    _, idx = hardest_negatives(points, points, k=2, anchor_ids=ids, candidate_ids=ids)
    assert idx.tolist() == [[1, 2], [0, 2], [1, 3], [2, 4], [3, 5], [4, 3]]


@pytest.mark.parametrize("chunk_size", [1, 4, 7, 37, 100, None])
def test_chunked_search_equals_brute_force(chunk_size):
    g = torch.Generator().manual_seed(0)
    anchors, candidates = torch.randn(37, 8, generator=g), torch.randn(53, 8, generator=g)
    sims, idx = hardest_negatives(anchors, candidates, k=9, chunk_size=chunk_size)
    ref_sims, ref_idx = brute_force_hardest(anchors, candidates, 9)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(sims, ref_sims, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk_size", [1, 6, 64])
def test_chunked_search_excludes_candidates_with_the_anchors_id(chunk_size):
    g = torch.Generator().manual_seed(1)
    anchors, candidates = torch.randn(20, 6, generator=g), torch.randn(40, 6, generator=g)
    anchor_ids = torch.randint(0, 8, (20,), generator=g)
    candidate_ids = torch.randint(0, 8, (40,), generator=g)
    sims, idx = hardest_negatives(anchors, candidates, 5, anchor_ids, candidate_ids,
                                  chunk_size=chunk_size)
    ref_sims, ref_idx = brute_force_hardest(anchors, candidates, 5, anchor_ids, candidate_ids)
    assert torch.equal(idx, ref_idx)
    torch.testing.assert_close(sims, ref_sims, atol=1e-5, rtol=0)
    assert not (candidate_ids[idx] == anchor_ids[:, None]).any()


def test_default_chunks_bound_the_similarity_block(monkeypatch):
    """With a tiny memory budget the search runs in many chunks and still agrees with one big
    block."""
    g = torch.Generator().manual_seed(2)
    anchors, candidates = torch.randn(300, 16, generator=g), torch.randn(200, 16, generator=g)
    expected = hardest_negatives(anchors, candidates, k=4, chunk_size=300)
    seen_rows = []
    original_topk = torch.Tensor.topk

    def recording_topk(self, *args, **kwargs):
        seen_rows.append(self.shape[0])
        return original_topk(self, *args, **kwargs)

    monkeypatch.setattr(negatives, "SIMILARITY_BLOCK_ENTRIES", 200 * 16)
    monkeypatch.setattr(torch.Tensor, "topk", recording_topk)
    result = hardest_negatives(anchors, candidates, k=4)
    assert max(seen_rows) == 16 and len(seen_rows) == math.ceil(300 / 16)
    assert torch.equal(result[1], expected[1])


def test_the_two_views_of_an_image_can_be_excluded_together():
    """Candidates [z1; z2] with ids [i; i]: neither the anchor nor its positive is a negative."""
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(10, 4, generator=g)
    z2 = z1 + 0.01 * torch.randn(10, 4, generator=g)        # positives are the most similar
    candidates, ids = torch.cat([z1, z2]), torch.arange(10).repeat(2)
    _, idx = hardest_negatives(z1, candidates, k=18, anchor_ids=torch.arange(10), candidate_ids=ids)
    assert not (ids[idx] == torch.arange(10)[:, None]).any()


def test_search_and_distributions_stay_float32_under_autocast():
    g = torch.Generator().manual_seed(13)
    z1, z2 = torch.randn(30, 16, generator=g), torch.randn(30, 16, generator=g)
    labels = torch.arange(30) % 3
    expected = hardest_negatives(z1, z2, k=5), similarity_distributions(z1, z2, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sims, idx = hardest_negatives(z1, z2, k=5)
        distributions = similarity_distributions(z1, z2, labels)
    assert sims.dtype == torch.float32 and torch.equal(idx, expected[0][1])
    torch.testing.assert_close(sims, expected[0][0])
    for name, values in distributions.items():
        torch.testing.assert_close(values, expected[1][name])


# ------------------------------------------------------------------ false_negative_rate

def test_false_negative_rate_by_hand():
    anchor_labels = torch.tensor([0, 1])
    neighbour_labels = torch.tensor([[0, 1, 0, 0], [2, 1, 1, 3]])
    rates = false_negative_rate(neighbour_labels, anchor_labels, ks=[1, 2, 3, 4])
    torch.testing.assert_close(rates, torch.tensor([0.5, 0.5, 2 / 3, 0.625]))
    torch.testing.assert_close(false_negative_rate(neighbour_labels, anchor_labels, ks=3),
                               torch.tensor([2 / 3]))


def test_false_negative_rate_on_a_circle_of_class_arcs():
    """60 points about 5.5 degrees apart (slightly irregular: no ties); classes are arcs of 5
    points, so every point's 4 same-class neighbours lie within 4 steps and its 10 nearest include
    all of them."""
    points = on_circle([5.5 * j + 0.001 * j * j for j in range(60)])
    labels = torch.arange(60) // 5
    ids = torch.arange(60)
    _, idx = hardest_negatives(points, points, k=10, anchor_ids=ids, candidate_ids=ids)
    rates = false_negative_rate(labels[idx], labels, ks=[4, 10])
    per_anchor = [(labels[idx[a, :4]] == labels[a]).float().mean() for a in range(60)]
    torch.testing.assert_close(rates[0], torch.stack(per_anchor).mean())
    # every point has exactly 4 same-class points: in the top 10 they are all found, 4/10
    torch.testing.assert_close(rates[1], torch.tensor(0.4))


def test_false_negative_rate_matches_a_loop_on_random_labels():
    g = torch.Generator().manual_seed(4)
    neighbour_labels = torch.randint(0, 3, (25, 7), generator=g)
    anchor_labels = torch.randint(0, 3, (25,), generator=g)
    ks = [1, 3, 7]
    expected = [np.mean([np.mean([neighbour_labels[a, r].item() == anchor_labels[a].item()
                                  for r in range(k)])
                         for a in range(25)]) for k in ks]
    torch.testing.assert_close(false_negative_rate(neighbour_labels, anchor_labels, ks),
                               torch.tensor(expected, dtype=torch.float32))


# ------------------------------------------------------------------ similarity_distributions

def test_similarity_distributions_exact_on_a_tiny_case():
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    labels = torch.tensor([0, 0, 1, 1])
    out = similarity_distributions(z1, z2, labels)

    def cos(i, j):
        return F.cosine_similarity(z1[i], z2[j], dim=0).item()

    positive = [cos(i, i) for i in range(4)]
    same = [cos(i, j) for i in range(4) for j in range(4) if i != j and labels[i] == labels[j]]
    other = [cos(i, j) for i in range(4) for j in range(4) if labels[i] != labels[j]]
    torch.testing.assert_close(out["positive"], torch.tensor(positive), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["negative_same_class"], torch.tensor(same), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["negative_other_class"], torch.tensor(other), atol=1e-6, rtol=0)


def labelled_views(n=60, classes=3):
    """Views whose cross-view similarity reveals the pair: s(z1_i, z2_j) = (1[y_i = y_j] + 1[i = j])
    / 2."""
    labels = torch.arange(n) % classes
    z = torch.cat([F.one_hot(labels, classes), torch.eye(n, dtype=torch.long)], dim=1).float()
    return z, z.clone(), labels


def test_subsampled_pairs_are_seeded_negatives_split_by_class():
    z1, z2, labels = labelled_views()
    out = similarity_distributions(z1, z2, labels, max_pairs=3000, seed=7)
    torch.testing.assert_close(out["positive"], torch.ones(60))
    assert len(out["negative_same_class"]) + len(out["negative_other_class"]) == 3000
    # no sampled pair is an image with itself (that would give similarity 1)
    torch.testing.assert_close(out["negative_same_class"],
                               torch.full_like(out["negative_same_class"], 0.5))
    torch.testing.assert_close(out["negative_other_class"],
                               torch.zeros_like(out["negative_other_class"]))
    # j is uniform over the 59 other images, 19 of which share the class
    assert abs(len(out["negative_same_class"]) / 3000 - 19 / 59) < 0.03
    again = similarity_distributions(z1, z2, labels, max_pairs=3000, seed=7)
    assert len(again["negative_same_class"]) == len(out["negative_same_class"])
    other_seed = similarity_distributions(z1, z2, labels, max_pairs=3000, seed=8)
    assert len(other_seed["negative_same_class"]) != len(out["negative_same_class"])


def test_all_pairs_are_used_when_they_fit():
    z1, z2, labels = labelled_views(n=12)
    out = similarity_distributions(z1, z2, labels, max_pairs=12 * 11)
    assert len(out["negative_same_class"]) == 12 * 3 and len(out["negative_other_class"]) == 12 * 8


# ------------------------------------------------------------------ gradient weights

def unit(x):
    return F.normalize(x, dim=-1)


@pytest.mark.parametrize("temperature", [0.05, 0.5, 2.0])
def test_negative_weights_are_the_gradient_of_info_nce(temperature):
    g = torch.Generator().manual_seed(6)
    u = unit(torch.randn(16, generator=g)).requires_grad_()
    u_pos, u_neg = unit(torch.randn(16, generator=g)), unit(torch.randn(10, 16, generator=g))
    logits = torch.cat([(u @ u_pos)[None], u_neg @ u]) / temperature
    loss = -torch.log_softmax(logits, dim=0)[0]
    loss.backward()
    p = torch.softmax(logits.detach(), dim=0)
    # raw (unnormalised) inputs give the same weights
    weights = negative_weights(3 * u.detach(), 0.5 * u_pos, 2 * u_neg, temperature)
    torch.testing.assert_close(weights.sum(), 1 - p[0])
    expected_gradient = (weights @ u_neg - (1 - p[0]) * u_pos) / temperature
    torch.testing.assert_close(u.grad, expected_gradient, atol=1e-5, rtol=1e-4)


def test_batched_weights_match_one_anchor_at_a_time():
    g = torch.Generator().manual_seed(7)
    anchors, positives = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    negs = torch.randn(5, 6, 8, generator=g)
    s_pos = F.cosine_similarity(anchors, positives, dim=1)
    s_neg = F.cosine_similarity(anchors[:, None], negs, dim=2)
    batched = negative_weights_from_similarities(s_pos, s_neg, 0.3)
    for a in range(5):
        torch.testing.assert_close(batched[a],
                                   negative_weights(anchors[a], positives[a], negs[a], 0.3))
    masked = negative_weights_from_similarities(
        s_pos, s_neg.index_fill(1, torch.tensor([0]), float("-inf")), 0.3)
    assert (masked[:, 0] == 0).all()


# -------------------------------------------------- gradient weights of each loss, same-class share

def per_anchor_loss(positive_logit, negative_logits, temperature, tau_plus, beta):
    """Obviously correct: one anchor's DCL / HCL loss written from the formulas, in float64."""
    n = len(negative_logits)
    pos, neg = positive_logit.exp(), negative_logits.exp()
    imp = torch.exp(beta * negative_logits)
    mass = (imp * neg).sum() / imp.mean()
    estimate = torch.clamp((mass - tau_plus * n * pos) / (1 - tau_plus),
                           min=n * math.exp(-1 / temperature))
    return -torch.log(pos / (pos + estimate))


@pytest.mark.parametrize("tau_plus, beta", [(0.0, 0.0), (0.1, 0.0), (0.1, 1.0), (0.3, 2.0)])
def test_negative_gradient_weights_match_autograd_on_a_loop(tau_plus, beta):
    generator = torch.Generator().manual_seed(0)
    positive = torch.rand(5, generator=generator) * 0.8 + 0.1
    negatives = torch.rand(5, 7, generator=generator) * 1.6 - 0.8
    weights = negative_gradient_weights(positive, negatives, 0.5, tau_plus, beta)
    for anchor in range(5):
        logits = (negatives[anchor].double() / 0.5).requires_grad_()
        per_anchor_loss(positive[anchor].double() / 0.5, logits, 0.5, tau_plus, beta).backward()
        assert torch.allclose(weights[anchor].double(), logits.grad, atol=1e-6)


def test_info_nce_weights_are_p_k_and_dcl_keeps_their_proportions():
    generator = torch.Generator().manual_seed(1)
    positive, negatives = (0.3 * torch.rand(6, generator=generator),
                           torch.rand(6, 9, generator=generator) * 2 - 1)
    info_nce = negative_gradient_weights(positive, negatives, 0.2)
    assert torch.allclose(info_nce, negative_weights_from_similarities(positive, negatives, 0.2),
                          atol=1e-7)
    debiased = negative_gradient_weights(positive, negatives, 0.2, tau_plus=0.1)
    ratio = debiased / info_nce
    assert (torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-5)
            and bool((ratio > 1).all()))


def test_dcl_floor_stops_the_push():
    """A positive far closer than its negatives: the corrected mass falls below N e^{-1/t}, no
    gradient to them."""
    weights = negative_gradient_weights(torch.tensor([0.99]), torch.full((1, 4), -0.9), 0.5,
                                        tau_plus=0.5)
    assert torch.equal(weights, torch.zeros(1, 4))


def test_view_pair_negatives_match_a_loop():
    generator = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(3, 4, generator=generator), torch.randn(3, 4, generator=generator)
    labels = torch.tensor([0, 1, 0])
    positive, negative, same_class = view_pair_negatives(z1, z2, labels)
    u = F.normalize(torch.cat([z1, z2]), dim=1)
    both = labels.repeat(2)
    for i in range(6):
        partner = (i + 3) % 6
        others = [j for j in range(6) if j not in (i, partner)]
        assert positive[i].item() == pytest.approx((u[i] @ u[partner]).item(), abs=1e-6)
        assert torch.allclose(negative[i], u[others] @ u[i], atol=1e-6)
        assert same_class[i].tolist() == [bool(both[j] == both[i]) for j in others]


def test_same_class_share_by_hand_and_at_equal_weights():
    # at a huge temperature every negative weighs the same: the share is the chance level
    generator = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    share, chance = same_class_gradient_share(z1, z2, labels, temperature=1e6, batch_size=4)
    assert share.item() == pytest.approx(chance.item(), abs=1e-5)
    # same-class images identical, the others orthogonal: at t = 1 each anchor's two same-class
    # negatives (the other image's two views, at cosine 1) weigh e each, the twelve views of other
    # classes (cosine 0) 1 each
    basis = torch.eye(4).repeat_interleave(2, dim=0)
    share, chance = same_class_gradient_share(basis, basis, labels, temperature=1.0, batch_size=8)
    assert share.item() == pytest.approx(2 * math.e / (2 * math.e + 12), abs=1e-6)
    assert chance.item() == pytest.approx(2 / 14)


def test_same_class_share_leaves_out_anchors_that_push_on_nothing():
    """DCL's floor binds for a view whose positive is far closer than its negatives: no push, no
    share."""
    labels = torch.tensor([0, 0, 1, 1])
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    z2 = z1 + 0.3 * torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    share, _ = same_class_gradient_share(z1, z2, labels, 0.5, tau_plus=0.1, batch_size=4)
    assert torch.isfinite(share)
    positive, negatives, same_class = view_pair_negatives(z1, z2, labels)
    weights = negative_gradient_weights(positive, negatives, 0.5, tau_plus=0.1)
    pushed = weights.sum(1) > 0
    assert 0 < int(pushed.sum()) < 8       # the case really has both kinds of anchors
    expected = ((weights * same_class).sum(1) / weights.sum(1))[pushed].mean()
    assert share.item() == pytest.approx(expected.item(), abs=1e-6)


def test_same_class_share_draws_random_batches_whatever_the_order_of_the_data():
    """Data stored class by class (as some CIFAR copies are): batches are drawn by a seeded
    permutation, as in training, not cut in storage order (which would give batches of one class);
    the partial batch is dropped."""
    z = torch.randn(400, 5, generator=torch.Generator().manual_seed(4))
    labels = torch.arange(10).repeat_interleave(40)
    _, chance = same_class_gradient_share(z, z, labels, 1.0, batch_size=30, seed=7)
    batches = torch.randperm(400, generator=torch.Generator().manual_seed(7))[:390].view(13, 30)
    # itself included
    same_images = (labels[batches][:, :, None] == labels[batches][:, None, :]).sum(-1).float()
    # both views of the other same-class images, of 58 negatives
    expected = ((2 * same_images - 2) / 58).mean()
    assert chance.item() == pytest.approx(expected.item(), abs=1e-6) and chance.item() < 0.2


def test_effective_number_of_negatives():
    torch.testing.assert_close(effective_negatives(torch.full((7,), 0.1)), torch.tensor(7.0))
    torch.testing.assert_close(weight_entropy(torch.full((2, 4), 0.2)),
                               torch.full((2,), math.log(4)))
    torch.testing.assert_close(effective_negatives(torch.tensor([0.0, 0.3, 0.0])),
                               torch.tensor(1.0))
    s = torch.tensor([0.9, 0.5, 0.4, 0.1, -0.3])
    cold, warm, hot = (effective_negatives(torch.softmax(s / t, dim=0)) for t in (1e-3, 0.5, 1e3))
    assert abs(cold - 1) < 1e-4 and abs(hot - 5) < 1e-3 and 1 < warm < 5
    # the renormalised InfoNCE weights give the same number as the softmax over negatives alone
    torch.testing.assert_close(effective_negatives(negative_weights_from_similarities(0.8, s, 0.5)),
                               warm)


# ------------------------------------------------------------------ maps

def test_pca_map_is_the_svd_projection_with_a_fixed_sign():
    g = torch.Generator().manual_seed(8)
    features = torch.randn(50, 6, generator=g) * torch.tensor([5.0, 3, 1, 1, 1, 1])
    coords = embedding_map(features, "pca", cache=None, normalize=False)
    x = features.double().numpy()
    centred = x - x.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2] * np.sign(vt[:2][np.arange(2), np.abs(vt[:2]).argmax(1)])[:, None]
    np.testing.assert_allclose(coords, centred @ axes.T, atol=1e-5)
    assert coords.dtype == np.float32 and coords.shape == (50, 2)
    np.testing.assert_array_equal(
        coords, embedding_map(features.clone(), "pca", cache=None, normalize=False))
    # -(-features) is the same values in a tensor computed afresh, not a double decrement
    np.testing.assert_array_equal(
        coords, embedding_map(-(-features), "pca", cache=None, normalize=False))  # noqa: B002


def test_pca_map_places_new_points_with_the_same_projection():
    g = torch.Generator().manual_seed(9)
    features = torch.randn(40, 5, generator=g)
    emb_map = fit_embedding_map(features, "pca", cache=None)
    np.testing.assert_allclose(emb_map.project(features), emb_map.coords, atol=1e-5)
    new = torch.randn(3, 5, generator=g)
    expected = (F.normalize(new.double(), dim=1).numpy() - emb_map.mean) @ emb_map.components.T
    np.testing.assert_allclose(emb_map.project(new), expected, atol=1e-5)


def test_map_cache_fits_once_per_features_and_settings(monkeypatch, tmp_path):
    calls = []
    original = negatives.fit_pca
    monkeypatch.setattr(negatives, "fit_pca", lambda *a, **kw: calls.append(1)
                        or original(*a, **kw))
    g = torch.Generator().manual_seed(10)
    a, b = torch.randn(30, 4, generator=g), torch.randn(30, 4, generator=g)
    cache = MapCache()
    first = embedding_map(a, "pca", cache=cache)
    np.testing.assert_array_equal(embedding_map(a.clone(), "pca", cache=cache), first)
    assert len(calls) == 1
    embedding_map(b, "pca", cache=cache)
    embedding_map(a, "pca", n_components=3, cache=cache)
    assert len(calls) == 3 and len(cache) == 3
    embedding_map(a, "pca", cache=None)
    assert len(calls) == 4
    # on disk: a fresh cache on the same directory (a restarted kernel) loads instead of fitting
    MapCache(tmp_path).put("k", fit_embedding_map(a, "pca", cache=None))
    embedding_map(a, "pca", cache=MapCache(tmp_path))
    calls.clear()
    loaded = fit_embedding_map(a, "pca", cache=MapCache(tmp_path))
    assert calls == [] and isinstance(loaded, EmbeddingMap)
    np.testing.assert_array_equal(loaded.coords, first)
    np.testing.assert_allclose(loaded.project(a[:2]), first[:2], atol=1e-5)


def test_fingerprint_tells_tensors_apart():
    g = torch.Generator().manual_seed(11)
    a = torch.randn(100, 8, generator=g)
    assert features_fingerprint(a) == features_fingerprint(a.clone())
    assert features_fingerprint(a) != features_fingerprint(a + 1e-3)
    assert features_fingerprint(a) != features_fingerprint(a.reshape(200, 4))
    assert features_fingerprint(a) != features_fingerprint(a.double())


@pytest.mark.skipif(os.environ.get("CLCOURSE_TEST_UMAP") != "1",
                    reason="UMAP compiles for ~60 s in a fresh process; set CLCOURSE_TEST_UMAP=1")
def test_umap_map_is_seeded_and_places_new_points():
    g = torch.Generator().manual_seed(12)
    centres = torch.randn(3, 10, generator=g) * 5
    labels = torch.arange(300) % 3
    features = centres[labels] + torch.randn(300, 10, generator=g)
    emb_map = fit_embedding_map(features, "umap", cache=None)
    assert emb_map.coords.shape == (300, 2)
    np.testing.assert_array_equal(emb_map.coords, embedding_map(features, "umap", cache=None))
    # clusters stay apart: every point is closer to its own class centre on the map than to the
    # others
    map_centres = np.stack([emb_map.coords[labels.numpy() == c].mean(0) for c in range(3)])
    nearest = np.linalg.norm(emb_map.coords[:, None] - map_centres[None], axis=2).argmin(1)
    assert (nearest == labels.numpy()).mean() > 0.95
    assert emb_map.project(features[:5]).shape == (5, 2)


# ------------------------------------------------------------------ rank among negatives (CLAE)

def loop_rank(anchors, negatives, candidates):
    a, c = F.normalize(anchors, dim=1), F.normalize(candidates, dim=1)
    real = [F.normalize(v, dim=1) for v in negatives]
    batch = len(a)
    rows = []
    for k in range(batch):
        reals = [float(a[k] @ view[n]) for view in real for n in range(batch) if n != k]
        rows.append([sum(s < float(a[k] @ c[m]) for s in reals) / len(reals) for m in range(batch)
                     if m != k])
    return torch.tensor(rows)


@pytest.mark.parametrize("batch, views", [(2, 1), (5, 2), (7, 3)])
def test_rank_among_negatives_matches_a_loop(batch, views):
    generator = torch.Generator().manual_seed(batch)
    anchors, candidates = (torch.randn(batch, 4, generator=generator),
                           torch.randn(batch, 4, generator=generator))
    negatives = [torch.randn(batch, 4, generator=generator) for _ in range(views)]
    expected = loop_rank(anchors, negatives, candidates)
    assert torch.allclose(rank_among_negatives(anchors, negatives, candidates), expected)


def test_rank_is_one_for_a_copy_of_the_anchor_and_zero_for_its_opposite():
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    # candidate m = anchor 0's own embedding: for anchor 0 it is harder than every real negative
    ranks = rank_among_negatives(z1, (z1, z2), z1[[0] * 6])
    assert torch.equal(ranks[0], torch.ones(5))
    assert torch.equal(rank_among_negatives(z1, (z1, z2), -z1[[0] * 6])[0], torch.zeros(5))


def test_off_diagonal_keeps_each_row_in_column_order():
    matrix = torch.arange(9).view(3, 3)
    assert off_diagonal(matrix).tolist() == [[1, 2], [3, 5], [6, 7]]


@pytest.mark.parametrize("call, message", [
    (lambda: rank_among_negatives(torch.randn(1, 3), [torch.randn(1, 3)], torch.randn(1, 3)),
     "at least 2 images"),
    (lambda: rank_among_negatives(torch.randn(3, 3), [], torch.randn(3, 3)), "at least one"),
    (lambda: rank_among_negatives(torch.randn(3, 3), [torch.randn(4, 3)], torch.randn(3, 3)),
     r"negatives\[0\] must have the shape of anchors"),
    (lambda: rank_among_negatives(torch.randn(3, 3), [torch.randn(3, 3)], torch.randn(3, 2)),
     "candidates must have the shape of anchors"),
])
def test_rank_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ------------------------------------------------------------------ bad input

def test_bad_input_raises_value_errors_naming_the_argument():
    z = torch.randn(6, 4)
    ids = torch.arange(6)
    with pytest.raises(ValueError, match=r"k must be an integer >= 1"):
        hardest_negatives(z, z, k=0)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 6\]"):
        hardest_negatives(z, z, k=7)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\]"):
        hardest_negatives(z, z, k=6, anchor_ids=ids, candidate_ids=ids)
    with pytest.raises(ValueError, match="candidates"):
        hardest_negatives(z, torch.randn(6, 5), k=1)
    with pytest.raises(ValueError, match="anchor_ids and candidate_ids"):
        hardest_negatives(z, z, k=1, anchor_ids=ids)
    with pytest.raises(ValueError, match="anchor_ids"):
        hardest_negatives(z, z, k=1, anchor_ids=ids[:5], candidate_ids=ids)
    with pytest.raises(ValueError, match="chunk_size"):
        hardest_negatives(z, z, k=1, chunk_size=0)
    with pytest.raises(ValueError, match=r"ks must be one or more integers in \[1, 3\]"):
        false_negative_rate(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                            ks=[0, 2])
    with pytest.raises(ValueError, match="ks"):
        false_negative_rate(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                            ks=4)
    with pytest.raises(ValueError, match="anchor_labels"):
        false_negative_rate(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, dtype=torch.long),
                            ks=1)
    with pytest.raises(ValueError, match="labels"):
        similarity_distributions(z, z, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="z1 and z2"):
        similarity_distributions(z, z[:5], torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match="max_pairs"):
        similarity_distributions(z, z, torch.zeros(6, dtype=torch.long), max_pairs=0)
    for temperature in (0, -0.5):
        with pytest.raises(ValueError, match=r"temperature must be a finite number > 0"):
            negative_weights(z[0], z[1], z[2:], temperature)
        with pytest.raises(ValueError, match="temperature"):
            negative_weights_from_similarities(torch.zeros(2), torch.zeros(2, 3), temperature)
    with pytest.raises(ValueError, match="positive_similarity"):
        negative_weights_from_similarities(torch.zeros(3), torch.zeros(2, 3), 0.5)
    with pytest.raises(ValueError, match="negatives"):
        negative_weights(z[0], z[1], torch.randn(3, 5), 0.5)
    with pytest.raises(ValueError, match="weights must be non-negative"):
        effective_negatives(torch.tensor([0.5, -0.1]))
    with pytest.raises(ValueError, match="tau_plus"):
        negative_gradient_weights(torch.zeros(2), torch.zeros(2, 3), 0.5, tau_plus=1.0)
    with pytest.raises(ValueError, match="beta"):
        negative_gradient_weights(torch.zeros(2), torch.zeros(2, 3), 0.5, beta=-1.0)
    with pytest.raises(ValueError,
                       match=r"positive_similarity must be a tensor of shape \[A\] = \[2\]"):
        negative_gradient_weights(torch.zeros(3), torch.zeros(2, 3), 0.5)
    with pytest.raises(ValueError, match="negative_similarities"):
        negative_gradient_weights(torch.zeros(2), torch.zeros(2), 0.5)
    labels = torch.zeros(6, dtype=torch.long)
    with pytest.raises(ValueError, match="z1 and z2"):
        view_pair_negatives(z, z[:5], labels)
    with pytest.raises(ValueError, match="labels"):
        view_pair_negatives(z, z, labels[:5])
    with pytest.raises(ValueError, match=r"batch_size must be at most the number of images \(6\)"):
        same_class_gradient_share(z, z, labels, 0.5, batch_size=7)
    with pytest.raises(ValueError, match="batch_size"):
        same_class_gradient_share(z, z, labels, 0.5, batch_size=1)
    with pytest.raises(ValueError, match="method"):
        embedding_map(z, "tsne")
    with pytest.raises(ValueError, match=r"n_components must be an integer in \[1, 4\]"):
        embedding_map(z, "pca", n_components=5)
    with pytest.raises(ValueError, match="features must have the fitted feature dimension 4"):
        fit_embedding_map(z, "pca", cache=None).project(torch.randn(2, 3))


def test_effective_negatives_of_zero_weights_is_refused():
    with pytest.raises(ValueError, match="weights must have a positive sum .* row of zeros"):
        effective_negatives(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="weights must be finite"):
        effective_negatives(torch.tensor([1.0, float("nan")]))
    assert effective_negatives(torch.ones(2, 5)).tolist() == pytest.approx([5.0, 5.0])
