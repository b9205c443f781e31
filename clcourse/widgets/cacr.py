"""The CACR weights explorer (notebook 06): the conditional attraction and repulsion weights of
`clcourse.losses.cacr` around one image, at any sharpness κ⁺ and κ⁻ (the code's tau_pos and tau_neg,
the paper's τ⁺ and τ⁻).

- :class:`CacrWeightsState`: the embeddings of V views of a batch, the chosen image and the two
  sharpnesses; :meth:`CacrWeightsState.view` computes a :class:`CacrWeightsView` with
  `clcourse.losses.cacr_terms`, so the explorer shows exactly the weights the loss uses.
- :func:`cacr_weights_figure`: draws a :class:`CacrWeightsView`.
- :func:`cacr_weights_explorer`: sliders for the image, κ⁺ and κ⁻ wired to the state.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import numpy as np
import torch
import torch.nn.functional as F

from ..negatives import effective_negatives
from ..validation import describe_tensor, require_in_range, require_labels, require_positive
from ..viz import FALSE_NEGATIVE_COLOUR, NEGATIVE_COLOUR, image_tile
from .base import ExplorerFigure, StateExplorer, _as_image, _require_index

__all__ = ["CacrWeightsView", "CacrWeightsState", "cacr_weights_figure", "CacrWeightsExplorer",
           "cacr_weights_explorer"]


@dataclass(frozen=True)
class CacrWeightsView:
    """What the CACR weights explorer shows for one image (numpy arrays, each list ordered by
    weight, largest first): view 0 of the image is the query; it attracts the image's other V - 1
    views (its positives) and repels view 1 of the B - 1 other images (its negatives, the view pair
    (0, 1) of `clcourse.losses.cacr`)."""

    image: int
    tau_pos: float
    tau_neg: float
    hcl_tilt: float                      # HCL's beta / t: its weights are softmax(hcl_tilt * s)
    positive_views: np.ndarray           # [V - 1] view indices, largest attraction weight first
    positive_d2: np.ndarray              # [V - 1] squared distance to the query
    positive_weights: np.ndarray         # [V - 1] w+, summing to 1
    negative_images: np.ndarray          # [B - 1] image indices, largest repulsion weight first
    negative_d2: np.ndarray              # [B - 1]
    negative_weights: np.ndarray         # [B - 1] w-, summing to 1
    hcl_weights: np.ndarray              # [B - 1] HCL's normalised importance weights on them
    false_negative: np.ndarray           # [B - 1] bool: the query's class (False without labels)
    effective_positives: float           # exp(entropy) of w+: V - 1 when uniform, 1 for one view
    effective_negatives: float           # exp(entropy) of w-
    view_images: np.ndarray | None       # [V, H, W, 3] uint8, the image's views in view order
    negative_thumbnails: np.ndarray | None   # [B - 1, H, W, 3] view 1 of the negatives, as above
    class_names: tuple[str, ...] | None  # the query's class, then the negatives' (None: no labels)


class CacrWeightsState:
    """The CACR weights explorer's logic: the embeddings of V views of a batch of B images, the
    chosen image and the two sharpnesses. `view()` computes what is shown with
    `clcourse.losses.cacr_terms`, so the explorer shows exactly the weights the loss uses.

    Args:
        embeddings: [V, B, D] embeddings of V >= 2 views of B >= 2 images (normalised here).
        view_images: optional [V, B, C, H, W] the views themselves (uint8, or float in [0, 1]), for
            thumbnails.
        labels, class_names: optional [B] labels and the name of each, to flag negatives of the
            query's class.
        tau_pos, tau_neg: the sharpness κ⁺ and κ⁻ >= 0 (the paper's τ⁺ and τ⁻; CACR's CIFAR-10
            defaults 1.0 and 0.9).
        hcl_beta, hcl_temperature: HCL's beta and t (defaults 1.0 and 0.5, the authors'); its
            importance weights on the negatives are softmax(beta s / t), CACR's repulsion weights
            softmax(2 κ⁻ s): equal when 2 κ⁻ = beta / t.
        image: the image whose view 0 is the query.
    """

    def __init__(self, embeddings: torch.Tensor, view_images: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, class_names: Sequence[str] | None = None, *,
                 tau_pos: float = 1.0, tau_neg: float = 0.9, hcl_beta: float = 1.0,
                 hcl_temperature: float = 0.5, image: int = 0):
        if (not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 3
                or not embeddings.is_floating_point()):
            raise ValueError(f"embeddings must be a floating-point tensor [V, B, D], "
                             f"got {describe_tensor(embeddings)}")
        num_views, batch = embeddings.shape[:2]
        if num_views < 2 or batch < 2:
            raise ValueError(f"embeddings must hold V >= 2 views of B >= 2 images, "
                             f"got V = {num_views}, B = {batch}")
        if view_images is not None and (not isinstance(view_images, torch.Tensor)
                                        or view_images.dim() != 5
                                        or tuple(view_images.shape[:2]) != (num_views, batch)):
            raise ValueError(f"view_images must be a tensor [V, B, C, H, W] with V = {num_views}, "
                             f"B = {batch}, got {describe_tensor(view_images)}")
        if labels is not None:
            require_labels("labels", labels, batch, "embeddings' B images")
            if class_names is None:
                raise ValueError("class_names must be given with labels (the name of each label)")
        require_positive("hcl_beta", hcl_beta)
        require_positive("hcl_temperature", hcl_temperature)
        self.embeddings = F.normalize(embeddings.detach().float().cpu(), dim=2)
        self.view_images = view_images.detach().cpu() if view_images is not None else None
        self.labels = labels.detach().cpu() if labels is not None else None
        self.class_names = tuple(class_names) if class_names is not None else None
        self.hcl_tilt = hcl_beta / hcl_temperature
        self.tau_pos = self.tau_neg = 0.0
        self.set_tau_pos(tau_pos)
        self.set_tau_neg(tau_neg)
        self.image = 0
        self.set_image(image)

    @property
    def num_images(self) -> int:
        return self.embeddings.shape[1]

    def set_image(self, image: int) -> None:
        _require_index("image", image, self.num_images)
        self.image = int(image)

    def set_tau_pos(self, tau_pos: float) -> None:
        require_in_range("tau_pos", tau_pos, 0.0, math.inf, high_inclusive=False)
        self.tau_pos = float(tau_pos)

    def set_tau_neg(self, tau_neg: float) -> None:
        require_in_range("tau_neg", tau_neg, 0.0, math.inf, high_inclusive=False)
        self.tau_neg = float(tau_neg)

    def view(self) -> CacrWeightsView:
        """The weights around the current image's view 0 at the current κ⁺ and κ⁻."""
        from ..losses import cacr_terms

        i = self.image
        with torch.no_grad():
            terms = cacr_terms(self.embeddings, self.tau_pos, self.tau_neg)
        u = self.embeddings
        others = torch.tensor([j for j in range(self.num_images) if j != i])
        positive_d2 = 2 - 2 * u[1:, i] @ u[0, i]                         # views 1..V-1
        positive_weights = terms.attraction_weights[i, 0, 1:]
        similarity = u[1, others] @ u[0, i]                               # view 1 of the others
        negative_weights = terms.repulsion_weights[0, i, others]          # pair (0, 1) comes first
        hcl_weights = torch.softmax(self.hcl_tilt * similarity, dim=0)
        positive_order = torch.argsort(positive_weights, descending=True, stable=True)
        negative_order = torch.argsort(negative_weights, descending=True, stable=True)
        negatives = others[negative_order]
        false_negative = (self.labels[negatives] == self.labels[i] if self.labels is not None
                          else torch.zeros(len(negatives), dtype=torch.bool))
        names = None
        if self.labels is not None:
            shown = self.labels[torch.cat([torch.tensor([i]), negatives])]
            names = tuple(self.class_names[label] for label in shown)
        thumbnails = self.view_images is not None
        return CacrWeightsView(
            image=i, tau_pos=self.tau_pos, tau_neg=self.tau_neg, hcl_tilt=self.hcl_tilt,
            positive_views=(positive_order + 1).numpy(),
            positive_d2=positive_d2[positive_order].numpy(),
            positive_weights=positive_weights[positive_order].numpy(),
            negative_images=negatives.numpy(),
            negative_d2=(2 - 2 * similarity[negative_order]).numpy(),
            negative_weights=negative_weights[negative_order].numpy(),
            hcl_weights=hcl_weights[negative_order].numpy(), false_negative=false_negative.numpy(),
            effective_positives=effective_negatives(positive_weights).item(),
            effective_negatives=effective_negatives(negative_weights).item(),
            view_images=_as_image(self.view_images[:, i]) if thumbnails else None,
            negative_thumbnails=_as_image(self.view_images[1, negatives]) if thumbnails else None,
            class_names=names)


def cacr_weights_figure(view: CacrWeightsView, negatives_shown: int = 8) -> ExplorerFigure:
    """One figure for a `CacrWeightsView`: the query view and its positives ranked by attraction
    weight, its nearest negatives ranked by repulsion weight (HCL's weight beside CACR's; same-class
    negatives in red), and every weight against the squared distance to the query (uniform weights
    dotted)."""
    tiles = []
    if view.view_images is not None:
        name = f" ({view.class_names[0]})" if view.class_names is not None else ""
        tiles.append([(view.view_images[0], f"query: view 0\nimage #{view.image}{name}", "black",
                       2.0)]
                     + [(view.view_images[v], f"view {v}  w⁺ {w:.2f}\nd² = {d2:.2f}", "black", 1.0)
                        for v, w, d2 in zip(view.positive_views, view.positive_weights,
                                            view.positive_d2)])
        shown = min(negatives_shown, len(view.negative_images))
        row = []
        for rank in range(shown):
            false_negative = bool(view.false_negative[rank])
            name = f"\n{view.class_names[rank + 1]}" if view.class_names is not None else ""
            row.append((view.negative_thumbnails[rank],
                        f"w⁻ {view.negative_weights[rank]:.3f}  HCL {view.hcl_weights[rank]:.3f}"
                        f"{name}", FALSE_NEGATIVE_COLOUR if false_negative else "black",
                        2.0 if false_negative else 1.0))
        tiles.append(row)
    columns = max([len(row) for row in tiles] + [1])
    fig = ExplorerFigure(figsize=(max(1.6 * columns, 10.0), 2.0 * len(tiles) + 3.6),
                         layout="constrained")
    grid = fig.add_gridspec(len(tiles) + 1, 1, height_ratios=[2.0] * len(tiles) + [3.6])
    for row_number, row in enumerate(tiles):
        row_grid = grid[row_number].subgridspec(1, columns)
        for column, (image, title, colour, frame) in enumerate(row):
            image_tile(fig.add_subplot(row_grid[column]), image, title, colour, frame, fontsize=7)
    bottom = grid[len(tiles)].subgridspec(1, 2)

    ax = fig.add_subplot(bottom[0])
    ax.bar(np.arange(len(view.positive_weights)), view.positive_weights, color="tab:green")
    ax.axhline(1 / len(view.positive_weights), color="black", linestyle=":",
               label="uniform (κ⁺ = 0)")
    ticks = [f"view {v}\nd²={d2:.2f}" for v, d2 in zip(view.positive_views, view.positive_d2)]
    ax.set_xticks(np.arange(len(view.positive_weights)), ticks, fontsize=7)
    ax.set_ylabel("attraction weight w⁺")
    ax.set_title(f"κ⁺ = {view.tau_pos:.2f}: the farthest views pull hardest\n"
                 f"effective number of positives {view.effective_positives:.2f} "
                 f"of {len(view.positive_weights)}", fontsize=8)
    ax.legend(fontsize=7)

    ax = fig.add_subplot(bottom[1])
    colours = np.where(view.false_negative, FALSE_NEGATIVE_COLOUR, NEGATIVE_COLOUR)
    ax.scatter(view.negative_d2, view.negative_weights, s=10, c=list(colours),
               label="CACR w⁻ (red: same class)")
    order = np.argsort(view.negative_d2)
    ax.plot(view.negative_d2[order], view.hcl_weights[order], color="tab:blue", linewidth=1.2,
            label=f"HCL, softmax({view.hcl_tilt:.2g} s)")
    ax.axhline(1 / len(view.negative_weights), color="black", linestyle=":",
               label="uniform (κ⁻ = 0)")
    ax.set_yscale("log")
    ax.set_xlabel("squared distance d² to the query (= 2 − 2s)")
    ax.set_ylabel("repulsion weight w⁻")
    ax.set_title(f"κ⁻ = {view.tau_neg:.2f}: the nearest negatives push hardest, "
                 f"w⁻ = softmax({2 * view.tau_neg:.2g} s)\n"
                 f"effective number of negatives {view.effective_negatives:.1f} "
                 f"of {len(view.negative_weights)}", fontsize=8)
    ax.legend(fontsize=7)
    return fig


class CacrWeightsExplorer(StateExplorer):
    """Sliders for the image, κ⁺ and κ⁻ wired to a `CacrWeightsState`, redrawing
    `cacr_weights_figure` on every change. Core ipywidgets only (7.7 and 8.x); the controls are
    attributes (`image_slider`, `tau_pos_slider`, `tau_neg_slider`) and `last_view` and
    `last_figure` hold what was drawn."""

    def __init__(self, state: CacrWeightsState, max_tau: float = 5.0, dpi: int = 90):
        super().__init__(state, dpi)
        self.image_slider = widgets.IntSlider(value=state.image, min=0, max=state.num_images - 1,
                                              description="image", continuous_update=False)
        self.tau_pos_slider = widgets.FloatSlider(value=min(state.tau_pos, max_tau), min=0.0,
                                                  max=max_tau, step=0.1, description="κ⁺",
                                                  continuous_update=False)
        self.tau_neg_slider = widgets.FloatSlider(value=min(state.tau_neg, max_tau), min=0.0,
                                                  max=max_tau, step=0.1, description="κ⁻",
                                                  continuous_update=False)
        self.on_change(self.image_slider, self.state.set_image)
        self.on_change(self.tau_pos_slider, self.state.set_tau_pos)
        self.on_change(self.tau_neg_slider, self.state.set_tau_neg)
        self.children = [widgets.HBox([self.image_slider, self.tau_pos_slider,
                                       self.tau_neg_slider]),
                         self.summary, self.figure_image]
        self.redraw()

    def redraw(self) -> None:
        view = self.state.view()
        self.show(view, cacr_weights_figure(view), (
            f"image #{view.image}: κ⁺ = {view.tau_pos:.2f} spreads the pull over "
            f"{view.effective_positives:.2f} of {len(view.positive_weights)} positives; "
            f"κ⁻ = {view.tau_neg:.2f} spreads the push over {view.effective_negatives:.1f} of "
            f"{len(view.negative_weights)} negatives"))


def cacr_weights_explorer(state: CacrWeightsState, max_tau: float = 5.0,
                          dpi: int = 90) -> CacrWeightsExplorer:
    """The interactive CACR weights explorer for a state; display it by ending a cell with it."""
    return CacrWeightsExplorer(state, max_tau=max_tau, dpi=dpi)
