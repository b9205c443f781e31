"""The CKA explorer (notebook 09): layer-wise CKA between representations named (model, input), the
two compared and their layers chosen at will.

- :class:`CKAState`: the CKA matrices of `clcourse.cka.layer_cka` and the current choices;
  :meth:`CKAState.view` gives the matrix between the chosen layers. This explorer's view is a
  `clcourse.cka.CKAResult` itself, restricted to those layers: it needs no class of its own.
- :func:`cka_figure`: draws the heatmap of a view; :func:`static_cka_explorer` chooses and draws
  without widgets.
- :func:`cka_explorer`: dropdowns for each side's model and input and a selection of its layers,
  wired to the state.
"""
from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as widgets

from ..cka import CKAResult, short_layer_names
from ..viz import plot_cka_heatmap, representation_label
from .base import ExplorerFigure, StateExplorer

__all__ = ["CKAState", "cka_figure", "static_cka_explorer", "CKAExplorer", "cka_explorer"]


class CKAState:
    """The logic of the CKA explorer: minibatch CKA matrices between representations named
    (model, input), and the current choice of the two representations compared and of the layers
    shown for each.

    Args:
        results: {(a, b): CKAResult} from `clcourse.cka.layer_cka`, every representation named by a
            pair (model, input), e.g. ("SimCLR", "clean") or ("SimCLR", "PGD"). A pair computed one
            way round is shown the other way round too (CKA is symmetric); a pair not computed at
            all cannot be shown, and `view` says so.
    """

    def __init__(self, results: Mapping[tuple, CKAResult]):
        if not isinstance(results, Mapping) or not results:
            raise ValueError("results must be a non-empty dict {(a, b): CKAResult} "
                             "from clcourse.cka.layer_cka")
        self._results: dict[tuple, CKAResult] = {}
        self._layers: dict[tuple, tuple[str, ...]] = {}
        for result in results.values():
            if not isinstance(result, CKAResult):
                raise ValueError(f"results must hold CKAResult values (from layer_cka), "
                                 f"got {type(result).__name__}")
            for name, layers in ((result.a, result.layers_a), (result.b, result.layers_b)):
                if not (isinstance(name, tuple) and len(name) == 2):
                    raise ValueError(f"representation names must be pairs (model, input), "
                                     f"e.g. ('SimCLR', 'clean'), got {name!r}")
                if self._layers.setdefault(name, layers) != layers:
                    raise ValueError(f"representation {name!r} has different layers in two "
                                     f"results: {self._layers[name]} and {layers}")
            self._results[(result.a, result.b)] = result
            self._results.setdefault((result.b, result.a), result.transposed())
        representations = list(self._layers)
        self.a = representations[0]
        self.b = next((r for r in representations if r != self.a and (self.a, r) in self._results),
                      self.a)
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
            raise ValueError(f"representation must be one of {list(self._layers)}, "
                             f"got {representation!r}")
        return self._layers[representation]

    def _choose(self, model, input_name, current: tuple, current_layers: tuple[str, ...]):
        """The representation (model, input) (input None: the current one if `model` has it, else
        its first) and the layers kept for it (the current selection where the new representation
        has those layers)."""
        inputs = self.inputs(model)
        if input_name is None:
            input_name = current[1] if current[1] in inputs else inputs[0]
        if input_name not in inputs:
            raise ValueError(f"input must be one of {inputs} for model {model!r}, "
                             f"got {input_name!r}")
        representation = (model, input_name)
        kept = tuple(name for name in current_layers if name in self._layers[representation])
        return representation, kept or self._layers[representation]

    def set_a(self, model, input_name=None) -> None:
        """Compare representation (model, input) on the y axis; `input_name` None keeps the current
        input if `model` has it."""
        self.a, self.layers_a = self._choose(model, input_name, self.a, self.layers_a)

    def set_b(self, model, input_name=None) -> None:
        """The same for the x axis."""
        self.b, self.layers_b = self._choose(model, input_name, self.b, self.layers_b)

    def _layer_subset(self, name: str, layers, representation: tuple) -> tuple[str, ...]:
        available = self._layers[representation]
        chosen = [layers] if isinstance(layers, str) else list(layers)
        if not chosen or any(layer not in available for layer in chosen):
            raise ValueError(f"{name} must be a non-empty selection from {list(available)}, "
                             f"got {layers!r}")
        return tuple(layer for layer in available if layer in chosen)       # in network order

    def set_layers_a(self, layers) -> None:
        self.layers_a = self._layer_subset("layers_a", layers, self.a)

    def set_layers_b(self, layers) -> None:
        self.layers_b = self._layer_subset("layers_b", layers, self.b)

    def view(self) -> CKAResult:
        """The CKA matrix between the chosen layers of a (rows) and b (columns)."""
        if (self.a, self.b) not in self._results:
            raise ValueError(f"CKA between {self.a} and {self.b} was not computed: pass that pair "
                             "to layer_cka (its default, pairs=None, computes every pair)")
        result = self._results[(self.a, self.b)]
        rows = [result.layers_a.index(layer) for layer in self.layers_a]
        columns = [result.layers_b.index(layer) for layer in self.layers_b]
        return CKAResult(self.a, self.b, self.layers_a, self.layers_b,
                         result.matrix[rows][:, columns], result.num_images, result.num_batches)


def cka_figure(view: CKAResult) -> ExplorerFigure:
    """The explorer's figure: the heatmap of a `CKAState.view()`."""
    fig = ExplorerFigure(figsize=(0.42 * len(view.layers_b) + 3.6, 0.42 * len(view.layers_a) + 2.4),
                         layout="constrained")
    plot_cka_heatmap(view, ax=fig.add_subplot(), title=f"linear CKA, {view.num_images} images")
    return fig


def static_cka_explorer(state: CKAState, a: tuple | None = None,
                        b: tuple | None = None) -> ExplorerFigure:
    """The explorer's figure without widgets (static renders, CI), after choosing a and
    b = (model, input)."""
    if a is not None:
        state.set_a(*a)
    if b is not None:
        state.set_b(*b)
    return cka_figure(state.view())


class CKAExplorer(StateExplorer):
    """Dropdowns for the model and the input of each side and a multiple selection of its layers,
    wired to a `CKAState`; redraws the heatmap on every change.

    Core ipywidgets only (7.7 and 8.x). The controls are attributes (``model_a``, ``input_a``,
    ``layers_a`` and the same for b) so tests and notebooks can set their values; ``last_view`` and
    ``last_figure`` hold what was drawn, ``summary`` says what is shown (or why nothing is)."""

    def __init__(self, state: CKAState, dpi: int = 90):
        super().__init__(state, dpi)
        rows = []
        for side in ("a", "b"):
            model, input_name = getattr(state, side)
            model_dropdown = widgets.Dropdown(options=state.models, value=model,
                                              description=f"model {side.upper()}")
            input_dropdown = widgets.Dropdown(options=state.inputs(model), value=input_name,
                                              description=f"input {side.upper()}")
            layer_select = widgets.SelectMultiple(description=f"layers {side.upper()}")
            setattr(self, f"model_{side}", model_dropdown)
            setattr(self, f"input_{side}", input_dropdown)
            setattr(self, f"layers_{side}", layer_select)
            self.on_change(model_dropdown, lambda _, side=side: self._set_representation(side))
            self.on_change(input_dropdown, lambda _, side=side: self._set_representation(side))
            layer_select.observe(lambda change, side=side: self._on_layers(side, change["new"]),
                                 names="value")
            rows.append(widgets.HBox([widgets.VBox([model_dropdown, input_dropdown]),
                                      layer_select]))
        self._sync_controls()
        self.children = [*rows, self.summary, self.figure_image]
        self.redraw()

    def _set_representation(self, side: str) -> None:
        """The state's side to the model and input its dropdowns show (input None when that model
        has no such input: the state chooses), then the controls to the state."""
        model = getattr(self, f"model_{side}").value
        input_name = getattr(self, f"input_{side}").value
        getattr(self.state, f"set_{side}")(
            model, input_name if input_name in self.state.inputs(model) else None)
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
        except ValueError as error:   # a pair that was not computed: say so, show no stale heatmap
            self.show(None, None, f"<b>nothing to show</b>: {error}")
            return
        self.show(view, cka_figure(view), (
            f"{representation_label(view.a)} (rows) vs {representation_label(view.b)} (columns): "
            f"CKA between their last selected layers <b>{float(view.matrix[-1, -1]):.2f}</b>, "
            f"{view.num_images} images in {view.num_batches} minibatches"))


def cka_explorer(state: CKAState, dpi: int = 90) -> CKAExplorer:
    """The interactive CKA explorer for a state; display it by ending a cell with it."""
    return CKAExplorer(state, dpi=dpi)
