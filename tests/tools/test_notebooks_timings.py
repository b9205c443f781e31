"""The run times the README and notebook 00 state come from one source, notebooks/timings.json, written into them by
`tools/notebooks.py timings` (which takes new smoke times from CI's JUnit reports with --junit)."""
import json

import nbformat
import pytest
from nbformat.v4 import new_markdown_cell, new_notebook

from clcourse.presets import PRESETS
from repository import NOTEBOOKS, REPO, load_script

tool = load_script(REPO / "tools" / "notebooks.py")
TIMINGS = json.loads((REPO / "notebooks" / "timings.json").read_text())


def tiny_timings():
    return {
        "smoke": {"machine": "a 2-core CPU", "date": "2026-11-30", "how": "CI",
                  "seconds": {"00_tour": 11, "01_simclr": 175}},
        "colab": {"measured": False, "how": "an estimate", "minutes": {"00_tour": 1, "01_simclr": 13},
                  "alone_minutes": {"01_simclr": 15}, "train_images": {"01_simclr": 10000}},
        "cpu_views_per_second": {"low": 200, "high": 400, "machine": "a 2-core CPU", "date": "2026-12-06", "how": "x"},
    }


@pytest.mark.parametrize("seconds, text", [(11, "11 s"), (59.6, "1 min"), (60, "1 min"), (175, "2 min 55 s"),
                                           (3600, "60 min")])
def test_durations_read_as_minutes_and_seconds(seconds, text):
    assert tool.duration(seconds) == text


def test_each_figure_is_written_from_the_timings():
    texts = tool.timing_texts(tiny_timings(), smoke_train_images=2560)
    assert texts["notebook:00_tour"] == "11 s / ≈ 1 min"
    assert texts["notebook:01_simclr"] == "2 min 55 s / ≈ 13 min (15 min alone)"
    assert texts["smoke-range"] == "11 s to 2 min 55 s per notebook on a 2-core CPU"
    assert texts["smoke-how"] == "measured on a 2-core CPU, 2026-11-30, by CI"
    assert texts["colab-how"] == "an estimate"
    assert texts["colab-range"] == "≈ 1–13 min per notebook on a T4 (estimated, not yet measured)"
    assert texts["colab-data"] == "all of CIFAR-10 (notebook 01: 10,000 training images)"
    assert texts["cpu-views"] == ("about 200–400 views/s, 13–26 s per epoch of 2,560 images "
                                  "(measured on a 2-core CPU, 2026-12-06)")


def test_spans_are_rewritten_and_an_unknown_one_is_named():
    texts = {"smoke-range": "1 to 2 min"}
    text = "takes <!-- timings:smoke-range -->old<!-- /timings --> here, <!-- timings:smoke-range --><!-- /timings -->"
    assert tool.with_timings(text, texts, "README.md") == ("takes <!-- timings:smoke-range -->1 to 2 min"
                                                           "<!-- /timings --> here, <!-- timings:smoke-range -->"
                                                           "1 to 2 min<!-- /timings -->")
    with pytest.raises(ValueError, match="README.md: unknown timing figure 'smoke-rnage'"):
        tool.with_timings("<!-- timings:smoke-rnage -->x<!-- /timings -->", texts, "README.md")


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="notebooks.00_tour.ipynb" name="Cell 0" time="2.5" />
<testcase classname="notebooks.00_tour.ipynb" name="Cell 1" time="7.9" />
<testcase classname="notebooks.01_simclr.ipynb" name="Cell 0" time="190.2" />
<testcase classname="tests.test_losses" name="test_x" time="1.0" />
</testsuite></testsuites>"""


def test_junit_reports_give_each_notebooks_time(tmp_path):
    (tmp_path / "notebooks.xml").write_text(JUNIT)
    assert tool.junit_seconds(tmp_path) == pytest.approx({"00_tour": 10.4, "01_simclr": 190.2})


def tiny_checkout(root):
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "timings.json").write_text(json.dumps(tiny_timings()))
    (root / "README.md").write_text("| 01 | <!-- timings:notebook:01_simclr -->?<!-- /timings --> |\n")
    nb = new_notebook()
    nb.cells = [new_markdown_cell("Speed: <!-- timings:cpu-views --><!-- /timings -->.")]
    nbformat.write(nb, root / "notebooks" / "00_setup_and_tour.ipynb")


def test_the_command_takes_ci_times_and_writes_every_figure(tmp_path, capsys):
    tiny_checkout(tmp_path)
    (tmp_path / "junit").mkdir()
    (tmp_path / "junit" / "notebooks-00-04.xml").write_text(JUNIT)
    assert tool.update_timings(tmp_path, check=True) == 1
    assert "README.md: its run times differ" in capsys.readouterr().out
    assert tool.update_timings(tmp_path, junit=tmp_path / "junit", how="CI's JUnit reports") == 0
    timings = json.loads((tmp_path / "notebooks" / "timings.json").read_text())
    assert timings["smoke"]["seconds"] == {"00_tour": 10, "01_simclr": 190}
    assert timings["smoke"]["how"] == "CI's JUnit reports" and timings["smoke"]["machine"].endswith(("CPU", ")"))
    assert "3 min 10 s / ≈ 13 min (15 min alone)" in (tmp_path / "README.md").read_text()
    assert "about 200–400 views/s" in (tmp_path / "notebooks" / "00_setup_and_tour.ipynb").read_text()
    assert tool.update_timings(tmp_path, check=True) == 0
    (tmp_path / "empty").mkdir()
    assert tool.update_timings(tmp_path, junit=tmp_path / "empty") == 1


# ---- the course ----------------------------------------------------------------------------------------------

def test_the_readme_and_notebook_00_state_what_timings_json_holds(capsys):
    assert tool.update_timings(REPO, check=True) == 0, capsys.readouterr().out


def test_every_notebook_has_its_times_and_its_row_in_the_readme():
    names = {path.stem for path in NOTEBOOKS}
    assert set(TIMINGS["smoke"]["seconds"]) == names == set(TIMINGS["colab"]["minutes"])
    readme = (REPO / "README.md").read_text()
    for name in names:
        assert f"<!-- timings:notebook:{name} -->" in readme, f"README's table has no run time of {name}"
    notebook_00 = (REPO / "notebooks" / "00_setup_and_tour.ipynb").read_text()
    for key in ("smoke-range", "colab-range", "colab-data", "cpu-views"):
        assert f"<!-- timings:{key} -->" in notebook_00


def test_the_colab_training_sizes_are_the_notebooks_budgets():
    """timings.json's colab training images are what the notebooks train on: the colab preset's budgets of
    notebooks 05 and 08, all of CIFAR-10 (the preset) for the others."""
    sizes = TIMINGS["colab"]["train_images"]
    colab = PRESETS["colab"]
    assert sizes["08_robustness_cl_supcon_supervised"] == colab.robustness.train_subset
    assert sizes["05_adversarial_examples_clae"] == colab.clae.train_subset
    assert colab.train_subset in (None, 50_000)
