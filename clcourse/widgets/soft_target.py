"""The soft-target explorer (notebook 07): SCE's target of a query over a trained queue, at any
lambda and tau_m.

- :class:`SoftTargetState`: the query, key and queue embeddings, computed once, and the current
  choices; :meth:`SoftTargetState.view` recomputes the target as a :class:`SoftTargetView`.
- :func:`soft_target_figure`: draws a :class:`SoftTargetView`.
- :func:`soft_target_explorer`: sliders for the query, lambda and tau_m wired to the state.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.lines import Line2D

from ..validation import (
    describe_tensor,
    require_embeddings,
    require_in_range,
    require_int_at_least,
    require_labels,
    require_positive,
)
from ..viz import FALSE_NEGATIVE_COLOUR, NEGATIVE_COLOUR, image_tile
from .base import ExplorerFigure, StateExplorer, _as_image, _require_index

__all__ = ["SoftTargetView", "SoftTargetState", "soft_target_figure", "SoftTargetExplorer",
           "soft_target_explorer"]


@dataclass(frozen=True)
class SoftTargetView:
    """What the soft-target explorer shows for one query at one (lambda, tau_m) (numpy arrays,
    floats)."""

    query: int                           # index of the query among the probe images
    label: int
    class_name: str
    lam: float
    temperature_momentum: float
    query_image: np.ndarray              # [H, W, 3] uint8
    entries: np.ndarray                  # [m] queue columns with the most target mass, most first
    weights: np.ndarray                  # [m] their target weight, (1 - lambda) times the relation
    predictions: np.ndarray              # [m] the online encoder's prediction p on them
    entry_labels: np.ndarray             # [m]
    entry_class_names: tuple[str, ...]
    same_class: np.ndarray               # [m] bool: the entry's image has the query's class
    entry_images: np.ndarray             # [m, H, W, 3] uint8
    sorted_weights: np.ndarray           # [K] every candidate entry's target weight, largest first
    sorted_same_class: np.ndarray        # [K] bool, in the same order
    same_class_mass: float               # share of the relation on same-class entries
    same_class_share: float              # share of the candidates that are of the query's class
    effective_entries: float             # exp(entropy) of the relation
    same_class_push: float               # SCE's net push on same-class entries (sum of p - w)
    infonce_same_class_push: float       # InfoNCE's push on them (sum of p)


class SoftTargetState:
    """The logic of the soft-target explorer: SCE's target of a query over a trained model's queue,
    for a lambda and a tau_m chosen at will (the embeddings are computed once; `view` recomputes the
    target with `clcourse.diagnostics.soft_targets_from_embeddings`).

    Args:
        q, k: [N, D] query and key embeddings of N probe images (unit vectors or raw).
        queue: [K, D] the queue's keys; queue_index: [K] training-set index of the image behind
            each.
        images: [N, C, H, W] the probe images; labels: [N] their labels.
        train_images, train_labels: the training set, indexed by `queue_index`.
        class_names: name of each label.
        temperature: tau of the prediction (the method's).
        lam, temperature_momentum: the starting lambda in [0, 1] and tau_m > 0.
        index: optional [N] training-set positions of the probe images: a key of a query's own image
            is left out, as in training.
        top: how many entries `view` details, in [1, K].
    """

    def __init__(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor,
                 queue_index: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
                 train_images: torch.Tensor, train_labels: torch.Tensor, class_names: Sequence[str],
                 *, temperature: float, lam: float = 0.5, temperature_momentum: float = 0.05,
                 index: torch.Tensor | None = None, top: int = 8):
        require_embeddings("q", q)
        require_embeddings("k", k)
        require_embeddings("queue", queue)
        if k.shape != q.shape or queue.shape[1] != q.shape[1]:
            raise ValueError(f"k must have the shape of q {tuple(q.shape)} and queue the same "
                             f"embedding size, got k {tuple(k.shape)} "
                             f"and queue {tuple(queue.shape)}")
        require_labels("labels", labels, len(q), "q")
        require_labels("queue_index", queue_index, len(queue), "queue")
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) != len(q):
            raise ValueError(f"images must be a tensor [N, C, H, W] with N = {len(q)}, "
                             f"got {describe_tensor(images)}")
        require_labels("train_labels", train_labels, len(train_images), "train_images")
        if int(queue_index.min()) < 0 or int(queue_index.max()) >= len(train_images):
            raise ValueError(f"queue_index must index train_images (0 to {len(train_images) - 1}), "
                             f"got entries from {int(queue_index.min())} "
                             f"to {int(queue_index.max())}")
        if index is not None:
            require_labels("index", index, len(q), "q")
        require_positive("temperature", temperature)
        self.q, self.k, self.queue = q.detach(), k.detach(), queue.detach()
        self.queue_index = queue_index
        self.images, self.labels, self.index = images, labels.detach().cpu(), index
        self.train_images, self.train_labels = train_images, train_labels
        self.class_names = tuple(class_names)
        self.temperature = float(temperature)
        self.query = 0
        self.set_lam(lam)
        self.set_temperature_momentum(temperature_momentum)
        self.set_top(top)

    @classmethod
    def from_method(cls, method, images: torch.Tensor, labels: torch.Tensor,
                    train_images: torch.Tensor, train_labels: torch.Tensor,
                    class_names: Sequence[str], index: torch.Tensor | None = None,
                    **options) -> SoftTargetState:
        """The state for a trained SCE (or MoCo) method: queries and keys of `images` in eval mode,
        and the queue entries that hold keys. lambda and tau_m start at the method's (MoCo: 1 and
        0.05); `options` go to the constructor (lam, temperature_momentum, top)."""
        # lazily: the explorer itself needs no models
        from ..diagnostics import filled_queue, keys, queries

        queue, queue_index = filled_queue(method)
        options = {"lam": getattr(method, "lam", 1.0),
                   "temperature_momentum": getattr(method, "temperature_momentum", 0.05), **options}
        return cls(queries(method, images), keys(method, images), queue, queue_index, images,
                   labels, train_images, train_labels, class_names,
                   temperature=method.temperature, index=index, **options)

    @property
    def num_queries(self) -> int:
        return len(self.q)

    def set_query(self, query: int) -> None:
        """Make probe image number `query` the query."""
        _require_index("query", query, self.num_queries)
        self.query = int(query)

    def set_lam(self, lam: float) -> None:
        require_in_range("lam", lam, 0.0, 1.0)
        self.lam = float(lam)

    def set_temperature_momentum(self, temperature_momentum: float) -> None:
        require_positive("temperature_momentum", temperature_momentum)
        self.temperature_momentum = float(temperature_momentum)

    def set_top(self, top: int) -> None:
        require_int_at_least("top", top, 1)
        if top > len(self.queue):
            raise ValueError(f"top must be an integer in [1, {len(self.queue)}] "
                             f"(the queue entries), got {top}")
        self.top = top

    def view(self) -> SoftTargetView:
        """The current query's target over the queue at the current lambda and tau_m."""
        from ..diagnostics import soft_targets_from_embeddings, target_spread

        i = self.query
        queue_mask = None
        if self.index is not None:
            own = self.index[i:i + 1, None].to(self.queue_index.device)
            queue_mask = own == self.queue_index[None, :]
        targets = soft_targets_from_embeddings(self.q[i:i + 1], self.k[i:i + 1], self.queue,
                                               self.queue_index, self.temperature,
                                               self.temperature_momentum, self.lam, queue_mask)
        spread = target_spread(targets, self.labels[i:i + 1], self.train_labels)
        weights = targets.target[0, 1:].cpu()
        candidate = (torch.ones_like(weights, dtype=torch.bool) if queue_mask is None
                     else ~queue_mask[0].cpu())
        order = weights.masked_fill(~candidate, -1.0).argsort(descending=True)
        order = order[:int(candidate.sum())]
        entry_labels = self.train_labels.cpu()[self.queue_index.cpu()]
        same_class = (entry_labels == self.labels[i]).numpy()
        top = order[:self.top]
        label = int(self.labels[i])
        entry_images = self.train_images[self.queue_index[top.to(self.queue_index.device)]]
        return SoftTargetView(
            query=i, label=label, class_name=self.class_names[label], lam=self.lam,
            temperature_momentum=self.temperature_momentum,
            query_image=_as_image(self.images[i]), entries=top.numpy(),
            weights=weights[top].numpy(),
            predictions=targets.prediction[0, 1:].cpu()[top].numpy(),
            entry_labels=entry_labels[top].numpy(),
            entry_class_names=tuple(self.class_names[int(y)] for y in entry_labels[top]),
            same_class=same_class[top.numpy()], entry_images=_as_image(entry_images),
            sorted_weights=weights[order].numpy(), sorted_same_class=same_class[order.numpy()],
            **{field: float(value[0]) for field, value in spread._asdict().items()})


def soft_target_figure(view: SoftTargetView, bars: int = 24) -> ExplorerFigure:
    """One figure for a `SoftTargetView`: the query, the target weight of its `bars` heaviest queue
    entries (same class in red) with the online prediction on the top ones, the cumulative share of
    the relation over the whole queue, sorted, and the images of the top entries."""
    m = len(view.entries)
    fig = ExplorerFigure(figsize=(max(1.25 * m, 12.0), 5.8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1.6, 1.0))
    query_ax, bars_ax, share_ax = top.subplots(1, 3, width_ratios=(0.7, 2.2, 1.6))
    image_tile(query_ax, view.query_image, f"query: {view.class_name}", fontsize=10)
    shown = min(bars, len(view.sorted_weights))
    colours = [FALSE_NEGATIVE_COLOUR if same else NEGATIVE_COLOUR
               for same in view.sorted_same_class[:shown]]
    bars_ax.bar(np.arange(1, shown + 1), view.sorted_weights[:shown], color=colours)
    bars_ax.plot(np.arange(1, m + 1), view.predictions, "k.")
    bars_ax.set(xlabel="queue entries, by target weight", ylabel="target weight w",
                title=f"λ = {view.lam:.2f} on the own key, 1 − λ over the queue "
                      f"(τm = {view.temperature_momentum:.3g})")
    bars_ax.legend(handles=[Line2D([], [], color=FALSE_NEGATIVE_COLOUR, lw=6, label="same class"),
                            Line2D([], [], color=NEGATIVE_COLOUR, lw=6, label="other class"),
                            Line2D([], [], marker=".", color="black", ls="", label="prediction p")],
                   fontsize=7)
    bars_ax.grid(alpha=0.3)
    ranks = np.arange(1, len(view.sorted_weights) + 1)
    share_ax.plot(ranks, np.cumsum(view.sorted_weights) / max(1.0 - view.lam, 1e-12),
                  color="black")
    share_ax.set(xscale="log", xlabel="queue entries, by target weight",
                 ylabel="share of the relation", ylim=(0, 1.02),
                 title=f"relation: {view.effective_entries:.1f} effective entries,\n"
                       f"{100 * view.same_class_mass:.0f}% on the query's class "
                       f"({100 * view.same_class_share:.0f}% of the entries)")
    share_ax.grid(alpha=0.3)
    for column, ax in enumerate(np.atleast_1d(bottom.subplots(1, m))):
        colour = FALSE_NEGATIVE_COLOUR if view.same_class[column] else "black"
        image_tile(ax, view.entry_images[column],
                   f"{view.entry_class_names[column]}\nw = {view.weights[column]:.3f}", colour,
                   frame=3.0 if view.same_class[column] else 0.5)
    return fig


class SoftTargetExplorer(StateExplorer):
    """Sliders for the query, lambda and tau_m, wired to a `SoftTargetState`; redraws on every
    change.

    Core ipywidgets only (7.7 and 8.x). The controls are attributes (``query_slider``,
    ``lam_slider``, ``temperature_momentum_slider``) so tests and notebooks can set their values;
    ``last_view`` and ``last_figure`` hold what was drawn."""

    def __init__(self, state: SoftTargetState, dpi: int = 80):
        super().__init__(state, dpi)
        self.query_slider = widgets.IntSlider(value=state.query, min=0,
                                              max=state.num_queries - 1, description="query",
                                              continuous_update=False)
        self.lam_slider = widgets.FloatSlider(value=state.lam, min=0.0, max=1.0, step=0.05,
                                              description="λ", continuous_update=False)
        self.temperature_momentum_slider = widgets.FloatLogSlider(
            value=state.temperature_momentum, base=10, min=-2, max=0, step=0.05, description="τm",
            continuous_update=False)
        self.on_change(self.query_slider, self.state.set_query)
        self.on_change(self.lam_slider, self.state.set_lam)
        self.on_change(self.temperature_momentum_slider, self.state.set_temperature_momentum)
        self.children = [widgets.HBox([self.query_slider, self.lam_slider,
                                       self.temperature_momentum_slider]),
                         self.summary, self.figure_image]
        self.redraw()

    def redraw(self) -> None:
        view = self.state.view()
        self.show(view, soft_target_figure(view), (
            f"query #{view.query} ({view.class_name}): {100 * view.same_class_mass:.0f}% of the "
            f"relation on same-class entries ({100 * view.same_class_share:.0f}% of the queue), "
            f"spread over {view.effective_entries:.1f} effective entries. Net push on same-class "
            f"entries: <b>{view.same_class_push:+.3f}</b> with this target, "
            f"{view.infonce_same_class_push:+.3f} with a one-hot target (InfoNCE)"))


def soft_target_explorer(state: SoftTargetState, dpi: int = 80) -> SoftTargetExplorer:
    """The interactive soft-target explorer for a state; display it by ending a cell with it."""
    return SoftTargetExplorer(state, dpi=dpi)
