"""bench/suite.py: its schedule and caps, the order and cost of the methods, its results files (a
smoke run's outside the committed folder), a phase that stops at its cap or fails keeps its results,
and the whole suite at toy size on the CPU. (The other scripts: their own tests here.)"""
import json
import subprocess

import pytest
import torch
from helpers import write_notebook
from repository import REPO, load_bench


@pytest.fixture(scope="module")
def suite():
    return load_bench("suite")


def test_phase_caps_trim_the_method_costs_first(suite):
    caps = {"throughput": 180, "simclr_200": 390, "method_costs": 120,
            "cuda_tests_and_notebook": 75}
    assert [suite.phase_cap(caps, name, 3600) for name in caps] == [180, 390, 120, 75]
    # Phase 3 leaves phase 4's cap: with 100 s left it gets 25 s, with 60 s
    # none, while phase 4 gets its own.
    assert suite.phase_cap(caps, "method_costs", 100) == 25
    assert suite.phase_cap(caps, "method_costs", 60) == 0
    assert suite.phase_cap(caps, "cuda_tests_and_notebook", 60) == 60
    assert suite.phase_cap(caps, "simclr_200", 200) == 200 and \
        suite.phase_cap(caps, "throughput", -5) == 0
    assert list(suite.GPU.caps) == list(suite.PHASES) == list(suite.SMOKE.caps)


def test_methods_are_measured_references_first_then_those_with_a_target(suite):
    names = ["simclr", "dcl", "hcl", "moco", "mochi", "brand_new", "sce"]
    assert suite.method_order(names) == ["simclr", "moco", "mochi", "sce", "dcl", "hcl",
                                         "brand_new"]
    # references not registered: no reorder
    assert suite.method_order(["dcl", "mochi"]) == ["mochi", "dcl"]
    targets = load_bench("targets")
    # no line: against SimCLR, no target
    assert targets.method_cost("brand_new") == ("simclr", None)
    assert targets.method_cost("mochi") == ("moco", 1.10)


def test_each_method_gets_its_cost_relative_to_its_reference(suite):
    methods = {"simclr": {"reference": "simclr", "target": None, "seconds_per_epoch": 2.0},
               "moco": {"reference": "simclr", "target": None, "seconds_per_epoch": 1.5},
               "mochi": {"reference": "moco", "target": 1.10, "seconds_per_epoch": 1.8},
               "sce": {"reference": "moco", "target": 1.05, "seconds_per_epoch": 1.56},
               "hcl": {"reference": "simclr", "target": None, "status": "error"}}
    suite.fill_ratios(methods)
    assert methods["simclr"]["ratio"] == 1.0 and methods["moco"]["ratio"] == 0.75
    assert methods["mochi"]["ratio"] == 1.2 and methods["mochi"]["meets_target"] is False
    assert methods["sce"]["ratio"] == 1.04 and methods["sce"]["meets_target"] is True
    assert "ratio" not in methods["hcl"] and "meets_target" not in methods["moco"]


def test_smoke_results_go_outside_the_committed_results_folder(suite):
    assert suite.default_results_dir(smoke=False) == REPO / "bench" / "results"
    smoke = suite.default_results_dir(smoke=True)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(smoke / "x.json")], cwd=REPO)
    assert not smoke.is_relative_to(REPO / "bench" / "results") and ignored.returncode == 0


def test_results_file_names_carry_the_date_and_the_gpu(suite, tmp_path):
    first = suite.results_path(tmp_path, "2026-12-01", "NVIDIA H200", smoke=False)
    assert first.name == "2026-12-01_nvidia-h200.json"
    first.write_text("{}")
    second = suite.results_path(tmp_path, "2026-12-01", "NVIDIA H200", smoke=False)
    assert second.name == "2026-12-01_nvidia-h200_2.json"
    assert suite.results_path(tmp_path, "2026-12-01", "CPU", smoke=True).name == \
        "2026-12-01_cpu-smoke.json"


def test_a_phase_keeps_its_results_when_it_stops_at_its_cap_or_fails(suite, monkeypatch, tmp_path):
    import time

    def slow(ctx, results, ends_at):
        results["first"] = 1
        time.sleep(5)
        results["second"] = 2

    def broken(ctx, results, ends_at):
        results["first"] = 1
        raise ValueError("boom")

    def terminated(ctx, results, ends_at):
        raise suite.Terminated()

    monkeypatch.setattr(suite, "MIN_CAP_SECONDS", 0.05)
    monkeypatch.setattr(suite, "PHASE_FUNCTIONS",
                        {"slow": slow, "broken": broken, "terminated": terminated})
    ctx = suite.Context(torch.device("cpu"), suite.SMOKE, None, tmp_path, tmp_path, {})
    record = {}
    suite.run_phase("slow", ctx, record, cap=0.3)
    assert record["status"] == "stopped at cap" and record["results"] == {"first": 1}
    assert 0.3 <= record["seconds"] < 2 and record["cap_seconds"] == 0.3 and \
        record["peak_memory_gb"] is None
    suite.run_phase("broken", ctx, record, cap=10)
    assert record["status"] == "error" and record["error"] == "ValueError: boom" and \
        record["results"] == {"first": 1}
    suite.run_phase("slow", ctx, record, cap=0.01)
    assert record["status"] == "skipped" and record["results"] == {}
    with pytest.raises(suite.Terminated):
        suite.run_phase("terminated", ctx, record, cap=10)
    assert record["status"] == "interrupted"


@pytest.mark.slow
def test_suite_smoke_runs_every_phase_on_the_cpu(tmp_path):
    # The whole suite at toy size in its own process, as `python bench/suite.py --smoke` (a phase
    # that stopped at its cap or failed would say so in the results file). The notebook is a small
    # one of our own: whether the course's notebooks run is for the notebook tests to say.
    import sys

    from clcourse.methods import METHODS
    notebook = write_notebook(tmp_path / "tiny.ipynb",
                              "import sys\nif 'google.colab' in sys.modules:\n    !pip x",
                              "from clcourse.presets import get_preset\nprint(get_preset().name)")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "suite.py"), "--smoke",
                           "--results-dir", str(tmp_path / "results"), "--notebook", str(notebook)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    path, = (tmp_path / "results").glob("*.json")
    results = json.loads(path.read_text())
    assert path.name.endswith("_cpu-smoke.json") and results["smoke"] is True and \
        results["device"]["type"] == "cpu"
    phases = results["phases"]
    assert {name: phase["status"] for name, phase in phases.items()} == dict.fromkeys(
        ["throughput", "simclr_200", "method_costs", "cuda_tests_and_notebook"], "done")
    assert all(phase["peak_memory_gb"] is None and phase["seconds"] <= phase["cap_seconds"]
               for phase in phases.values())

    rates = phases["throughput"]["results"]
    assert all(rates[mode][key] > 0 for mode in ("eager", "compile")
               for key in ("model_step", "end_to_end", "pil"))
    simclr = phases["simclr_200"]["results"]
    assert simclr["epochs_done"] == 2 and [epoch for epoch, _ in simclr["knn"]] == [1, 2]
    assert 0 <= simclr["final_knn"] <= 1 and simclr["wall_seconds"] > 0
    costs = phases["method_costs"]["results"]
    # every registered method, none forgotten
    assert set(costs["methods"]) == set(METHODS)
    assert all(entry["status"] == "done" and entry["seconds_per_epoch"] > 0 and "ratio" in entry
               for entry in costs["methods"].values())
    assert costs["methods"]["simclr"]["ratio"] == 1.0 and \
        costs["methods"]["mochi"]["reference"] == "moco"
    bn = costs["split_batchnorm"]
    assert bn["reshape_copies_channels_last"] is True and len(bn["per_stage"]) == 4
    tests, notebook_run = (phases["cuda_tests_and_notebook"]["results"][key]
                           for key in ("tests", "notebook"))
    # no GPU: skipped
    assert tests["status"] == "done" and tests["skipped"] >= 1 and "failed" not in tests
    assert notebook_run["status"] == "done" and notebook_run["preset"] == "smoke"
    assert len(notebook_run["cell_seconds"]) == 2

    assert "| 2 | SimCLR kNN top-1 after 2 epochs (last epoch, k=200) |" in done.stdout
    assert f"results: {path}" in done.stdout
