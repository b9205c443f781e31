"""The soft-target explorer headless: its view is SCE's target of a trained model
(clcourse.diagnostics.soft_targets) at any lambda and tau_m, its sliders change them, and bad values
are refused."""
import math

import numpy as np
import pytest
import torch
from helpers import fit

from clcourse.augment import simclr_cifar, weak
from clcourse.diagnostics import soft_targets, target_spread
from clcourse.methods import SCE
from clcourse.models import Backbone, SmallCNN
from clcourse.widgets import SoftTargetState, soft_target_explorer, soft_target_figure


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=generator)


@pytest.fixture(scope="module")
def trained(images):
    """An SCE trained for 2 epochs of the 48 images through a queue of 24 keys."""
    torch.manual_seed(0)
    method = SCE(Backbone(SmallCNN(width=4)), projector_hidden=16, projector_out=8,
                 augment=simclr_cifar(16), key_augment=weak(16), queue_size=24, bn_splits=2)
    fit(method, images, epochs=2, batch_size=8, lr=0.1, progress=False)
    return method


def explorer_state(trained, images, **options):
    labels = torch.arange(48) % 3
    return SoftTargetState.from_method(trained, images[:6], labels[:6], images, labels,
                                       ["a", "b", "c"], index=torch.arange(6), **options)


def test_explorer_state_recomputes_the_target_at_any_lambda_and_temperature(trained, images):
    state = explorer_state(trained, images, top=5)
    assert (state.lam, state.temperature_momentum, state.temperature) == (0.5, 0.05, 0.1)
    state.set_query(2)
    state.set_lam(0.2)
    state.set_temperature_momentum(0.3)
    view = state.view()
    targets = soft_targets(trained, images[2:3], index=torch.tensor([2]), lam=0.2,
                           temperature_momentum=0.3)
    weights = targets.target[0, 1:]
    assert np.allclose(view.weights, weights[view.entries].numpy(), atol=1e-6)
    assert len(view.entries) == 5 and np.all(np.diff(view.sorted_weights) <= 0)
    assert math.isclose(view.sorted_weights.sum(), 0.8, abs_tol=1e-5)   # 1 - lambda over the queue
    masked = (trained.queue_index == 2).numpy()
    assert len(view.sorted_weights) == 24 - masked.sum() and not masked[view.entries].any()
    entries = torch.from_numpy(view.entries)
    assert np.array_equal(view.entry_labels, (trained.queue_index[entries] % 3).numpy())
    assert np.array_equal(view.same_class, view.entry_labels == 2) and view.class_name == "c"
    spread = target_spread(targets, torch.tensor([2]), torch.arange(48) % 3)
    assert math.isclose(view.same_class_push, float(spread.same_class_push[0]), abs_tol=1e-6)
    # sharper target (smaller tau_m) -> fewer effective entries
    state.set_temperature_momentum(0.01)
    assert state.view().effective_entries < view.effective_entries


def test_explorer_sliders_drive_the_state_and_redraw(trained, images):
    widget = soft_target_explorer(explorer_state(trained, images))
    widget.lam_slider.value = 1.0
    assert widget.state.lam == 1.0 and widget.last_view.lam == 1.0
    assert math.isclose(widget.last_view.same_class_push, widget.last_view.infonce_same_class_push,
                        abs_tol=1e-6)
    widget.query_slider.value = 4
    widget.temperature_momentum_slider.value = 0.1
    assert widget.last_view.query == 4
    assert math.isclose(widget.last_view.temperature_momentum, 0.1, rel_tol=1e-6)
    assert "one-hot target (InfoNCE)" in widget.summary.value
    assert bytes(widget.figure_image.value).startswith(b"\x89PNG")
    figure = soft_target_figure(widget.last_view)
    assert len(figure.axes) == 3 + len(widget.last_view.entries)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.set_lam(-0.5), r"lam must be in \[0.0, 1.0\], got -0.5"),
    (lambda s: s.set_temperature_momentum(0),
     "temperature_momentum must be a finite number > 0, got 0"),
    (lambda s: s.set_query(6), r"query must be an integer in \[0, 5\], got 6"),
    (lambda s: s.set_top(25), r"top must be an integer in \[1, 24\]"),
])
def test_explorer_state_refuses_bad_values(trained, images, change, message):
    with pytest.raises(ValueError, match=message):
        change(explorer_state(trained, images))
