"""bench/scaling.py runs its --smoke configuration: 1 against 2 gloo processes on the CPU (the
efficiency target is for 8 GPUs and is measured on a GPU machine, never here)."""
import json

import pytest
from repository import load_bench


@pytest.mark.slow
@pytest.mark.heavy   # make test-heavy: two measured runs; the efficiency's formula is tested below
def test_scaling_smoke_measures_one_and_two_processes(tmp_path, capsys):
    scaling = load_bench("scaling")
    results = scaling.main(["--smoke", "--results", str(tmp_path / "scaling.json")])
    one, two = results["one"], results["many"]
    assert (one["processes"], one["batch_size"]) == (1, 32)
    assert (two["processes"], two["batch_size"]) == (2, 64)
    assert two["per_process"] == one["per_process"] == 32 and two["backend"] == "gloo"
    # 512 images: 16 steps of 32 in one process, 8 steps of 2 x 32 in two; two views each
    assert one["images_per_epoch"] == two["images_per_epoch"] == 512 and one["views"] == 2
    for run in (one, two):
        assert len(run["epoch_seconds"]) == 2 and all(s > 0 for s in run["epoch_seconds"])
        assert run["views_per_s"] == pytest.approx(2 * 512 / run["epoch_seconds"][1])
        assert run["s_per_epoch"] == pytest.approx(2 * 50_000 / run["views_per_s"])
    assert results["efficiency"] == pytest.approx(two["views_per_s"] / (2 * one["views_per_s"]))
    stored = json.loads((tmp_path / "scaling.json").read_text())
    assert stored["efficiency"] == results["efficiency"]
    out = capsys.readouterr().out
    assert "efficiency:" in out and "pending" in out


def test_efficiency_is_the_n_process_throughput_over_n_times_one_process():
    scaling = load_bench("scaling")
    one = scaling.measure({"processes": 1, "views": 2, "images_per_epoch": 100,
                           "epoch_seconds": [9.0, 1.0]})
    many = scaling.measure({"processes": 4, "views": 2, "images_per_epoch": 100,
                            "epoch_seconds": [9.0, 0.5, 0.4]})
    assert one["views_per_s"] == 200 and many["views_per_s"] == 500
    assert scaling.efficiency(one, many) == pytest.approx(500 / 800)
