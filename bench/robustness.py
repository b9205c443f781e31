"""The CL-Robustness grid (notebook 08) at a stated budget: clean / threat-model-I / threat-model-II
accuracy of each scheme x scenario cell, and the time of each phase.

    # the paper's grid on ResNet-18 (hours, a GPU)
    python bench/robustness.py --budget full
    # notebook 08's colab budget, two schemes
    python bench/robustness.py --budget colab --schemes cl,scl
    # the two timing targets alone (minutes)
    python bench/robustness.py --budget full --timing-only
    # quick CPU check of the script
    python bench/robustness.py --smoke
    # what notebook 08 costs at a budget, estimated from the passes it makes (no GPU needed)
    python bench/robustness.py --estimate colab

Timing targets, on the budget's backbone and batch:
- an epoch of 5-step PGD adversarial pretraining costs at most 6.5x a standard epoch of the same
  method (5 attack forward/backward passes, one anchor pass, plus twice the method's step);
- robust accuracy of 10,000 test images under PGD-40 on a ResNet-18: under 60 s on one H100/H200.

Runs go to runs/<budget>/bench08_* (a finished run is loaded, not retrained: delete the folder to
re-measure). Results are printed and written as JSON to --output (default
bench/results/robustness_<budget>.json).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe_device  # noqa: E402

from clcourse import robustness as R  # noqa: E402
from clcourse.presets import PRESETS, RobustnessBudget, get_device  # noqa: E402
from clcourse.train import train  # noqa: E402

PREFIX = "bench08"
ADVERSARIAL_COST_TARGET = 6.5          # adversarial epoch / standard epoch
EVALUATION_SECONDS_TARGET = 60.0       # PGD-40 on 10,000 images, ResNet-18, one H100/H200


# The estimate of a notebook's run time counts passes: one forward and backward pass of one image
# is 1, a forward pass alone FORWARD. A PGD step is a forward and backward pass (to the input) of
# its images. A T4 runs a SimCLR epoch of ResNet-18 on 50,000 images (100,000 passes) in about
# 13-20 s (fp16): T4_SECONDS_PER_PASS is the slow end, OVERHEAD_MINUTES the install, the data, the
# ledger's kNN and the plots.
FORWARD = 1 / 3
T4_SECONDS_PER_PASS = 20 / 100_000
OVERHEAD_MINUTES = 1.0


def pretraining_passes(scheme: str, adversarial: bool, budget: RobustnessBudget) -> float:
    """Passes per training image and epoch of a scheme's pretraining: its views (two for CL and
    SCL, one for SL); adversarially, besides them the attack's steps, the clean anchors of the
    contrastive attack (a forward pass) and the adversarial pair (x^0, x^0 + delta; SL: x^0 + delta
    alone)."""
    if R.require_scheme(scheme) == "sl":
        return 1 + (budget.train_steps + 1 if adversarial else 0)
    return 2 + (budget.train_steps + FORWARD + 2 if adversarial else 0)


def fine_tuning_passes(mode: str, budget: RobustnessBudget) -> float:
    """Passes per training image and epoch of a fine-tuning: a forward pass through the frozen
    encoder (standard), plus the attack's steps and the adversarial images' forward pass
    (partial), or clean and adversarial images trained through the whole network (full)."""
    if mode == "standard":
        return FORWARD
    if mode == "partial":
        return 2 * FORWARD + budget.train_steps
    if mode == "full":
        return 2 + budget.train_steps
    raise ValueError(f"mode must be one of {list(R.FINE_TUNING)}, got {mode!r}")


def notebook_passes(budget: RobustnessBudget) -> dict[str, float]:
    """The passes of notebook 08 at `budget`, by section: the six encoders' pretraining, the twelve
    fine-tunings, the grid's attacks (clean, threat models I and II under both definitions: a
    forward pass for the clean images, the anchors and each attack's result, the attacks' steps)
    and the epsilon sweep (threat model II on two classifiers at four budgets besides 0). Section
    5's eight and 200 images are left out."""
    images = budget.train_subset or 50_000
    tests = budget.test_subset or 10_000
    steps = budget.test_steps
    pretraining = sum(pretraining_passes(scheme, adversarial, budget)
                      for scheme in R.SCHEMES for adversarial in (False, True))
    fine_tuning = len(R.SCHEMES) * sum(fine_tuning_passes(mode, budget)
                                       for _, mode in R.SCENARIOS.values())
    grid = len(R.SCHEMES) * len(R.SCENARIOS) * len(R.DEFINITIONS) * (4 * FORWARD + 2 * steps)
    sweep = 2 * (FORWARD + 4 * (steps + FORWARD))
    return {"pretraining": pretraining * budget.pretrain_epochs * images,
            "fine-tuning": fine_tuning * budget.finetune_epochs * images,
            "grid attacks": grid * tests, "epsilon sweep": sweep * tests}


def estimated_minutes(passes: float, seconds_per_pass: float = T4_SECONDS_PER_PASS) -> float:
    """Minutes of `passes` at `seconds_per_pass` (default: a T4's slow end), with the overhead."""
    return passes * seconds_per_pass / 60 + OVERHEAD_MINUTES


def print_estimate(budget_name: str) -> None:
    passes = notebook_passes(PRESETS[budget_name].robustness)
    for section, count in passes.items():
        minutes = estimated_minutes(count) - OVERHEAD_MINUTES
        print(f"{section:<15}{count / 1e6:6.2f} M passes  {minutes:5.1f} min")
    print(f"notebook 08, {budget_name} budget, on a T4: about "
          f"{estimated_minutes(sum(passes.values())):.1f} min (an estimate at "
          f"{1 / T4_SECONDS_PER_PASS:,.0f} passes/s, with {OVERHEAD_MINUTES:.0f} min besides)")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_epoch(scheme: str, adversarial: bool, budget: RobustnessBudget, images, labels,
                      device, epochs: int = 2) -> float:
    """The fastest epoch (after the first, which warms up) of the scheme's pretraining,
    without saving a run."""
    method = R.build_encoder_method(scheme, adversarial, budget)
    run_budget = PRESETS["full"].with_overrides(epochs=epochs, batch_size=budget.batch_size,
                                                warmup_epochs=0, compile=False, log_every=10_000)
    history = train(method, images, labels=labels, preset=run_budget, device=device, progress=False)
    times = [record["seconds"] for record in history.epochs]
    return min(times[1:] or times)


def evaluation_seconds(model: R.FineTune, images, labels, budget: RobustnessBudget, steps: int,
                       device) -> dict:
    """Seconds of clean, threat-model-I and threat-model-II evaluation of `images`
    with PGD-`steps`."""
    timings, accuracies = {}, {}
    classifier = R.classifier_of(model)
    attacks = {"clean": None,
               "threat_model_1": R.threat_model_1(model.encode, steps=steps, scheme=model.scheme),
               "threat_model_2": R.threat_model_2(model.classify, steps=steps)}
    for name, attack in attacks.items():
        synchronize(device)
        start = time.perf_counter()
        accuracies[name] = R.robust_accuracy(classifier, images, labels, attack,
                                             batch_size=budget.eval_batch_size, progress=False)
        synchronize(device)
        timings[name] = round(time.perf_counter() - start, 2)
    return {"seconds": timings, "accuracy": accuracies}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(PRESETS), default="full",
                        help="notebook 08's budget by preset")
    parser.add_argument("--schemes", default="cl,scl,sl",
                        help="comma-separated, from " + ",".join(R.SCHEMES))
    parser.add_argument("--scenarios", default=",".join(R.SCENARIOS), help="comma-separated, from "
                        + ",".join(R.SCENARIOS))
    parser.add_argument("--epsilon", type=float, default=4.0,
                        help="test attack budget in /255 (default 4)")
    parser.add_argument("--test-steps", type=int, default=None,
                        help="PGD steps of the test attacks (default: the budget's; the "
                             "paper's 40 in full)")
    parser.add_argument("--timing-only", action="store_true",
                        help="measure the two timing targets, skip the grid")
    parser.add_argument("--smoke", action="store_true",
                        help="the smoke budget, one scheme, two scenarios, tiny")
    parser.add_argument("--estimate", choices=sorted(PRESETS), default=None,
                        help="print notebook 08's estimated T4 minutes at this budget and exit")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.estimate:
        print_estimate(args.estimate)
        return 0

    schemes = [R.require_scheme(s) for s in args.schemes.split(",")]
    scenarios = [R.require_scenario(s) for s in args.scenarios.split(",")]
    budget_name = "smoke" if args.smoke else args.budget
    budget = PRESETS[budget_name].robustness
    if args.smoke:
        budget = replace(budget, train_subset=256, test_subset=64, pretrain_epochs=1,
                         eval_batch_size=64)
        schemes, scenarios = ["cl"], ["ST", "Full-AT"]
    preset = PRESETS[budget_name].with_overrides(robustness=budget)
    prefix = f"{PREFIX}_tiny" if args.smoke else PREFIX     # the tiny budget's runs apart from the
                                                            # smoke budget's
    device = get_device()
    test_steps = args.test_steps or budget.test_steps
    epsilon = args.epsilon / 255
    images, labels = R.training_data(budget, device)
    test_images, test_labels = R.training_data(budget, device, train=False)
    results = {"budget": asdict(budget), "device": describe_device(device), "test_epsilon": epsilon,
               "test_steps": test_steps, "phases": {}, "grid": {}}

    # Timing targets: adversarial over standard epoch (CL), and PGD-40 evaluation of
    # the whole test set.
    standard = seconds_per_epoch("cl", False, budget, images, labels, device)
    adversarial = seconds_per_epoch("cl", True, budget, images, labels, device)
    results["phases"]["epoch_seconds"] = {"standard": round(standard, 3),
                                          "adversarial": round(adversarial, 3),
                                          "ratio": round(adversarial / standard, 2),
                                          "target": ADVERSARIAL_COST_TARGET}
    print(f"CL epoch: standard {standard:.2f} s, adversarial ({budget.train_steps}-step PGD) "
          f"{adversarial:.2f} s, ratio {adversarial / standard:.2f} (target <= "
          f"{ADVERSARIAL_COST_TARGET})")

    if not args.timing_only:
        encoders = {}
        for scheme in schemes:
            for adversarial_pretraining in sorted({R.SCENARIOS[s][0] for s in scenarios}):
                start = time.perf_counter()
                encoders[scheme, adversarial_pretraining], _ = R.pretrain_encoder(
                    scheme, adversarial_pretraining, preset=preset, data=(images, labels),
                    prefix=prefix)
                results["phases"][
                    f"pretrain_{scheme}_{'at' if adversarial_pretraining else 'st'}"
                ] = round(time.perf_counter() - start, 1)
        for scheme in schemes:
            for scenario in scenarios:
                adversarial_pretraining, mode = R.SCENARIOS[scenario]
                start = time.perf_counter()
                run = R.encoder_run_name(scheme, adversarial_pretraining, budget, prefix)
                model, _ = R.fine_tune(encoders[scheme, adversarial_pretraining], run, mode,
                                       preset=preset, data=(images, labels))
                fine_tuning = round(time.perf_counter() - start, 1)
                evaluation = evaluation_seconds(model, test_images, test_labels, budget, test_steps,
                                                device)
                results["grid"][f"{scheme}/{scenario}"] = {"fine_tune_seconds": fine_tuning,
                                                           **evaluation}
                accuracy = evaluation["accuracy"]
                print(f"{scheme.upper():<4}{scenario:<11} clean {100 * accuracy['clean']:5.1f}%  "
                      f"threat I {100 * accuracy['threat_model_1']:5.1f}%  threat II "
                      f"{100 * accuracy['threat_model_2']:5.1f}%  (fine-tune {fine_tuning} s, "
                      f"evaluation {evaluation['seconds']})", flush=True)
    else:
        scheme = schemes[0]
        encoder = R.build_encoder_method(scheme, False, budget)
        model = R.FineTune(encoder, "standard").to(device)
        evaluation = evaluation_seconds(model, test_images, test_labels, budget, test_steps, device)
        results["phases"]["evaluation"] = {**evaluation, "images": len(test_images),
                                           "target_seconds": EVALUATION_SECONDS_TARGET}
        print(f"evaluation of {len(test_images)} images with PGD-{test_steps}: "
              f"{evaluation['seconds']} s (target: threat model II under "
              f"{EVALUATION_SECONDS_TARGET:.0f} s for 10,000 on an H100/H200)")

    output = (args.output
              or Path(__file__).resolve().parent / "results" / f"robustness_{budget_name}.json")
    if not args.smoke or args.output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1))
        print(f"written {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
