"""bench/robustness.py's estimate of what notebook 08 costs: its passes per image for each
pretraining and fine-tuning, and the colab budget's minutes on a T4 against the course's promise
(each notebook <= 15 minutes) and timings.json's figures for notebooks 08 and 09 (which reuses 08's
encoders, and trains them when run alone)."""
import json
from dataclasses import replace

import pytest
from repository import REPO, load_bench

from clcourse.presets import PRESETS

bench = load_bench("robustness")
TIMINGS = json.loads((REPO / "notebooks" / "timings.json").read_text())
COLAB = PRESETS["colab"].robustness


def test_passes_per_image_count_views_attack_steps_anchors_and_the_adversarial_pair():
    budget = replace(COLAB, train_steps=5)
    assert bench.pretraining_passes("cl", False, budget) == 2
    assert bench.pretraining_passes("sl", False, budget) == 1
    # two views, five attack steps, the clean anchors (a forward pass), x^0 and x^0 + delta
    assert bench.pretraining_passes("scl", True, budget) == pytest.approx(2 + 5 + 1 / 3 + 2)
    assert bench.pretraining_passes("sl", True, budget) == 1 + 5 + 1
    assert bench.fine_tuning_passes("standard", budget) == pytest.approx(1 / 3)
    assert bench.fine_tuning_passes("partial", budget) == pytest.approx(5 + 2 / 3)
    assert bench.fine_tuning_passes("full", budget) == 2 + 5
    # the cost the timing target allows: an adversarial epoch at most 6.5 standard ones
    ratio = (bench.pretraining_passes("cl", True, budget)
             / bench.pretraining_passes("cl", False, budget))
    assert 4 < ratio <= bench.ADVERSARIAL_COST_TARGET
    with pytest.raises(ValueError, match="mode must be one of"):
        bench.fine_tuning_passes("linear", budget)


def test_the_grid_and_the_sweep_scale_with_the_test_attacks():
    one, two = (bench.notebook_passes(replace(COLAB, test_steps=s)) for s in (10, 20))
    # 3 schemes x 4 scenarios x 2 definitions x 2 threat models, 10 more steps each, on every image
    assert two["grid attacks"] - one["grid attacks"] == pytest.approx(48 * 10 * COLAB.test_subset)
    assert two["epsilon sweep"] - one["epsilon sweep"] == pytest.approx(8 * 10 * COLAB.test_subset)
    assert one["pretraining"] == two["pretraining"] and one["fine-tuning"] == two["fine-tuning"]


def test_notebook_08_fits_a_t4_in_15_minutes_as_timings_json_says():
    minutes = bench.estimated_minutes(sum(bench.notebook_passes(COLAB).values()))
    stated = TIMINGS["colab"]["minutes"]["08_robustness_cl_supcon_supervised"]
    assert minutes <= stated <= 15, (minutes, stated)
    assert stated - minutes < 1.5, "timings.json overstates notebook 08's estimate"


def test_notebook_09_alone_adds_the_training_of_08s_encoders_it_reuses():
    """Run alone, notebook 09 trains the six encoders and the three Full-AT fine-tunings."""
    images = COLAB.train_subset
    training = (sum(bench.pretraining_passes(scheme, adversarial, COLAB)
                    for scheme in ("cl", "scl", "sl") for adversarial in (False, True))
                * COLAB.pretrain_epochs * images
                + 3 * bench.fine_tuning_passes("full", COLAB) * COLAB.finetune_epochs * images)
    name = "09_inside_the_network_cka"
    alone = TIMINGS["colab"]["alone_minutes"][name]
    expected = (TIMINGS["colab"]["minutes"][name] + bench.estimated_minutes(training)
                - bench.OVERHEAD_MINUTES)
    assert expected <= alone < expected + 1.5, (expected, alone)


def test_the_estimate_prints_its_sections(capsys):
    assert bench.main(["--estimate", "colab"]) == 0
    out = capsys.readouterr().out
    for section in ("pretraining", "fine-tuning", "grid attacks", "epsilon sweep"):
        assert section in out
    assert "notebook 08, colab budget, on a T4: about" in out
