"""The run times the README and notebook 00 state come from one source, notebooks/timings.json,
written into them by `tools/notebooks.py timings` (which takes new smoke times from CI's JUnit
reports with --junit)."""
import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from repository import NOTEBOOKS, REPO, load_script

from clcourse.presets import PRESETS

tool = load_script(REPO / "tools" / "notebooks.py")
TIMINGS = json.loads((REPO / "notebooks" / "timings.json").read_text())


def tiny_timings():
    return {
        "smoke": {"machine": "a 2-core CPU", "date": "2026-11-30", "how": "CI",
                  "seconds": {"00_tour": 11, "01_simclr": 175}},
        "colab": {"measured": False, "how": "an estimate",
                  "minutes": {"00_tour": 1, "01_simclr": 13},
                  "alone_minutes": {"01_simclr": 15}, "train_images": {"01_simclr": 10000}},
        "cpu_views_per_second": {"low": 200, "high": 400, "machine": "a 2-core CPU",
                                 "date": "2026-12-06", "how": "x"},
    }


@pytest.mark.parametrize("seconds, text",
                         [(11, "11 s"), (59.6, "1 min"), (60, "1 min"), (175, "2 min 55 s"),
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
    text = ("takes <!-- timings:smoke-range -->old<!-- /timings --> here, "
            "<!-- timings:smoke-range --><!-- /timings -->")
    assert tool.with_timings(text, texts, "README.md") == (
        "takes <!-- timings:smoke-range -->1 to 2 min<!-- /timings --> here, "
        "<!-- timings:smoke-range -->1 to 2 min<!-- /timings -->")
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
    (root / "README.md").write_text("| 01 | <!-- timings:notebook:01_simclr -->?<!-- /timings --> "
                                    "|\n")
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
    assert timings["smoke"]["how"] == "CI's JUnit reports" and \
        timings["smoke"]["machine"].endswith(("CPU", ")"))
    assert "3 min 10 s / ≈ 13 min (15 min alone)" in (tmp_path / "README.md").read_text()
    assert "about 200–400 views/s" \
        in (tmp_path / "notebooks" / "00_setup_and_tour.ipynb").read_text()
    assert tool.update_timings(tmp_path, check=True) == 0
    (tmp_path / "empty").mkdir()
    assert tool.update_timings(tmp_path, junit=tmp_path / "empty") == 1


# ---- the course ----------------------------------------------------------------------------------

def test_the_readme_and_notebook_00_state_what_timings_json_holds(capsys):
    assert tool.update_timings(REPO, check=True) == 0, capsys.readouterr().out


def test_every_notebook_has_its_times_and_its_row_in_the_readme():
    names = {path.stem for path in NOTEBOOKS}
    assert set(TIMINGS["smoke"]["seconds"]) == names == set(TIMINGS["colab"]["minutes"])
    readme = (REPO / "README.md").read_text()
    for name in names:
        assert f"<!-- timings:notebook:{name} -->" in readme, \
            f"README's table has no run time of {name}"
    notebook_00 = (REPO / "notebooks" / "00_setup_and_tour.ipynb").read_text()
    for key in ("smoke-range", "colab-range", "colab-data", "cpu-views"):
        assert f"<!-- timings:{key} -->" in notebook_00


def test_the_colab_training_sizes_are_the_notebooks_budgets():
    """timings.json's colab training images are what the notebooks train on: the colab preset's
    budgets of notebooks 05 and 08, all of CIFAR-10 (the preset) for the others."""
    sizes = TIMINGS["colab"]["train_images"]
    colab = PRESETS["colab"]
    assert sizes["08_robustness_cl_supcon_supervised"] == colab.robustness.train_subset
    assert sizes["05_adversarial_examples_clae"] == colab.clae.train_subset
    assert colab.train_subset in (None, 50_000)


# ---- time notes: each written from its cells' measured time, and none more than
# 2x off it ---------------------

def noted_notebook(note="about 40 s"):
    nb = new_notebook()
    nb.cells = [new_markdown_cell(f"**Time:** smoke <!-- timings:cell -->{note}<!-- /timings --> "
                                  "on 2 cores."),
                new_code_cell("train()"), new_code_cell("evaluate()"), new_markdown_cell("next"),
                new_code_cell("plot()")]
    return nb


@pytest.mark.parametrize("seconds, text",
                         [(3, "about 5 s"), (37, "about 35 s"), (58, "about 1 min"),
                          (100, "about 1 min 30 s"), (140, "about 2 min 30 s")])
def test_a_note_rounds_what_was_measured_and_reads_back(seconds, text):
    assert tool.about(seconds) == text
    assert abs(tool.stated_seconds(text) - seconds) <= 15
    assert tool.stated_seconds("a few seconds") is None


def test_a_note_covers_the_code_cells_up_to_the_next_markdown_cell():
    nb = noted_notebook()
    first, second, later = (nb.cells[i].id for i in (1, 2, 4))
    assert tool.noted_cells(nb) == [(0, [first, second])]
    written = tool.with_cell_notes(nb, {first: 30.0, second: 12.0, later: 500.0})
    assert "<!-- timings:cell -->about 40 s<!-- /timings -->" in written.cells[0].source
    # a note whose cells were not all measured is left as it is
    assert "about 40 s" in tool.with_cell_notes(noted_notebook(), {first: 30.0}).cells[0].source


def test_a_note_more_than_twice_off_its_measurement_fails():
    nb = noted_notebook("about 10 s")
    first, second = nb.cells[1].id, nb.cells[2].id
    assert tool.cell_note_problems(nb, "nb", {first: 10.0, second: 9.0}) == []       # 1.9x: within
    problems = tool.cell_note_problems(nb, "nb", {first: 15.0, second: 6.0})          # 2.1x
    assert len(problems) == 1 and "more than 2x off" in problems[0] and "nb, cell 0" in problems[0]
    slow = noted_notebook("about 30 s")
    assert "more than 2x off" in tool.cell_note_problems(
        slow, "nb", {slow.cells[1].id: 6.0, slow.cells[2].id: 6.0})[0]                # 2.5x under
    assert "no measured time" in tool.cell_note_problems(nb, "nb", {first: 10.0})[0]
    unreadable = noted_notebook("a few seconds")
    assert "not 'about N s'" in tool.cell_note_problems(
        unreadable, "nb", {unreadable.cells[1].id: 1.0, unreadable.cells[2].id: 1.0})[0]


@pytest.mark.parametrize("seconds", [0.2, 1.0, 4.0, 7.0])
def test_a_short_cell_is_noted_about_5_s_and_that_note_passes_the_check(seconds):
    nb = noted_notebook(tool.about(seconds))
    cells = {nb.cells[1].id: seconds / 2, nb.cells[2].id: seconds / 2}
    assert tool.about(seconds) == "about 5 s" and tool.cell_note_problems(nb, "nb", cells) == []
    # what is measured below 5 s counts as 5 s: "about 15 s" is still 3x off
    longer = noted_notebook("about 15 s")
    assert "more than 2x off" in tool.cell_note_problems(longer, "nb", {
        longer.cells[1].id: seconds / 2, longer.cells[2].id: seconds / 2})[0]


JUNIT_CELLS = """\
<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="3">
<testcase classname="notebooks.00_setup_and_tour.ipynb" name="Cell 0" time="30.0" />
<testcase classname="notebooks.00_setup_and_tour.ipynb" name="Cell 1" time="12.0" />
<testcase classname="notebooks.00_setup_and_tour.ipynb" name="Cell 2" time="2.0" />
</testsuite></testsuites>"""


def test_the_command_takes_each_cells_time_and_writes_the_notes(tmp_path, capsys):
    (tmp_path / "notebooks").mkdir()
    timings = tiny_timings()
    timings["smoke"]["seconds"]["00_setup_and_tour"] = 44
    timings["colab"]["minutes"]["00_setup_and_tour"] = 1
    (tmp_path / "notebooks" / "timings.json").write_text(json.dumps(timings))
    (tmp_path / "README.md").write_text("no figures\n")
    nb = noted_notebook("about 5 s")
    nbformat.write(nb, tmp_path / "notebooks" / "00_setup_and_tour.ipynb")
    (tmp_path / "junit").mkdir()
    (tmp_path / "junit" / "notebooks.xml").write_text(JUNIT_CELLS)
    assert tool.junit_cell_seconds(tmp_path / "junit") == \
        {"00_setup_and_tour": {0: 30.0, 1: 12.0, 2: 2.0}}
    # no measurement of the note's cells yet
    assert tool.update_timings(tmp_path, check=True) == 1
    assert "no measured time" in capsys.readouterr().out
    assert tool.update_timings(tmp_path, junit=tmp_path / "junit") == 0
    cells = json.loads((tmp_path / "notebooks" / "timings.json").read_text())["smoke"]["cells"]
    assert cells == {"00_setup_and_tour": {nb.cells[1].id: 30.0, nb.cells[2].id: 12.0,
                                           nb.cells[4].id: 2.0}}
    assert "<!-- timings:cell -->about 40 s<!-- /timings -->" in tool.read(
        tmp_path / "notebooks" / "00_setup_and_tour.ipynb").cells[0].source
    assert tool.update_timings(tmp_path, check=True) == 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_every_time_note_is_within_twice_its_last_measurement(path):
    problems = tool.cell_note_problems(tool.read(path), path.stem,
                                       TIMINGS["smoke"].get("cells", {}).get(path.stem, {}))
    assert not problems, "\n".join(problems)
