"""Exercise checkers. Each `check_*` takes the student's function, compares it with the reference on
seeded inputs, prints a ✓ line when it matches, and otherwise raises an ExerciseError whose message
points at the mistake (a missing normalisation, an unmasked diagonal, a temperature applied twice...).

    from clcourse.checks import check_info_nce
    check_info_nce(my_info_nce)
"""
from ._core import ExerciseError
from .simclr import check_info_nce, check_positive_mask, check_similarity_matrix

__all__ = ["ExerciseError", "check_info_nce", "check_positive_mask", "check_similarity_matrix"]
