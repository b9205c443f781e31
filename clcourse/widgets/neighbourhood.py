"""An interactive explorer of an encoder's hardest negatives (notebook 02).

Pick an anchor image (by class and index, or at random) and see its k hardest negatives among the
held-out images, with their similarities and labels (false negatives flagged), the weight InfoNCE's
gradient puts on each of them at a temperature, and where they all sit on a 2-D map of the
embedding. With several checkpoints, switch between them to watch the neighbourhood change during
training.

- :class:`NeighbourhoodState`: plain Python. Holds the embeddings and the current choices; its
  methods are what the controls call, and :meth:`NeighbourhoodState.view` computes everything shown,
  a :class:`NeighbourhoodView`.
- :func:`neighbourhood_figure`: draws a :class:`NeighbourhoodView` as one matplotlib figure.
- :func:`neighbourhood_explorer`: core ipywidgets (working on ipywidgets 7.7 and 8.x, JupyterLab and
  Colab) wired to the state. :func:`static_neighbourhood_explorer` draws the same figure without
  widgets, for static renders and CI.

The anchor's negatives are all the other held-out images: the held-out set plays the role of one
large batch. The anchor's positive is its second augmented view when the state has one; without
views the positive is taken to be perfectly aligned (similarity 1).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.lines import Line2D

from ..augment import to_uint8_images
from ..negatives import (
    DEFAULT_MAP_CACHE,
    MAP_METHODS,
    EmbeddingMap,
    MapCache,
    effective_negatives,
    fit_embedding_map,
    hardest_negatives,
    negative_weights_from_similarities,
)
from ..validation import (
    describe_tensor,
    require_embeddings,
    require_int_at_least,
    require_labels,
    require_positive,
)
from ..viz import FALSE_NEGATIVE_COLOUR, NEGATIVE_COLOUR, image_tile
from .base import ExplorerFigure, StateExplorer, _as_image, _require_index

__all__ = ["NeighbourhoodView", "NeighbourhoodState", "neighbourhood_figure",
           "static_neighbourhood_explorer", "NeighbourhoodExplorer", "neighbourhood_explorer"]


@dataclass(frozen=True)
class NeighbourhoodView:
    """Everything the explorer shows for one anchor, one checkpoint and one temperature (numpy
    arrays)."""

    checkpoint: str
    anchor: int                          # index of the anchor among the held-out images
    label: int
    class_name: str
    negatives: np.ndarray                # [k] indices of the hardest negatives, hardest first
    similarities: np.ndarray             # [k] their cosine similarity to the anchor
    negative_labels: np.ndarray          # [k]
    negative_class_names: tuple[str, ...]
    false_negative: np.ndarray           # [k] bool: the negative shares the anchor's label
    positive_similarity: float           # s(anchor, positive); 1.0 when there is no second view
    has_positive: bool                   # False: no second view, the positive is assumed aligned
    temperature: float
    weights: np.ndarray                  # [k] InfoNCE gradient weight p_k on each hardest negative
    positive_weight: float               # p_+; the positive is pulled with weight 1 - p_+
    other_negatives_weight: float        # total weight on the remaining negatives
    effective_negatives: float           # exp(entropy) of the weights over all negatives
    num_negatives: int                   # all other held-out images
    anchor_image: np.ndarray             # [H, W, 3] uint8
    view_images: tuple[np.ndarray, np.ndarray] | None
    negative_images: np.ndarray          # [k, H, W, 3] uint8
    map_method: str
    map_coords: np.ndarray               # [N, 2] every held-out image on the map
    map_labels: np.ndarray               # [N]
    class_names: tuple[str, ...]
    anchor_xy: np.ndarray                # [2]
    positive_xy: np.ndarray | None       # [2], the second view on the map (None without views)
    negatives_xy: np.ndarray             # [k, 2]

    @property
    def k(self) -> int:
        return len(self.negatives)

    @property
    def false_negative_count(self) -> int:
        return int(self.false_negative.sum())


class NeighbourhoodState:
    """The explorer's logic: embeddings of held-out images per checkpoint, and the current choices.

    Args:
        features: [N, D] features of the held-out images (the anchor views), or a dict
            checkpoint name -> such features (e.g. {"epoch 1": ..., "epoch 50": ...}), in display
            order.
        images: [N, C, H, W] the held-out images (uint8, or float in [0, 1]).
        labels: [N] integer class labels, used only to flag false negatives and colour the map.
        class_names: name of each label.
        positive_features: optional dict checkpoint name -> [N, D] features of a second view of each
            image (a tensor when `features` is one tensor): the anchor's positive.
        views: optional pair of [N, C, H, W] images, the two views whose features are `features` and
            `positive_features`; shown next to the anchor.
        k: hardest negatives shown, in [1, N - 1].
        temperature: tau of the gradient weights, > 0.
        map_method: "pca" or "umap" (see clcourse.negatives.fit_embedding_map); a map is fitted once
            per checkpoint, when first needed, and kept in `map_cache`.
        seed: seed of the random-anchor generator.
    """

    def __init__(self, features: torch.Tensor | Mapping[str, torch.Tensor], images: torch.Tensor,
                 labels: torch.Tensor, class_names: Sequence[str], *,
                 positive_features: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
                 views: tuple[torch.Tensor, torch.Tensor] | None = None, k: int = 8,
                 temperature: float = 0.5, map_method: str = "pca",
                 map_cache: MapCache | None = DEFAULT_MAP_CACHE, seed: int = 0):
        features = dict(features) if isinstance(features, Mapping) else {"encoder": features}
        if not features:
            raise ValueError("features must hold at least one checkpoint (name -> [N, D] tensor), "
                             "got an empty dict")
        if positive_features is not None and not isinstance(positive_features, Mapping):
            positive_features = {name: positive_features for name in features}
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
            raise ValueError(f"labels must be a 1-D integer tensor, "
                             f"got {getattr(labels, 'shape', type(labels))}")
        n = len(labels)
        for name, checkpoint_features in features.items():
            require_embeddings(f"features[{name!r}]", checkpoint_features)
            require_labels("labels", labels, len(checkpoint_features), f"features[{name!r}]")
            if positive_features is not None:
                if name not in positive_features:
                    raise ValueError(f"positive_features must have the checkpoints of features, "
                                     f"missing {name!r}")
                if positive_features[name].shape != checkpoint_features.shape:
                    raise ValueError(f"positive_features[{name!r}] must have the shape of "
                                     f"features[{name!r}] {tuple(checkpoint_features.shape)}, "
                                     f"got {tuple(positive_features[name].shape)}")
        if n < 2:
            raise ValueError(f"labels must have at least 2 entries (an anchor and a negative), "
                             f"got {n}")
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) != n:
            raise ValueError(f"images must be a tensor [N, C, H, W] with N = {n} (one per label), "
                             f"got {describe_tensor(images)}")
        if views is not None and (len(views) != 2 or any(v.shape != images.shape for v in views)):
            raise ValueError(f"views must be a pair of tensors shaped like images "
                             f"{tuple(images.shape)}")
        class_names = tuple(class_names)
        if int(labels.max()) >= len(class_names) or int(labels.min()) < 0:
            raise ValueError(f"class_names must name every label: labels lie in "
                             f"[{int(labels.min())}, {int(labels.max())}] "
                             f"but there are {len(class_names)} class names")
        if map_method not in MAP_METHODS:
            raise ValueError(f"map_method must be one of {MAP_METHODS}, got {map_method!r}")

        self._features = {name: F.normalize(f.detach().float(), dim=1)
                          for name, f in features.items()}
        self._positives = (None if positive_features is None else
                           {name: F.normalize(positive_features[name].detach().float(), dim=1)
                            for name in features})
        self.images, self.views = images, views
        self.labels = labels.detach().cpu()
        self.class_names = class_names
        labels_np = self.labels.numpy()
        self._members = {int(label): np.flatnonzero(labels_np == label)
                         for label in np.unique(labels_np)}
        self.map_method, self.map_cache = map_method, map_cache
        self._maps: dict[str, EmbeddingMap] = {}
        self._rng = np.random.default_rng(seed)
        self.checkpoint = next(iter(features))
        self.anchor = 0
        self.set_k(k)
        self.set_temperature(temperature)

    @classmethod
    def from_backbones(cls, backbones: Mapping[str, torch.nn.Module], images: torch.Tensor,
                       labels: torch.Tensor, class_names: Sequence[str], augment=None, *,
                       seed: int = 0, batch_size: int = 1024, **options) -> NeighbourhoodState:
        """Build the state from encoders (e.g. one per checkpoint) with
        clcourse.evaluate.extract_features.

        Without `augment`, the features are those of the images themselves and there is no positive.
        With `augment` (e.g. clcourse.augment.simclr_cifar()), two views of every image are drawn
        with a generator seeded by `seed`, the same views for every backbone; the anchors are the
        first views and their positives the second, as in a SimCLR batch. `options` go to the
        constructor (k, temperature, map_method, ...).
        """
        from ..evaluate import extract_features  # lazily: the explorer itself needs no models

        if not isinstance(backbones, Mapping) or not backbones:
            raise ValueError("backbones must be a non-empty dict name -> backbone module")

        def features_of(images: torch.Tensor) -> dict[str, torch.Tensor]:
            return {name: extract_features(net, images, batch_size=batch_size)
                    for name, net in backbones.items()}

        if augment is None:
            return cls(features_of(images), images, labels, class_names, **options)
        generator = torch.Generator(device=images.device).manual_seed(seed)
        views = tuple(torch.cat([to_uint8_images(augment(chunk, generator))
                                 for chunk in images.split(batch_size)])
                      for _ in range(2))
        return cls(features_of(views[0]), images, labels, class_names,
                   positive_features=features_of(views[1]), views=views, **options)

    # ------------------------------------------------------------------ what can be chosen

    @property
    def checkpoints(self) -> list[str]:
        return list(self._features)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> list[int]:
        """Labels present among the held-out images, in increasing order."""
        return list(self._members)

    @property
    def anchor_label(self) -> int:
        return int(self.labels[self.anchor])

    @property
    def anchor_index_in_class(self) -> int:
        """Position of the anchor among the held-out images of its class."""
        return int(np.searchsorted(self._members[self.anchor_label], self.anchor))

    def class_label(self, cls: int | str) -> int:
        """The label of a class given by name or label."""
        if (isinstance(cls, str) and cls in self.class_names
                and self.class_names.index(cls) in self._members):
            return self.class_names.index(cls)
        if (isinstance(cls, (int, np.integer)) and not isinstance(cls, bool)
                and int(cls) in self._members):
            return int(cls)
        present = [self.class_names[label] for label in self._members]
        raise ValueError(f"cls must be a class name in {present} or a label in {self.classes}, "
                         f"got {cls!r}")

    def class_size(self, cls: int | str) -> int:
        return len(self._members[self.class_label(cls)])

    # ------------------------------------------------------------------ what the controls call

    def select_anchor(self, cls: int | str, index: int) -> None:
        """Make the `index`-th held-out image of class `cls` (a name or a label) the anchor."""
        members = self._members[self.class_label(cls)]
        _require_index("index", index, len(members))
        self.anchor = int(members[index])

    def set_anchor(self, anchor: int) -> None:
        """Make held-out image number `anchor` the anchor."""
        _require_index("anchor", anchor, self.num_images)
        self.anchor = int(anchor)

    def random_anchor(self, seed: int | None = None) -> int:
        """Pick the anchor uniformly at random (from the state's generator, or from `seed`); returns
        it."""
        rng = self._rng if seed is None else np.random.default_rng(seed)
        self.anchor = int(rng.integers(self.num_images))
        return self.anchor

    def set_temperature(self, temperature: float) -> None:
        require_positive("temperature", temperature)
        self.temperature = float(temperature)

    def set_k(self, k: int) -> None:
        require_int_at_least("k", k, 1)
        if k > self.num_images - 1:
            raise ValueError(f"k must be an integer in [1, {self.num_images - 1}] "
                             f"(the number of negatives), got {k}")
        self.k = k

    def set_checkpoint(self, name: str) -> None:
        if name not in self._features:
            raise ValueError(f"checkpoint must be one of {self.checkpoints}, got {name!r}")
        self.checkpoint = name

    # ------------------------------------------------------------------ what is shown

    def embedding_map(self, checkpoint: str | None = None) -> EmbeddingMap:
        """The 2-D map of a checkpoint's features (the current one by default), fitted once."""
        name = self.checkpoint if checkpoint is None else checkpoint
        if name not in self._maps:
            self._maps[name] = fit_embedding_map(self._features[name], self.map_method,
                                                 cache=self.map_cache)
        return self._maps[name]

    def view(self) -> NeighbourhoodView:
        """The current anchor's hardest negatives, their gradient weights and map positions."""
        unit = self._features[self.checkpoint]
        anchor, n = self.anchor, self.num_images
        ids = torch.arange(n, device=unit.device)
        similarities, indices = hardest_negatives(unit[anchor:anchor + 1], unit, self.k,
                                                  anchor_ids=ids[anchor:anchor + 1],
                                                  candidate_ids=ids)
        similarities, indices = similarities[0], indices[0]
        with torch.no_grad():
            negative_similarities = (unit @ unit[anchor])[ids != anchor]                  # [N - 1]
            if self._positives is None:
                positive_similarity = torch.ones((), device=unit.device)
            else:
                positive_similarity = self._positives[self.checkpoint][anchor] @ unit[anchor]
            weights = negative_weights_from_similarities(positive_similarity, negative_similarities,
                                                         self.temperature)
            # each hardest negative's position among the N - 1 negatives (the anchor's removed)
            top_weights = weights[indices - (indices > anchor).long()]
            n_effective = effective_negatives(
                torch.softmax(negative_similarities / self.temperature, dim=0))
        total_weight = float(weights.sum())

        indices_np = indices.cpu().numpy()
        negative_labels = self.labels[indices.cpu()].numpy()
        label = self.anchor_label
        emb_map = self.embedding_map()
        positive_xy = None
        if self._positives is not None and emb_map.can_project:
            positive_xy = emb_map.project(self._positives[self.checkpoint][anchor:anchor + 1])[0]
        view_images = (None if self.views is None
                       else tuple(_as_image(v[anchor]) for v in self.views))
        return NeighbourhoodView(
            checkpoint=self.checkpoint, anchor=anchor, label=label,
            class_name=self.class_names[label], negatives=indices_np,
            similarities=similarities.cpu().numpy(), negative_labels=negative_labels,
            negative_class_names=tuple(self.class_names[int(y)] for y in negative_labels),
            false_negative=negative_labels == label,
            positive_similarity=float(positive_similarity),
            has_positive=self._positives is not None, temperature=self.temperature,
            weights=top_weights.cpu().numpy(), positive_weight=1.0 - total_weight,
            other_negatives_weight=total_weight - float(top_weights.sum()),
            effective_negatives=float(n_effective), num_negatives=n - 1,
            anchor_image=_as_image(self.images[anchor]), view_images=view_images,
            negative_images=_as_image(self.images[indices.to(self.images.device)]),
            map_method=emb_map.method, map_coords=emb_map.coords, map_labels=self.labels.numpy(),
            class_names=self.class_names, anchor_xy=emb_map.coords[anchor],
            positive_xy=positive_xy, negatives_xy=emb_map.coords[indices_np])


# ---------------------------------------------------------------------- drawing

def _class_colours(num_classes: int) -> np.ndarray:
    """One RGBA colour per class: tab10 / tab20 when they suffice, else evenly spaced turbo."""
    if num_classes <= 20:
        colormap = matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"]
        return colormap(np.arange(num_classes))
    return matplotlib.colormaps["turbo"](np.linspace(0, 1, num_classes))


def neighbourhood_figure(view: NeighbourhoodView, images_per_row: int = 8) -> ExplorerFigure:
    """One figure for a view: the anchor (and its two views), its k hardest negatives with
    similarity and class (false negatives in red), the gradient weight on each of them at the
    current temperature, and the 2-D map with the anchor, its positive and its hardest negatives
    marked.

    Returns a matplotlib Figure not managed by pyplot: nothing is shown or kept open by itself, and
    a notebook cell ending with it displays it.
    """
    tiles = [(view.anchor_image, f"anchor #{view.anchor}\n{view.class_name}", "black", 2.0)]
    if view.view_images is not None:
        tiles.append((view.view_images[0], "view 1 (anchor)", "black", 1.0))
        tiles.append((view.view_images[1],
                      f"view 2 (positive)\ns = {view.positive_similarity:.2f}", "black", 1.0))
    for rank in range(view.k):
        false_negative = bool(view.false_negative[rank])
        title = (f"#{rank + 1}  s = {view.similarities[rank]:.2f}\n"
                 f"{view.negative_class_names[rank]}")
        tiles.append((view.negative_images[rank], title + (" (FN)" if false_negative else ""),
                      FALSE_NEGATIVE_COLOUR if false_negative else "black",
                      2.5 if false_negative else 1.0))
    columns = min(images_per_row, len(tiles))
    tile_rows = math.ceil(len(tiles) / columns)
    fig = ExplorerFigure(figsize=(max(1.5 * columns, 9.0), 1.9 * tile_rows + 4.0),
                         layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[1.9 * tile_rows, 4.0])
    tile_grid = grid[0].subgridspec(tile_rows, columns)
    for position, (image, title, colour, frame) in enumerate(tiles):
        ax = fig.add_subplot(tile_grid[position // columns, position % columns])
        image_tile(ax, image, title, colour, frame)
    bottom = grid[1].subgridspec(1, 2)

    ax = fig.add_subplot(bottom[0])
    ranks = np.arange(1, view.k + 1)
    ax.bar(ranks, view.weights,
           color=[FALSE_NEGATIVE_COLOUR if fn else NEGATIVE_COLOUR for fn in view.false_negative])
    ax.set_xticks(ranks)
    ax.set_xlabel("hardest negatives, by rank (red: same class)")
    ax.set_ylabel("gradient weight  $p_k$")
    positive = "positive" if view.has_positive else "positive (assumed s = 1)"
    ax.set_title(f"$\\tau$ = {view.temperature:.3g}: push weights $p_k$ = softmax(s/$\\tau$)\n"
                 f"{positive} pulled with 1 - $p_+$ = {1 - view.positive_weight:.3f}; "
                 f"other {view.num_negatives - view.k} negatives "
                 f"{view.other_negatives_weight:.3f}\n"
                 f"effective number of negatives {view.effective_negatives:.1f} "
                 f"of {view.num_negatives}", fontsize=8)

    ax = fig.add_subplot(bottom[1])
    colours = _class_colours(len(view.class_names))
    ax.scatter(view.map_coords[:, 0], view.map_coords[:, 1], s=5, c=colours[view.map_labels],
               alpha=0.35, linewidths=0)
    edge = [FALSE_NEGATIVE_COLOUR if fn else "black" for fn in view.false_negative]
    ax.scatter(view.negatives_xy[:, 0], view.negatives_xy[:, 1], s=55,
               facecolors=colours[view.negative_labels], edgecolors=edge, linewidths=1.5, zorder=3)
    for rank, (x, y) in enumerate(view.negatives_xy, start=1):
        ax.annotate(str(rank), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7,
                    zorder=4)
    ax.scatter(*view.anchor_xy, marker="*", s=260, c=[colours[view.label]], edgecolors="black",
               linewidths=1.2, zorder=5)
    if view.positive_xy is not None:
        ax.scatter(*view.positive_xy, marker="^", s=90, c=[colours[view.label]],
                   edgecolors="black", zorder=5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{view.map_method.upper()} map of checkpoint '{view.checkpoint}'", fontsize=8)
    handles = [Line2D([], [], marker="*", ls="", ms=11, mfc="white", mec="black", label="anchor"),
               Line2D([], [], marker="o", ls="", ms=7, mfc="white", mec="black",
                      label="hardest negative"),
               Line2D([], [], marker="o", ls="", ms=7, mfc="white", mec=FALSE_NEGATIVE_COLOUR,
                      mew=1.5, label="false negative")]
    if view.positive_xy is not None:
        handles.insert(1, Line2D([], [], marker="^", ls="", ms=8, mfc="white", mec="black",
                                 label="positive"))
    if len(view.class_names) <= 10:
        handles += [Line2D([], [], marker="o", ls="", ms=5, mfc=colours[c], mec="none", label=name)
                    for c, name in enumerate(view.class_names)]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
              frameon=False)
    return fig


def static_neighbourhood_explorer(state: NeighbourhoodState, cls: int | str | None = None,
                                  index: int = 0) -> ExplorerFigure:
    """The explorer's figure without widgets, for the current anchor or the `index`-th image of
    class `cls`.

    Notebooks call it next to :func:`neighbourhood_explorer` so that a static render (GitHub, nbval,
    a PDF) still shows the neighbourhood; the figure is returned, and displayed when it ends a cell.
    """
    if cls is not None:
        state.select_anchor(cls, index)
    return neighbourhood_figure(state.view())


# ---------------------------------------------------------------------- the widget

class NeighbourhoodExplorer(StateExplorer):
    """The explorer widget: controls wired to a :class:`NeighbourhoodState`, redrawing a figure on
    every change.

    Core ipywidgets only, with ``observe(..., names="value")`` handlers, so it runs on ipywidgets
    7.7 and 8.x. The controls are attributes (``class_dropdown``, ``index_slider``,
    ``random_button``, ``temperature_slider``, ``k_slider`` and, with several checkpoints,
    ``checkpoint_dropdown``), so tests and notebooks can set their values; ``last_view`` and
    ``last_figure`` hold what was drawn.
    """

    def __init__(self, state: NeighbourhoodState, max_k: int = 16, dpi: int = 90):
        super().__init__(state, dpi)
        self.class_dropdown = widgets.Dropdown(
            options=[(state.class_names[label], label) for label in state.classes],
            value=state.anchor_label, description="class")
        self.index_slider = widgets.IntSlider(
            value=state.anchor_index_in_class, min=0, max=state.class_size(state.anchor_label) - 1,
            description="index", continuous_update=False)
        self.random_button = widgets.Button(description="random anchor")
        self.temperature_slider = widgets.FloatLogSlider(
            value=state.temperature, base=10, min=-2, max=1, step=0.05, description="τ",
            continuous_update=False)
        self.k_slider = widgets.IntSlider(value=min(state.k, max_k, state.num_images - 1), min=1,
                                          max=min(max_k, state.num_images - 1), description="k",
                                          continuous_update=False)
        self.checkpoint_dropdown = None
        if len(state.checkpoints) > 1:
            self.checkpoint_dropdown = widgets.Dropdown(options=state.checkpoints,
                                                        value=state.checkpoint,
                                                        description="checkpoint")
            self.on_change(self.checkpoint_dropdown, self.state.set_checkpoint)

        self.on_change(self.class_dropdown, self._select_class)
        self.on_change(self.index_slider,
                       lambda index: self.state.select_anchor(self.class_dropdown.value, index))
        self.random_button.on_click(self._on_random)
        self.on_change(self.temperature_slider, self.state.set_temperature)
        self.on_change(self.k_slider, self.state.set_k)

        anchor_row = [self.class_dropdown, self.index_slider, self.random_button]
        setting_row = [self.temperature_slider, self.k_slider]
        if self.checkpoint_dropdown is not None:
            setting_row.append(self.checkpoint_dropdown)
        self.children = [widgets.HBox(anchor_row), widgets.HBox(setting_row), self.summary,
                         self.figure_image]
        self.state.set_k(self.k_slider.value)
        self.redraw()

    def _select_class(self, label: int) -> None:
        self.state.select_anchor(label, 0)
        self._sync_controls()

    def _on_random(self, _button) -> None:
        self.state.random_anchor()
        self._sync_controls()
        self.redraw()

    def _sync_controls(self) -> None:
        """Show the state's anchor in the class dropdown and index slider without triggering
        handlers."""
        self._holding = True
        try:
            self.class_dropdown.value = self.state.anchor_label
            # value first: lowering max below the current value would move it (and fire a handler)
            self.index_slider.value = 0
            self.index_slider.max = self.state.class_size(self.state.anchor_label) - 1
            self.index_slider.value = self.state.anchor_index_in_class
        finally:
            self._holding = False

    def redraw(self) -> None:
        """Recompute the view and redraw the summary line and the figure."""
        view = self.state.view()
        self.show(view, neighbourhood_figure(view), (
            f"anchor #{view.anchor} ({view.class_name}), checkpoint <b>{view.checkpoint}</b>: "
            f"{view.false_negative_count} of the {view.k} hardest negatives are false negatives; "
            f"at τ = {view.temperature:.3g} they take {view.weights.sum():.3f} of the gradient "
            f"weight, effective number of negatives {view.effective_negatives:.1f}"))


def neighbourhood_explorer(state: NeighbourhoodState, max_k: int = 16,
                           dpi: int = 90) -> NeighbourhoodExplorer:
    """The interactive explorer for a state; display it by ending a cell with it.

    Controls: class and index (or a random anchor), temperature tau (log scale, 0.01 to 10), k (up
    to `max_k`), and the checkpoint when the state has several.
    """
    return NeighbourhoodExplorer(state, max_k=max_k, dpi=dpi)
