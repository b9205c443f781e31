"""Exercise checkers. Each `check_*` takes the student's function, compares it with the reference
on seeded inputs, prints a ✓ line when it matches, and otherwise raises an ExerciseError whose
message points at the mistake (a missing normalisation, an unmasked diagonal, a temperature
applied twice...).

    from clcourse.checks import check_info_nce
    check_info_nce(my_info_nce)

Each checker also takes `cases=`: other inputs of the form of its default ones (seeds, shapes,
hyperparameters), which the hidden tests of graded assignments pass (`tools/notebooks.py nbgrader`
writes them into the instructor's copy, drawn for each course; they are not in this package).

While a checker runs, the package's reference implementations answer only the checker: a function
that calls one fails its check ("write it yourself"). In IPython a failing check shows its message
alone (clcourse.checks._core).
"""
from ._core import ExerciseError, install_ipython_handler
from .cacr import (
    check_attraction_term,
    check_attraction_weights,
    check_equivalent_temperature_and_beta,
    check_repulsion_term,
    check_repulsion_weights,
)
from .cka import check_hsic_unbiased, check_linear_cka
from .clae import check_clae_objective, check_fgsm_contrastive
from .geometry import check_anchor_gradient, check_false_negative_rate
from .hard_negatives import check_dcl, check_hcl, check_mochi_logits
from .moco import check_enqueue, check_moco_logits, check_moco_step, check_momentum_update
from .robustness import check_pgd_step, check_supcon, check_threat_model_1_objective
from .sce import check_sce_loss, check_soft_target
from .simclr import check_alignment, check_info_nce, check_positive_mask, check_uniformity

__all__ = [
    "ExerciseError",
    # notebook 01: SimCLR
    "check_positive_mask", "check_info_nce", "check_alignment", "check_uniformity",
    # notebook 02: geometry and hardness
    "check_false_negative_rate", "check_anchor_gradient",
    # notebook 03: MoCo
    "check_enqueue", "check_momentum_update", "check_moco_logits", "check_moco_step",
    # notebook 04: DCL, HCL, MoCHi
    "check_dcl", "check_hcl", "check_mochi_logits",
    # notebook 05: adversarial examples, CLAE
    "check_fgsm_contrastive", "check_clae_objective",
    # notebook 06: CACR
    "check_attraction_weights", "check_repulsion_weights", "check_equivalent_temperature_and_beta",
    "check_attraction_term", "check_repulsion_term",
    # notebook 07: SCE
    "check_soft_target", "check_sce_loss",
    # notebook 08: robustness of CL, SupCon and supervised learning
    "check_pgd_step", "check_supcon", "check_threat_model_1_objective",
    # notebook 09: inside the network, linear CKA
    "check_linear_cka", "check_hsic_unbiased",
]

install_ipython_handler()
