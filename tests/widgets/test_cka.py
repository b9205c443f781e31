"""The CKA explorer headless: set a control's value, check what the state chose and what the figure
shows."""
import pytest
import torch
from helpers import CKA_LAYERS, cka_result, cka_results

from clcourse.widgets import CKAState, cka_explorer, cka_figure, static_cka_explorer


def test_state_lists_models_inputs_and_shows_both_directions_of_a_pair():
    state = CKAState(cka_results())
    assert state.models == ["SimCLR", "SupCon"] and state.inputs("SimCLR") == ["clean", "PGD"]
    assert state.a == ("SimCLR", "clean") and state.b == ("SimCLR", "PGD")
    computed = cka_results()
    assert torch.equal(state.view().matrix,
                       computed[(("SimCLR", "clean"), ("SimCLR", "PGD"))].matrix)
    state.set_a("SupCon")                          # SupCon has no PGD input: its first, clean
    state.set_b("SimCLR", "clean")
    assert state.a == ("SupCon", "clean")
    assert torch.equal(state.view().matrix,
                       computed[(("SimCLR", "clean"), ("SupCon", "clean"))].matrix.T)
    state.set_a("SimCLR", "PGD")
    assert torch.equal(state.view().matrix,
                       computed[(("SimCLR", "clean"), ("SimCLR", "PGD"))].matrix.T)
    state.set_b("SupCon")
    with pytest.raises(ValueError, match="was not computed"):
        state.view()


def test_layer_selection_is_kept_in_network_order_and_reset_when_it_does_not_apply():
    mixed = cka_results()
    other = ("Supervised", "clean")
    short = ("net.stem", "net.pool")
    mixed[(other, other)] = cka_result(other, other, 3, short, short)
    mixed[(("SimCLR", "clean"), other)] = cka_result(("SimCLR", "clean"), other, 4, CKA_LAYERS,
                                                     short)
    state = CKAState(mixed)
    state.set_layers_a(["net.pool", "net.layer1"])
    assert state.layers_a == ("net.layer1", "net.pool")
    full = state.view().matrix
    state.set_layers_b("net.layer2")
    assert torch.equal(state.view().matrix, full[:, 1:2])
    state.set_b("Supervised")
    assert state.layers_b == ("net.stem", "net.pool")   # no net.layer2 there: all its layers
    state.set_b("SimCLR", "PGD")
    assert state.layers_b == ("net.pool",)              # the part of the selection found there
    with pytest.raises(ValueError, match="non-empty selection"):
        state.set_layers_a([])
    with pytest.raises(ValueError, match="non-empty selection from"):
        state.set_layers_a(["net.stem"])


def test_controls_drive_the_state_and_the_figure():
    state = CKAState(cka_results())
    widget = cka_explorer(state)
    assert widget.last_view.a == ("SimCLR", "clean")
    assert "SimCLR · clean (rows) vs SimCLR · PGD" in widget.summary.value
    assert list(widget.input_a.options) == ["clean", "PGD"]
    assert widget.layers_a.value == CKA_LAYERS
    widget.model_b.value = "SupCon"
    assert state.b == ("SupCon", "clean") and list(widget.input_b.options) == ["clean"]
    assert torch.equal(widget.last_view.matrix,
                       cka_results()[(("SimCLR", "clean"), ("SupCon", "clean"))].matrix)
    widget.layers_a.value = ("net.pool",)
    assert state.layers_a == ("net.pool",) and widget.last_view.matrix.shape == (1, 3)
    assert widget.last_figure.axes[0].images[0].get_array().shape == (1, 3)
    widget.layers_b.value = ()
    assert "at least one layer" in widget.summary.value and state.layers_b == CKA_LAYERS
    widget.input_a.value = "PGD"                   # SimCLR PGD vs SupCon clean was not computed
    assert "was not computed" in widget.summary.value
    assert widget.last_view is None and widget.figure_image.layout.display == "none"
    assert bytes(widget.figure_image.value) == b""
    widget.input_b.value = "clean"
    widget.model_b.value = "SimCLR"            # SimCLR PGD vs SimCLR clean: computed, transposed
    assert widget.last_view.b == ("SimCLR", "clean")
    assert bytes(widget.figure_image.value).startswith(b"\x89PNG")
    assert widget.figure_image.layout.display is None


def test_static_explorer_and_figure():
    state = CKAState(cka_results())
    fig = static_cka_explorer(state, ("SupCon", "clean"), ("SupCon", "clean"))
    assert state.a == state.b == ("SupCon", "clean")
    assert fig.axes[0].images[0].get_array().shape == (3, 3) and fig._repr_png_()[:4] == b"\x89PNG"
    assert cka_figure(state.view()).axes[0].get_title() == "linear CKA, 100 images"


def test_bad_state_input_raises_value_errors():
    with pytest.raises(ValueError, match="non-empty dict"):
        CKAState({})
    with pytest.raises(ValueError, match="must be pairs \\(model, input\\)"):
        CKAState({("a", "b"): cka_result("a", "b", 0)})
    with pytest.raises(ValueError, match="CKAResult values"):
        CKAState({1: torch.zeros(2, 2)})
    inconsistent = cka_results()
    inconsistent[("x", "y")] = cka_result(("SimCLR", "clean"), ("SupCon", "clean"), 5,
                                          CKA_LAYERS[:2], CKA_LAYERS)
    with pytest.raises(ValueError, match="different layers in two results"):
        CKAState(inconsistent)
    state = CKAState(cka_results())
    with pytest.raises(ValueError, match="model must be one of \\['SimCLR', 'SupCon'\\]"):
        state.set_a("MoCo")
    with pytest.raises(ValueError, match="input must be one of \\['clean'\\] for model 'SupCon'"):
        state.set_b("SupCon", "PGD")
