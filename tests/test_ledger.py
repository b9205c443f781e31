"""clcourse.ledger on its own: its statistics against hand computations and the tables (scipy as an
oracle where installed), the labelled subsets, the push weights of each loss, deterministic
measures, a broken ledger file refused, the ledgers shipped with the package. The ledgers
bench/ledger.py writes: tests/bench/test_ledger.py."""
import json
import math

import pytest
import torch
from repository import REPO

from clcourse import ledger as results
from clcourse.ledger.data import synthetic_dataset
from clcourse.methods import build_method
from clcourse.models import build_backbone

# ---------------------------------------------------------------- statistics

@pytest.mark.parametrize("df, table",
                         [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622),
                          (30, 2.0423)])
def test_t_quantile_matches_the_tables(df, table):
    assert results.t_quantile(0.975, df) == pytest.approx(table, abs=1e-4)


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")     # the oracle, where installed
    for df in (1, 2, 5, 8, 17):
        for p in (0.9, 0.975, 0.995):
            assert results.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)
    with pytest.raises(ValueError, match="df >= 1"):
        results.t_quantile(0.975, 0)


def test_interval_by_hand():
    # mean 0.62, s = 0.02, t_{0.975, 2} = 4.302653: half width 4.302653 * 0.02 / sqrt(3) = 0.049683
    summary = results.interval([0.60, 0.62, 0.64])
    assert (summary["n"] == 3 and summary["mean"] == pytest.approx(0.62)
            and summary["std"] == pytest.approx(0.02))
    assert summary["low"] == pytest.approx(0.62 - 0.049683, abs=1e-6)
    assert summary["high"] == pytest.approx(0.62 + 0.049683, abs=1e-6)
    assert results.interval([0.5]) == {"n": 1, "mean": 0.5, "std": None, "low": None, "high": None}


def test_paired_difference_and_its_verdict():
    baseline = {0: 0.60, 1: 0.62, 2: 0.58, 3: 0.99}
    # Differences 0.010, 0.012, 0.008 (seed 3 has no pair): mean 0.01, s = 0.002, half width
    # 4.302653 * 0.002 / sqrt 3
    better = results.paired_difference({0: 0.61, 1: 0.632, 2: 0.588}, baseline, "simclr")
    assert better["seeds"] == [0, 1, 2] and better["mean"] == pytest.approx(0.01)
    assert better["high"] - better["mean"] == pytest.approx(4.302653 * 0.002 / math.sqrt(3),
                                                            abs=1e-7)
    assert better["verdict"] == "higher than simclr"
    # +0.02, -0.01, 0.00
    noisy = results.paired_difference({0: 0.62, 1: 0.61, 2: 0.58}, baseline, "simclr")
    assert noisy["low"] < 0 < noisy["high"] and noisy["verdict"] == results.NO_EFFECT
    worse = results.paired_difference({0: 0.50, 1: 0.53, 2: 0.47}, baseline, "moco")
    assert worse["verdict"] == "lower than moco"
    assert results.paired_difference({5: 0.5}, baseline, "simclr") is None


def test_labelled_subset_is_class_balanced_and_fixed():
    labels = torch.arange(5).repeat_interleave(200)[torch.randperm(1000)]
    subset = results.labelled_subset(labels, 0.1)
    assert torch.bincount(labels[subset]).tolist() == [20] * 5
    assert (torch.equal(subset, results.labelled_subset(labels, 0.1))
            and torch.equal(subset, subset.sort().values))
    # at least one each
    assert torch.bincount(labels[results.labelled_subset(labels, 0.001)]).tolist() == [1] * 5


def test_push_weights_follow_each_loss():
    assert results.push_weights("hcl", {"temperature": 0.5, "tau_plus": 0.2, "beta": 1.0}) == {
        "loss": "hcl", "temperature": 0.5, "tau_plus": 0.2, "beta": 1.0}
    assert results.push_weights("dcl", {"temperature": 0.5, "tau_plus": 0.2})["beta"] == 0.0
    # CACR's beta is not HCL's
    cacr = results.push_weights("cacr", {"tau_neg": 0.9, "beta": 1.0})
    assert cacr["temperature"] == pytest.approx(1 / 1.8) and cacr["beta"] == 0.0
    assert results.push_weights("supervised", {"num_classes": 5})["temperature"] == 0.5
    assert results.push_weights("moco", {"temperature": 0.1})["loss"] == "infonce"


def test_measure_is_deterministic_given_the_weights():
    torch.manual_seed(0)
    method = build_method("dcl", build_backbone("small_cnn"), tau_plus=0.2)
    images, labels = synthetic_dataset(2, 40, seed=0)
    test = synthetic_dataset(2, 20, seed=1)
    first = results.measure(method, "dcl", (images, labels), test, knn_k=5, batch_size=64)
    assert first == results.measure(method, "dcl", (images, labels), test, knn_k=5, batch_size=64)
    assert first["push_weights"] == {"loss": "dcl", "temperature": 0.5, "tau_plus": 0.2,
                                     "beta": 0.0}
    # One batch of the 40 test images, 20 per class: 2 * 20 - 2 of the 2 * 40 - 2 negatives share
    # the anchor's class
    assert first["measures"]["same_class_chance"] == pytest.approx(38 / 78)
    assert 0 <= first["measures"]["alignment"] <= 4 and first["measures"]["uniformity"] < 0


# ---------------------------------------------------------------- files

def test_load_ledger_refuses_a_broken_file(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "LEDGER_DIR", tmp_path)
    (tmp_path / "cpu.json").write_text("{")
    with pytest.raises(ValueError, match="cpu.json is not a readable ledger"):
        results.load_ledger("cpu")
    (tmp_path / "cpu.json").write_text(
        json.dumps({"schema": 1, "scale": {}, "seeds": [0], "methods": [],
                    "encoders": {}}))
    with pytest.raises(ValueError, match="'methods' must be a JSON object"):
        results.load_ledger("cpu")


def test_the_ledger_files_ship_with_the_package():
    config = (REPO / "pyproject.toml").read_text()
    assert '"clcourse.ledger" = ["*.json", "encoders/*/*.pt"]' in config
