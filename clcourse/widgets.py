"""An interactive explorer of an encoder's hardest negatives, for notebooks.

Pick an anchor image (by class and index, or at random) and see its k hardest negatives among the
held-out images, with their similarities and labels (false negatives flagged), the weight InfoNCE's
gradient puts on each of them at a temperature, and where they all sit on a 2-D map of the embedding.
With several checkpoints, switch between them to watch the neighbourhood change during training.

Three layers, so every piece can be used and tested without a browser:
- :class:`ExplorerState`: plain Python. Holds the embeddings and the current choices; its methods are
  what the controls call, and :meth:`ExplorerState.neighbourhood` computes everything shown.
- :func:`figure`: draws a :class:`Neighbourhood` as one matplotlib figure.
- :func:`explorer`: core ipywidgets (working on ipywidgets 7.7 and 8.x, JupyterLab and Colab) wired to the
  state. :func:`static_explorer` draws the same figure without widgets, for static renders and CI.

The anchor's negatives are all the other held-out images: the held-out set plays the role of one large
batch. The anchor's positive is its second augmented view when the state has one; without views the
positive is taken to be perfectly aligned (similarity 1).

Notebook 07's soft-target explorer follows the same three layers: :class:`SoftTargetState` (SCE's target of
a query over a trained queue, at any lambda and tau_m), :func:`soft_target_figure` and
:func:`soft_target_explorer`; notebook 06's CACR weights explorer too (:class:`CacrWeightsState`,
:func:`cacr_weights_figure`, :func:`cacr_weights_explorer`).

Notebook 09's CKA explorer too: :class:`CKAExplorerState` (layer-wise CKA between representations named
(model, input), the two compared and their layers chosen at will), :func:`cka_figure` and :func:`cka_explorer`.
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .augment import to_uint8_images
from .cka import CKAResult, short_layer_names
from .negatives import (DEFAULT_MAP_CACHE, MAP_METHODS, EmbeddingMap, MapCache, effective_negatives,
                        fit_embedding_map, hardest_negatives, negative_weights_from_similarities)
from .validation import (describe_tensor, require_embeddings, require_in_range, require_int_at_least,
                         require_labels, require_positive)
from .viz import FALSE_NEGATIVE_COLOUR, NEGATIVE_COLOUR, image_tile, plot_cka_heatmap, representation_label


def _require_index(name: str, value: int, size: int) -> None:
    """`value` must be an integer index into `size` items, i.e. in [0, size - 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < size:
        raise ValueError(f"{name} must be an integer in [0, {size - 1}], got {value!r}")


def _as_image(images: torch.Tensor) -> np.ndarray:
    """Images [..., C, H, W] (uint8, or float in [0, 1]; C = 1 or 3) as [..., H, W, 3] uint8 for imshow."""
    images = to_uint8_images(images.detach().cpu())
    if images.shape[-3] == 1:
        images = images.expand(*images.shape[:-3], 3, *images.shape[-2:])
    return images.movedim(-3, -1).numpy()


@dataclass(frozen=True)
class Neighbourhood:
    """Everything the explorer shows for one anchor, one checkpoint and one temperature (numpy arrays)."""

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
    has_positive: bool                   # False: no second view, the positive is assumed perfectly aligned
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
    positive_xy: np.ndarray | None       # [2], the second view placed on the map (None without views)
    negatives_xy: np.ndarray             # [k, 2]

    @property
    def k(self) -> int:
        return len(self.negatives)

    @property
    def false_negative_count(self) -> int:
        return int(self.false_negative.sum())


class ExplorerState:
    """The explorer's logic: embeddings of held-out images per checkpoint, and the current choices.

    Args:
        features: [N, D] features of the held-out images (the anchor views), or a dict
            checkpoint name -> such features (e.g. {"epoch 1": ..., "epoch 50": ...}), in display order.
        images: [N, C, H, W] the held-out images (uint8, or float in [0, 1]).
        labels: [N] integer class labels, used only to flag false negatives and colour the map.
        class_names: name of each label.
        positive_features: optional dict checkpoint name -> [N, D] features of a second view of each image
            (a tensor when `features` is one tensor): the anchor's positive.
        views: optional pair of [N, C, H, W] images, the two views whose features are `features` and
            `positive_features`; shown next to the anchor.
        k: hardest negatives shown, in [1, N - 1].
        temperature: tau of the gradient weights, > 0.
        map_method: "pca" or "umap" (see clcourse.negatives.fit_embedding_map); a map is fitted once per
            checkpoint, when first needed, and kept in `map_cache`.
        seed: seed of the random-anchor generator.
    """

    def __init__(self, features: torch.Tensor | Mapping[str, torch.Tensor], images: torch.Tensor,
                 labels: torch.Tensor, class_names: Sequence[str], *,
                 positive_features: torch.Tensor | Mapping[str, torch.Tensor] | None = None,
                 views: tuple[torch.Tensor, torch.Tensor] | None = None, k: int = 8, temperature: float = 0.5,
                 map_method: str = "pca", map_cache: MapCache | None = DEFAULT_MAP_CACHE, seed: int = 0):
        features = dict(features) if isinstance(features, Mapping) else {"encoder": features}
        if not features:
            raise ValueError("features must hold at least one checkpoint (name -> [N, D] tensor), got an empty dict")
        if positive_features is not None and not isinstance(positive_features, Mapping):
            positive_features = {name: positive_features for name in features}
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1:
            raise ValueError(f"labels must be a 1-D integer tensor, got {getattr(labels, 'shape', type(labels))}")
        n = len(labels)
        for name, checkpoint_features in features.items():
            require_embeddings(f"features[{name!r}]", checkpoint_features)
            require_labels("labels", labels, len(checkpoint_features), f"features[{name!r}]")
            if positive_features is not None:
                if name not in positive_features:
                    raise ValueError(f"positive_features must have the checkpoints of features, missing {name!r}")
                if positive_features[name].shape != checkpoint_features.shape:
                    raise ValueError(f"positive_features[{name!r}] must have the shape of features[{name!r}] "
                                     f"{tuple(checkpoint_features.shape)}, got {tuple(positive_features[name].shape)}")
        if n < 2:
            raise ValueError(f"labels must have at least 2 entries (an anchor and a negative), got {n}")
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) != n:
            raise ValueError(f"images must be a tensor [N, C, H, W] with N = {n} (one per label), "
                             f"got {describe_tensor(images)}")
        if views is not None and (len(views) != 2 or any(v.shape != images.shape for v in views)):
            raise ValueError(f"views must be a pair of tensors shaped like images {tuple(images.shape)}")
        class_names = tuple(class_names)
        if int(labels.max()) >= len(class_names) or int(labels.min()) < 0:
            raise ValueError(f"class_names must name every label: labels lie in [{int(labels.min())}, "
                             f"{int(labels.max())}] but there are {len(class_names)} class names")
        if map_method not in MAP_METHODS:
            raise ValueError(f"map_method must be one of {MAP_METHODS}, got {map_method!r}")

        self._features = {name: F.normalize(f.detach().float(), dim=1) for name, f in features.items()}
        self._positives = (None if positive_features is None else
                           {name: F.normalize(positive_features[name].detach().float(), dim=1) for name in features})
        self.images, self.views = images, views
        self.labels = labels.detach().cpu()
        self.class_names = class_names
        labels_np = self.labels.numpy()
        self._members = {int(label): np.flatnonzero(labels_np == label) for label in np.unique(labels_np)}
        self.map_method, self.map_cache = map_method, map_cache
        self._maps: dict[str, EmbeddingMap] = {}
        self._rng = np.random.default_rng(seed)
        self.checkpoint = next(iter(features))
        self.anchor = 0
        self.set_k(k)
        self.set_temperature(temperature)

    @classmethod
    def from_backbones(cls, backbones: Mapping[str, torch.nn.Module], images: torch.Tensor, labels: torch.Tensor,
                       class_names: Sequence[str], augment=None, *, seed: int = 0, batch_size: int = 1024,
                       **options) -> "ExplorerState":
        """Build the state from encoders (e.g. one per checkpoint) with clcourse.evaluate.extract_features.

        Without `augment`, the features are those of the images themselves and there is no positive.
        With `augment` (e.g. clcourse.augment.simclr_cifar()), two views of every image are drawn with a
        generator seeded by `seed`, the same views for every backbone; the anchors are the first views
        and their positives the second, as in a SimCLR batch. `options` go to the constructor
        (k, temperature, map_method, ...).
        """
        from .evaluate import extract_features  # lazily: the explorer itself needs no models

        if not isinstance(backbones, Mapping) or not backbones:
            raise ValueError("backbones must be a non-empty dict name -> backbone module")
        if augment is None:
            features = {name: extract_features(net, images, batch_size=batch_size) for name, net in backbones.items()}
            return cls(features, images, labels, class_names, **options)
        generator = torch.Generator(device=images.device).manual_seed(seed)
        views = tuple(torch.cat([to_uint8_images(augment(chunk, generator)) for chunk in images.split(batch_size)])
                      for _ in range(2))
        features = {name: extract_features(net, views[0], batch_size=batch_size) for name, net in backbones.items()}
        positives = {name: extract_features(net, views[1], batch_size=batch_size) for name, net in backbones.items()}
        return cls(features, images, labels, class_names, positive_features=positives, views=views, **options)

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
        if isinstance(cls, str) and cls in self.class_names and self.class_names.index(cls) in self._members:
            return self.class_names.index(cls)
        if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool) and int(cls) in self._members:
            return int(cls)
        present = [self.class_names[label] for label in self._members]
        raise ValueError(f"cls must be a class name in {present} or a label in {self.classes}, got {cls!r}")

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
        """Pick the anchor uniformly at random (from the state's generator, or from `seed`); returns it."""
        rng = self._rng if seed is None else np.random.default_rng(seed)
        self.anchor = int(rng.integers(self.num_images))
        return self.anchor

    def set_temperature(self, temperature: float) -> None:
        require_positive("temperature", temperature)
        self.temperature = float(temperature)

    def set_k(self, k: int) -> None:
        require_int_at_least("k", k, 1)
        if k > self.num_images - 1:
            raise ValueError(f"k must be an integer in [1, {self.num_images - 1}] (the number of negatives), got {k}")
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
            self._maps[name] = fit_embedding_map(self._features[name], self.map_method, cache=self.map_cache)
        return self._maps[name]

    def neighbourhood(self) -> Neighbourhood:
        """The current anchor's hardest negatives, their gradient weights and map positions."""
        unit = self._features[self.checkpoint]
        anchor, n = self.anchor, self.num_images
        ids = torch.arange(n, device=unit.device)
        similarities, indices = hardest_negatives(unit[anchor:anchor + 1], unit, self.k,
                                                  anchor_ids=ids[anchor:anchor + 1], candidate_ids=ids)
        similarities, indices = similarities[0], indices[0]
        with torch.no_grad():
            negative_similarities = (unit @ unit[anchor])[ids != anchor]                  # [N - 1]
            if self._positives is None:
                positive_similarity = torch.ones((), device=unit.device)
            else:
                positive_similarity = self._positives[self.checkpoint][anchor] @ unit[anchor]
            weights = negative_weights_from_similarities(positive_similarity, negative_similarities, self.temperature)
            # position of each hardest negative among the N - 1 negatives (the anchor's row is removed)
            top_weights = weights[indices - (indices > anchor).long()]
            n_effective = effective_negatives(torch.softmax(negative_similarities / self.temperature, dim=0))
        total_weight = float(weights.sum())

        indices_np = indices.cpu().numpy()
        negative_labels = self.labels[indices.cpu()].numpy()
        label = self.anchor_label
        emb_map = self.embedding_map()
        positive_xy = None
        if self._positives is not None and emb_map.can_project:
            positive_xy = emb_map.project(self._positives[self.checkpoint][anchor:anchor + 1])[0]
        view_images = None if self.views is None else tuple(_as_image(v[anchor]) for v in self.views)
        return Neighbourhood(
            checkpoint=self.checkpoint, anchor=anchor, label=label, class_name=self.class_names[label],
            negatives=indices_np, similarities=similarities.cpu().numpy(), negative_labels=negative_labels,
            negative_class_names=tuple(self.class_names[int(y)] for y in negative_labels),
            false_negative=negative_labels == label,
            positive_similarity=float(positive_similarity), has_positive=self._positives is not None,
            temperature=self.temperature, weights=top_weights.cpu().numpy(), positive_weight=1.0 - total_weight,
            other_negatives_weight=total_weight - float(top_weights.sum()),
            effective_negatives=float(n_effective), num_negatives=n - 1,
            anchor_image=_as_image(self.images[anchor]), view_images=view_images,
            negative_images=_as_image(self.images[indices.to(self.images.device)]),
            map_method=emb_map.method, map_coords=emb_map.coords, map_labels=self.labels.numpy(),
            class_names=self.class_names, anchor_xy=emb_map.coords[anchor], positive_xy=positive_xy,
            negatives_xy=emb_map.coords[indices_np])


# ---------------------------------------------------------------------- drawing

def _class_colours(num_classes: int) -> np.ndarray:
    """One RGBA colour per class: tab10 / tab20 when they suffice, else evenly spaced turbo."""
    if num_classes <= 20:
        return matplotlib.colormaps["tab10" if num_classes <= 10 else "tab20"](np.arange(num_classes))
    return matplotlib.colormaps["turbo"](np.linspace(0, 1, num_classes))


def _png(fig: Figure, dpi: int = 90) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class ExplorerFigure(Figure):
    """A matplotlib Figure that displays itself when it ends a notebook cell, whether or not pyplot was
    imported (a bare Figure is shown only once pyplot's inline backend has registered a display hook)."""

    def _repr_png_(self) -> bytes:
        return _png(self)


def figure(neighbourhood: Neighbourhood, images_per_row: int = 8) -> ExplorerFigure:
    """One figure for a neighbourhood: the anchor (and its two views), its k hardest negatives with
    similarity and class (false negatives in red), the gradient weight on each of them at the current
    temperature, and the 2-D map with the anchor, its positive and its hardest negatives marked.

    Returns a matplotlib Figure not managed by pyplot: nothing is shown or kept open by itself, and a
    notebook cell ending with it displays it.
    """
    nb = neighbourhood
    tiles = [(nb.anchor_image, f"anchor #{nb.anchor}\n{nb.class_name}", "black", 2.0)]
    if nb.view_images is not None:
        tiles.append((nb.view_images[0], "view 1 (anchor)", "black", 1.0))
        tiles.append((nb.view_images[1], f"view 2 (positive)\ns = {nb.positive_similarity:.2f}", "black", 1.0))
    for rank in range(nb.k):
        false_negative = bool(nb.false_negative[rank])
        title = f"#{rank + 1}  s = {nb.similarities[rank]:.2f}\n{nb.negative_class_names[rank]}"
        tiles.append((nb.negative_images[rank], title + (" (FN)" if false_negative else ""),
                      FALSE_NEGATIVE_COLOUR if false_negative else "black", 2.5 if false_negative else 1.0))
    columns = min(images_per_row, len(tiles))
    tile_rows = math.ceil(len(tiles) / columns)
    fig = ExplorerFigure(figsize=(max(1.5 * columns, 9.0), 1.9 * tile_rows + 4.0), layout="constrained")
    grid = fig.add_gridspec(2, 1, height_ratios=[1.9 * tile_rows, 4.0])
    tile_grid = grid[0].subgridspec(tile_rows, columns)
    for position, (image, title, colour, frame) in enumerate(tiles):
        image_tile(fig.add_subplot(tile_grid[position // columns, position % columns]), image, title, colour, frame)
    bottom = grid[1].subgridspec(1, 2)

    ax = fig.add_subplot(bottom[0])
    ranks = np.arange(1, nb.k + 1)
    ax.bar(ranks, nb.weights, color=[FALSE_NEGATIVE_COLOUR if fn else NEGATIVE_COLOUR for fn in nb.false_negative])
    ax.set_xticks(ranks)
    ax.set_xlabel("hardest negatives, by rank (red: same class)")
    ax.set_ylabel("gradient weight  $p_k$")
    positive = "positive" if nb.has_positive else "positive (assumed s = 1)"
    ax.set_title(f"$\\tau$ = {nb.temperature:.3g}: push weights $p_k$ = softmax(s/$\\tau$)\n"
                 f"{positive} pulled with 1 - $p_+$ = {1 - nb.positive_weight:.3f}; "
                 f"other {nb.num_negatives - nb.k} negatives {nb.other_negatives_weight:.3f}\n"
                 f"effective number of negatives {nb.effective_negatives:.1f} of {nb.num_negatives}", fontsize=8)

    ax = fig.add_subplot(bottom[1])
    colours = _class_colours(len(nb.class_names))
    ax.scatter(nb.map_coords[:, 0], nb.map_coords[:, 1], s=5, c=colours[nb.map_labels], alpha=0.35, linewidths=0)
    edge = [FALSE_NEGATIVE_COLOUR if fn else "black" for fn in nb.false_negative]
    ax.scatter(nb.negatives_xy[:, 0], nb.negatives_xy[:, 1], s=55, facecolors=colours[nb.negative_labels],
               edgecolors=edge, linewidths=1.5, zorder=3)
    for rank, (x, y) in enumerate(nb.negatives_xy, start=1):
        ax.annotate(str(rank), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7, zorder=4)
    ax.scatter(*nb.anchor_xy, marker="*", s=260, c=[colours[nb.label]], edgecolors="black", linewidths=1.2, zorder=5)
    if nb.positive_xy is not None:
        ax.scatter(*nb.positive_xy, marker="^", s=90, c=[colours[nb.label]], edgecolors="black", zorder=5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{nb.map_method.upper()} map of checkpoint '{nb.checkpoint}'", fontsize=8)
    handles = [Line2D([], [], marker="*", ls="", ms=11, mfc="white", mec="black", label="anchor"),
               Line2D([], [], marker="o", ls="", ms=7, mfc="white", mec="black", label="hardest negative"),
               Line2D([], [], marker="o", ls="", ms=7, mfc="white", mec=FALSE_NEGATIVE_COLOUR, mew=1.5,
                      label="false negative")]
    if nb.positive_xy is not None:
        handles.insert(1, Line2D([], [], marker="^", ls="", ms=8, mfc="white", mec="black", label="positive"))
    if len(nb.class_names) <= 10:
        handles += [Line2D([], [], marker="o", ls="", ms=5, mfc=colours[c], mec="none", label=name)
                    for c, name in enumerate(nb.class_names)]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return fig


def static_explorer(state: ExplorerState, cls: int | str | None = None, index: int = 0) -> ExplorerFigure:
    """The explorer's figure without widgets, for the current anchor or the `index`-th image of class `cls`.

    Notebooks call it next to :func:`explorer` so that a static render (GitHub, nbval, a PDF) still shows the
    neighbourhood; the figure is returned, and displayed when it ends a cell.
    """
    if cls is not None:
        state.select_anchor(cls, index)
    return figure(state.neighbourhood())


# ---------------------------------------------------------------------- widgets

class StateExplorer(widgets.VBox):
    """Base of the explorer widgets: controls wired to a plain state class (tested without a browser), and a
    `redraw` (each subclass's own) after every change. `on_change` wires a control with a core ipywidgets
    ``observe(..., names="value")`` handler, the same on ipywidgets 7.7 and 8.x."""

    _holding = False       # True while the controls are being synced to the state: no handler runs

    def __init__(self, state, dpi: int):
        """The state, the figure's resolution, and the two outputs every explorer shows: `summary` (a line of
        HTML) and `figure_image` (the figure, see `show_figure`); each subclass adds its controls."""
        super().__init__()
        self.state, self.dpi = state, dpi
        self.summary = widgets.HTML()
        self.figure_image = widgets.Image(format="png")

    def on_change(self, control: widgets.ValueWidget, setter: Callable) -> None:
        """On every change of `control`'s value (none while the controls are being synced to the state):
        `setter(new value)`, then `redraw()`."""
        def handler(change) -> None:
            if self._holding:
                return
            setter(change["new"])
            self.redraw()
        control.observe(handler, names="value")

    def show_figure(self, fig: Figure | None) -> None:
        """Show `fig` as PNG bytes in `figure_image` (an ipywidgets Image), or hide that when `fig` is None.
        An Image is a plain widget value, which every frontend renders and a notebook runner (nbclient, hence
        nbgrader) need not emulate, as it must an Output widget's captured display (which can hang it)."""
        if fig is None:
            self.figure_image.value, self.figure_image.layout.display = b"", "none"
        else:
            self.figure_image.value, self.figure_image.layout.display = _png(fig, self.dpi), None


class NeighbourhoodExplorer(StateExplorer):
    """The explorer widget: controls wired to an :class:`ExplorerState`, redrawing a figure on every change.

    Core ipywidgets only, with ``observe(..., names="value")`` handlers, so it runs on ipywidgets 7.7 and
    8.x. The controls are attributes (``class_dropdown``, ``index_slider``, ``random_button``,
    ``temperature_slider``, ``k_slider`` and, with several checkpoints, ``checkpoint_dropdown``), so tests
    and notebooks can set their values; ``last_neighbourhood`` and ``last_figure`` hold what was drawn.
    """

    def __init__(self, state: ExplorerState, max_k: int = 16, dpi: int = 90):
        super().__init__(state, dpi)
        self.class_dropdown = widgets.Dropdown(
            options=[(state.class_names[label], label) for label in state.classes], value=state.anchor_label,
            description="class")
        self.index_slider = widgets.IntSlider(
            value=state.anchor_index_in_class, min=0, max=state.class_size(state.anchor_label) - 1,
            description="index", continuous_update=False)
        self.random_button = widgets.Button(description="random anchor")
        self.temperature_slider = widgets.FloatLogSlider(
            value=state.temperature, base=10, min=-2, max=1, step=0.05, description="τ", continuous_update=False)
        self.k_slider = widgets.IntSlider(value=min(state.k, max_k, state.num_images - 1), min=1,
                                          max=min(max_k, state.num_images - 1), description="k",
                                          continuous_update=False)
        self.checkpoint_dropdown = None
        if len(state.checkpoints) > 1:
            self.checkpoint_dropdown = widgets.Dropdown(options=state.checkpoints, value=state.checkpoint,
                                                        description="checkpoint")
            self.on_change(self.checkpoint_dropdown, self.state.set_checkpoint)
        self.last_neighbourhood: Neighbourhood | None = None
        self.last_figure: ExplorerFigure | None = None

        self.on_change(self.class_dropdown, self._select_class)
        self.on_change(self.index_slider, lambda index: self.state.select_anchor(self.class_dropdown.value, index))
        self.random_button.on_click(self._on_random)
        self.on_change(self.temperature_slider, self.state.set_temperature)
        self.on_change(self.k_slider, self.state.set_k)

        anchor_row = [self.class_dropdown, self.index_slider, self.random_button]
        setting_row = [self.temperature_slider, self.k_slider]
        if self.checkpoint_dropdown is not None:
            setting_row.append(self.checkpoint_dropdown)
        self.children = [widgets.HBox(anchor_row), widgets.HBox(setting_row), self.summary, self.figure_image]
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
        """Show the state's anchor in the class dropdown and index slider without triggering handlers."""
        self._holding = True
        try:
            self.class_dropdown.value = self.state.anchor_label
            # value first: lowering max below the current value would move the value (and fire a handler)
            self.index_slider.value = 0
            self.index_slider.max = self.state.class_size(self.state.anchor_label) - 1
            self.index_slider.value = self.state.anchor_index_in_class
        finally:
            self._holding = False

    def redraw(self) -> None:
        """Recompute the neighbourhood and redraw the summary line and the figure."""
        nb = self.state.neighbourhood()
        fig = figure(nb)
        self.last_neighbourhood, self.last_figure = nb, fig
        self.summary.value = (
            f"anchor #{nb.anchor} ({nb.class_name}), checkpoint <b>{nb.checkpoint}</b>: "
            f"{nb.false_negative_count} of the {nb.k} hardest negatives are false negatives; "
            f"at τ = {nb.temperature:.3g} they take {nb.weights.sum():.3f} of the gradient weight, "
            f"effective number of negatives {nb.effective_negatives:.1f}")
        self.show_figure(fig)


def explorer(state: ExplorerState, max_k: int = 16, dpi: int = 90) -> NeighbourhoodExplorer:
    """The interactive explorer for a state; display it by ending a cell with it.

    Controls: class and index (or a random anchor), temperature tau (log scale, 0.01 to 10), k (up to
    `max_k`), and the checkpoint when the state has several.
    """
    return NeighbourhoodExplorer(state, max_k=max_k, dpi=dpi)


# ---------------------------------------------------------------------- CACR's conditional weights (notebook 06)

@dataclass(frozen=True)
class CacrQuery:
    """What the CACR weights explorer shows for one image (numpy arrays, each list ordered by weight, largest
    first): view 0 of the image is the query; it attracts the image's other V - 1 views (its positives) and
    repels view 1 of the B - 1 other images (its negatives, the view pair (0, 1) of `clcourse.losses.cacr`)."""

    image: int
    tau_pos: float
    tau_neg: float
    hcl_tilt: float                      # HCL's beta / t: its weights are softmax(hcl_tilt * s) over the negatives
    positive_views: np.ndarray           # [V - 1] view indices, largest attraction weight first
    positive_d2: np.ndarray              # [V - 1] squared distance to the query
    positive_weights: np.ndarray         # [V - 1] w+, summing to 1
    negative_images: np.ndarray          # [B - 1] image indices, largest repulsion weight first
    negative_d2: np.ndarray              # [B - 1]
    negative_weights: np.ndarray         # [B - 1] w-, summing to 1
    hcl_weights: np.ndarray              # [B - 1] HCL's normalised importance weights on the same negatives
    false_negative: np.ndarray           # [B - 1] bool: same class as the query (False without labels)
    effective_positives: float           # exp(entropy) of w+: V - 1 when uniform, 1 when one view takes it all
    effective_negatives: float           # exp(entropy) of w-
    view_images: np.ndarray | None       # [V, H, W, 3] uint8, the image's views in view order
    negative_thumbnails: np.ndarray | None   # [B - 1, H, W, 3] view 1 of the negatives, in the order above
    class_names: tuple[str, ...] | None  # the query's class name first, then the negatives' (None without labels)


class CacrWeightsState:
    """The CACR weights explorer's logic: the embeddings of V views of a batch of B images, the chosen image and
    the two concentrations. `query()` computes what is shown with `clcourse.losses.cacr_terms`, so the
    explorer shows exactly the weights the loss uses.

    Args:
        embeddings: [V, B, D] embeddings of V >= 2 views of B >= 2 images (normalised here).
        view_images: optional [V, B, C, H, W] the views themselves (uint8, or float in [0, 1]), for thumbnails.
        labels, class_names: optional [B] labels and the name of each, to flag negatives of the query's class.
        tau_pos, tau_neg: tau+ and tau- >= 0 (CACR's CIFAR-10 defaults 1.0 and 0.9).
        hcl_beta, hcl_temperature: HCL's beta and t (defaults 1.0 and 0.5, the authors'); its importance weights
            on the negatives are softmax(beta s / t), CACR's repulsion weights softmax(2 tau- s): equal when
            2 tau- = beta / t.
        image: the image whose view 0 is the query.
    """

    def __init__(self, embeddings: torch.Tensor, view_images: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None, class_names: Sequence[str] | None = None, *,
                 tau_pos: float = 1.0, tau_neg: float = 0.9, hcl_beta: float = 1.0, hcl_temperature: float = 0.5,
                 image: int = 0):
        if not isinstance(embeddings, torch.Tensor) or embeddings.dim() != 3 or not embeddings.is_floating_point():
            raise ValueError(f"embeddings must be a floating-point tensor [V, B, D], got {describe_tensor(embeddings)}")
        num_views, batch = embeddings.shape[:2]
        if num_views < 2 or batch < 2:
            raise ValueError(f"embeddings must hold V >= 2 views of B >= 2 images, got V = {num_views}, B = {batch}")
        if view_images is not None and (not isinstance(view_images, torch.Tensor) or view_images.dim() != 5
                                        or tuple(view_images.shape[:2]) != (num_views, batch)):
            raise ValueError(f"view_images must be a tensor [V, B, C, H, W] with V = {num_views}, B = {batch}, "
                             f"got {describe_tensor(view_images)}")
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

    def query(self) -> CacrQuery:
        """The weights around the current image's view 0 at the current tau+ and tau-."""
        from .losses import cacr_terms

        i = self.image
        with torch.no_grad():
            terms = cacr_terms(self.embeddings, self.tau_pos, self.tau_neg)
        u = self.embeddings
        others = torch.tensor([j for j in range(self.num_images) if j != i])
        positive_d2 = 2 - 2 * u[1:, i] @ u[0, i]                                  # views 1..V-1
        positive_weights = terms.attraction_weights[i, 0, 1:]
        similarity = u[1, others] @ u[0, i]                                        # view 1 of the other images
        negative_weights = terms.repulsion_weights[0, i, others]                   # pair (0, 1) comes first
        hcl_weights = torch.softmax(self.hcl_tilt * similarity, dim=0)
        positive_order = torch.argsort(positive_weights, descending=True, stable=True)
        negative_order = torch.argsort(negative_weights, descending=True, stable=True)
        negatives = others[negative_order]
        false_negative = (self.labels[negatives] == self.labels[i] if self.labels is not None
                          else torch.zeros(len(negatives), dtype=torch.bool))
        names = None
        if self.labels is not None:
            names = tuple(self.class_names[label] for label in self.labels[torch.cat([torch.tensor([i]), negatives])])
        return CacrQuery(
            image=i, tau_pos=self.tau_pos, tau_neg=self.tau_neg, hcl_tilt=self.hcl_tilt,
            positive_views=(positive_order + 1).numpy(), positive_d2=positive_d2[positive_order].numpy(),
            positive_weights=positive_weights[positive_order].numpy(), negative_images=negatives.numpy(),
            negative_d2=(2 - 2 * similarity[negative_order]).numpy(),
            negative_weights=negative_weights[negative_order].numpy(),
            hcl_weights=hcl_weights[negative_order].numpy(), false_negative=false_negative.numpy(),
            effective_positives=effective_negatives(positive_weights).item(),
            effective_negatives=effective_negatives(negative_weights).item(),
            view_images=_as_image(self.view_images[:, i]) if self.view_images is not None else None,
            negative_thumbnails=_as_image(self.view_images[1, negatives]) if self.view_images is not None else None,
            class_names=names)


def cacr_weights_figure(query: CacrQuery, negatives_shown: int = 8) -> ExplorerFigure:
    """One figure for a CacrQuery: the query view and its positives ranked by attraction weight, its nearest
    negatives ranked by repulsion weight (HCL's weight beside CACR's; same-class negatives in red), and every
    weight against the squared distance to the query (uniform weights dotted)."""
    q = query
    tiles = []
    if q.view_images is not None:
        name = f" ({q.class_names[0]})" if q.class_names is not None else ""
        tiles.append([(q.view_images[0], f"query: view 0\nimage #{q.image}{name}", "black", 2.0)]
                     + [(q.view_images[view], f"view {view}  w⁺ {w:.2f}\nd² = {d2:.2f}", "black", 1.0)
                        for view, w, d2 in zip(q.positive_views, q.positive_weights, q.positive_d2)])
        shown = min(negatives_shown, len(q.negative_images))
        row = []
        for rank in range(shown):
            false_negative = bool(q.false_negative[rank])
            name = f"\n{q.class_names[rank + 1]}" if q.class_names is not None else ""
            row.append((q.negative_thumbnails[rank], f"w⁻ {q.negative_weights[rank]:.3f}  HCL {q.hcl_weights[rank]:.3f}"
                        f"{name}", FALSE_NEGATIVE_COLOUR if false_negative else "black", 2.0 if false_negative else 1.0))
        tiles.append(row)
    columns = max([len(row) for row in tiles] + [1])
    fig = ExplorerFigure(figsize=(max(1.6 * columns, 10.0), 2.0 * len(tiles) + 3.6), layout="constrained")
    grid = fig.add_gridspec(len(tiles) + 1, 1, height_ratios=[2.0] * len(tiles) + [3.6])
    for row_number, row in enumerate(tiles):
        row_grid = grid[row_number].subgridspec(1, columns)
        for column, (image, title, colour, frame) in enumerate(row):
            image_tile(fig.add_subplot(row_grid[column]), image, title, colour, frame, fontsize=7)
    bottom = grid[len(tiles)].subgridspec(1, 2)

    ax = fig.add_subplot(bottom[0])
    ax.bar(np.arange(len(q.positive_weights)), q.positive_weights, color="tab:green")
    ax.axhline(1 / len(q.positive_weights), color="black", linestyle=":", label="uniform (τ⁺ = 0)")
    ax.set_xticks(np.arange(len(q.positive_weights)),
                  [f"view {v}\nd²={d2:.2f}" for v, d2 in zip(q.positive_views, q.positive_d2)], fontsize=7)
    ax.set_ylabel("attraction weight w⁺")
    ax.set_title(f"τ⁺ = {q.tau_pos:.2f}: the farthest views pull hardest\neffective number of positives "
                 f"{q.effective_positives:.2f} of {len(q.positive_weights)}", fontsize=8)
    ax.legend(fontsize=7)

    ax = fig.add_subplot(bottom[1])
    colours = np.where(q.false_negative, FALSE_NEGATIVE_COLOUR, NEGATIVE_COLOUR)
    ax.scatter(q.negative_d2, q.negative_weights, s=10, c=list(colours), label="CACR w⁻ (red: same class)")
    order = np.argsort(q.negative_d2)
    ax.plot(q.negative_d2[order], q.hcl_weights[order], color="tab:blue", linewidth=1.2,
            label=f"HCL, softmax({q.hcl_tilt:.2g} s)")
    ax.axhline(1 / len(q.negative_weights), color="black", linestyle=":", label="uniform (τ⁻ = 0)")
    ax.set_yscale("log")
    ax.set_xlabel("squared distance d² to the query (= 2 − 2s)")
    ax.set_ylabel("repulsion weight w⁻")
    ax.set_title(f"τ⁻ = {q.tau_neg:.2f}: the nearest negatives push hardest, w⁻ = softmax({2 * q.tau_neg:.2g} s)\n"
                 f"effective number of negatives {q.effective_negatives:.1f} of {len(q.negative_weights)}",
                 fontsize=8)
    ax.legend(fontsize=7)
    return fig


class CacrWeightsExplorer(StateExplorer):
    """Sliders for the image, tau+ and tau- wired to a `CacrWeightsState`, redrawing `cacr_weights_figure` on
    every change. Core ipywidgets only (7.7 and 8.x); the controls are attributes (`image_slider`,
    `tau_pos_slider`, `tau_neg_slider`) and `last_query` holds what was drawn."""

    def __init__(self, state: CacrWeightsState, max_tau: float = 5.0, dpi: int = 90):
        super().__init__(state, dpi)
        self.image_slider = widgets.IntSlider(value=state.image, min=0, max=state.num_images - 1,
                                              description="image", continuous_update=False)
        self.tau_pos_slider = widgets.FloatSlider(value=min(state.tau_pos, max_tau), min=0.0, max=max_tau, step=0.1,
                                                  description="τ⁺", continuous_update=False)
        self.tau_neg_slider = widgets.FloatSlider(value=min(state.tau_neg, max_tau), min=0.0, max=max_tau, step=0.1,
                                                  description="τ⁻", continuous_update=False)
        self.last_query: CacrQuery | None = None
        self.on_change(self.image_slider, self.state.set_image)
        self.on_change(self.tau_pos_slider, self.state.set_tau_pos)
        self.on_change(self.tau_neg_slider, self.state.set_tau_neg)
        self.children = [widgets.HBox([self.image_slider, self.tau_pos_slider, self.tau_neg_slider]), self.summary,
                         self.figure_image]
        self.redraw()

    def redraw(self) -> None:
        q = self.state.query()
        self.last_query = q
        self.summary.value = (f"image #{q.image}: τ⁺ = {q.tau_pos:.2f} spreads the pull over "
                              f"{q.effective_positives:.2f} of {len(q.positive_weights)} positives; "
                              f"τ⁻ = {q.tau_neg:.2f} spreads the push over {q.effective_negatives:.1f} of "
                              f"{len(q.negative_weights)} negatives")
        self.show_figure(cacr_weights_figure(q))


def cacr_weights_explorer(state: CacrWeightsState, max_tau: float = 5.0, dpi: int = 90) -> CacrWeightsExplorer:
    """The interactive CACR weights explorer for a state; display it by ending a cell with it."""
    return CacrWeightsExplorer(state, max_tau=max_tau, dpi=dpi)


# ---------------------------------------------------------------------- SCE's soft target (notebook 07)

@dataclass(frozen=True)
class SoftTargetView:
    """What the soft-target explorer shows for one query at one (lambda, tau_m) (numpy arrays, floats)."""

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
    sorted_weights: np.ndarray           # [K] every candidate queue entry's target weight, largest first
    sorted_same_class: np.ndarray        # [K] bool, in the same order
    same_class_mass: float               # share of the relation on same-class entries
    same_class_share: float              # share of the candidates that are of the query's class
    effective_entries: float             # exp(entropy) of the relation
    same_class_push: float               # SCE's net push on same-class entries (sum of p - w)
    infonce_same_class_push: float       # InfoNCE's push on them (sum of p)


class SoftTargetState:
    """The logic of the soft-target explorer: SCE's target of a query over a trained model's queue, for a lambda
    and a tau_m chosen at will (the embeddings are computed once; `view` recomputes the target with
    `clcourse.diagnostics.soft_targets_from_embeddings`).

    Args:
        q, k: [N, D] query and key embeddings of N probe images (unit vectors or raw).
        queue: [K, D] the queue's keys; queue_index: [K] training-set index of the image behind each.
        images: [N, C, H, W] the probe images; labels: [N] their labels.
        train_images, train_labels: the training set, indexed by `queue_index`.
        class_names: name of each label.
        temperature: tau of the prediction (the method's).
        lam, temperature_momentum: the starting lambda in [0, 1] and tau_m > 0.
        index: optional [N] training-set positions of the probe images: a key of a query's own image is left
            out, as in training.
        top: how many entries `view` details, in [1, K].
    """

    def __init__(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, queue_index: torch.Tensor,
                 images: torch.Tensor, labels: torch.Tensor, train_images: torch.Tensor, train_labels: torch.Tensor,
                 class_names: Sequence[str], *, temperature: float, lam: float = 0.5,
                 temperature_momentum: float = 0.05, index: torch.Tensor | None = None, top: int = 8):
        require_embeddings("q", q)
        require_embeddings("k", k)
        require_embeddings("queue", queue)
        if k.shape != q.shape or queue.shape[1] != q.shape[1]:
            raise ValueError(f"k must have the shape of q {tuple(q.shape)} and queue the same embedding size, "
                             f"got k {tuple(k.shape)} and queue {tuple(queue.shape)}")
        require_labels("labels", labels, len(q), "q")
        require_labels("queue_index", queue_index, len(queue), "queue")
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or len(images) != len(q):
            raise ValueError(f"images must be a tensor [N, C, H, W] with N = {len(q)}, got {describe_tensor(images)}")
        require_labels("train_labels", train_labels, len(train_images), "train_images")
        if int(queue_index.min()) < 0 or int(queue_index.max()) >= len(train_images):
            raise ValueError(f"queue_index must index train_images (0 to {len(train_images) - 1}), got entries from "
                             f"{int(queue_index.min())} to {int(queue_index.max())}")
        if index is not None:
            require_labels("index", index, len(q), "q")
        require_positive("temperature", temperature)
        self.q, self.k, self.queue, self.queue_index = q.detach(), k.detach(), queue.detach(), queue_index
        self.images, self.labels, self.index = images, labels.detach().cpu(), index
        self.train_images, self.train_labels = train_images, train_labels
        self.class_names = tuple(class_names)
        self.temperature = float(temperature)
        self.query = 0
        self.set_lam(lam)
        self.set_temperature_momentum(temperature_momentum)
        self.set_top(top)

    @classmethod
    def from_method(cls, method, images: torch.Tensor, labels: torch.Tensor, train_images: torch.Tensor,
                    train_labels: torch.Tensor, class_names: Sequence[str], index: torch.Tensor | None = None,
                    **options) -> "SoftTargetState":
        """The state for a trained SCE (or MoCo) method: queries and keys of `images` in eval mode, and the queue
        entries that hold keys. lambda and tau_m start at the method's (MoCo: 1 and 0.05); `options` go to the
        constructor (lam, temperature_momentum, top)."""
        from .diagnostics import filled_queue, keys, queries   # lazily: the explorer itself needs no models

        queue, queue_index = filled_queue(method)
        options = {"lam": getattr(method, "lam", 1.0),
                   "temperature_momentum": getattr(method, "temperature_momentum", 0.05), **options}
        return cls(queries(method, images), keys(method, images), queue, queue_index, images, labels, train_images,
                   train_labels, class_names, temperature=method.temperature, index=index, **options)

    @property
    def num_queries(self) -> int:
        return len(self.q)

    def select(self, query: int) -> None:
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
            raise ValueError(f"top must be an integer in [1, {len(self.queue)}] (the queue entries), got {top}")
        self.top = top

    def view(self) -> SoftTargetView:
        """The current query's target over the queue at the current lambda and tau_m."""
        from .diagnostics import soft_targets_from_embeddings, target_spread

        i = self.query
        queue_mask = None
        if self.index is not None:
            queue_mask = self.index[i:i + 1, None].to(self.queue_index.device) == self.queue_index[None, :]
        targets = soft_targets_from_embeddings(self.q[i:i + 1], self.k[i:i + 1], self.queue, self.queue_index,
                                               self.temperature, self.temperature_momentum, self.lam, queue_mask)
        spread = target_spread(targets, self.labels[i:i + 1], self.train_labels)
        weights = targets.target[0, 1:].cpu()
        candidate = torch.ones_like(weights, dtype=torch.bool) if queue_mask is None else ~queue_mask[0].cpu()
        order = weights.masked_fill(~candidate, -1.0).argsort(descending=True)[:int(candidate.sum())]
        entry_labels = self.train_labels.cpu()[self.queue_index.cpu()]
        same_class = (entry_labels == self.labels[i]).numpy()
        top = order[:self.top]
        label = int(self.labels[i])
        return SoftTargetView(
            query=i, label=label, class_name=self.class_names[label], lam=self.lam,
            temperature_momentum=self.temperature_momentum, query_image=_as_image(self.images[i]),
            entries=top.numpy(), weights=weights[top].numpy(), predictions=targets.prediction[0, 1:].cpu()[top].numpy(),
            entry_labels=entry_labels[top].numpy(),
            entry_class_names=tuple(self.class_names[int(y)] for y in entry_labels[top]),
            same_class=same_class[top.numpy()],
            entry_images=_as_image(self.train_images[self.queue_index[top.to(self.queue_index.device)]]),
            sorted_weights=weights[order].numpy(), sorted_same_class=same_class[order.numpy()],
            **{field: float(value[0]) for field, value in spread._asdict().items()})


def soft_target_figure(view: SoftTargetView, bars: int = 24) -> ExplorerFigure:
    """One figure for a `SoftTargetView`: the query, the target weight of its `bars` heaviest queue entries
    (same class in red) with the online prediction on the top ones, the cumulative share of the relation over
    the whole queue, sorted, and the images of the top entries."""
    m = len(view.entries)
    fig = ExplorerFigure(figsize=(max(1.25 * m, 12.0), 5.8), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1.6, 1.0))
    query_ax, bars_ax, share_ax = top.subplots(1, 3, width_ratios=(0.7, 2.2, 1.6))
    image_tile(query_ax, view.query_image, f"query: {view.class_name}", fontsize=10)
    shown = min(bars, len(view.sorted_weights))
    colours = [FALSE_NEGATIVE_COLOUR if same else NEGATIVE_COLOUR for same in view.sorted_same_class[:shown]]
    bars_ax.bar(np.arange(1, shown + 1), view.sorted_weights[:shown], color=colours)
    bars_ax.plot(np.arange(1, m + 1), view.predictions, "k.")
    bars_ax.set(xlabel="queue entries, by target weight", ylabel="target weight w",
                title=f"λ = {view.lam:.2f} on the own key, 1 − λ over the queue (τm = {view.temperature_momentum:.3g})")
    bars_ax.legend(handles=[Line2D([], [], color=FALSE_NEGATIVE_COLOUR, lw=6, label="same class"),
                            Line2D([], [], color=NEGATIVE_COLOUR, lw=6, label="other class"),
                            Line2D([], [], marker=".", color="black", ls="", label="prediction p")], fontsize=7)
    bars_ax.grid(alpha=0.3)
    ranks = np.arange(1, len(view.sorted_weights) + 1)
    share_ax.plot(ranks, np.cumsum(view.sorted_weights) / max(1.0 - view.lam, 1e-12), color="black")
    share_ax.set(xscale="log", xlabel="queue entries, by target weight", ylabel="share of the relation",
                 ylim=(0, 1.02), title=f"relation: {view.effective_entries:.1f} effective entries,\n"
                                       f"{100 * view.same_class_mass:.0f}% on the query's class "
                                       f"({100 * view.same_class_share:.0f}% of the entries)")
    share_ax.grid(alpha=0.3)
    for column, ax in enumerate(np.atleast_1d(bottom.subplots(1, m))):
        colour = FALSE_NEGATIVE_COLOUR if view.same_class[column] else "black"
        image_tile(ax, view.entry_images[column], f"{view.entry_class_names[column]}\nw = {view.weights[column]:.3f}",
                   colour, frame=3.0 if view.same_class[column] else 0.5)
    return fig


class SoftTargetExplorer(StateExplorer):
    """Sliders for the query, lambda and tau_m, wired to a `SoftTargetState`; redraws on every change.

    Core ipywidgets only (7.7 and 8.x). The controls are attributes (``query_slider``, ``lam_slider``,
    ``temperature_momentum_slider``) so tests and notebooks can set their values; ``last_view`` and
    ``last_figure`` hold what was drawn."""

    def __init__(self, state: SoftTargetState, dpi: int = 80):
        super().__init__(state, dpi)
        self.query_slider = widgets.IntSlider(value=state.query, min=0, max=state.num_queries - 1,
                                              description="query", continuous_update=False)
        self.lam_slider = widgets.FloatSlider(value=state.lam, min=0.0, max=1.0, step=0.05, description="λ",
                                              continuous_update=False)
        self.temperature_momentum_slider = widgets.FloatLogSlider(
            value=state.temperature_momentum, base=10, min=-2, max=0, step=0.05, description="τm",
            continuous_update=False)
        self.last_view: SoftTargetView | None = None
        self.last_figure: ExplorerFigure | None = None
        self.on_change(self.query_slider, self.state.select)
        self.on_change(self.lam_slider, self.state.set_lam)
        self.on_change(self.temperature_momentum_slider, self.state.set_temperature_momentum)
        self.children = [widgets.HBox([self.query_slider, self.lam_slider, self.temperature_momentum_slider]),
                         self.summary, self.figure_image]
        self.redraw()

    def redraw(self) -> None:
        view = self.state.view()
        fig = soft_target_figure(view)
        self.last_view, self.last_figure = view, fig
        self.summary.value = (
            f"query #{view.query} ({view.class_name}): {100 * view.same_class_mass:.0f}% of the relation on "
            f"same-class entries ({100 * view.same_class_share:.0f}% of the queue), spread over "
            f"{view.effective_entries:.1f} effective entries. Net push on same-class entries: "
            f"<b>{view.same_class_push:+.3f}</b> with this target, {view.infonce_same_class_push:+.3f} with a "
            f"one-hot target (InfoNCE)")
        self.show_figure(fig)


def soft_target_explorer(state: SoftTargetState, dpi: int = 80) -> SoftTargetExplorer:
    """The interactive soft-target explorer for a state; display it by ending a cell with it."""
    return SoftTargetExplorer(state, dpi=dpi)


# ---------------------------------------------------------------------- layer-wise CKA (notebook 09)

class CKAExplorerState:
    """The logic of the CKA explorer: minibatch CKA matrices between representations named (model, input), and
    the current choice of the two representations compared and of the layers shown for each.

    Args:
        results: {(a, b): CKAResult} from `clcourse.cka.layer_cka`, every representation named by a pair
            (model, input), e.g. ("SimCLR", "clean") or ("SimCLR", "PGD"). A pair computed one way round is
            shown the other way round too (CKA is symmetric); a pair not computed at all cannot be shown, and
            `view` says so.
    """

    def __init__(self, results: Mapping[tuple, CKAResult]):
        if not isinstance(results, Mapping) or not results:
            raise ValueError("results must be a non-empty dict {(a, b): CKAResult} from clcourse.cka.layer_cka")
        self._results: dict[tuple, CKAResult] = {}
        self._layers: dict[tuple, tuple[str, ...]] = {}
        for result in results.values():
            if not isinstance(result, CKAResult):
                raise ValueError(f"results must hold CKAResult values (from layer_cka), got {type(result).__name__}")
            for name, layers in ((result.a, result.layers_a), (result.b, result.layers_b)):
                if not (isinstance(name, tuple) and len(name) == 2):
                    raise ValueError(f"representation names must be pairs (model, input), e.g. ('SimCLR', 'clean'), "
                                     f"got {name!r}")
                if self._layers.setdefault(name, layers) != layers:
                    raise ValueError(f"representation {name!r} has different layers in two results: "
                                     f"{self._layers[name]} and {layers}")
            self._results[(result.a, result.b)] = result
            self._results.setdefault((result.b, result.a), result.transposed())
        representations = list(self._layers)
        self.a = representations[0]
        self.b = next((r for r in representations if r != self.a and (self.a, r) in self._results), self.a)
        self.layers_a, self.layers_b = self._layers[self.a], self._layers[self.b]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(model for model, _ in self._layers))

    def inputs(self, model) -> list[str]:
        """The inputs computed for `model`, e.g. ["clean", "PGD"]."""
        found = [name for candidate, name in self._layers if candidate == model]
        if not found:
            raise ValueError(f"model must be one of {self.models}, got {model!r}")
        return found

    def layers_of(self, representation: tuple) -> tuple[str, ...]:
        if representation not in self._layers:
            raise ValueError(f"representation must be one of {list(self._layers)}, got {representation!r}")
        return self._layers[representation]

    def _choose(self, model, input_name, current: tuple, current_layers: tuple[str, ...]):
        """The representation (model, input) (input None: the current one if `model` has it, else its first)
        and the layers kept for it (the current selection where the new representation has those layers)."""
        inputs = self.inputs(model)
        if input_name is None:
            input_name = current[1] if current[1] in inputs else inputs[0]
        if input_name not in inputs:
            raise ValueError(f"input must be one of {inputs} for model {model!r}, got {input_name!r}")
        representation = (model, input_name)
        kept = tuple(name for name in current_layers if name in self._layers[representation])
        return representation, kept or self._layers[representation]

    def set_a(self, model, input_name=None) -> None:
        """Compare representation (model, input) on the y axis; `input_name` None keeps the current input if
        `model` has it."""
        self.a, self.layers_a = self._choose(model, input_name, self.a, self.layers_a)

    def set_b(self, model, input_name=None) -> None:
        """The same for the x axis."""
        self.b, self.layers_b = self._choose(model, input_name, self.b, self.layers_b)

    def _layer_subset(self, name: str, layers, representation: tuple) -> tuple[str, ...]:
        available = self._layers[representation]
        chosen = [layers] if isinstance(layers, str) else list(layers)
        if not chosen or any(layer not in available for layer in chosen):
            raise ValueError(f"{name} must be a non-empty selection from {list(available)}, got {layers!r}")
        return tuple(layer for layer in available if layer in chosen)       # in network order

    def set_layers_a(self, layers) -> None:
        self.layers_a = self._layer_subset("layers_a", layers, self.a)

    def set_layers_b(self, layers) -> None:
        self.layers_b = self._layer_subset("layers_b", layers, self.b)

    def view(self) -> CKAResult:
        """The CKA matrix between the chosen layers of a (rows) and b (columns)."""
        if (self.a, self.b) not in self._results:
            raise ValueError(f"CKA between {self.a} and {self.b} was not computed: pass that pair to layer_cka "
                             "(its default, pairs=None, computes every pair)")
        result = self._results[(self.a, self.b)]
        rows = [result.layers_a.index(layer) for layer in self.layers_a]
        columns = [result.layers_b.index(layer) for layer in self.layers_b]
        return CKAResult(self.a, self.b, self.layers_a, self.layers_b, result.matrix[rows][:, columns],
                         result.num_images, result.num_batches)


def cka_figure(view: CKAResult) -> ExplorerFigure:
    """The explorer's figure: the heatmap of a `CKAExplorerState.view()`."""
    fig = ExplorerFigure(figsize=(0.42 * len(view.layers_b) + 3.6, 0.42 * len(view.layers_a) + 2.4),
                         layout="constrained")
    plot_cka_heatmap(view, ax=fig.add_subplot(), title=f"linear CKA, {view.num_images} images")
    return fig


def static_cka_explorer(state: CKAExplorerState, a: tuple | None = None, b: tuple | None = None) -> ExplorerFigure:
    """The explorer's figure without widgets (static renders, CI), after choosing a and b = (model, input)."""
    if a is not None:
        state.set_a(*a)
    if b is not None:
        state.set_b(*b)
    return cka_figure(state.view())


class CKAExplorer(StateExplorer):
    """Dropdowns for the model and the input of each side and a multiple selection of its layers, wired to a
    `CKAExplorerState`; redraws the heatmap on every change.

    Core ipywidgets only (7.7 and 8.x). The controls are attributes (``model_a``, ``input_a``, ``layers_a`` and
    the same for b) so tests and notebooks can set their values; ``last_view`` and ``last_figure`` hold what was
    drawn, ``summary`` says what is shown (or why nothing is)."""

    def __init__(self, state: CKAExplorerState, dpi: int = 90):
        super().__init__(state, dpi)
        self.last_view: CKAResult | None = None
        self.last_figure: ExplorerFigure | None = None
        rows = []
        for side in ("a", "b"):
            model, input_name = getattr(state, side)
            model_dropdown = widgets.Dropdown(options=state.models, value=model, description=f"model {side.upper()}")
            input_dropdown = widgets.Dropdown(options=state.inputs(model), value=input_name,
                                              description=f"input {side.upper()}")
            layer_select = widgets.SelectMultiple(description=f"layers {side.upper()}")
            setattr(self, f"model_{side}", model_dropdown)
            setattr(self, f"input_{side}", input_dropdown)
            setattr(self, f"layers_{side}", layer_select)
            self.on_change(model_dropdown, lambda _, side=side: self._set_representation(side))
            self.on_change(input_dropdown, lambda _, side=side: self._set_representation(side))
            layer_select.observe(lambda change, side=side: self._on_layers(side, change["new"]), names="value")
            rows.append(widgets.HBox([widgets.VBox([model_dropdown, input_dropdown]), layer_select]))
        self._sync_controls()
        self.children = [*rows, self.summary, self.figure_image]
        self.redraw()

    def _set_representation(self, side: str) -> None:
        """The state's side to the model and input its dropdowns show (input None when that model has no such
        input: the state chooses), then the controls to the state."""
        model, input_name = getattr(self, f"model_{side}").value, getattr(self, f"input_{side}").value
        getattr(self.state, f"set_{side}")(model, input_name if input_name in self.state.inputs(model) else None)
        self._sync_controls()

    def _on_layers(self, side: str, layers) -> None:
        if self._holding:
            return
        if not layers:              # an empty selection shows nothing: keep the state's and say so
            self.summary.value = "select at least one layer on each side"
            return
        getattr(self.state, f"set_layers_{side}")(layers)
        self.redraw()

    def _sync_controls(self) -> None:
        """Show the state's choices in the controls without triggering handlers."""
        self._holding = True
        try:
            for side in ("a", "b"):
                model, input_name = getattr(self.state, side)
                getattr(self, f"model_{side}").value = model
                getattr(self, f"input_{side}").options = self.state.inputs(model)
                getattr(self, f"input_{side}").value = input_name
                layers = self.state.layers_of((model, input_name))
                select = getattr(self, f"layers_{side}")
                select.options = list(zip(short_layer_names(layers), layers))
                select.rows = min(len(layers), 9)
                select.value = tuple(getattr(self.state, f"layers_{side}"))
        finally:
            self._holding = False

    def redraw(self) -> None:
        """Recompute the view and redraw the summary line and the heatmap."""
        try:
            view = self.state.view()
        except ValueError as error:         # a pair that was not computed: say so, and show no stale heatmap
            self.summary.value = f"<b>nothing to show</b>: {error}"
            self.last_view = self.last_figure = None
            self.show_figure(None)
            return
        fig = cka_figure(view)
        self.last_view, self.last_figure = view, fig
        self.summary.value = (f"{representation_label(view.a)} (rows) vs {representation_label(view.b)} (columns): "
                              f"CKA between their last selected layers <b>{float(view.matrix[-1, -1]):.2f}</b>, "
                              f"{view.num_images} images in {view.num_batches} minibatches")
        self.show_figure(fig)


def cka_explorer(state: CKAExplorerState, dpi: int = 90) -> CKAExplorer:
    """The interactive CKA explorer for a state; display it by ending a cell with it."""
    return CKAExplorer(state, dpi=dpi)
