"""The course site's parts that need no Sphinx: the link checker, the hook that saves what nbval
executed, the choice of a current execution, the notebook pages, the links to repository files, the
sidebar, and how make site is wired into CI and the Pages workflow. (tests/e2e_site.py opens the
built site in Chromium.)"""
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from repository import NOTEBOOKS, REPO, load_script

site = load_script(REPO / "tools" / "course_site.py")


# ---- the link checker ---------------------------------------------------------------------------

def write_site(root: Path, pages: dict[str, str]) -> Path:
    for name, body in pages.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<html><body>{body}</body></html>")
    return root


def test_the_link_checker_accepts_links_and_anchors_that_lead_somewhere(tmp_path):
    root = write_site(tmp_path, {
        "index.html": '<a href="#top" id="top">top</a><a href="notebooks/01.html#sec-2">section</a>'
                      '<a href="docs/">a folder</a> <a href="https://example.org/x.html#y">away</a>'
                      '<a href="mailto:a@b.c">mail</a> <a href="#">this page</a> '
                      '<a href="notebooks/01.html">a page</a> <img src="https://example.org/b.svg">'
                      '<script src="_static/a.js"></script> <img src="data:image/png;base64,AA==">',
        "notebooks/01.html": '<section id="sec-2"></section><a href="../index.html#top">back</a>'
                             '<a name="old-anchor"></a><a href="#old-anchor">old</a>'
                             '<a href="../my%20page.html">escaped</a>',
        "my page.html": "",
        "docs/index.html": "",
        "_static/a.js": "",
        "_static/template.html": '<a href="{{ pathto(x) }}">a template, not a page</a>',
    })
    assert site.check_links(root) == []


def test_the_link_checker_names_every_broken_link_anchor_and_remote_script(tmp_path):
    root = write_site(tmp_path, {
        "index.html": '<a href="missing.html">gone</a> <a href="#nowhere">no anchor</a> '
                      '<a href="notebooks/01.html#sec-3">no such section</a> '
                      '<script src="https://cdn.example.org/mathjax.js"></script>'
                      '<img src="figures/x.png"> <link rel="stylesheet" href="_static/theme.css">',
        "notebooks/01.html": '<section id="sec-2"></section>',
    })
    assert sorted(site.check_links(root)) == sorted([
        "index.html: link missing.html: no such file",
        "index.html: link #nowhere: index.html has no anchor #nowhere",
        "index.html: link notebooks/01.html#sec-3: notebooks/01.html has no anchor #sec-3",
        "index.html: <script> fetched from another host: https://cdn.example.org/mathjax.js",
        "index.html: <img> figures/x.png: no such file",
        "index.html: <link> _static/theme.css: no such file",
    ])


def test_the_link_checker_refuses_a_folder_without_pages(tmp_path):
    assert site.check_links(tmp_path) == [f"{tmp_path}: no HTML page"]


def test_the_check_links_command_exits_1_on_a_broken_link(tmp_path, capsys):
    write_site(tmp_path, {"index.html": '<a href="gone.html">gone</a>'})
    assert site.main(["check-links", str(tmp_path)]) == 1
    assert "gone.html: no such file" in capsys.readouterr().out


# ---- saving what nbval executed -----------------------------------------------------------------

def nbval(folder: Path, *notebooks: str, executed: Path) -> subprocess.CompletedProcess:
    """pytest --nbval-lax on `notebooks` in `folder` (which has the course's notebooks/conftest.py),
    saving into `executed`."""
    env = dict(os.environ, CLCOURSE_PRESET="smoke", CLCOURSE_EXECUTED=str(executed),
               PYTHONPATH=str(REPO))
    env.pop("MPLBACKEND", None)
    for cap in site.CAP_ENV_VARS:
        env.pop(cap, None)
    command = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
               "-p", "no:cacheprovider", "-q", "--rootdir", str(folder), *notebooks]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.fixture(scope="module")
def nbval_run(tmp_path_factory):
    """Two small notebooks run under nbval with the course's hook: one passes, one has a failing
    cell."""
    folder = tmp_path_factory.mktemp("course")
    (folder / "notebooks").mkdir()
    (folder / "notebooks" / "conftest.py").symlink_to(REPO / "notebooks" / "conftest.py")
    passing = new_notebook(cells=[
        new_markdown_cell("# A notebook\n\n$x^2$"),
        new_code_cell("print('hello')\n6 * 7"),
        new_code_cell("import matplotlib.pyplot as plt\nplt.plot([1, 4, 9]);"),
        new_code_cell("from IPython.display import display, HTML\n"
                      "display(HTML('<b>bold</b>'))\n'a' * 3;"),
        new_code_cell("# NBVAL_SKIP\nraise RuntimeError('not run')"),
        new_code_cell("import ipywidgets\nipywidgets.IntSlider(value=3)"),
        new_code_cell("explorer = ipywidgets.VBox([ipywidgets.HTML('a summary'),\n"
                      "    ipywidgets.Image(format='png', value=b'first')])\nexplorer"),
        new_code_cell("explorer.children[1].value = b'PNG bytes'"),
    ])
    failing = new_notebook(cells=[new_code_cell("print(1)"), new_code_cell("1 / 0"),
                                  new_code_cell("print(3)")])
    nbformat.write(passing, folder / "notebooks" / "passing.ipynb")
    nbformat.write(failing, folder / "notebooks" / "failing.ipynb")
    executed = folder / "executed"
    result = nbval(folder, "notebooks/passing.ipynb", "notebooks/failing.ipynb", executed=executed)
    return folder / "notebooks", executed, result


def test_nbval_saves_each_notebook_it_ran_whole_with_its_outputs_and_record(nbval_run):
    notebooks, executed, result = nbval_run
    assert "1 failed" in result.stdout, result.stdout + result.stderr
    assert "1 executed notebooks saved for the course site" in result.stdout
    source = notebooks / "passing.ipynb"
    nb = site.current_execution(source, "smoke", executed)
    assert nb is not None
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code[0].outputs[0].text == "hello\n"
    assert code[0].outputs[1].data["text/plain"] == "42"
    assert code[0].outputs[1].execution_count == 1
    assert [output.output_type for output in code[1].outputs] == ["display_data"], \
        "the result hidden by ';' is dropped, the figure kept"
    assert "image/png" in code[1].outputs[0].data
    assert [output.data.get("text/html") for output in code[2].outputs] == ["<b>bold</b>"]
    assert code[3].outputs == [] and code[3].execution_count is None, "NBVAL_SKIP: not run"
    assert site.is_widget_output(code[4].outputs[0])
    assert [cell.execution_count for cell in code] == [1, 2, 3, None, 4, 5, 6]
    state = nb.metadata["widgets"][site.WIDGET_STATE_MIME]["state"]
    model = code[5].outputs[0].data[site.notebook_tool.WIDGET_VIEW_MIME]["model_id"]
    assert state[model]["model_name"] == "VBoxModel"
    assert site.widget_images(model, state) == [("image/png", "UE5HIGJ5dGVz")], \
        "the image as the last cell left it (b'PNG bytes')"
    record = site.read_record(nb)
    assert record["preset"] == "smoke" and record["device"] == "cpu" and "CPU" in record["machine"]
    assert record["source_sha256"] == site.source_hash(source)
    assert record["source"] == "passing.ipynb"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", record["date"])
    nbformat.validate(nb)


def test_a_notebook_with_a_failing_cell_is_not_saved(nbval_run):
    _, executed, _ = nbval_run
    assert not (executed / "smoke" / "failing.ipynb").exists()


def test_an_execution_of_an_older_notebook_or_another_preset_is_not_current(nbval_run, tmp_path):
    notebooks, executed, _ = nbval_run
    source = notebooks / "passing.ipynb"
    changed = tmp_path / "passing.ipynb"
    nb = nbformat.read(source, as_version=4)
    nb.cells[0].source += "\n\nOne more sentence."
    nbformat.write(nb, changed)
    assert site.current_execution(changed, "smoke", executed) is None
    assert site.current_execution(source, "colab", executed) is None
    copy = executed / "colab" / "passing.ipynb"
    copy.parent.mkdir()
    copy.write_bytes((executed / "smoke" / "passing.ipynb").read_bytes())
    assert site.current_execution(source, "colab", executed) is None, "a smoke run under colab/"


def test_the_build_without_execution_names_the_notebooks_that_have_none(tmp_path, capsys):
    assert site.executions(NOTEBOOKS[:2], "smoke", run_missing=False, root=tmp_path) is None
    out = capsys.readouterr().out
    assert NOTEBOOKS[0].name in out and NOTEBOOKS[1].name in out


def test_a_colab_build_takes_the_colab_executions_and_its_pages_say_so(tmp_path):
    source = NOTEBOOKS[0]
    record = dict(RECORD, preset="colab", device="cuda", machine="an NVIDIA T4 GPU",
                  source=source.name, source_sha256=site.source_hash(source))
    site.save_executed(nbformat.read(source, as_version=4), record, tmp_path)
    found = site.executions([source], "colab", run_missing=False, root=tmp_path)
    assert site.read_record(found[source]) == record
    assert site.executions([source], "smoke", run_missing=False, root=tmp_path) is None
    note = site.notebook_page(found[source]).cells[1].source
    assert "**colab** preset" in note and "an NVIDIA T4 GPU" in note


def test_another_preset_than_smoke_is_not_run_without_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="'colab'.*needs a CUDA GPU"):
        site.execute(NOTEBOOKS[0], "colab", root=tmp_path)


# ---- the pages ----------------------------------------------------------------------------------

RECORD = {"preset": "smoke", "device": "cpu", "machine": "a 2-core CPU (Example)",
          "how": "nbval (make test-notebooks)", "date": "2026-12-01T10:00:00+00:00",
          "source": "x.ipynb", "source_sha256": "0" * 64, "torch": "2.5"}


def widget(name: str, state: dict, buffers=None) -> dict:
    entry = {"model_name": name, "model_module": "@jupyter-widgets/controls",
             "model_module_version": "2.0.0", "state": {"_model_name": name, **state}}
    return dict(entry, buffers=buffers) if buffers else entry


# An explorer (a VBox of a slider, a summary, its figure and a hidden image) and a progress bar.
WIDGETS = {
    "explorer": widget("VBoxModel", {"children": ["IPY_MODEL_slider", "IPY_MODEL_summary",
                                                  "IPY_MODEL_figure", "IPY_MODEL_hidden"]}),
    "slider": widget("IntSliderModel", {"value": 3}),
    "summary": widget("HTMLModel", {"value": "k = 3"}),
    "figure": widget("ImageModel", {"format": "png", "layout": "IPY_MODEL_shown"},
                     [{"path": ["value"], "encoding": "base64", "data": "ZmlndXJl"}]),
    "shown": widget("LayoutModel", {"display": None}),
    "hidden": widget("ImageModel", {"format": "png", "layout": "IPY_MODEL_none"},
                     [{"path": ["value"], "encoding": "base64", "data": "aGlkZGVu"}]),
    "none": widget("LayoutModel", {"display": "none"}),
    "bar": widget("HBoxModel", {"children": ["IPY_MODEL_summary"]}),
}


def view(model: str):
    mime = site.notebook_tool.WIDGET_VIEW_MIME
    return new_output("display_data", data={"text/plain": "VBox(...)", mime: {"model_id": model}})


def executed_notebook(record=RECORD):
    figure = new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Fig>"})
    nb = new_notebook(cells=[
        new_markdown_cell("[![Open In Colab](badge.svg)](colab)\n\n# 02 · A title"),
        new_markdown_cell("## Check\n\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION"),
        new_code_cell("train()", outputs=[view("bar"), figure], execution_count=1),
        new_code_cell("explorer()", outputs=[view("explorer")], execution_count=2)])
    nb.metadata["widgets"] = {site.WIDGET_STATE_MIME: {"state": WIDGETS, "version_major": 2,
                                                       "version_minor": 0}}
    nb.metadata["clcourse"] = {"execution": record}
    return nb


def test_a_notebook_page_shows_an_explorer_as_its_figure_and_says_what_ran_it():
    page = site.notebook_page(executed_notebook())
    assert page.cells[0].source.startswith("[![Open In Colab]")
    note = page.cells[1].source
    assert note.startswith("```{note}") and "**smoke** preset" in note
    assert "a 2-core CPU (Example), 2026-12-01" in note
    assert "explorer shows here the figure it drew" in note
    assert page.cells[2].source == "## Check\n\nBecause."
    assert [output.data for output in page.cells[3].outputs] == [
        {"image/png": "iVBORw0KGgo=", "text/plain": "<Fig>"}], "the progress bar is gone"
    assert [output.data for output in page.cells[4].outputs] == [
        {"image/png": "ZmlndXJl", "text/plain": "<image>"}], "the explorer's shown figure"
    assert "widgets" not in page.metadata
    nbformat.validate(page)


def test_a_page_without_explorers_says_nothing_about_them_and_names_training_caps():
    nb = executed_notebook(dict(RECORD, caps={"CLCOURSE_MAX_EPOCHS": "1"}))
    nb.cells.pop()
    note = site.notebook_page(nb).cells[1].source
    assert "explorer" not in note and "`CLCOURSE_MAX_EPOCHS=1`" in note


def test_a_widget_whose_state_was_not_kept_leaves_nothing():
    nb = executed_notebook()
    del nb.metadata["widgets"]
    page = site.notebook_page(nb)
    assert page.cells[4].outputs == [] and "explorer" not in page.cells[1].source


def test_a_page_shows_the_method_diagrams_from_the_sites_own_copy():
    nb = executed_notebook()
    raw = site.notebook_tool.read_repository().raw("notebooks/figures/simclr.svg")
    nb.cells[1].source = f"![SimCLR's two views]({raw})\n\n![MoCo](figures/moco_mochi.svg)"
    assert site.notebook_page(nb).cells[2].source == \
        "![SimCLR's two views](figures/simclr.svg)\n\n![MoCo](figures/moco_mochi.svg)"


def test_an_html_anchor_becomes_the_target_sphinx_resolves_links_to():
    nb = executed_notebook()
    nb.cells[1].source = ('<a id="notation"></a>\n## 5. Notation\n\nSee [it](#notation); '
                          '<a id="x"></a> inline stays.')
    assert site.notebook_page(nb).cells[2].source == \
        '(notation)=\n## 5. Notation\n\nSee [it](#notation); <a id="x"></a> inline stays.'


def test_a_notebook_without_its_record_is_refused():
    nb = executed_notebook()
    del nb.metadata["clcourse"]
    with pytest.raises(ValueError, match="without its execution record"):
        site.notebook_page(nb)


class Repository:
    def github(self, path=""):
        return f"https://github.com/o/r/blob/main/{path}"


TRACKED = {"README.md", "LICENSE", "student/01.ipynb", "notebooks/01.ipynb", "docs/install.md",
           "student/", "notebooks/", "docs/"}


@pytest.mark.parametrize("target, page, url", [
    ("student/01.ipynb", "index.md", "https://github.com/o/r/blob/main/student/01.ipynb"),
    ("../LICENSE", "docs/install.md", "https://github.com/o/r/blob/main/LICENSE"),
    ("docs/", "index.md", "https://github.com/o/r/blob/main/docs"),
    ("../student/01.ipynb#c", "notebooks/01.ipynb",
     "https://github.com/o/r/blob/main/student/01.ipynb"),
    ("missing.md", "index.md", None),
    ("../../outside.md", "docs/install.md", None),
    ("https://example.org/LICENSE", "index.md", None),
])
def test_a_link_to_a_repository_file_that_is_not_a_page_goes_to_github(target, page, url):
    assert site.repository_link(target, page, TRACKED, Repository()) == url


def test_the_sources_have_the_readme_as_index_every_notebook_in_order_and_the_guides():
    executed = {path: executed_notebook(dict(RECORD, source=path.name)) for path in NOTEBOOKS}
    files = site.site_sources(executed)
    index = files["index.md"].decode()
    assert index.startswith((REPO / "README.md").read_text())
    toctrees = re.findall(r"```\{toctree\}\n:hidden:\n:caption: ([^\n]+)\n\n(.*?)\n```", index,
                          re.DOTALL)
    assert toctrees[0] == ("Notebooks", "\n".join(f"notebooks/{path.stem}" for path in NOTEBOOKS))
    guides = [entry for _, entries in toctrees[1:] for entry in entries.split("\n")]
    for page in ("package", "docs/install", "docs/teaching", "docs/distributed", "docs/differences",
                 "CONTRIBUTING", "bench/README"):
        assert page in guides
        assert f"{page}.md" in files
    assert "| module | what is in it |" in files["package.md"].decode()
    assert files["package.md"].decode().startswith("# The package\n")
    for path in NOTEBOOKS:
        page = nbformat.reads(files[f"notebooks/{path.name}"].decode(), as_version=4)
        assert page.cells[1].source.startswith("```{note}")
    figures = sorted((REPO / "notebooks" / "figures").glob("*.svg"))
    assert figures and all(f"notebooks/figures/{path.name}" in files for path in figures)


def test_write_sources_rewrites_only_what_changed_and_removes_the_rest(tmp_path):
    assert site.write_sources({"a.md": b"a", "b/c.md": b"c"}, tmp_path) == 2
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "gone.md").write_text("gone")
    assert site.write_sources({"a.md": b"a", "b/c.md": b"changed"}, tmp_path) == 1
    left = sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*"))
    assert left == ["a.md", "b", "b/c.md"]


def test_the_readmes_package_section_is_found_and_a_missing_one_named():
    assert "| module |" in site.section((REPO / "README.md").read_text(), site.PACKAGE_HEADING)
    with pytest.raises(ValueError, match="no '## The package' section"):
        site.section("# Title\n\n## Other\n", "The package")


# ---- wiring -------------------------------------------------------------------------------------

def test_ci_builds_the_site_from_the_notebook_tests_executions_and_checks_it_in_chromium():
    script = (REPO / ".ci" / "run").read_text()
    test = script.index("phase test make test")
    build = script.index("phase site make site SITE_ARGS=--no-execute")
    assert test < build
    assert "make test-site" in script[build:]


def test_the_pages_workflow_publishes_what_make_site_builds():
    workflow = (REPO / ".github" / "workflows" / "pages.yml").read_text()
    runs = re.findall(r"^\s+run: (.+)$", workflow, re.MULTILINE)
    assert runs[-1] == "make site" and "make venv" in runs[0]
    upload = re.search(r"upload-pages-artifact@\S+\s+with:\s+path: (\S+)", workflow)
    assert upload.group(1) == site.SITE_DIR.relative_to(REPO).as_posix()
    assert "branches: [main]" in workflow and "actions/deploy-pages" in workflow


def test_the_site_extra_has_lower_bounds_only_and_the_offline_mathjax():
    lower_bounds = load_script(REPO / "tools" / "lower_bounds.py")
    pyproject = (REPO / "pyproject.toml").read_text()
    extra = lower_bounds.toml_list(pyproject, "site", "project.optional-dependencies")
    names = {re.match(r"[\w.-]+", requirement).group(0) for requirement in extra}
    assert {"sphinx", "myst-nb", "sphinx-book-theme", "sphinx-mathjax-offline"} <= names
    assert all(re.fullmatch(r"[\w.-]+>=[\w.]+", requirement) for requirement in extra)
    conf = (REPO / "tools" / "sphinx" / "conf.py").read_text()
    assert '"sphinx-mathjax-offline"' in conf and "http" not in conf
