"""The CKA heatmaps and layer curves, and the CKA explorer headless: set a control's value, check what the
state chose and what the figure shows."""
import matplotlib.pyplot as plt
import pytest
import torch

from clcourse.cka import CKAResult
from clcourse.viz import plot_cka_heatmap, plot_cka_heatmaps, plot_layer_curves
from clcourse.widgets import CKAExplorerState, cka_explorer, cka_figure, static_cka_explorer

LAYERS = ("net.layer1", "net.layer2", "net.pool")


def result(a, b, seed, layers_a=LAYERS, layers_b=LAYERS):
    g = torch.Generator().manual_seed(seed)
    matrix = torch.rand(len(layers_a), len(layers_b), generator=g, dtype=torch.float64)
    return CKAResult(a, b, tuple(layers_a), tuple(layers_b), matrix, 100, 2)


def results():
    """Two models, SimCLR with a clean and an adversarial input, SupCon with a clean one; three of the six pairs."""
    simclr, simclr_pgd, supcon = ("SimCLR", "clean"), ("SimCLR", "PGD"), ("SupCon", "clean")
    return {(simclr, simclr_pgd): result(simclr, simclr_pgd, 0),
            (simclr, supcon): result(simclr, supcon, 1),
            (supcon, supcon): result(supcon, supcon, 2)}


def test_heatmap_shows_the_matrix_with_layer_names_and_values():
    r = result(("SimCLR", "clean"), ("SimCLR", "PGD"), 0, layers_b=LAYERS[:2])
    fig = plot_cka_heatmap(r, title="clean vs PGD")
    ax = fig.axes[0]
    shown = ax.images[0].get_array()
    assert shown.shape == (3, 2) and torch.allclose(torch.as_tensor(shown.data).double(), r.matrix, atol=1e-6)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["layer1", "layer2", "pool"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layer1", "layer2"]
    assert ax.get_ylabel() == "SimCLR · clean" and ax.get_xlabel() == "SimCLR · PGD"
    assert ax.get_title() == "clean vs PGD"
    assert len(ax.texts) == 6 and ax.texts[0].get_text() == f"{float(r.matrix[0, 0]):.2f}"
    assert ax.images[0].get_clim() == (0, 1)
    plt.close(fig)
    with pytest.raises(ValueError, match="CKAResult"):
        plot_cka_heatmap(r.matrix)


def test_heatmap_grid_and_layer_curves():
    fig = plot_cka_heatmaps({f"pair {i}": r for i, r in enumerate(results().values())}, ncols=2)
    assert sum(1 for ax in fig.axes if ax.images) == 3 and [ax.get_title() for ax in fig.axes[:3]] == [
        "pair 0", "pair 1", "pair 2"]
    plt.close(fig)
    fig = plot_layer_curves({"standard": [0.9, 0.5, 0.2], "adversarially trained": torch.tensor([0.95, 0.9, 0.8])},
                            LAYERS, "CKA(clean, PGD)", baseline=(0.1, "chance"), ylim=(0, 1))
    ax = fig.axes[0]
    assert [list(line.get_ydata()) for line in ax.get_lines()[:2]] == [[0.9, 0.5, 0.2], pytest.approx([0.95, 0.9, 0.8])]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layer1", "layer2", "pool"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["standard", "adversarially trained", "chance"]
    plt.close(fig)
    with pytest.raises(ValueError, match="same length"):
        plot_layer_curves({"short": [0.1]}, LAYERS, "CKA")
    with pytest.raises(ValueError, match="at least one"):
        plot_cka_heatmaps({})


def test_state_lists_models_inputs_and_shows_both_directions_of_a_pair():
    state = CKAExplorerState(results())
    assert state.models == ["SimCLR", "SupCon"] and state.inputs("SimCLR") == ["clean", "PGD"]
    assert state.a == ("SimCLR", "clean") and state.b == ("SimCLR", "PGD")
    assert torch.equal(state.view().matrix, results()[(("SimCLR", "clean"), ("SimCLR", "PGD"))].matrix)
    state.set_a("SupCon")                                    # SupCon has no PGD input: its first, clean
    state.set_b("SimCLR", "clean")
    assert state.a == ("SupCon", "clean")
    assert torch.equal(state.view().matrix, results()[(("SimCLR", "clean"), ("SupCon", "clean"))].matrix.T)
    state.set_a("SimCLR", "PGD")
    assert torch.equal(state.view().matrix, results()[(("SimCLR", "clean"), ("SimCLR", "PGD"))].matrix.T)
    state.set_b("SupCon")
    with pytest.raises(ValueError, match="was not computed"):
        state.view()


def test_layer_selection_is_kept_in_network_order_and_reset_when_it_does_not_apply():
    mixed = results()
    other = ("Supervised", "clean")
    mixed[(other, other)] = result(other, other, 3, ("net.stem", "net.pool"), ("net.stem", "net.pool"))
    mixed[(("SimCLR", "clean"), other)] = result(("SimCLR", "clean"), other, 4, LAYERS, ("net.stem", "net.pool"))
    state = CKAExplorerState(mixed)
    state.set_layers_a(["net.pool", "net.layer1"])
    assert state.layers_a == ("net.layer1", "net.pool")
    full = state.view().matrix
    state.set_layers_b("net.layer2")
    assert torch.equal(state.view().matrix, full[:, 1:2])
    state.set_b("Supervised")
    assert state.layers_b == ("net.stem", "net.pool")        # net.layer2 does not exist there: all its layers
    state.set_b("SimCLR", "PGD")
    assert state.layers_b == ("net.pool",)                   # the part of the selection that exists there
    with pytest.raises(ValueError, match="non-empty selection"):
        state.set_layers_a([])
    with pytest.raises(ValueError, match="non-empty selection from"):
        state.set_layers_a(["net.stem"])


def test_controls_drive_the_state_and_the_figure():
    state = CKAExplorerState(results())
    widget = cka_explorer(state)
    assert widget.last_view.a == ("SimCLR", "clean")
    assert "SimCLR · clean (rows) vs SimCLR · PGD" in widget.summary.value
    assert list(widget.input_a.options) == ["clean", "PGD"] and widget.layers_a.value == LAYERS
    widget.model_b.value = "SupCon"
    assert state.b == ("SupCon", "clean") and list(widget.input_b.options) == ["clean"]
    assert torch.equal(widget.last_view.matrix, results()[(("SimCLR", "clean"), ("SupCon", "clean"))].matrix)
    widget.layers_a.value = ("net.pool",)
    assert state.layers_a == ("net.pool",) and widget.last_view.matrix.shape == (1, 3)
    assert widget.last_figure.axes[0].images[0].get_array().shape == (1, 3)
    widget.layers_b.value = ()
    assert "at least one layer" in widget.summary.value and state.layers_b == LAYERS
    widget.input_a.value = "PGD"                             # SimCLR PGD vs SupCon clean was not computed
    assert "was not computed" in widget.summary.value
    assert widget.last_view is None and widget.figure_image.layout.display == "none"
    assert bytes(widget.figure_image.value) == b""
    widget.input_b.value = "clean"
    widget.model_b.value = "SimCLR"                          # SimCLR PGD vs SimCLR clean: computed, transposed
    assert widget.last_view.b == ("SimCLR", "clean") and bytes(widget.figure_image.value).startswith(b"\x89PNG")
    assert widget.figure_image.layout.display is None


def test_static_explorer_and_figure():
    state = CKAExplorerState(results())
    fig = static_cka_explorer(state, ("SupCon", "clean"), ("SupCon", "clean"))
    assert state.a == state.b == ("SupCon", "clean")
    assert fig.axes[0].images[0].get_array().shape == (3, 3) and fig._repr_png_()[:4] == b"\x89PNG"
    assert cka_figure(state.view()).axes[0].get_title() == "linear CKA, 100 images"


def test_bad_state_input_raises_value_errors():
    with pytest.raises(ValueError, match="non-empty dict"):
        CKAExplorerState({})
    with pytest.raises(ValueError, match="must be pairs \\(model, input\\)"):
        CKAExplorerState({("a", "b"): result("a", "b", 0)})
    with pytest.raises(ValueError, match="CKAResult values"):
        CKAExplorerState({1: torch.zeros(2, 2)})
    inconsistent = results()
    inconsistent[("x", "y")] = result(("SimCLR", "clean"), ("SupCon", "clean"), 5, LAYERS[:2], LAYERS)
    with pytest.raises(ValueError, match="different layers in two results"):
        CKAExplorerState(inconsistent)
    state = CKAExplorerState(results())
    with pytest.raises(ValueError, match="model must be one of \\['SimCLR', 'SupCon'\\]"):
        state.set_a("MoCo")
    with pytest.raises(ValueError, match="input must be one of \\['clean'\\] for model 'SupCon'"):
        state.set_b("SupCon", "PGD")
