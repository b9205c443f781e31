"""bench/report.py: the suite's figures as markdown, and bench/README.md's Performance figures
written from the newest results files (fixed rows, "not measured" where nothing was measured, the
GPU and date beside each)."""
import copy
import json

import pytest
from repository import REPO, load_script

report = load_script(REPO / "bench" / "report.py")
REGISTERED = ["simclr", "moco", "mochi", "hcl"]


def gpu_run(started="2026-12-01T10:00:00+00:00"):
    """A results file as bench/suite.py writes it on a GPU (the numbers are made up)."""
    return {
        "schema": 1, "date": started[:10], "started": started, "smoke": False, "commit": "abc1234",
        "command": "python bench/suite.py", "total_seconds": 560.0,
        "load_average": {"start": 0.5, "end": 1.0},
        "device": {"type": "cuda", "name": "NVIDIA H200", "torch": "2.11.0", "cpus": 16},
        "phases": {
            "throughput": {"status": "done", "peak_memory_gb": 12.34, "results": {
                "sizes": {"workers": 16},
                "eager": {"model_step": 50_000.0, "end_to_end": 46_000.0, "pil": 20_000.0},
                "compile": {"model_step": 80_000.0, "end_to_end": 76_000.0, "pil": 20_000.0}}},
            "simclr_200": {"status": "done", "peak_memory_gb": 6.0, "results": {
                "budget": {"epochs": 200}, "epochs_done": 200, "knn": [[20, 0.612], [200, 0.851]],
                "final_knn": 0.851, "wall_seconds": 330.0, "median_epoch_seconds": 1.5}},
            "method_costs": {"status": "done", "peak_memory_gb": 9.0, "results": {
                "split_batchnorm": {"batch": 512, "reshape_copies_channels_last": True,
                                    "resnet18_ms": {
                    "batchnorm": 4.0, "split_channels_last": 9.5, "split_contiguous": 5.0}},
                "methods": {
                    "simclr": {"reference": "simclr", "target": None, "status": "done",
                               "seconds_per_epoch": 2.0, "ratio": 1.0},
                    "moco": {"reference": "simclr", "target": None, "status": "done",
                             "seconds_per_epoch": 1.5, "ratio": 0.75},
                    "mochi": {"reference": "moco", "target": 1.1, "status": "done",
                              "seconds_per_epoch": 1.575, "ratio": 1.05},
                    "hcl": {"reference": "simclr", "target": None,
                            "status": "not measured (budget)"},
                    "retired": {"reference": "simclr", "target": None, "status": "error",
                                "error": "ValueError: bad | thing"}}}},
            "cuda_tests_and_notebook": {"status": "done", "peak_memory_gb": 3.2, "results": {
                "tests": {"status": "done", "passed": 5, "seconds": 14.2},
                "notebook": {"status": "done", "seconds": 31.0,
                             "path": "notebooks/00_setup_and_tour.ipynb",
                             "preset": "colab"}}}}}


def values(results, registered=REGISTERED):
    return {row.figure: row.value for row in report.rows(results, registered)}


def test_without_results_every_figure_is_listed_as_not_measured():
    rows = report.rows(None, REGISTERED)
    assert all(row.value is None for row in rows)
    # the same rows, less the unregistered one
    assert len(rows) == len(report.rows(gpu_run(), REGISTERED)) - 1
    assert [row.figure.split(":")[0] for row in rows if row.phase == "3"][:4] == REGISTERED
    table = report.markdown_table(None, REGISTERED)
    body = table.splitlines()[2:]
    assert len(body) == len(rows) and all("| not measured |  |" in line for line in body)
    assert "| 3 | mochi: time per epoch / moco's | not measured |  | ≤ 1.10x |" in table


def test_measured_figures_carry_the_gpu_and_the_date():
    results = gpu_run()
    table = report.markdown_table(results, REGISTERED)
    on = "NVIDIA H200, 2026-12-01"
    assert f"| 1 | clcourse end to end, torch.compile | 76,000 images/s, 1.32 s/epoch | {on} |  |" \
        in table
    assert "| 1 | end to end / model step alone, torch.compile | 0.95 | NVIDIA H200, 2026-12-01 " \
        "| ≥ 0.90 |" in table
    assert "| 1 | end to end / PIL pipeline, eager | 2.3x | NVIDIA H200, 2026-12-01 | ≥ 3x |" \
        in table
    assert "torchvision PIL + DataLoader (16 workers), eager" in table
    figures = values(results)
    assert figures["SimCLR kNN top-1 after 200 epochs (last epoch, k=200)"] == "85.1%"
    assert figures["wall time of 200 epochs, kNN evaluations included"] == \
        "5.5 min (1.50 s/epoch, median)"
    assert figures["kNN top-1 along the way (epoch: %)"] == "20: 61.2, 200: 85.1"
    assert figures["mochi: time per epoch / moco's"] == "1.05x (1.57 s/epoch)"
    # trimmed by the budget
    assert figures["hcl: time per epoch / simclr's"] is None
    assert figures["retired: time per epoch / simclr's"] == "error: ValueError: bad | thing"
    # a | in a cell is escaped
    assert "error: ValueError: bad \\| thing" in table
    assert figures["`pytest -m cuda`"] == "5 passed in 14 s"
    assert figures["notebook 00_setup_and_tour, colab preset, start to end"] == "31 s"
    assert figures["peak GPU memory, phase 1 throughput"] == "12.3 GB"
    for line in table.splitlines()[2:]:
        cells = line.split(" | ")
        # every number has its "on"
        assert (cells[2] == "not measured") == (cells[3] == "")


def test_a_phase_stopped_at_its_cap_shows_how_far_it_got():
    results = gpu_run()
    simclr = results["phases"]["simclr_200"]
    simclr["status"] = "stopped at cap"
    simclr["results"].update(epochs_done=150, knn=[[20, 0.612], [140, 0.801]])
    del simclr["results"]["final_knn"], simclr["results"]["wall_seconds"]
    results["phases"]["throughput"] = {"status": "skipped", "results": {}}
    figures = values(results)
    assert figures["SimCLR kNN top-1 after 200 epochs (last epoch, k=200)"] == \
        "stopped after epoch 150: 80.1% then"
    assert figures["wall time of 200 epochs, kNN evaluations included"] is None
    assert figures["model step alone, eager"] is None and \
        figures["peak GPU memory, phase 1 throughput"] is None
    assert figures["peak GPU memory, phase 2 SimCLR 200 epochs"] == "6.0 GB"


def test_the_newest_gpu_run_and_the_newest_smoke_run_are_chosen(tmp_path):
    older, newer = gpu_run("2026-12-01T10:00:00+00:00"), gpu_run("2026-12-02T09:00:00+00:00")
    cpu = copy.deepcopy(newer) | {"started": "2026-12-03T09:00:00+00:00"}
    cpu["device"] = {"type": "cpu", "name": "CPU", "torch": "2.11.0", "threads": 2}
    smoke = cpu | {"smoke": True, "started": "2026-11-30T09:00:00+00:00"}
    for name, run in {"b.json": older, "a.json": newer, "c.json": cpu, "d.json": smoke}.items():
        (tmp_path / name).write_text(json.dumps(run))
    # a CPU run without --smoke: never
    assert report.newest(tmp_path, smoke=False)["started"] == newer["started"]
    assert report.newest(tmp_path, smoke=True)["started"] == smoke["started"]
    assert report.newest(tmp_path / "empty", smoke=False) is None


def test_the_block_between_the_markers_is_replaced_and_nothing_else(tmp_path):
    text = (f"# Title\n\n## Performance\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\n"
            "### Running\n\nmore\n")
    block = report.performance_block(gpu_run(), None, REGISTERED)
    updated = report.replace_block(text, block)
    assert updated.startswith("# Title\n\n## Performance\n\nintro\n\n" + report.BEGIN)
    assert updated.endswith(report.END + "\n\n### Running\n\nmore\n") and "old" not in updated
    assert ("**Measured on a GPU** (NVIDIA H200 (torch 2.11.0), 2026-12-01T10:00:00+00:00, commit "
            "abc1234, `python bench/suite.py`, 9.3 min, load average 0.5 at the start, 1.0 at the "
            "end):") in block
    assert "not yet" in report.performance_block(None, None, REGISTERED)
    with pytest.raises(ValueError, match="markers"):
        report.replace_block("no markers here", block)
    readme = tmp_path / "README.md"
    readme.write_text(text)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run.json").write_text(json.dumps(gpu_run()))
    arguments = ["--results-dir", str(tmp_path / "results"), "--readme", str(readme)]
    assert report.main([*arguments, "--check"]) == 1 and readme.read_text() == text
    assert report.main(arguments) == 0 and report.main([*arguments, "--check"]) == 0
    assert "NVIDIA H200, 2026-12-01" in readme.read_text()


def test_the_readme_shows_the_newest_results():
    assert report.main(["--check"]) == 0, "run python bench/report.py and commit bench/README.md"
