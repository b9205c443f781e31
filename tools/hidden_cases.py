"""The hidden tests of the graded exercises: for each checker of `clcourse.checks`, the inputs it
runs on again in the instructor's copy of an assignment (`tools/notebooks.py nbgrader` writes them
between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``; nbgrader leaves them out of the
students' copy).

They are drawn for each course from its seed (`draw(seed)`), so that they are written nowhere a
student can read them: not in the installed package, and not the same from one course to the next.
Each checker's `TEMPLATES` keep the edge cases a function tuned to the visible inputs gets wrong
(the smallest batch, a single negative, a queue pointer that wraps, masks, lambda at 0 and 1,
extreme temperatures); what an edge case leaves free is drawn among values the checker supports
(`Any`). Every checker has templates (tests/tools/test_notebooks_nbgrader.py checks it, that each
course notebook's solutions pass their hidden tests for several seeds, and that these use inputs the
visible checks never do).
"""
from __future__ import annotations

import random


class Any:
    """One of `values`, drawn for each course."""

    def __init__(self, *values):
        self.values = values


def _draw(template, rng: random.Random):
    if isinstance(template, Any):
        return rng.choice(template.values)
    if isinstance(template, tuple):
        return tuple(_draw(part, rng) for part in template)
    return template


# Per checker: the cases its hidden test passes (`cases=`), each a template whose Any parts are
# drawn.
TEMPLATES: dict[str, tuple] = {
    # notebook 01: batch sizes; (B, D, temperature); (N, D); (N, D, t)
    "check_positive_mask": (2, Any(5, 6, 7), Any(8, 9, 10), Any(12, 16)),
    "check_info_nce": ((2, Any(4, 6), Any(0.5, 0.7)), (Any(6, 7, 9), 2, Any(0.05, 0.08)),
                       (Any(12, 16), Any(24, 32), 0.2), (3, Any(5, 7), Any(1.5, 2.0))),
    "check_alignment": ((1, Any(3, 5)), (Any(10, 12), 2), (Any(5, 7), Any(24, 33))),
    "check_uniformity": ((2, Any(3, 4), Any(1.0, 1.5)), (Any(11, 12), Any(12, 16), Any(3.0, 4.0)),
                         (Any(4, 5), 2, 2.0)),
    # notebook 02: (N, classes, D, ks), k = 1 and k = N - 1; (K, D, temperature), one negative
    "check_false_negative_rate": ((12, 2, Any(3, 4), (1, 11)),
                                  (Any(36, 40), 10, Any(12, 16), (Any(4, 6), 7))),
    "check_anchor_gradient": ((1, Any(3, 4), Any(0.1, 0.2)), (Any(16, 20), Any(6, 8), 0.05),
                              (Any(6, 7), 2, Any(1.5, 2.0))),
    # notebook 03: (K, B, pointer): a pointer that wraps, B = K, one key; momenta; (B, K, D,
    # temperature), one queue entry; seeds (other weights and temperature 0.2 + 0.3 seed)
    "check_enqueue": ((10, 4, Any(7, 8, 9)), (7, 7, 0), (4, 1, Any(1, 2, 3)),
                      (12, 5, Any(9, 10, 11))),
    "check_momentum_update": (Any(0.5, 0.6), 0.999, Any(0.3, 0.4)),
    "check_moco_logits": ((2, Any(4, 5), 3, Any(0.1, 0.15)), (8, Any(24, 32), 16, 0.05),
                          (2, 1, 4, Any(0.5, 0.8))),
    "check_moco_step": (Any(2, 3), Any(4, 5)),
    # notebook 04: (B, D, temperature, tau_plus[, beta], positives close); (B, temperature)
    "check_dcl": ((Any(2, 3), 5, 0.1, Any(0.2, 0.25), False), (8, Any(12, 16), 0.3, 0.01, True),
                  (2, 4, 1.0, Any(0.4, 0.5), False)),
    "check_hcl": ((3, Any(5, 6), 0.1, 0.2, Any(1.0, 1.2), False),
                  (8, 16, Any(0.25, 0.3), 0.01, 0.1, True), (2, 4, 1.0, Any(0.4, 0.5), 2.0, False)),
    "check_mochi_logits": ((2, Any(0.05, 0.07)), (Any(7, 8), 1.0), (6, Any(0.3, 0.4))),
    # notebook 05: (B, epsilon, temperature[, alpha])
    "check_fgsm_contrastive": ((3, Any(0.15, 0.2), 0.1), (Any(7, 8), 0.01, Any(0.4, 0.5))),
    "check_clae_objective": ((3, Any(0.02, 0.03), 0.5, Any(0.1, 0.2)), (Any(6, 7), 0.05, 0.1, 1.0)),
    # notebook 06: (V views, B images, D, tau, alpha or beta): two views (one positive each), two
    # images
    "check_attraction_weights": ((2, 4, Any(3, 4), 0.7, 1.5), (6, 5, 6, Any(2.5, 3.0), 0.3),
                                 (3, 2, 16, 0.2, 1.0)),
    "check_repulsion_weights": ((2, 4, Any(3, 4), 0.7, 1.5), (6, Any(8, 9), 6, Any(2.5, 3.0), 0.3),
                                (3, 1, 16, 0.2, 1.0)),
    # (kappa-, HCL's temperature, B, D): a sharp and a flat kappa-, two negatives per query
    "check_equivalent_temperature_and_beta": ((Any(1.5, 2.5), Any(0.1, 0.07), 6, 4),
                                              (0.05, Any(1.5, 2.0), 3, 3),
                                              (Any(0.6, 0.7), 0.3, 9, 16)),
    "check_attraction_term": ((2, 4, 3, Any(0.6, 0.7), 1.5), (6, 5, 6, 3.0, Any(0.3, 0.4)),
                              (3, 2, 16, 0.2, 1.0)),
    "check_repulsion_term": ((2, 4, 3, Any(0.6, 0.7), 1.5), (6, 5, 6, 3.0, Any(0.3, 0.4)),
                             (3, 2, 16, 0.2, 1.0)),
    # notebook 07: (B, K, D, [temperature,] temperature_momentum, lam, masked): one query, lambda
    # at 1
    "check_soft_target": ((1, 5, 3, 0.1, Any(0.4, 0.5), True),
                          (6, Any(16, 20), 8, 0.02, 1.0, False),
                          (3, 4, 6, Any(0.25, 0.3), 0.25, True)),
    "check_sce_loss": ((1, 5, 3, 0.2, 0.1, Any(0.4, 0.5), True),
                       (6, Any(16, 20), 8, 0.07, 0.03, 0.25, False),
                       (3, 4, 6, 1.0, 0.5, Any(0.7, 0.75), True)),
    # notebook 08: (B, epsilon, step_size), a step larger than epsilon; (B, D, classes,
    # temperature), one class; (B, temperature)
    "check_pgd_step": ((1, 0.3, Any(0.4, 0.5)), (6, Any(0.004, 0.005), 0.002), (2, 0.02, 0.02)),
    "check_supcon": ((2, 3, 1, Any(0.05, 0.08)), (12, 8, Any(5, 6), 1.0),
                     (4, 2, 4, Any(0.25, 0.3))),
    "check_threat_model_1_objective": ((2, Any(0.1, 0.15)), (Any(7, 8), 1.0)),
    # notebook 09: (n, p, q), wide and tall; n (at least 4)
    "check_linear_cka": ((5, 2, 3), (Any(50, 60), 12, 3), (8, Any(36, 40), 50)),
    "check_hsic_unbiased": (4, 5, Any(24, 30)),
}


def draw(seed: int) -> dict[str, dict[str, object]]:
    """The hidden tests of a course: for each checker, the keyword arguments of its hidden run
    (``{"cases": (...)}``), drawn from TEMPLATES with `seed`."""
    drawn = {}
    for checker, template in TEMPLATES.items():
        rng = random.Random(f"{seed}:{checker}")
        drawn[checker] = {"cases": _draw(template, rng)}
    return drawn
