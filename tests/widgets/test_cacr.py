"""The CACR weights explorer headless: its numbers are clcourse.losses.cacr's weights, its sliders
change them."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clcourse.losses import cacr_terms
from clcourse.widgets import CacrWeightsState, cacr_weights_explorer, cacr_weights_figure

V, B = 5, 12
CLASSES = ("plane", "car", "bird")


def batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(V, B, 6, generator=generator)
    images = torch.randint(0, 256, (V, B, 3, 8, 8), dtype=torch.uint8, generator=generator)
    return embeddings, images, torch.arange(B) % 3


def make_state(**options):
    embeddings, images, labels = batch()
    return CacrWeightsState(embeddings, images, labels, CLASSES, **options)


def test_view_holds_the_weights_of_the_loss_ranked():
    embeddings, _, labels = batch()
    state = make_state(tau_pos=2.0, tau_neg=1.5, image=4)
    q = state.view()
    terms = cacr_terms(embeddings, 2.0, 1.5)
    u = F.normalize(embeddings, dim=2)
    assert sorted(q.positive_views.tolist()) == [1, 2, 3, 4]
    assert sorted(q.negative_images.tolist()) == [j for j in range(B) if j != 4]
    for view, weight, d2 in zip(q.positive_views, q.positive_weights, q.positive_d2):
        assert math.isclose(weight, terms.attraction_weights[4, 0, view].item(), abs_tol=1e-6)
        assert math.isclose(d2, ((u[0, 4] - u[view, 4]) ** 2).sum().item(), abs_tol=1e-5)
    for j, weight, d2, false_negative in zip(q.negative_images, q.negative_weights, q.negative_d2,
                                             q.false_negative):
        assert math.isclose(weight, terms.repulsion_weights[0, 4, j].item(), abs_tol=1e-6)
        assert math.isclose(d2, ((u[0, 4] - u[1, j]) ** 2).sum().item(), abs_tol=1e-5)
        assert bool(false_negative) == bool(labels[j] == labels[4])
    others = [j for j in range(B) if j != 4]
    hcl = torch.softmax(2.0 * (u[1, others] @ u[0, 4]), dim=0)           # beta / t = 1 / 0.5
    assert np.allclose(np.sort(q.hcl_weights), np.sort(hcl.numpy()), atol=1e-6)
    assert (np.diff(q.positive_weights) <= 0).all() and (np.diff(q.negative_weights) <= 0).all()
    # far pull, near push
    assert (np.diff(q.positive_d2) <= 1e-6).all() and (np.diff(q.negative_d2) >= -1e-6).all()
    assert q.class_names[0] == CLASSES[labels[4]] and len(q.class_names) == B
    assert q.view_images.shape == (V, 8, 8, 3) and q.negative_thumbnails.shape == (B - 1, 8, 8, 3)


def test_zero_concentrations_give_uniform_weights_and_full_effective_counts():
    q = make_state(tau_pos=0.0, tau_neg=0.0).view()
    assert np.allclose(q.positive_weights, 1 / (V - 1))
    assert np.allclose(q.negative_weights, 1 / (B - 1))
    assert math.isclose(q.effective_positives, V - 1, rel_tol=1e-5)
    assert math.isclose(q.effective_negatives, B - 1, rel_tol=1e-5)
    sharp = make_state(tau_pos=50.0, tau_neg=50.0).view()
    assert sharp.effective_positives < 1.5 and sharp.effective_negatives < 2.0


def test_hcl_weights_equal_the_repulsion_weights_when_the_tilts_match():
    # softmax(-tau d^2) = softmax(2 tau s): with beta / t = 2 tau-, HCL's weights are CACR's.
    q = make_state(tau_neg=1.25, hcl_beta=1.0, hcl_temperature=0.4).view()
    assert np.allclose(q.hcl_weights, q.negative_weights, atol=1e-6)
    tilted = make_state(tau_neg=0.5).view()
    assert not np.allclose(tilted.hcl_weights, tilted.negative_weights, atol=1e-3)


def test_bad_settings_are_refused():
    state = make_state()
    with pytest.raises(ValueError, match=r"tau_pos must be in \[0.0, inf\), got -1"):
        state.set_tau_pos(-1)
    with pytest.raises(ValueError, match=r"image must be an integer in \[0, 11\], got 12"):
        state.set_image(12)
    embeddings, images, labels = batch()
    with pytest.raises(ValueError, match="embeddings must be a floating-point tensor"):
        CacrWeightsState(embeddings[0])
    with pytest.raises(ValueError, match="V >= 2 views of B >= 2 images"):
        CacrWeightsState(embeddings[:1])
    with pytest.raises(ValueError, match="view_images must be a tensor"):
        CacrWeightsState(embeddings, images[:2])
    with pytest.raises(ValueError, match="class_names must be given"):
        CacrWeightsState(embeddings, labels=labels)


def test_figure_with_and_without_thumbnails():
    fig = cacr_weights_figure(make_state().view())
    assert len(fig.axes) == V + 8 + 2                  # the image's views, 8 negatives, two plots
    bare = cacr_weights_figure(CacrWeightsState(batch()[0]).view())
    assert len(bare.axes) == 2 and bare._repr_png_().startswith(b"\x89PNG")


def test_sliders_change_the_state_and_redraw():
    widget = cacr_weights_explorer(make_state())
    first = widget.last_view
    widget.tau_pos_slider.value = 3.0
    assert widget.state.tau_pos == 3.0 and widget.last_view.tau_pos == 3.0
    assert not np.allclose(widget.last_view.positive_weights, first.positive_weights)
    widget.tau_neg_slider.value = 0.0
    assert np.allclose(widget.last_view.negative_weights, 1 / (B - 1))
    widget.image_slider.value = 7
    assert widget.last_view.image == 7 and "image #7" in widget.summary.value
    # the course's notation: the sharpness kappa (the code's tau_pos and tau_neg)
    assert (widget.tau_pos_slider.description, widget.tau_neg_slider.description) == ("κ⁺", "κ⁻")
    assert "κ⁺ = 1.00" not in widget.summary.value and "κ⁻ = 0.00" in widget.summary.value
    titles = [ax.get_title() for ax in widget.last_figure.axes[-2:]]
    assert titles[0].startswith("κ⁺ = 3.00") and titles[1].startswith("κ⁻ = 0.00")
    assert bytes(widget.figure_image.value).startswith(b"\x89PNG")
