"""The explorer headless: set a control's value, check what the state computed."""
import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure

from clcourse.negatives import MapCache
from clcourse.widgets import (
    NeighbourhoodState,
    NeighbourhoodView,
    neighbourhood_explorer,
    neighbourhood_figure,
    static_neighbourhood_explorer,
)

CLASSES = ("plane", "car", "bird")
N = 24


def synthetic(seed=0):
    """24 images of 3 classes (label = index % 3); a 'trained' encoder clusters the classes, an
    'init' one is random; second views are small perturbations of the first."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(N) % 3
    prototypes = 3 * torch.randn(3, 6, generator=g)
    trained = prototypes[labels] + 0.3 * torch.randn(N, 6, generator=g)
    init = torch.randn(N, 6, generator=g)
    features = {"init": init, "trained": trained}
    positives = {name: f + 0.3 * torch.randn(N, 6, generator=g) for name, f in features.items()}
    images = torch.randint(0, 256, (N, 3, 8, 8), generator=g, dtype=torch.uint8)
    views = (images.flip(3), images.flip(2))
    return features, positives, images, labels, views


def make_state(views=True, **options):
    features, positives, images, labels, pair = synthetic()
    if views:
        options.update(positive_features=positives, views=pair)
    return NeighbourhoodState(features, images, labels, CLASSES, map_cache=MapCache(), **options)


def reference_neighbourhood(features, positives, anchor, k, temperature):
    """One anchor by loops: all similarities, a full sort, the softmax over [positive; all
    negatives]."""
    def cos(a, b):
        return F.cosine_similarity(a, b, dim=0).item()

    others = [j for j in range(len(features)) if j != anchor]
    s = {j: cos(features[anchor], features[j]) for j in others}
    order = sorted(others, key=lambda j: -s[j])
    s_pos = cos(features[anchor], positives[anchor]) if positives is not None else 1.0
    denominator = math.exp(s_pos / temperature) + sum(math.exp(s[j] / temperature) for j in others)
    weights = {j: math.exp(s[j] / temperature) / denominator for j in others}
    q = np.array([weights[j] for j in others]) / sum(weights.values())
    return {"order": order[:k], "sims": [s[j] for j in order[:k]],
            "weights": [weights[j] for j in order[:k]],
            "positive_weight": math.exp(s_pos / temperature) / denominator,
            "effective": math.exp(-(q * np.log(q)).sum())}


@pytest.mark.parametrize("with_views", [True, False])
def test_neighbourhood_matches_a_loop_reference(with_views):
    features, positives, _, labels, _ = synthetic()
    state = make_state(views=with_views, k=5, temperature=0.3)
    state.set_checkpoint("trained")
    state.select_anchor("bird", 3)                    # the 4th bird: image 2 + 3 * 3 = 11
    nb = state.view()
    assert isinstance(nb, NeighbourhoodView)
    assert nb.anchor == 11 and nb.label == 2 and nb.class_name == "bird"
    ref = reference_neighbourhood(features["trained"], positives["trained"] if with_views else None,
                                  11, 5, 0.3)
    assert nb.negatives.tolist() == ref["order"]
    np.testing.assert_allclose(nb.similarities, ref["sims"], atol=1e-5)
    np.testing.assert_array_equal(nb.false_negative, labels[ref["order"]].numpy() == 2)
    np.testing.assert_allclose(nb.weights, ref["weights"], rtol=1e-4, atol=1e-7)
    assert nb.positive_weight == pytest.approx(ref["positive_weight"], rel=1e-4)
    total = nb.positive_weight + nb.weights.sum() + nb.other_negatives_weight
    assert total == pytest.approx(1.0, abs=1e-5)
    assert nb.effective_negatives == pytest.approx(ref["effective"], rel=1e-4)
    assert nb.num_negatives == N - 1 and nb.has_positive == with_views
    coords = state.embedding_map().coords
    np.testing.assert_array_equal(nb.anchor_xy, coords[11])
    np.testing.assert_array_equal(nb.negatives_xy, coords[nb.negatives])
    assert (nb.positive_xy is not None) == with_views
    assert nb.anchor_image.shape == (8, 8, 3) and nb.negative_images.shape == (5, 8, 8, 3)
    assert (nb.view_images is not None) == with_views


def test_trained_encoder_finds_more_false_negatives_than_random():
    state = make_state(k=7)
    counts = {}
    for name in state.checkpoints:
        state.set_checkpoint(name)
        counts[name] = 0
        for anchor in range(N):
            state.set_anchor(anchor)
            counts[name] += state.view().false_negative_count
    assert counts["trained"] == N * 7      # 8 images per class: the 7 nearest are the same class
    assert counts["init"] < counts["trained"]


def test_controls_drive_the_state():
    state = make_state(k=4, temperature=1.0)
    ui = neighbourhood_explorer(state)
    first = ui.last_view
    assert first.anchor == 0 and ui.class_dropdown.value == 0 and ui.index_slider.max == 7

    ui.class_dropdown.value = 1                      # car: images 1, 4, 7, ...
    assert state.anchor == 1 and ui.index_slider.value == 0 and ui.last_view.anchor == 1
    ui.index_slider.value = 2
    assert state.anchor == 7 and ui.last_view.anchor == 7 and ui.last_view.label == 1

    warm = ui.last_view
    ui.temperature_slider.value = 0.05
    cold = ui.last_view
    assert state.temperature == pytest.approx(0.05) and cold.temperature == pytest.approx(0.05)
    assert cold.negatives.tolist() == warm.negatives.tolist()   # the ranking does not depend on tau
    # the hardest negative dominates
    assert cold.weights[0] / cold.weights.sum() > warm.weights[0] / warm.weights.sum()
    assert cold.effective_negatives < warm.effective_negatives

    ui.k_slider.value = 6
    assert state.k == 6 and ui.last_view.k == 6


def test_random_button_moves_the_anchor_and_syncs_the_controls():
    state = make_state()
    ui = neighbourhood_explorer(state)
    expected = np.random.default_rng(0).integers(N, size=5)      # the state's generator, seed 0
    for anchor in expected:
        ui.random_button.click()
        assert state.anchor == anchor and ui.last_view.anchor == anchor
        assert ui.class_dropdown.value == anchor % 3 and ui.index_slider.value == anchor // 3
    assert state.random_anchor(seed=3) == np.random.default_rng(3).integers(N)


def test_checkpoint_selector_switches_embeddings():
    state = make_state(k=5)
    ui = neighbourhood_explorer(state)
    ui.class_dropdown.value = 2
    before = ui.last_view
    assert before.checkpoint == "init"
    ui.checkpoint_dropdown.value = "trained"
    after = ui.last_view
    assert state.checkpoint == "trained" and after.checkpoint == "trained"
    assert after.anchor == before.anchor
    assert after.negatives.tolist() != before.negatives.tolist()
    assert after.false_negative.all()
    assert not np.array_equal(after.map_coords, before.map_coords)
    # a single checkpoint gets no selector
    features, _, images, labels, _ = synthetic()
    single = neighbourhood_explorer(NeighbourhoodState(features["trained"], images, labels, CLASSES,
                                                       map_cache=None))
    assert single.checkpoint_dropdown is None and single.last_view.checkpoint == "encoder"


def test_the_image_widget_holds_the_figure():
    ui = neighbourhood_explorer(make_state(k=3))
    assert bytes(ui.figure_image.value).startswith(b"\x89PNG")
    assert ui.figure_image.layout.display is None
    assert "of the 3 hardest" in ui.summary.value
    before = bytes(ui.figure_image.value)
    ui.k_slider.value = 2
    assert bytes(ui.figure_image.value).startswith(b"\x89PNG")
    assert bytes(ui.figure_image.value) != before


@pytest.mark.parametrize("with_views", [True, False])
def test_figure_has_a_panel_per_image_plus_weights_and_map(with_views):
    state = make_state(views=with_views, k=5)
    fig = neighbourhood_figure(state.view())
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1 + (2 if with_views else 0) + 5 + 2
    bars = fig.axes[-2].patches
    np.testing.assert_allclose([bar.get_height() for bar in bars], state.view().weights)
    false_negative_titles = [ax.get_title() for ax in fig.axes if ax.get_title().endswith("(FN)")]
    assert len(false_negative_titles) == state.view().false_negative_count


def test_static_explorer_draws_the_chosen_anchor():
    state = make_state(k=4)
    fig = static_neighbourhood_explorer(state, "car", 1)
    assert state.anchor == 4 and fig.axes[0].get_title().startswith("anchor #4")
    assert len(fig.axes) == 1 + 2 + 4 + 2
    assert fig._repr_png_().startswith(b"\x89PNG")       # shows itself in a notebook, pyplot or not


def test_from_backbones_extracts_features_and_views(monkeypatch):
    """from_backbones wires clcourse.evaluate.extract_features (replaced here by a reference)."""
    calls = []

    def fake_extract_features(backbone, images, batch_size=1024):
        calls.append(images)
        with torch.no_grad():
            return backbone(images.float() / 255)

    try:
        import clcourse.evaluate as evaluate
        monkeypatch.setattr(evaluate, "extract_features", fake_extract_features)
    except ImportError:
        monkeypatch.setitem(sys.modules, "clcourse.evaluate",
                            types.SimpleNamespace(extract_features=fake_extract_features))
    torch.manual_seed(0)
    backbones = {"a": nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)),
                 "b": nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))}
    _, _, images, labels, _ = synthetic()

    plain = NeighbourhoodState.from_backbones(backbones, images, labels, CLASSES, map_cache=None,
                                              k=3)
    assert plain.checkpoints == ["a", "b"] and plain.views is None and len(calls) == 2
    nb = plain.view()
    expected = F.normalize(backbones["a"](images.float() / 255), dim=1)
    ref = reference_neighbourhood(expected.detach(), None, 0, 3, 0.5)
    assert nb.negatives.tolist() == ref["order"]

    def augment(batch, generator):
        """Flip each image horizontally with probability 1/2, drawn from the generator."""
        flip = torch.rand(len(batch), generator=generator, device=batch.device) < 0.5
        return torch.where(flip[:, None, None, None], batch.flip(3), batch).float() / 255

    calls.clear()
    viewed = NeighbourhoodState.from_backbones(backbones, images, labels, CLASSES, augment=augment,
                                               batch_size=10, map_cache=None, k=3)
    view1, view2 = viewed.views
    assert view1.dtype == torch.uint8 and view1.shape == images.shape
    assert not torch.equal(view1, view2)
    assert torch.equal(view1, calls[0]) and torch.equal(view2, calls[2])      # a's views, then b's
    nb = viewed.view()
    z1, z2 = (backbones["a"](v.float() / 255).detach() for v in (view1, view2))
    expected_similarity = F.cosine_similarity(z1[0], z2[0], dim=0).item()
    assert nb.positive_similarity == pytest.approx(expected_similarity, abs=1e-5)
    again = NeighbourhoodState.from_backbones(backbones, images, labels, CLASSES, augment=augment,
                                              batch_size=10, map_cache=None)
    assert torch.equal(again.views[0], view1)                                  # seeded views


def test_from_backbones_with_clcourse_extract_features():
    pytest.importorskip("clcourse.evaluate")
    torch.manual_seed(1)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    _, _, images, labels, _ = synthetic()
    state = NeighbourhoodState.from_backbones({"net": backbone}, images, labels, CLASSES,
                                              map_cache=None, k=3)
    expected = F.normalize(backbone(images.float() / 255), dim=1).detach()
    reference = reference_neighbourhood(expected, None, 0, 3, 0.5)
    assert state.view().negatives.tolist() == reference["order"]


def test_bad_input_raises_value_errors_naming_the_argument():
    state = make_state()
    with pytest.raises(ValueError, match=r"index must be an integer in \[0, 7\]"):
        state.select_anchor("car", 8)
    with pytest.raises(ValueError, match="index"):
        state.select_anchor(1, -1)
    with pytest.raises(ValueError, match="cls must be a class name"):
        state.select_anchor("truck", 0)
    with pytest.raises(ValueError, match=r"anchor must be an integer in \[0, 23\]"):
        state.set_anchor(24)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        state.set_k(0)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 23\]"):
        state.set_k(24)
    for temperature in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            state.set_temperature(temperature)
    with pytest.raises(ValueError, match="checkpoint must be one of"):
        state.set_checkpoint("epoch 99")
    features, positives, images, labels, views = synthetic()
    with pytest.raises(ValueError,
                       match=r"labels has 23 entries but features\['init'\] has 24 rows"):
        NeighbourhoodState(features, images, labels[:23], CLASSES)
    with pytest.raises(ValueError, match="images"):
        NeighbourhoodState(features, images[:20], labels, CLASSES)
    with pytest.raises(ValueError, match="positive_features"):
        NeighbourhoodState(features, images, labels, CLASSES,
                           positive_features={"init": positives["init"]})
    with pytest.raises(ValueError, match="views"):
        NeighbourhoodState(features, images, labels, CLASSES, views=(views[0], views[1][:3]))
    with pytest.raises(ValueError, match="class_names"):
        NeighbourhoodState(features, images, labels, CLASSES[:2])
    with pytest.raises(ValueError, match="features"):
        NeighbourhoodState({}, images, labels, CLASSES)
    with pytest.raises(ValueError, match="k must be an integer"):
        NeighbourhoodState(features, images, labels, CLASSES, k=24)
    with pytest.raises(ValueError, match="temperature"):
        NeighbourhoodState(features, images, labels, CLASSES, temperature=0)
    with pytest.raises(ValueError, match="map_method"):
        NeighbourhoodState(features, images, labels, CLASSES, map_method="tsne")
