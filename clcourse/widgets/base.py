"""What the explorers share: the widget base class, the figure that shows itself in a notebook, and
the image and index helpers.

Every explorer has three layers, so that each piece can be used and tested without a browser: a
plain state class (its methods are what the controls call, its `view()` computes what is shown), a
figure function drawing one view, and a :class:`StateExplorer` subclass wiring core ipywidgets to
the state.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from ..augment import to_uint8_images

__all__ = ["ExplorerFigure", "StateExplorer"]


def _require_index(name: str, value: int, size: int) -> None:
    """`value` must be an integer index into `size` items, i.e. in [0, size - 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < size:
        raise ValueError(f"{name} must be an integer in [0, {size - 1}], got {value!r}")


def _as_image(images: torch.Tensor) -> np.ndarray:
    """Images [..., C, H, W] (uint8, or float in [0, 1]; C = 1 or 3) as [..., H, W, 3] uint8 for
    imshow."""
    images = to_uint8_images(images.detach().cpu())
    if images.shape[-3] == 1:
        images = images.expand(*images.shape[:-3], 3, *images.shape[-2:])
    return images.movedim(-3, -1).numpy()


def _png(fig: Figure, dpi: int = 90) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class ExplorerFigure(Figure):
    """A matplotlib Figure that displays itself when it ends a notebook cell, whether or not pyplot
    was imported (a bare Figure is shown only once pyplot's inline backend has registered a display
    hook)."""

    def _repr_png_(self) -> bytes:
        return _png(self)


class StateExplorer(widgets.VBox):
    """Base of the explorer widgets: controls wired to a plain state class (tested without a
    browser), and a `redraw` (each subclass's own) after every change. `on_change` wires a control
    with a core ipywidgets ``observe(..., names="value")`` handler, the same on ipywidgets 7.7 and
    8.x."""

    _holding = False       # True while the controls are being synced to the state: no handler runs

    def __init__(self, state, dpi: int):
        """The state, the figure's resolution, and the two outputs every explorer shows: `summary`
        (a line of HTML) and `figure_image` (the figure, see `show`); each subclass adds its
        controls. `last_view` and `last_figure` hold what was drawn last."""
        super().__init__()
        self.state, self.dpi = state, dpi
        self.summary = widgets.HTML()
        self.figure_image = widgets.Image(format="png")
        self.last_view: Any = None
        self.last_figure: ExplorerFigure | None = None

    def on_change(self, control: widgets.ValueWidget, setter: Callable) -> None:
        """On every change of `control`'s value (none while the controls are being synced to the
        state): `setter(new value)`, then `redraw()`."""
        def handler(change) -> None:
            if self._holding:
                return
            setter(change["new"])
            self.redraw()
        control.observe(handler, names="value")

    def show(self, view, fig: ExplorerFigure | None, summary: str) -> None:
        """Keep `view` and `fig` as `last_view` and `last_figure`, write `summary`, and show `fig`
        as PNG bytes in `figure_image` (an ipywidgets Image), or hide that when `fig` is None.

        An Image is a plain widget value, which every frontend renders and a notebook runner
        (nbclient, hence nbgrader) need not emulate, as it must an Output widget's captured display
        (which can hang it)."""
        self.last_view, self.last_figure = view, fig
        self.summary.value = summary
        if fig is None:
            self.figure_image.value, self.figure_image.layout.display = b"", "none"
        else:
            self.figure_image.value, self.figure_image.layout.display = _png(fig, self.dpi), None
