"""Interactive explorers for the notebooks, one per module, each in three layers so that every piece
can be used and tested without a browser:

- ``XState``: plain Python, the data and the current choices. Its methods are what the controls call
  (``set_...``), and ``view()`` computes everything shown for the current choice, an ``XView``.
- ``x_figure(view)``: one matplotlib figure for a view, displayed when it ends a notebook cell.
- ``x_explorer(state)``: the live widget, an ``XExplorer`` (core ipywidgets, 7.7 and 8.x, JupyterLab
  and Colab) whose controls drive the state and redraw the figure; ``last_view`` and
  ``last_figure`` hold what it drew.

=====================================  ============================  ========
explorer                               X                             notebook
=====================================  ============================  ========
hardest negatives of an anchor         ``Neighbourhood``             02
CACR's attraction/repulsion weights    ``CacrWeights``               06
SCE's soft target over the queue       ``SoftTarget``                07
layer-wise CKA                         ``CKA`` (view: ``CKAResult``) 09
=====================================  ============================  ========

``static_neighbourhood_explorer`` and ``static_cka_explorer`` choose and draw in one call, for
static renders of a notebook.
"""
from .base import ExplorerFigure, StateExplorer
from .cacr import (
    CacrWeightsExplorer,
    CacrWeightsState,
    CacrWeightsView,
    cacr_weights_explorer,
    cacr_weights_figure,
)
from .cka import CKAExplorer, CKAState, cka_explorer, cka_figure, static_cka_explorer
from .neighbourhood import (
    NeighbourhoodExplorer,
    NeighbourhoodState,
    NeighbourhoodView,
    neighbourhood_explorer,
    neighbourhood_figure,
    static_neighbourhood_explorer,
)
from .soft_target import (
    SoftTargetExplorer,
    SoftTargetState,
    SoftTargetView,
    soft_target_explorer,
    soft_target_figure,
)

__all__ = [
    "ExplorerFigure", "StateExplorer",
    "NeighbourhoodState", "NeighbourhoodView", "neighbourhood_figure", "neighbourhood_explorer",
    "NeighbourhoodExplorer", "static_neighbourhood_explorer",
    "CacrWeightsState", "CacrWeightsView", "cacr_weights_figure", "cacr_weights_explorer",
    "CacrWeightsExplorer",
    "SoftTargetState", "SoftTargetView", "soft_target_figure", "soft_target_explorer",
    "SoftTargetExplorer",
    "CKAState", "cka_figure", "cka_explorer", "CKAExplorer", "static_cka_explorer",
]
