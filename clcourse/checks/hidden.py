"""Hidden tests of the graded exercises (`tools/notebooks.py nbgrader` writes them into each exercise's test cell
between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``, and nbgrader takes them out of the students' copy).

For each checker, the keyword arguments of one more run of it on other inputs than the notebook's visible call:
other seeds and shapes, and the edge cases a function tuned to the visible inputs gets wrong (the smallest batch,
a single negative, a queue pointer that wraps, masks, λ at 0 and 1, extreme temperatures). Every checker of
`clcourse.checks` has an entry (tests/test_nbgrader.py checks it, and that each solution passes its hidden tests)."""

HIDDEN_CASES: dict[str, dict[str, object]] = {
    # notebook 01: (N, D); batch sizes; (B, D, temperature)
    "check_similarity_matrix": dict(cases=((1, 3), (9, 2), (16, 33))),
    "check_positive_mask": dict(cases=(2, 5, 8, 16)),
    "check_info_nce": dict(cases=((2, 4, 0.5), (7, 2, 0.05), (16, 32, 0.2), (3, 5, 2.0))),
    # notebook 02: (N, classes, D, ks); (K, D, temperature)
    "check_false_negative_rate": dict(cases=((12, 2, 3, (1, 11)), (40, 10, 16, (4, 7)))),
    "check_negative_weights": dict(cases=((1, 3, 0.1), (20, 8, 0.05), (9, 2, 1.0))),
    # notebook 03: (K, B, pointer); momenta; (B, K, D, temperature)
    "check_enqueue": dict(cases=((10, 4, 8), (7, 7, 0), (4, 1, 3), (12, 5, 11))),
    "check_momentum_update": dict(cases=(0.5, 0.999, 0.3)),
    "check_moco_logits": dict(cases=((2, 4, 3, 0.1), (8, 32, 16, 0.05), (2, 1, 4, 0.5))),
    # notebook 04: (B, D, temperature, tau_plus[, beta], positives close); seeds (B = 3 + seed)
    "check_dcl": dict(cases=((3, 5, 0.1, 0.2, False), (8, 16, 0.3, 0.01, True), (2, 4, 1.0, 0.5, False))),
    "check_hcl": dict(cases=((3, 5, 0.1, 0.2, 1.0, False), (8, 16, 0.3, 0.01, 0.1, True),
                             (2, 4, 1.0, 0.5, 2.0, False))),
    "check_mix_negatives": dict(cases=(3, 5, 8)),
    "check_mix_query": dict(cases=(3, 5, 8)),
    # notebook 05: (B, epsilon, temperature[, alpha])
    "check_fgsm_contrastive": dict(cases=((3, 0.2, 0.1), (8, 0.01, 0.5))),
    "check_clae_objective": dict(cases=((3, 0.03, 0.5, 0.1), (6, 0.05, 0.1, 1.0))),
    # notebook 07: (B, K, D, [temperature,] temperature_momentum, lam, masked)
    "check_soft_target": dict(cases=((1, 5, 3, 0.1, 0.5, True), (6, 20, 8, 0.02, 1.0, False),
                                     (3, 4, 6, 0.3, 0.25, True))),
    "check_sce_loss": dict(cases=((1, 5, 3, 0.2, 0.1, 0.5, True), (6, 20, 8, 0.07, 0.03, 0.25, False),
                                  (3, 4, 6, 1.0, 0.5, 0.75, True))),
}
