"""Measurements of what a method does, with the class labels that self-supervised training never
sees (a *class oracle*), one file per topic: MoCo's queue and MoCHi's synthetic negatives (`queue`),
SCE's soft targets (`soft_targets`), CLAE's adversarial views (`adversarial`).

Everything here is a measurement: computed without gradient, in float32, on the method's device, and
the method's weights and queue are left as they were.
"""
from .adversarial import AdversarialViews, adversarial_views
from .queue import (
    filled_queue,
    keys,
    queries,
    queue_false_negative_rate,
    queue_false_negative_rate_over_training,
    queue_hardest_negatives,
    synthetic_negative_similarities,
)
from .soft_targets import (
    SoftTargets,
    TargetSpread,
    same_class_similarity,
    soft_targets,
    soft_targets_from_embeddings,
    target_spread,
)

__all__ = ["queries", "keys", "filled_queue", "queue_hardest_negatives",
           "queue_false_negative_rate", "queue_false_negative_rate_over_training",
           "synthetic_negative_similarities", "SoftTargets", "soft_targets_from_embeddings",
           "soft_targets", "TargetSpread", "target_spread", "same_class_similarity",
           "AdversarialViews", "adversarial_views"]
