"""Hidden tests of the graded exercises (`tools/notebooks.py nbgrader` writes them into each
exercise's test cell between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``, and nbgrader
takes them out of the students' copy).

For each checker, the keyword arguments of one more run of it on other inputs than the
notebook's visible call: other seeds and shapes, and the edge cases a function tuned to the
visible inputs gets wrong (the smallest batch, a single negative, a queue pointer that
wraps, masks, λ at 0 and 1, extreme temperatures). Every checker of `clcourse.checks` has an
entry (tests/tools/test_notebooks_nbgrader.py checks it, and that each solution passes its
hidden tests)."""

__all__ = ["HIDDEN_CASES"]

HIDDEN_CASES: dict[str, dict[str, object]] = {
    # notebook 01: batch sizes; (B, D, temperature); (N, D); (N, D, t)
    "check_positive_mask": dict(cases=(2, 5, 8, 16)),
    "check_info_nce": dict(cases=((2, 4, 0.5), (7, 2, 0.05), (16, 32, 0.2), (3, 5, 2.0))),
    "check_alignment": dict(cases=((1, 3), (12, 2), (5, 33))),
    "check_uniformity": dict(cases=((2, 3, 1.0), (12, 16, 4.0), (5, 2, 2.0))),
    # notebook 02: (N, classes, D, ks); (K, D, temperature)
    "check_false_negative_rate": dict(cases=((12, 2, 3, (1, 11)), (40, 10, 16, (4, 7)))),
    "check_anchor_gradient": dict(cases=((1, 3, 0.1), (20, 8, 0.05), (7, 2, 2.0))),
    # notebook 03: (K, B, pointer); momenta; (B, K, D, temperature); seeds (other weights,
    # temperature 0.2 + 0.3 seed)
    "check_enqueue": dict(cases=((10, 4, 8), (7, 7, 0), (4, 1, 3), (12, 5, 11))),
    "check_momentum_update": dict(cases=(0.5, 0.999, 0.3)),
    "check_moco_logits": dict(cases=((2, 4, 3, 0.1), (8, 32, 16, 0.05), (2, 1, 4, 0.5))),
    "check_moco_step": dict(cases=(2, 3)),
    # notebook 04: (B, D, temperature, tau_plus[, beta], positives close); (B, temperature)
    "check_dcl":
        dict(cases=((3, 5, 0.1, 0.2, False), (8, 16, 0.3, 0.01, True), (2, 4, 1.0, 0.5, False))),
    "check_hcl": dict(cases=((3, 5, 0.1, 0.2, 1.0, False), (8, 16, 0.3, 0.01, 0.1, True),
                             (2, 4, 1.0, 0.5, 2.0, False))),
    "check_mochi_logits": dict(cases=((2, 0.05), (8, 1.0), (6, 0.3))),
    # notebook 05: (B, epsilon, temperature[, alpha])
    "check_fgsm_contrastive": dict(cases=((3, 0.2, 0.1), (8, 0.01, 0.5))),
    "check_clae_objective": dict(cases=((3, 0.03, 0.5, 0.1), (6, 0.05, 0.1, 1.0))),
    # notebook 06: (V views, B images, D, tau, alpha or beta); two views
    # (one positive each), two images
    "check_attraction_weights":
        dict(cases=((2, 4, 3, 0.7, 1.5), (6, 5, 6, 3.0, 0.3), (3, 2, 16, 0.2, 1.0))),
    "check_repulsion_weights":
        dict(cases=((2, 4, 3, 0.7, 1.5), (6, 9, 6, 3.0, 0.3), (3, 1, 16, 0.2, 1.0))),
    "check_attraction_term":
        dict(cases=((2, 4, 3, 0.7, 1.5), (6, 5, 6, 3.0, 0.3), (3, 2, 16, 0.2, 1.0))),
    "check_repulsion_term":
        dict(cases=((2, 4, 3, 0.7, 1.5), (6, 5, 6, 3.0, 0.3), (3, 2, 16, 0.2, 1.0))),
    # notebook 07: (B, K, D, [temperature,] temperature_momentum, lam, masked)
    "check_soft_target": dict(cases=((1, 5, 3, 0.1, 0.5, True), (6, 20, 8, 0.02, 1.0, False),
                                     (3, 4, 6, 0.3, 0.25, True))),
    "check_sce_loss":
        dict(cases=((1, 5, 3, 0.2, 0.1, 0.5, True), (6, 20, 8, 0.07, 0.03, 0.25, False),
                                  (3, 4, 6, 1.0, 0.5, 0.75, True))),
    # notebook 08: (B, epsilon, step_size), a step larger than epsilon; (B, D, classes,
    # temperature), one class; (B, temperature)
    "check_pgd_step": dict(cases=((1, 0.3, 0.5), (6, 0.004, 0.002), (2, 0.02, 0.02))),
    "check_supcon": dict(cases=((2, 3, 1, 0.05), (12, 8, 6, 1.0), (4, 2, 4, 0.3))),
    "check_threat_model_1_objective": dict(cases=((2, 0.1), (8, 1.0))),
    # notebook 09: (n, p, q), wide and tall; n (at least 4)
    "check_linear_cka": dict(cases=((5, 2, 3), (60, 12, 3), (8, 40, 50))),
    "check_hsic_unbiased": dict(cases=(4, 5, 30)),
}
