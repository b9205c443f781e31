"""Exercise checkers. Each `check_*` takes the student's function, compares it with the reference on
seeded inputs, prints a ✓ line when it matches, and otherwise raises an ExerciseError whose message
points at the mistake (a missing normalisation, an unmasked diagonal, a temperature applied twice...).

    from clcourse.checks import check_info_nce
    check_info_nce(my_info_nce)
"""
from ._core import ExerciseError
from .cacr import check_attraction_term, check_attraction_weights, check_repulsion_term, check_repulsion_weights
from .geometry import check_false_negative_rate, check_negative_weights
from .hard_negatives import check_dcl, check_hcl, check_mix_negatives, check_mix_query
from .moco import check_enqueue, check_moco_logits, check_momentum_update
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
    # notebook 06: CACR
    "check_attraction_weights", "check_repulsion_weights", "check_attraction_term", "check_repulsion_term",
]
