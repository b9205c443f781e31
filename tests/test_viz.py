"""The embedding-geometry plots and the CKA heatmaps and layer curves of clcourse.viz draw the
numbers they are given, mark false negatives, and reject inconsistent input with a ValueError naming
the argument."""
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from helpers import CKA_LAYERS, cka_result, cka_results
from matplotlib.colors import to_rgba

from clcourse.negatives import negative_weights_from_similarities, similarity_distributions
from clcourse.viz import (
    FALSE_NEGATIVE_COLOUR,
    plot_alignment_uniformity,
    plot_cka_heatmap,
    plot_cka_heatmaps,
    plot_effective_negatives,
    plot_embedding_map,
    plot_false_negative_rate,
    plot_layer_curves,
    plot_negative_gallery,
    plot_negative_weights,
    plot_similarity_histograms,
    plot_temperature_sweep,
)

CLASSES = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _run(epochs, offset=0.0):
    return {"epoch": epochs, "alignment": [0.1 * e + offset for e in epochs],
            "uniformity": [-0.2 * e - offset for e in epochs], "knn_epoch": epochs[1:],
            "knn_accuracy": [0.3 + 0.01 * e for e in epochs[1:]]}


# ---------------------------------------------------------------------- alignment and uniformity

def test_alignment_uniformity_plots_each_run_in_every_panel():
    fig = plot_alignment_uniformity(
        {"main": _run([0, 1, 2, 4]),
         "sweep": _run([6], offset=1.0) | {"knn_epoch": [6], "knn_accuracy": [0.5]}})
    align_ax, uniform_ax, knn_ax, plane_ax = fig.axes
    main, sweep = align_ax.get_lines()
    assert (list(main.get_xdata()) == [0, 1, 2, 4]
            and np.allclose(main.get_ydata(), [0, 0.1, 0.2, 0.4]))
    assert len(sweep.get_xdata()) == 1
    assert np.allclose(uniform_ax.get_lines()[0].get_ydata(), [0, -0.2, -0.4, -0.8])
    assert np.allclose(knn_ax.get_lines()[0].get_ydata(), [31, 32, 34])          # percent
    assert np.allclose(knn_ax.get_lines()[1].get_ydata(), [50])
    # the plane: x = uniformity, y = alignment
    assert np.allclose(plane_ax.get_lines()[0].get_xdata(), [0, -0.2, -0.4, -0.8])
    assert np.allclose(plane_ax.get_lines()[0].get_ydata(), [0, 0.1, 0.2, 0.4])


def test_alignment_uniformity_rejects_bad_runs():
    with pytest.raises(ValueError, match="runs"):
        plot_alignment_uniformity({})
    with pytest.raises(ValueError, match="uniformity"):
        plot_alignment_uniformity({"r": {"epoch": [0], "alignment": [0.1]}})
    with pytest.raises(ValueError, match="runs\\['r'\\]\\['alignment'\\]"):
        plot_alignment_uniformity(
            {"r": {"epoch": [0, 1], "alignment": [0.1], "uniformity": [0, 1]}})
    with pytest.raises(ValueError, match="runs\\['r'\\]\\['knn_accuracy'\\]"):
        plot_alignment_uniformity(
            {"r": {"epoch": [0], "alignment": [0.1], "uniformity": [0.0], "knn_epoch": [1, 2],
                   "knn_accuracy": [0.5]}})


# ---------------------------------------------------------------------- similarity histograms

def test_similarity_histograms_are_densities_of_each_kind():
    generator = torch.Generator().manual_seed(0)
    z1 = torch.randn(30, 4, generator=generator)
    z2 = z1 + 0.3 * torch.randn(30, 4, generator=generator)
    labels = torch.arange(30) % 3
    distribution = similarity_distributions(z1, z2, labels)
    fig = plot_similarity_histograms({"early": distribution, "late": distribution}, bins=20)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        bars = ax.patches
        assert len(bars) == 3                                        # one filled histogram per kind
        # each integrates to 1 on its own
        for bar in bars:
            vertices = bar.get_path().vertices
            xs, ys = vertices[:, 0], vertices[:, 1]
            area = np.trapezoid(ys, xs) if hasattr(np, "trapezoid") else np.trapz(ys, xs)
            assert abs(area) == pytest.approx(1.0, rel=1e-6)
        # dashed lines at the means of the three kinds
        means = sorted(line.get_xdata()[0] for line in ax.get_lines())
        expected = sorted(distribution[key].mean().item() for key in distribution)
        assert np.allclose(means, expected, atol=1e-6)


def test_similarity_histograms_reject_bad_input():
    with pytest.raises(ValueError, match="distributions"):
        plot_similarity_histograms({})
    with pytest.raises(ValueError, match="negative_same_class"):
        plot_similarity_histograms(
            {"x": {"positive": torch.zeros(3), "negative_other_class": torch.zeros(3)}})
    with pytest.raises(ValueError, match="bins"):
        plot_similarity_histograms({"x": {}}, bins=0)


# ---------------------------------------------------------------------- false-negative rate

def test_false_negative_rate_plot_in_percent_with_chance_line():
    fig = plot_false_negative_rate([1, 5, 10], {"epoch 0": torch.tensor([0.2, 0.15, 0.1]),
                                                "epoch 9": torch.tensor([0.6, 0.5, 0.4])},
                                   chance=0.1)
    ax = fig.axes[0]
    curves = ax.get_lines()
    assert (np.allclose(curves[0].get_ydata(), [20, 15, 10])
            and np.allclose(curves[1].get_ydata(), [60, 50, 40]))
    assert np.allclose(curves[2].get_ydata(), [10, 10])             # chance
    assert ax.get_xscale() == "log"


def test_false_negative_rate_plot_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="rates\\['e'\\]"):
        plot_false_negative_rate([1, 5], {"e": torch.tensor([0.1, 0.2, 0.3])})


# ---------------------------------------------------------------------- gallery

def test_gallery_frames_false_negatives_in_red():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 0, 1, 2, 1, 0])
    # anchor 0 (label 0), anchor 2 (label 1)
    negatives = torch.tensor([[1, 2, 5], [4, 3, 0]])
    similarities = torch.tensor([[0.9, 0.8, 0.7], [0.95, 0.5, 0.4]])
    fig = plot_negative_gallery(images, labels, [0, 2], negatives, similarities, CLASSES)
    axes = np.array(fig.axes).reshape(2, 4)
    red = to_rgba(FALSE_NEGATIVE_COLOUR)
    is_red = [[to_rgba(ax.spines["left"].get_edgecolor()) == red for ax in row] for row in axes]
    assert is_red == [[False, True, False, True], [False, True, False, False]]
    assert axes[0, 1].get_title() == "s=0.90\na"
    assert np.allclose(axes[1, 1].get_images()[0].get_array(),
                       images[4].permute(1, 2, 0).numpy() / 255)


def test_gallery_rejects_mismatched_shapes():
    images, labels = torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="negatives and similarities"):
        plot_negative_gallery(images, labels, [0], torch.zeros(2, 3, dtype=torch.long),
                              torch.zeros(2, 3), CLASSES)
    with pytest.raises(ValueError, match="negatives and similarities"):
        plot_negative_gallery(images, labels, [0], torch.zeros(1, 3, dtype=torch.long),
                              torch.zeros(1, 2), CLASSES)


# ---------------------------------------------------------------------- temperature

def test_negative_weights_plot_draws_softmax_weights_by_rank():
    similarities = torch.tensor([0.1, 0.9, -0.3, 0.5])
    same_class = torch.tensor([False, True, False, True])
    fig = plot_negative_weights(similarities, 0.8, (0.1, 1.0), same_class=same_class)
    ax = fig.axes[0]
    low_tau, high_tau, ticks = ax.get_lines()
    expected = negative_weights_from_similarities(0.8, torch.tensor([0.9, 0.5, 0.1, -0.3]), 0.1)
    assert list(low_tau.get_xdata()) == [1, 2, 3, 4]
    assert np.allclose(low_tau.get_ydata(), expected.numpy())
    # hardest first, weights decreasing
    assert np.all(np.diff(high_tau.get_ydata()) < 0)
    # the two same-class negatives rank 1 and 2
    assert list(ticks.get_xdata()) == [1, 2]
    assert "τ = 0.1" in ax.get_legend().get_texts()[0].get_text()


def test_negative_weights_plot_rejects_bad_input():
    with pytest.raises(ValueError, match="negative_similarities"):
        plot_negative_weights(torch.zeros(2, 3), 0.5, (0.5,))
    with pytest.raises(ValueError, match="same_class"):
        plot_negative_weights(torch.zeros(3), 0.5, (0.5,),
                              same_class=torch.zeros(2, dtype=torch.bool))


def test_effective_negatives_plot():
    fig = plot_effective_negatives([0.1, 1.0],
                                   {"epoch 0": [5.0, 9.0], "epoch 3": torch.tensor([2.0, 8.0])},
                                   num_negatives=10, marked=(0.5,))
    ax = fig.axes[0]
    curves = ax.get_lines()
    assert np.allclose(curves[0].get_ydata(), [5, 9]) and np.allclose(curves[1].get_ydata(), [2, 8])
    assert np.allclose(curves[2].get_ydata(), [10, 10])             # the ceiling K
    assert np.allclose(curves[3].get_xdata(), [0.5, 0.5])           # a marked temperature
    with pytest.raises(ValueError, match="effective\\['e'\\]"):
        plot_effective_negatives([0.1, 1.0], {"e": [1.0]}, num_negatives=10)


def test_temperature_sweep_plot():
    fig = plot_temperature_sweep({0.5: {"knn_accuracy": 0.4, "uniformity": -2.0},
                                  0.1: {"knn_accuracy": 0.3, "uniformity": -3.0}})
    left, right = fig.axes
    assert list(left.get_lines()[0].get_xdata()) == [0.1, 0.5]
    assert np.allclose(left.get_lines()[0].get_ydata(), [30, 40])
    assert np.allclose(right.get_lines()[0].get_ydata(), [-3, -2])
    with pytest.raises(ValueError, match="results"):
        plot_temperature_sweep({})
    with pytest.raises(ValueError, match="uniformity"):
        plot_temperature_sweep({0.5: {"knn_accuracy": 0.4}})


# ---------------------------------------------------------------------- map

def test_embedding_map_highlights_anchor_positive_and_negatives():
    coords = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [2, 2]], dtype=np.float32)
    labels = torch.tensor([0, 0, 1, 2, 1])
    fig = plot_embedding_map(coords, labels, CLASSES, anchor=0, negatives=[1, 2],
                             positive_xy=np.array([0.1, 0.1]))
    ax = fig.axes[0]
    background, first, second, star, triangle = ax.collections
    assert np.allclose(background.get_offsets(), coords)
    assert (np.allclose(first.get_offsets(), [[1, 0]])
            and np.allclose(second.get_offsets(), [[0, 1]]))
    # same class as the anchor
    assert to_rgba(first.get_edgecolor()[0]) == to_rgba(FALSE_NEGATIVE_COLOUR)
    assert to_rgba(second.get_edgecolor()[0]) == to_rgba("black")
    assert (np.allclose(star.get_offsets(), [[0, 0]])
            and np.allclose(triangle.get_offsets(), [[0.1, 0.1]]))
    assert [t.get_text() for t in ax.texts] == ["1", "2"]


def test_embedding_map_rejects_bad_coords():
    with pytest.raises(ValueError, match="coords"):
        plot_embedding_map(np.zeros((4, 3)), torch.zeros(4, dtype=torch.long), CLASSES)
    with pytest.raises(ValueError, match="coords"):
        plot_embedding_map(np.zeros((3, 2)), torch.zeros(4, dtype=torch.long), CLASSES)


# ---------------------------------------------------------------------- CKA heatmaps and curves

def test_heatmap_shows_the_matrix_with_layer_names_and_values():
    r = cka_result(("SimCLR", "clean"), ("SimCLR", "PGD"), 0, layers_b=CKA_LAYERS[:2])
    fig = plot_cka_heatmap(r, title="clean vs PGD")
    ax = fig.axes[0]
    shown = ax.images[0].get_array()
    assert shown.shape == (3, 2)
    assert torch.allclose(torch.as_tensor(shown.data).double(), r.matrix, atol=1e-6)
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
    fig = plot_cka_heatmaps({f"pair {i}": r for i, r in enumerate(cka_results().values())}, ncols=2)
    assert sum(1 for ax in fig.axes if ax.images) == 3
    assert [ax.get_title() for ax in fig.axes[:3]] == ["pair 0", "pair 1", "pair 2"]
    plt.close(fig)
    curves = {"standard": [0.9, 0.5, 0.2], "adversarially trained": torch.tensor([0.95, 0.9, 0.8])}
    fig = plot_layer_curves(curves, CKA_LAYERS, "CKA(clean, PGD)", baseline=(0.1, "chance"),
                            ylim=(0, 1))
    ax = fig.axes[0]
    assert [list(line.get_ydata()) for line in ax.get_lines()[:2]] == [
        [0.9, 0.5, 0.2], pytest.approx([0.95, 0.9, 0.8])]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["layer1", "layer2", "pool"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "standard", "adversarially trained", "chance"]
    plt.close(fig)
    with pytest.raises(ValueError, match="same length"):
        plot_layer_curves({"short": [0.1]}, CKA_LAYERS, "CKA")
    with pytest.raises(ValueError, match="at least one"):
        plot_cka_heatmaps({})


def test_backend_is_headless():
    assert matplotlib.get_backend().lower() == "agg"
