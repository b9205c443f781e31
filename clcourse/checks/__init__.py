"""Exercise checkers. Each `check_*` takes the student's function, compares it with the reference on
seeded inputs, prints a ✓ line when it matches, and otherwise raises an ExerciseError whose message
points at the mistake (a missing normalisation, an unmasked diagonal, a temperature applied twice...).

    from clcourse.checks import check_info_nce
    check_info_nce(my_info_nce)
"""
from ._core import ExerciseError
from .cka import check_hsic_unbiased, check_linear_cka
from .clae import check_clae_objective, check_fgsm_contrastive
from .geometry import check_false_negative_rate, check_negative_weights
from .hard_negatives import check_dcl, check_hcl, check_mix_negatives, check_mix_query
from .moco import check_enqueue, check_moco_logits, check_momentum_update
from .sce import check_sce_loss, check_soft_target
from .simclr import check_info_nce, check_positive_mask, check_similarity_matrix

__all__ = [
    "ExerciseError",
    # notebook 01: SimCLR
    "check_similarity_matrix", "check_positive_mask", "check_info_nce",
    # notebook 02: geometry and hardness
    "check_false_negative_rate", "check_negative_weights",
    # notebook 03: MoCo
    "check_enqueue", "check_momentum_update", "check_moco_logits",
    # notebook 04: DCL, HCL, MoCHi
    "check_dcl", "check_hcl", "check_mix_negatives", "check_mix_query",
    # notebook 07: SCE
    "check_soft_target", "check_sce_loss",
    # notebook 05: adversarial examples, CLAE
    "check_fgsm_contrastive", "check_clae_objective",
    # notebook 09: inside the network, linear CKA
    "check_linear_cka", "check_hsic_unbiased",
]
