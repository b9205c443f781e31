"""Plots used across the notebooks: image grids and augmented views, training curves, similarity
matrices; the geometry of an embedding (alignment and uniformity over training, similarity
histograms, a 2-D map); its hardest negatives (false-negative rate against k, galleries, the
gradient weight InfoNCE puts on each negative, the effective number of negatives against the
temperature). Every function returns its figure."""
from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch

from .augment import to_float_images
from .runs import History


def to_display(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] uint8 or float in [0, 1] -> [N, H, W, 3] float on the CPU, ready for imshow."""
    return to_float_images(images.detach().cpu()).clamp(0, 1).permute(0, 2, 3, 1)


def show_images(images: torch.Tensor, titles: Sequence[str] | None = None, ncols: int = 8,
                title: str | None = None, size: float = 1.4,
                title_colors: Sequence[str] | None = None):
    """A grid of images with optional per-image titles; returns the figure."""
    pixels = to_display(images)
    n = len(pixels)
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols,
                             figsize=(size * ncols, size * nrows + (0.4 if title else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(pixels[i], interpolation="nearest")
            if titles is not None:
                color = title_colors[i] if title_colors is not None else "black"
                ax.set_title(titles[i], fontsize=8, color=color)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_views(images: torch.Tensor, augment, n: int = 8, generator: torch.Generator | None = None,
               class_names: Sequence[str] | None = None, labels: torch.Tensor | None = None):
    """Each of the first `n` images above its two augmented views: what the
    contrastive loss sees."""
    images = images[:n]
    view1, view2 = augment(images, generator), augment(images, generator)
    fig, axes = plt.subplots(3, len(images), figsize=(1.4 * len(images), 4.6), squeeze=False)
    for row, (name, batch) in enumerate([("image", images), ("view 1", view1), ("view 2", view2)]):
        for col, pixels in enumerate(to_display(batch)):
            ax = axes[row, col]
            ax.imshow(pixels, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name)
            if row == 0 and labels is not None and class_names is not None:
                ax.set_title(class_names[int(labels[col])], fontsize=8)
    fig.tight_layout()
    return fig


def plot_histories(histories: dict[str, History] | History, title: str | None = None):
    """Training loss (per logged step) and kNN accuracy (per evaluated epoch) of one
    or several runs."""
    if isinstance(histories, History):
        histories = {"run": histories}
    fig, (loss_ax, knn_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, history in histories.items():
        steps, values = history.series("loss", per="step")
        if steps:
            steps_per_epoch = history.steps[-1]["step"] / history.steps[-1]["epoch"]
            loss_ax.plot([s / steps_per_epoch for s in steps], values, label=name)
        epochs, accuracies = history.series("knn_accuracy")
        if epochs:
            knn_ax.plot(epochs, [100 * a for a in accuracies], marker="o", label=name)
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="loss")
    knn_ax.set(xlabel="epoch", ylabel="kNN top-1 (%)", title="kNN accuracy on held-out images")
    for ax in (loss_ax, knn_ax):
        ax.grid(alpha=0.3)
        if len(histories) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_similarity_matrix(similarities: torch.Tensor, batch_size: int, ax=None,
                           title: str | None = None):
    """Heatmap of the 2B x 2B similarity matrix of views [z1; z2], with each view's
    positive outlined."""
    similarities = similarities.detach().float().cpu()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 3.6))
    image = ax.imshow(similarities, cmap="RdBu_r", vmin=-1, vmax=1)
    for row in range(2 * batch_size):
        col = (row + batch_size) % (2 * batch_size)
        ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False,
                                   edgecolor="black", linewidth=1.2))
    ax.axhline(batch_size - 0.5, color="gray", linewidth=0.8)
    ax.axvline(batch_size - 0.5, color="gray", linewidth=0.8)
    ax.set(xlabel="view", ylabel="view", title=title or "cosine similarity (boxes: positives)")
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    return ax.figure


# ----------------------------------------------------------------- embedding geometry (notebook 02)
# Colours shared by the geometry plots and the explorer (clcourse.widgets): positives green,
# negatives of other classes grey, false negatives (negatives of the anchor's class) red.
POSITIVE_COLOUR, NEGATIVE_COLOUR, FALSE_NEGATIVE_COLOUR = "tab:green", "0.45", "tab:red"


def image_tile(ax, image, title: str, colour: str = "black", frame: float = 1.0,
               fontsize: int = 8) -> None:
    """One image [H, W, 3] without ticks, its title and frame in `colour` (red marks a
    false negative)."""
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=fontsize, color=colour)
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(frame)

from .validation import require_bool, require_int_at_least  # noqa: E402  (kept with the section that uses it)


def _require_same_length(name_a: str, a: Sequence, name_b: str, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name_a} and {name_b} must have the same length, got "
                         f"{len(a)} and {len(b)}")


def _values(x) -> list[float]:
    """A tensor, array or sequence of numbers as a list of floats (for plotting)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().reshape(-1).tolist()
    return [float(v) for v in x]


def plot_alignment_uniformity(runs: dict[str, dict], title: str | None = None):
    """Alignment, uniformity and kNN accuracy of one or several runs over training, and the
    alignment-uniformity plane (Wang & Isola, ICML 2020), where each run is a trajectory.

    Args:
        runs: name -> record with lists ``epoch``, ``alignment`` and ``uniformity`` (one value per
            evaluated checkpoint) and optionally ``knn_epoch`` and ``knn_accuracy`` (in [0, 1]). A
            run with a single checkpoint (e.g. the end of a short sweep run) is drawn as one marker.
        title: figure title.

    Returns the figure (four panels).
    """
    if not runs:
        raise ValueError("runs must hold at least one run (name -> record), got an empty dict")
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    align_ax, uniform_ax, knn_ax, plane_ax = axes
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for number, (name, run) in enumerate(runs.items()):
        for key in ("epoch", "alignment", "uniformity"):
            if key not in run:
                raise ValueError(f"runs[{name!r}] must have the key {key!r}, "
                                 f"got keys {sorted(run)}")
        _require_same_length(f"runs[{name!r}]['epoch']", run["epoch"],
                             f"runs[{name!r}]['alignment']", run["alignment"])
        _require_same_length(f"runs[{name!r}]['epoch']", run["epoch"],
                             f"runs[{name!r}]['uniformity']", run["uniformity"])
        colour = colours[number % len(colours)]
        style = dict(color=colour, marker="o", markersize=4 if len(run["epoch"]) > 1 else 8,
                     label=name)
        epochs, align, uniform = (_values(run["epoch"]), _values(run["alignment"]),
                                  _values(run["uniformity"]))
        align_ax.plot(epochs, align, **style)
        uniform_ax.plot(epochs, uniform, **style)
        if run.get("knn_epoch"):
            _require_same_length(f"runs[{name!r}]['knn_epoch']", run["knn_epoch"],
                                 f"runs[{name!r}]['knn_accuracy']", run["knn_accuracy"])
            knn_ax.plot(_values(run["knn_epoch"]), [100 * a for a in _values(run["knn_accuracy"])],
                        **style)
        plane_ax.plot(uniform, align, **style)
        if len(epochs) > 1:
            plane_ax.annotate(f"epoch {epochs[-1]:g}", (uniform[-1], align[-1]), xytext=(4, 4),
                              textcoords="offset points", fontsize=7, color=colour)
            plane_ax.annotate(f"epoch {epochs[0]:g}", (uniform[0], align[0]), xytext=(4, -10),
                              textcoords="offset points", fontsize=7, color=colour)
    align_ax.set(xlabel="epoch", ylabel="alignment (lower: positives closer)", title="alignment")
    uniform_ax.set(xlabel="epoch", ylabel="uniformity (lower: more spread)", title="uniformity")
    knn_ax.set(xlabel="epoch", ylabel="kNN top-1 (%)", title="kNN accuracy")
    plane_ax.set(xlabel="uniformity", ylabel="alignment",
                 title="trajectories (lower left is better)")
    for ax in axes:
        ax.grid(alpha=0.3)
    align_ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


SIMILARITY_KINDS = (("positive", "positive pairs", POSITIVE_COLOUR),
                    ("negative_other_class", "negatives, other class", NEGATIVE_COLOUR),
                    ("negative_same_class", "negatives, same class (false)", FALSE_NEGATIVE_COLOUR))


def plot_similarity_histograms(distributions: dict[str, dict[str, torch.Tensor]], bins: int = 60,
                               title: str | None = None):
    """One panel per checkpoint: density histograms of the cosine similarities of positive pairs,
    of negatives of other classes and of same-class negatives (false negatives), each normalised
    on its own (there are about C times fewer false negatives than other negatives with C
    balanced classes).

    Args:
        distributions: checkpoint name -> the dict of clcourse.negatives.similarity_distributions.
        bins: bins over [-1, 1].
    """
    if not distributions:
        raise ValueError("distributions must hold at least one checkpoint, got an empty dict")
    require_int_at_least("bins", bins, 1)
    fig, axes = plt.subplots(1, len(distributions), figsize=(4.2 * len(distributions), 3.4),
                             squeeze=False)
    edges = torch.linspace(-1, 1, bins + 1).tolist()
    for ax, (name, distribution) in zip(axes[0], distributions.items()):
        means = []
        for key, label, colour in SIMILARITY_KINDS:
            if key not in distribution:
                raise ValueError(f"distributions[{name!r}] must have the key {key!r}, got keys "
                                 f"{sorted(distribution)}")
            values = _values(distribution[key])
            mean = sum(values) / len(values) if values else float("nan")
            means.append(f"{mean:.2f}")
            ax.hist(values, bins=edges, density=True, histtype="stepfilled", alpha=0.4,
                    color=colour, label=f"{label} (dashed: mean)")
            ax.axvline(mean, color=colour, linewidth=1.2, linestyle="--")
        ax.set(xlabel="cosine similarity", xlim=(-1, 1))
        ax.set_title(f"{name}\nmeans {' / '.join(means)}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("density (each histogram on its own)")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_false_negative_rate(ks: Sequence[int], rates: dict[str, torch.Tensor],
                             chance: float | None = None, ax=None, title: str | None = None):
    """False-negative rate of the top-k hardest negatives as a function of k, one
    curve per checkpoint.

    Args:
        ks: the k values (x axis, drawn on a log scale).
        rates: checkpoint name -> rates [len(ks)] in [0, 1]
            (clcourse.negatives.false_negative_rate).
        chance: the rate of a random ranking (the share of same-class images among the negatives),
            drawn as a dashed line.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    ks = [int(k) for k in ks]
    colours = plt.colormaps["viridis"]([0.9 * i / max(1, len(rates) - 1)
                                        for i in range(len(rates))])
    for colour, (name, rate) in zip(colours, rates.items()):
        rate = _values(rate)
        _require_same_length("ks", ks, f"rates[{name!r}]", rate)
        ax.plot(ks, [100 * r for r in rate], marker="o", markersize=3, color=colour, label=name)
    if chance is not None:
        ax.axhline(100 * chance, color="black", linestyle="--", linewidth=1,
                   label=f"chance ({100 * chance:.1f}%)")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set(xlabel="k (hardest negatives considered)", ylabel="false negatives among top k (%)",
           title=title or "false-negative rate of the k hardest negatives")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    return ax.figure


def plot_negative_gallery(images: torch.Tensor, labels: torch.Tensor, anchors: Sequence[int],
                          negatives: torch.Tensor, similarities: torch.Tensor,
                          class_names: Sequence[str], title: str | None = None, size: float = 1.15):
    """A gallery: one row per anchor, the anchor image then its hardest negatives
    (hardest first), each titled with its similarity and class; false negatives (same class as
    the anchor) framed in red.

    Args:
        images: [N, C, H, W] the held-out images (uint8 or float in [0, 1]).
        labels: [N] their labels.
        anchors: indices of the anchors (rows).
        negatives: [len(anchors), k] indices of each anchor's hardest negatives, hardest first.
        similarities: [len(anchors), k] their cosine similarities to the anchor.
        class_names: name of each label.
    """
    anchors = [int(a) for a in anchors]
    if (negatives.dim() != 2 or negatives.shape[0] != len(anchors)
            or similarities.shape != negatives.shape):
        raise ValueError("negatives and similarities must both have shape [len(anchors), k] = "
                         f"[{len(anchors)}, k], got {tuple(negatives.shape)} and "
                         f"{tuple(similarities.shape)}")
    labels, negatives, similarities = (labels.cpu(), negatives.cpu(),
                                       similarities.detach().float().cpu())
    k = negatives.shape[1]
    fig, axes = plt.subplots(len(anchors), k + 1,
                             figsize=(size * (k + 1), 1.3 * size * len(anchors) + 0.4),
                             squeeze=False)
    for row, anchor in enumerate(anchors):
        anchor_label = int(labels[anchor])
        tiles = [(anchor, f"anchor\n{class_names[anchor_label]}", "black", 2.5)]
        for rank in range(k):
            index = int(negatives[row, rank])
            false_negative = int(labels[index]) == anchor_label
            tiles.append((index,
                          f"s={similarities[row, rank]:.2f}\n{class_names[int(labels[index])]}",
                          FALSE_NEGATIVE_COLOUR if false_negative else "black",
                          3.0 if false_negative else 0.5))
        for ax, (index, text, colour, width) in zip(axes[row], tiles):
            image_tile(ax, to_display(images[index:index + 1])[0].numpy(), text, colour, width,
                       fontsize=7)
    fig.suptitle(title or "each anchor (left) and its hardest negatives, hardest "
                          "first (red: same class)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_negative_weights(negative_similarities: torch.Tensor, positive_similarity: float,
                          temperatures: Sequence[float], same_class: torch.Tensor | None = None,
                          ax=None):
    """The weight InfoNCE's gradient puts on each negative of one anchor,
    p_k = softmax([s_+, s]/tau)_k, against the negative's hardness rank, one curve per temperature
    (log-log axes). Same-class negatives are ticked in red along the bottom.

    Args:
        negative_similarities: [K] the anchor's similarity to each negative (any
            order; sorted here).
        positive_similarity: s_+.
        temperatures: the tau values to compare.
        same_class: optional [K] bool, True for negatives of the anchor's class.
    """
    from .negatives import negative_weights_from_similarities

    if negative_similarities.dim() != 1:
        raise ValueError("negative_similarities must be 1-D [K], got shape "
                         f"{tuple(negative_similarities.shape)}")
    if same_class is not None:
        _require_same_length("same_class", same_class, "negative_similarities",
                             negative_similarities)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    order = negative_similarities.argsort(descending=True)
    ranks = list(range(1, len(order) + 1))
    colours = plt.colormaps["plasma"]([0.85 * i / max(1, len(temperatures) - 1)
                                       for i in range(len(temperatures))])
    top = min(10, len(ranks))
    for colour, temperature in zip(colours, temperatures):
        weights = negative_weights_from_similarities(positive_similarity,
                                                     negative_similarities[order].float(),
                                                     temperature)
        share = float(weights[:top].sum() / weights.sum())
        ax.plot(ranks, _values(weights), color=colour,
                label=f"τ = {temperature:g}: {100 * share:.0f}% of the push on the {top} hardest")
    if same_class is not None:
        false_ranks = [rank for rank, fn in zip(ranks, same_class.cpu()[order.cpu()].tolist())
                       if fn]
        ax.plot(false_ranks, [0.02] * len(false_ranks), "|", color=FALSE_NEGATIVE_COLOUR,
                markersize=8, transform=ax.get_xaxis_transform(), label="same-class negative")
    ax.set_xscale("log")
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, high * 1e-9), high)   # weights below a billionth of the largest are
                                               # invisible anyway
    ax.set(xlabel="negative, ranked by similarity (1 = hardest)", ylabel="gradient weight $p_k$",
           title="how much each negative is pushed")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    return ax.figure


def plot_effective_negatives(temperatures: Sequence[float], effective: dict[str, torch.Tensor],
                             num_negatives: int, marked: Sequence[float] = (), ax=None):
    """Effective number of negatives exp(H(softmax(s / tau))) against tau (log-log), one curve per
    checkpoint: how many negatives the gradient listens to at each temperature.

    Args:
        temperatures: the tau grid (x axis).
        effective: checkpoint name -> [len(temperatures)] effective numbers (e.g.
            averaged over anchors).
        num_negatives: K, the ceiling reached when every negative gets the same
            weight (dotted line).
        marked: temperatures to mark with vertical lines (e.g. those trained in the sweep).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    temperatures = _values(temperatures)
    for name, values in effective.items():
        values = _values(values)
        _require_same_length("temperatures", temperatures, f"effective[{name!r}]", values)
        ax.plot(temperatures, values, marker="o", markersize=3, label=name)
    ax.axhline(num_negatives, color="black", linestyle=":", linewidth=1,
               label=f"all {num_negatives} negatives")
    for number, temperature in enumerate(marked):
        ax.axvline(temperature, color="0.6", linewidth=0.8,
                   label="temperatures trained" if number == 0 else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="temperature τ", ylabel="effective number of negatives",
           title="temperature as a hardness knob")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7)
    return ax.figure


def plot_embedding_map(coords, labels: torch.Tensor, class_names: Sequence[str],
                       anchor: int | None = None, negatives: Sequence[int] = (), positive_xy=None,
                       ax=None, title: str | None = None):
    """A 2-D map of an embedding (clcourse.negatives.fit_embedding_map) coloured by class, with
    an anchor (star), its positive (triangle) and its hardest negatives (circles, false
    negatives ringed in red).

    Args:
        coords: [N, 2] map coordinates (numpy array or tensor).
        labels: [N] class labels, for the colours.
        class_names: name of each label (the legend).
        anchor: index of the anchor to highlight.
        negatives: indices of its hardest negatives, hardest first (numbered on the map).
        positive_xy: [2] where the anchor's positive lands on the map.
    """
    coords = torch.as_tensor(coords).detach().cpu().float()
    labels = labels.cpu()
    if coords.dim() != 2 or coords.shape[1] != 2 or len(coords) != len(labels):
        raise ValueError(f"coords must have shape [N, 2] with N = {len(labels)} "
                         f"(one row per label), got {tuple(coords.shape)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.4))
    palette = plt.colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    colours = palette(labels.numpy() % palette.N)
    ax.scatter(coords[:, 0], coords[:, 1], s=6, c=colours, alpha=0.45, linewidths=0)
    handles = [plt.Line2D([], [], marker="o", ls="", ms=5, mfc=palette(c % palette.N),
                          mec="none", label=name)
               for c, name in enumerate(class_names)] if len(class_names) <= 10 else []
    if anchor is not None:
        anchor_colour = palette(int(labels[anchor]) % palette.N)
        negatives = [int(n) for n in negatives]
        for rank, index in enumerate(negatives, start=1):
            false_negative = int(labels[index]) == int(labels[anchor])
            ax.scatter(coords[index, 0], coords[index, 1], s=60,
                       color=palette(int(labels[index]) % palette.N),
                       edgecolors=FALSE_NEGATIVE_COLOUR if false_negative else "black",
                       linewidths=2 if false_negative else 1, zorder=3)
            ax.annotate(str(rank), (coords[index, 0], coords[index, 1]), xytext=(3, 3),
                        textcoords="offset points", fontsize=7, zorder=4)
        ax.scatter(coords[anchor, 0], coords[anchor, 1], marker="*", s=300, color=anchor_colour,
                   edgecolors="black", linewidths=1.2, zorder=5)
        handles = [plt.Line2D([], [], marker="*", ls="", ms=12, mfc="white", mec="black",
                              label="anchor"),
                   plt.Line2D([], [], marker="o", ls="", ms=7, mfc="white", mec="black",
                              label="hardest negatives"),
                   plt.Line2D([], [], marker="o", ls="", ms=7, mfc="white",
                              mec=FALSE_NEGATIVE_COLOUR, mew=2, label="false negatives")] + handles
        if positive_xy is not None:
            ax.scatter(positive_xy[0], positive_xy[1], marker="^", s=110, color=anchor_colour,
                       edgecolors="black", zorder=5)
            handles.insert(1,
                           plt.Line2D([], [], marker="^", ls="", ms=9, mfc="white", mec="black",
                                      label="positive"))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5),
                  frameon=False)
    return ax.figure


def plot_temperature_sweep(results: dict[float, dict[str, float]], ax=None):
    """kNN accuracy (left axis) and uniformity (right axis) of encoders trained at
    several temperatures.

    Args:
        results: temperature -> record with ``knn_accuracy`` (in [0, 1]) and ``uniformity``.
    """
    if not results:
        raise ValueError("results must hold at least one temperature, got an empty dict")
    for temperature, record in results.items():
        for key in ("knn_accuracy", "uniformity"):
            if key not in record:
                raise ValueError(f"results[{temperature!r}] must have the key {key!r}, got "
                                 f"keys {sorted(record)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    temperatures = sorted(results)
    ax.plot(temperatures, [100 * results[t]["knn_accuracy"] for t in temperatures], marker="o",
            color="tab:blue", label="kNN accuracy")
    ax.set(xlabel="training temperature τ", ylabel="kNN top-1 (%)",
           title="encoders trained at each τ")
    ax.set_xscale("log")
    ax.set_xticks(temperatures, [f"{t:g}" for t in temperatures])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    right = ax.twinx()
    right.plot(temperatures, [results[t]["uniformity"] for t in temperatures], marker="s",
               color="tab:orange", label="uniformity")
    right.set_ylabel("uniformity (lower: more spread)")
    lines = ax.get_lines() + right.get_lines()
    right.legend(lines, [line.get_label() for line in lines], fontsize=7, loc="upper center",
                 bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    return ax.figure


# ----------------------------------------------------------------- inside the network (notebook 09)
from .cka import CKAResult, short_layer_names  # noqa: E402  (kept with the section that uses it)

__all__ = ["to_display", "show_images", "show_views", "plot_histories", "plot_similarity_matrix",
           "POSITIVE_COLOUR", "NEGATIVE_COLOUR", "FALSE_NEGATIVE_COLOUR", "image_tile",
           "plot_alignment_uniformity", "SIMILARITY_KINDS", "plot_similarity_histograms",
           "plot_false_negative_rate", "plot_negative_gallery", "plot_negative_weights",
           "plot_effective_negatives", "plot_embedding_map", "plot_temperature_sweep",
           "representation_label", "plot_cka_heatmap", "plot_cka_heatmaps", "plot_layer_curves"]


def representation_label(name) -> str:
    """A representation's name for a plot: a tuple such as ("SimCLR", "PGD")
    reads "SimCLR · PGD"."""
    return " · ".join(str(part) for part in name) if isinstance(name, tuple) else str(name)


def plot_cka_heatmap(result: CKAResult, ax=None, title: str | None = None,
                     annotate: bool | None = None, colorbar: bool = True):
    """A layers x layers CKA matrix (`clcourse.cka.layer_cka`) as a heatmap, 0 dark to 1 bright:
    the layers of `a` up the y axis and those of `b` along the x axis, both from the input
    (bottom left) to the output. Values are written in the cells when there are at most 100
    (`annotate` overrides)."""
    colorbar = require_bool("colorbar", colorbar)
    if annotate is not None:
        annotate = require_bool("annotate", annotate)
    if not isinstance(result, CKAResult):
        raise ValueError("result must be a clcourse.cka.CKAResult (from layer_cka), got "
                         f"{type(result).__name__}")
    matrix = result.matrix.detach().float().cpu()
    rows, columns = matrix.shape
    if ax is None:
        _, ax = plt.subplots(figsize=(0.42 * columns + 2.6, 0.42 * rows + 1.8))
    image = ax.imshow(matrix.numpy(), origin="lower", cmap="magma", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(columns), short_layer_names(result.layers_b), rotation=90, fontsize=7)
    ax.set_yticks(range(rows), short_layer_names(result.layers_a), fontsize=7)
    ax.set_xlabel(representation_label(result.b), fontsize=8)
    ax.set_ylabel(representation_label(result.a), fontsize=8)
    ax.set_title(title or f"linear CKA, {result.num_images} images", fontsize=9)
    if annotate if annotate is not None else rows * columns <= 100:
        for i in range(rows):
            for j in range(columns):
                value = float(matrix[i, j])
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if value > 0.6 else "white")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, label="CKA")
    return ax.figure


def plot_cka_heatmaps(results: dict[str, CKAResult], ncols: int = 3, title: str | None = None,
                      annotate: bool | None = None):
    """Several CKA heatmaps side by side on one colour scale, each titled with its key;
    returns the figure."""
    if not results:
        raise ValueError("results must hold at least one CKAResult "
                         "(title -> result), got an empty dict")
    require_int_at_least("ncols", ncols, 1)
    ncols = min(ncols, len(results))
    nrows = (len(results) + ncols - 1) // ncols
    size = max(max(len(r.layers_a), len(r.layers_b)) for r in results.values())
    fig, axes = plt.subplots(nrows, ncols,
                             figsize=(ncols * (0.36 * size + 2.3), nrows * (0.36 * size + 2.0)),
                             squeeze=False)
    for ax, (name, result) in zip(axes.flat, results.items()):
        plot_cka_heatmap(result, ax=ax, title=name, annotate=annotate, colorbar=False)
    for ax in list(axes.flat)[len(results):]:
        ax.axis("off")
    fig.tight_layout(rect=(0, 0, 0.93, 0.95 if title else 1))
    fig.colorbar(axes.flat[0].images[0], ax=list(axes.flat), fraction=0.02, label="CKA")
    if title:
        fig.suptitle(title)
    return fig


def plot_layer_curves(curves: dict[str, Sequence[float]], layers: Sequence[str], ylabel: str,
                      ax=None, title: str | None = None, ylim: tuple[float, float] | None = None,
                      baseline: tuple[float, str] | None = None):
    """One value per layer for several models or inputs (e.g. CKA between clean and adversarial
    inputs at each layer, or each layer's probe accuracy), the layers from the input to the output
    along the x axis.

    Args:
        curves: label -> one value per layer (a list or a tensor).
        layers: the layer names (shortened for the axis).
        baseline: optional (value, label) drawn as a dashed line, e.g. chance accuracy.
    """
    if not curves:
        raise ValueError("curves must hold at least one curve (label -> one value per "
                         "layer), got an empty dict")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(layers) + 2), 3.4))
    positions = range(len(layers))
    for name, values in curves.items():
        values = _values(values)
        _require_same_length("layers", layers, f"curves[{name!r}]", values)
        ax.plot(positions, values, marker="o", markersize=4, label=name)
    if baseline is not None:
        ax.axhline(baseline[0], color="gray", linestyle="--", linewidth=1, label=baseline[1])
    ax.set_xticks(positions, short_layer_names(layers), rotation=45, ha="right", fontsize=8)
    ax.set(xlabel="layer (input → output)", ylabel=ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return ax.figure
