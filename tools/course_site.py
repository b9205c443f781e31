#!/usr/bin/env python3
"""The course site: README.md as its landing page, every notebook with its outputs, the package
map and the guides (docs/, CONTRIBUTING.md, bench/README.md, ...), as HTML that Sphinx builds with
MyST-NB and the book theme.

    python tools/course_site.py build [--preset P] [--out DIR] [--no-execute]   # make site
    python tools/course_site.py execute [--preset P] [NOTEBOOK ...]   # save executions only
    python tools/course_site.py check-links DIR       # every internal link and anchor of a site

**Executions.** A notebook's page shows one run of it. An executed notebook is kept in
.cache/executed/<preset>/<name>.ipynb (CLCOURSE_EXECUTED names another folder than .cache/executed)
with a record in its metadata (``clcourse.execution``): the preset, the device and machine, the
date, what ran it, and the SHA-256 of the source notebook it ran. `make test-notebooks` writes
them: notebooks/conftest.py saves each notebook that nbval ran whole without a failure
(`ExecutionRecorder`). `build` takes the execution whose hash is the notebook's own, and first runs
the notebooks that have none (or a stale one) in a kernel of this Python, as nbval does
(``--no-execute`` fails instead, naming them: CI builds from its notebook tests' executions). The
smoke preset runs anywhere; another preset needs a GPU: `make site PRESET=colab` on a GPU machine
runs the notebooks in the colab preset, or takes the executions a run there left in
.cache/executed/colab/.

**Pages.** Each notebook page keeps its Colab badge and gets a note saying which preset and machine
produced its outputs. A widget view needs a running kernel: an explorer's is replaced by the figure
it showed when the notebook ran (its ipywidgets Image, from the widgets' state the execution kept),
and a progress bar's leaves nothing. A link to a file of the repository that is not a page of the
site (a student copy, the licence) goes to that file on GitHub, at the repository and branch of
pyproject.toml's [tool.clcourse]; any other link that leads nowhere fails the build (Sphinx runs
with -W), and `check_links` then checks every internal link and anchor of the HTML.

**Math** is typeset by MathJax 3 served from the site itself (the `sphinx-mathjax-offline` package
ships it) instead of a CDN: the site fetches nothing from another host, so it reads the same
offline, and CI's browser check of a typeset equation tests what the published site does.
"""
from __future__ import annotations

import argparse
import base64
import copy
import datetime
import hashlib
import html.parser
import importlib.util
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
import tokenize
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache"
EXECUTED_ENV = "CLCOURSE_EXECUTED"
SITE_DIR = CACHE / "site"            # the HTML, what GitHub Pages publishes
SOURCE_DIR = CACHE / "site-source"   # the pages as Sphinx reads them (executed notebooks, ...)
DOCTREES = CACHE / "site-doctrees"
CONF_DIR = REPO / "tools" / "sphinx"
DEFAULT_PRESET = "smoke"
EXECUTION_METADATA = "execution"     # under the notebook metadata's "clcourse"
CAP_ENV_VARS = ("CLCOURSE_MAX_EPOCHS", "CLCOURSE_MAX_TRAIN_IMAGES")   # nbgrader's training caps

LANDING = "README.md"                # the landing page: the site's index
INDEX = "index"
PACKAGE_PAGE = "package.md"          # README's "The package" section, a page of the sidebar
PACKAGE_HEADING = "The package"
# The sidebar after the notebooks, in order: (caption, page patterns).
GUIDES = (("Using the course", (PACKAGE_PAGE, "docs/*.md", "data/README.md")),
          ("Developing the course",
           ("CONTRIBUTING.md", "bench/README.md", "CHANGELOG.md", "LICENSE-text.md")))
ASSET_DIRS = ("notebooks/figures",)  # images the notebooks' markdown shows


def _load(name: str):
    """tools/`name`.py as a module (the tools are scripts, not a package)."""
    path = Path(__file__).resolve().parent / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"tools_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


notebook_tool = _load("notebooks")


# ---- executions: one run of a notebook, saved with its record -----------------------------------

def executed_root() -> Path:
    return Path(os.environ.get(EXECUTED_ENV) or CACHE / "executed")


def source_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def describe_device() -> tuple[str, str]:
    """("cuda" or "cpu", the machine in words: "an NVIDIA T4 GPU", "a 2-core CPU (AMD EPYC)")."""
    import torch

    if torch.cuda.is_available():
        return "cuda", f"an {torch.cuda.get_device_name(0)} GPU"
    return "cpu", notebook_tool.this_machine()


def execution_record(source: Path, how: str, sha256: str | None = None) -> dict:
    """What ran `source` (its SHA-256, or `sha256` taken earlier), where and when. The preset is the
    one the notebook's kernel chose: CLCOURSE_PRESET, else this machine's default."""
    import torch

    from clcourse.presets import get_preset

    device, machine = describe_device()
    now = datetime.datetime.now(datetime.timezone.utc)
    record = {"preset": get_preset().name, "device": device, "machine": machine,
              "date": now.isoformat(timespec="seconds"), "how": how,
              "source": Path(source).name, "source_sha256": sha256 or source_hash(source),
              "torch": torch.__version__}
    caps = {name: os.environ[name] for name in CAP_ENV_VARS if os.environ.get(name, "").strip()}
    if caps:
        record["caps"] = caps
    return record


def read_record(nb) -> dict | None:
    return nb.metadata.get(notebook_tool.RECORDING_METADATA, {}).get(EXECUTION_METADATA)


def save_executed(nb, record: dict, root: Path | None = None) -> Path:
    """Write the executed notebook `nb` with its `record` to root/<preset>/<source name>,
    atomically; returns the path. An invalid notebook raises nbformat's ValidationError, and
    nothing is written."""
    nb = copy.deepcopy(nb)
    nb.metadata.setdefault(notebook_tool.RECORDING_METADATA, {})[EXECUTION_METADATA] = record
    nbformat.validate(nb)
    path = (root or executed_root()) / record["preset"] / record["source"]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    nbformat.write(nb, partial)
    partial.replace(path)
    return path


def current_execution(source: Path, preset: str, root: Path | None = None):
    """The saved execution of `source` in `preset` if it ran this very notebook (same SHA-256)."""
    path = (root or executed_root()) / preset / source.name
    if not path.is_file():
        return None
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:   # nbformat raises many kinds; a damaged copy is one to run again
        return None
    record = read_record(nb) or {}
    if record.get("source_sha256") != source_hash(source) or record.get("preset") != preset:
        return None
    return nb


def silenced(source: str) -> bool:
    """Whether IPython hides the result of the cell `source` (its last token is ';'). nbval runs
    cells without history, where IPython looks for it, so nbval gets results Jupyter hides."""
    from IPython.core.displayhook import DisplayHook

    try:
        return DisplayHook.semicolon_at_end_of_expression(source)
    except (SyntaxError, tokenize.TokenError):   # IPython's syntax (!pip) that Python's refuses
        return False


WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
IMAGE_MODEL = "ImageModel"


class WidgetState:
    """The widgets' state that a kernel's comm messages build up (opening and updating each widget
    model), kept as nbclient keeps it in a notebook's metadata ("widgets", @jupyter-widgets'
    schema): what a page needs to show an explorer's view without a kernel."""

    def __init__(self):
        self.models = {}    # model id -> its state
        self.buffers = {}   # model id -> {path: {"path", "encoding", "data"}}: binary values

    def message(self, msg: dict) -> None:
        content = msg.get("content", {})
        data = content.get("data", {})
        if msg.get("msg_type") not in ("comm_open", "comm_msg") or "state" not in data:
            return
        model = content["comm_id"]
        self.models.setdefault(model, {}).update(data["state"])
        for path, buffer in zip(data.get("buffer_paths", []), msg.get("buffers", [])):
            self.buffers.setdefault(model, {})[tuple(path)] = {
                "path": path, "encoding": "base64",
                "data": base64.b64encode(bytes(buffer)).decode("ascii")}

    def metadata(self) -> dict:
        state = {}
        for model, values in self.models.items():
            if "_model_name" not in values:
                continue
            state[model] = {"model_name": values["_model_name"],
                            "model_module": values.get("_model_module"),
                            "model_module_version": values.get("_model_module_version"),
                            "state": values}
            if self.buffers.get(model):
                state[model]["buffers"] = list(self.buffers[model].values())
        return {WIDGET_STATE_MIME: {"state": state, "version_major": 2, "version_minor": 0}}


class ExecutionRecorder:
    """Collects the outputs nbval gets from each notebook cell and, once a notebook's last cell is
    done and every cell passed, saves the executed notebook as Jupyter shows it (a result hidden by
    ';' dropped) with `save_executed`, with the widgets' state its kernel's comm messages built (as
    nbclient keeps it). notebooks/conftest.py lets it watch each notebook's kernel messages
    (`watch`) and feeds it pytest's reports (`report`). A notebook with a failed cell, or not run
    whole (-x, -k), is not saved."""

    def __init__(self, root: Path | None = None):
        self.root = root
        self.runs = {}       # path -> {"nb", "sha256", "outputs": {cell: outputs}, "failed", ...}
        self.saved = []      # the paths written
        self.problems = []   # the notebooks that could not be saved, and why

    def _run(self, item) -> dict | None:
        """The run of `item`'s notebook; None when `item` is not a notebook cell of nbval's."""
        nb = getattr(getattr(item, "parent", None), "nb", None)
        if nb is None or not hasattr(item, "cell_num"):
            return None
        path = Path(str(item.parent.path))
        if path not in self.runs:
            self.runs[path] = {"nb": nb, "sha256": source_hash(path), "outputs": {},
                               "failed": False, "widgets": WidgetState()}
        return self.runs[path]

    def watch(self, item) -> None:
        """Before a cell runs: see every kernel message nbval reads for its notebook (nbval skips
        the comm messages that create and update widgets, whose state makes an explorer's view)."""
        run = self._run(item)
        notebook = getattr(item, "parent", None)
        if run is None or getattr(notebook, "_widget_state", None) is run["widgets"]:
            return
        read = notebook.get_kernel_message

        def get_kernel_message(*args, **kwargs):
            msg = read(*args, **kwargs)
            run["widgets"].message(msg)
            return msg

        notebook.get_kernel_message = get_kernel_message
        notebook._widget_state = run["widgets"]

    def report(self, item, report) -> None:
        run = self._run(item)
        if run is None:
            return
        nb, path = run["nb"], Path(str(item.parent.path))
        by_design = report.skipped and item.options.get("skip")   # NBVAL_SKIP
        if report.failed or (report.skipped and not by_design):
            run["failed"] = True
        if report.when == "call" and report.passed:
            run["outputs"][item.cell_num] = list(item.test_outputs or [])
        elif report.when == "call" and by_design:
            run["outputs"][item.cell_num] = None
        code_cells = sum(cell.cell_type == "code" for cell in nb.cells)
        if report.when == "teardown" and item.cell_num == code_cells - 1:
            self.finish(path)

    def finish(self, path: Path) -> None:
        run = self.runs.pop(path)
        nb = copy.deepcopy(run["nb"])
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        if run["failed"] or len(run["outputs"]) != len(code):
            return
        count = 0
        for number, cell in enumerate(code):
            outputs = run["outputs"][number]
            if outputs is None:   # not run
                cell.outputs, cell.execution_count = [], None
                continue
            count += 1
            cell.execution_count = count
            hidden = silenced(cell.source)
            cell.outputs = [nbformat.from_dict(dict(output)) for output in outputs
                            if not (hidden and output["output_type"] == "execute_result")]
            for output in cell.outputs:
                if output.output_type == "execute_result":
                    output.execution_count = count
        if run["widgets"].models:
            nb.metadata["widgets"] = run["widgets"].metadata()
        try:
            record = execution_record(path, "nbval (make test-notebooks)", run["sha256"])
            self.saved.append(save_executed(nb, record, self.root))
        except Exception as error:   # make site runs it again; the notebook's tests passed
            self.problems.append(f"{path.name}: not saved ({type(error).__name__}: {error})")

    def summary(self) -> list[str]:
        lines = list(self.problems)
        if self.saved:
            folders = ", ".join(sorted({str(path.parent) for path in self.saved}))
            lines.append(f"{len(self.saved)} executed notebooks saved for the course site into "
                         f"{folders}")
        return lines


def execute(source: Path, preset: str, cell_timeout: int = 1800, root: Path | None = None) -> Path:
    """Run `source` top to bottom in `preset`, in a kernel of this Python started in the notebook's
    folder (as `pytest --nbval-current-env` does), and save the execution. A failing cell raises
    nbclient's CellExecutionError, and nothing is saved. Another preset than smoke needs a GPU."""
    import torch
    from nbclient import NotebookClient

    if preset != DEFAULT_PRESET and not torch.cuda.is_available():
        raise ValueError(f"preset {preset!r}: running the notebooks in it needs a CUDA GPU, and "
                         "this machine has none (run them on a GPU machine, then build with the "
                         f"executions it leaves in {executed_root() / preset})")
    os.environ["CLCOURSE_PRESET"] = preset
    os.environ.pop("MPLBACKEND", None)   # the kernel's inline backend, as students have it
    os.environ.setdefault("NUMBA_CACHE_DIR", str(CACHE / "numba"))
    nb = nbformat.read(source, as_version=4)
    sha256 = source_hash(source)
    client = NotebookClient(nb, km=notebook_tool._current_python_kernel_manager(),
                            timeout=cell_timeout,
                            resources={"metadata": {"path": str(source.parent)}})
    client.execute(cleanup_kc=True)   # and shut the kernel down: it was started by our manager
    record = execution_record(source, "tools/course_site.py execute", sha256)
    return save_executed(nb, record, root)


def executions(notebooks: list[Path], preset: str, run_missing: bool,
               root: Path | None = None) -> dict | None:
    """Each notebook's current execution in `preset` (path -> executed notebook), running those
    that have none when `run_missing`. None, after naming them, when some have none and may not be
    run, or when one fails."""
    found = {path: current_execution(path, preset, root) for path in notebooks}
    missing = [path for path, nb in found.items() if nb is None]
    if missing and not run_missing:
        folder = (root or executed_root()) / preset
        print(f"no current execution in the {preset} preset (in {folder}) of: "
              f"{', '.join(path.name for path in missing)}. make test-notebooks saves them; "
              "without --no-execute, make site runs them.")
        return None
    for number, path in enumerate(missing, 1):
        print(f"executing {path.name} in the {preset} preset ({number}/{len(missing)}) ...",
              flush=True)
        started = time.monotonic()
        try:
            execute(path, preset, root=root)
        except Exception as error:   # a failing cell, a kernel that died, no GPU
            print(f"{path.name}: {type(error).__name__}: {error}")
            return None
        print(f"  {path.name}: {time.monotonic() - started:.0f} s", flush=True)
        found[path] = current_execution(path, preset, root)
    return found


# ---- the pages ----------------------------------------------------------------------------------

def is_widget_output(output) -> bool:
    return notebook_tool.WIDGET_VIEW_MIME in output.get("data", {})


def widget_images(model: str, state: dict) -> list[tuple[str, str]]:
    """The images that the widget `model` shows, itself or among its children, in the widgets'
    `state` (a notebook's metadata, as `WidgetState.metadata` writes it): (MIME type, base64 data)
    each, a hidden one (layout display: none) left out."""
    entry = state.get(model)
    if entry is None:
        return []
    values = entry["state"]
    layout = state.get(str(values.get("layout", "")).removeprefix("IPY_MODEL_"), {})
    if layout.get("state", {}).get("display") == "none":
        return []
    if entry["model_name"] == IMAGE_MODEL:
        data = next((buffer["data"] for buffer in entry.get("buffers", [])
                     if buffer["path"] == ["value"]), None)
        return [(f"image/{values.get('format', 'png')}", data)] if data else []
    return [image for child in values.get("children", [])
            for image in widget_images(str(child).removeprefix("IPY_MODEL_"), state)]


def static_outputs(output, state: dict) -> list:
    """What a page shows for a widget view `output`: the images the widget showed when the notebook
    ran (an explorer's figure), or nothing (a progress bar, controls)."""
    model = output["data"][notebook_tool.WIDGET_VIEW_MIME].get("model_id", "")
    return [nbformat.v4.new_output("display_data", data={mime: data, "text/plain": "<image>"})
            for mime, data in widget_images(model, state)]


def describe_record(record: dict) -> str:
    text = (f"The outputs on this page are one run of the notebook in the **{record['preset']}** "
            "preset (see [Presets](../README.md#presets-one-notebook-three-budgets)), on "
            f"{record['machine']}, {record['date'][:10]}, by {record['how']}.")
    if record.get("caps"):
        caps = ", ".join(f"`{name}={value}`" for name, value in sorted(record["caps"].items()))
        text += f" Its training was capped ({caps})."
    return text


HTML_ANCHOR = re.compile(r'^<a id="([\w-]+)"></a>$', re.MULTILINE)


def notebook_page(nb):
    """The page of an executed notebook: each widget view (it needs a running kernel) replaced by
    the images it showed when the notebook ran (an explorer's figure; a progress bar shows none),
    the method diagrams shown from the site's own copy of notebooks/figures/ (not from GitHub, where
    the notebooks show them from), the markers of written answers dropped, and after the first cell
    (the Colab badge, the title) a note saying which preset and machine produced the outputs."""
    nb = copy.deepcopy(nb)
    record = read_record(nb)
    if record is None:
        raise ValueError("an executed notebook without its execution record (metadata "
                         f"{notebook_tool.RECORDING_METADATA}.{EXECUTION_METADATA})")
    state = nb.metadata.pop("widgets", {}).get(WIDGET_STATE_MIME, {}).get("state", {})
    markers = (notebook_tool.SOLUTION_BEGIN, notebook_tool.SOLUTION_END)
    explorers = False
    for cell in nb.cells:
        if cell.cell_type == "markdown":   # a written answer's markers would read as headings
            lines = cell.source.split("\n")
            cell.source = "\n".join(line for line in lines if line.strip() not in markers)
            cell.source = notebook_tool.FIGURE_LINK.sub(lambda found: f"](figures/{found[1]})",
                                                        cell.source)
            # An HTML anchor (<a id="notation"></a>, which Jupyter and GitHub follow) as the MyST
            # target that Sphinx resolves links to.
            cell.source = HTML_ANCHOR.sub(r"(\1)=", cell.source)
        elif cell.cell_type == "code":
            outputs = []
            for output in cell.outputs:
                static = static_outputs(output, state) if is_widget_output(output) else [output]
                explorers = explorers or (is_widget_output(output) and bool(static))
                outputs += static
            cell.outputs = outputs
    note = describe_record(record)
    if explorers:
        note += (" An interactive explorer shows here the figure it drew when the notebook ran: "
                 "open the notebook in Colab (the badge above) or JupyterLab to use its controls.")
    first = next((n for n, cell in enumerate(nb.cells) if cell.cell_type == "markdown"), -1)
    nb.cells.insert(first + 1, nbformat.v4.new_markdown_cell(f"```{{note}}\n{note}\n```"))
    for cell in nb.cells:
        cell.pop("id", None)   # the new cell has none, and nbformat 4.5 wants all or none
    nb.nbformat_minor = 4
    return nb


def section(markdown: str, heading: str) -> str:
    """The body of `markdown`'s "## heading" section, up to the next heading of its level."""
    found = re.search(rf"^## {re.escape(heading)}[ \t]*\n(.*?)(?=^#{{1,2}} |\Z)", markdown,
                      re.MULTILINE | re.DOTALL)
    if found is None:
        raise ValueError(f"{LANDING} has no '## {heading}' section")
    return found.group(1).strip() + "\n"


def _title(markdown: str, where: str) -> str:
    found = re.search(r"^# (.+)$", markdown, re.MULTILINE)
    if found is None:
        raise ValueError(f"{where}: no '# title' line")
    return found.group(1).strip()


def guide_pages() -> list[tuple[str, list[str]]]:
    """(caption, page paths) of the sidebar after the notebooks; a pattern that matches nothing is
    an error."""
    groups = []
    for caption, patterns in GUIDES:
        pages = []
        for pattern in patterns:
            found = [pattern] if pattern == PACKAGE_PAGE else sorted(
                path.relative_to(REPO).as_posix() for path in REPO.glob(pattern))
            if not found:
                raise ValueError(f"no page {pattern!r} in the repository "
                                 f"(GUIDES in {Path(__file__).name})")
            pages += found
        groups.append((caption, pages))
    return groups


def toctree(caption: str, pages: list[str]) -> str:
    entries = "\n".join(posixpath.splitext(page)[0] for page in pages)
    return f"\n\n```{{toctree}}\n:hidden:\n:caption: {caption}\n\n{entries}\n```\n"


def site_sources(executed: dict) -> dict[str, bytes]:
    """Every file Sphinx reads (path in the source folder -> content): the landing page with the
    sidebar's toctrees, the package map, the guides, the notebook pages and their images."""
    readme = (REPO / LANDING).read_text()
    notebooks = sorted(executed)
    files = {}
    landing = readme + toctree("Notebooks",
                               [path.relative_to(REPO).as_posix() for path in notebooks])
    for caption, pages in guide_pages():
        landing += toctree(caption, pages)
        for page in pages:
            if page != PACKAGE_PAGE:
                files[page] = (REPO / page).read_bytes()
    files[f"{INDEX}.md"] = landing.encode()
    files[PACKAGE_PAGE] = f"# {PACKAGE_HEADING}\n\n{section(readme, PACKAGE_HEADING)}".encode()
    for path in notebooks:
        page = nbformat.writes(notebook_page(executed[path]))
        files[path.relative_to(REPO).as_posix()] = page.encode()
    for folder in ASSET_DIRS:
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file():
                files[path.relative_to(REPO).as_posix()] = path.read_bytes()
    return files


def write_sources(files: dict[str, bytes], folder: Path) -> int:
    """Make `folder` hold exactly `files`, rewriting only those that changed (Sphinx then reads only
    their pages again); returns how many were written."""
    written = 0
    for name, data in files.items():
        path = folder / name
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += 1
    if folder.is_dir():
        for path in sorted(folder.rglob("*"), reverse=True):
            if path.is_file() and path.relative_to(folder).as_posix() not in files:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return written


# ---- Sphinx: links to repository files that are not pages ---------------------------------------

def tracked_paths(root: Path = REPO) -> set[str]:
    """The repository's files, and its folders with a trailing '/' (from git's index; every file
    under `root` where git cannot tell)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True,
                                check=True).stdout
        files = [name for name in listed.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = [path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()]
    paths = set(files)
    for name in files:
        parent = posixpath.dirname(name)
        while parent:
            paths.add(parent + "/")
            parent = posixpath.dirname(parent)
    return paths


def repository_link(target: str, page: str, tracked: set[str], repository) -> str | None:
    """The GitHub address of the repository file or folder that the link `target`, written in
    `page` (a path in the site's sources, as in the repository), points at; None when it points at
    none. (GitHub shows a folder at a file's address too.)"""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path or parts.path.startswith("/"):
        return None
    name = posixpath.normpath(posixpath.join(posixpath.dirname(page), unquote(parts.path)))
    if name in tracked or name + "/" in tracked:
        return repository.github(name)
    return None


def sphinx_setup(app) -> None:
    """What conf.py's setup() adds: MyST links to repository files that are not pages go to GitHub
    (to README.md: the index page), and Python code is highlighted as IPython's (the Colab cell of
    the notebooks and README runs `!pip`)."""
    from docutils import nodes
    from IPython.lib.lexers import IPython3Lexer
    from sphinx import addnodes
    from sphinx.transforms.post_transforms import SphinxPostTransform

    app.add_lexer("python", IPython3Lexer)
    repository = notebook_tool.read_repository()
    tracked = tracked_paths()

    class RepositoryLinks(SphinxPostTransform):
        default_priority = 5   # before MyST resolves its references, warning about the others

        def run(self, **kwargs):
            for node in list(self.document.findall(addnodes.pending_xref)):
                if node.get("reftype") != "myst" or node.get("refdomain") == "doc":
                    continue
                refdoc = node.get("refdoc", self.env.docname)
                page = Path(self.env.doc2path(refdoc, False)).as_posix()
                url = repository_link(node["reftarget"], page, tracked, repository)
                if url is None:
                    continue
                if url == repository.github(LANDING):
                    fragment = urlsplit(node["reftarget"]).fragment
                    url = self.app.builder.get_relative_uri(refdoc, INDEX)
                    url += f"#{fragment}" if fragment else ""
                reference = nodes.reference("", "", internal=False, refuri=url)
                reference += node.children
                node.replace_self(reference)

    app.add_post_transform(RepositoryLinks)


def sphinx_config() -> dict:
    """What conf.py takes from the repository: the landing page's title, the repository."""
    repository = notebook_tool.read_repository()
    return {"title": _title((REPO / LANDING).read_text(), LANDING),
            "repository_url": repository.github(), "branch": repository.branch}


# ---- the link checker ---------------------------------------------------------------------------

LOADED_LINKS = {"stylesheet", "preload", "modulepreload", "icon"}   # <link rel> a browser fetches
STATIC_FOLDERS = ("_static", "_images", "_sources")   # assets (the theme's templates), not pages


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids, self.links, self.resources = set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag == "a" and attrs.get("href") is not None:
            self.links.append(attrs["href"])
        elif tag in ("img", "script", "source", "iframe") and attrs.get("src"):
            self.resources.append((tag, attrs["src"]))
        elif tag == "link" and attrs.get("href") and LOADED_LINKS & set(
                (attrs.get("rel") or "").split()):
            self.resources.append((tag, attrs["href"]))


def check_links(site: Path) -> list[str]:
    """Every problem with the links of the HTML pages under `site`, one line each: an internal link
    (relative, or '#anchor') to a file that is not there or to an anchor its page does not have; a
    resource of the site that is not there; a script, style sheet or other resource (images aside:
    badges) fetched from another host, as the site must read offline. Links to other hosts (GitHub,
    Colab, papers) are not followed."""
    site = Path(site)
    pages = {path: _Page() for path in sorted(site.rglob("*.html"))
             if path.relative_to(site).parts[0] not in STATIC_FOLDERS}
    if not pages:
        return [f"{site}: no HTML page"]
    for path, page in pages.items():
        page.feed(path.read_text(encoding="utf-8", errors="replace"))
    ids = {path.resolve(): page.ids for path, page in pages.items()}
    problems = []
    for path, page in pages.items():
        where = path.relative_to(site).as_posix()
        for tag, url in page.resources:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") or url.startswith("//"):
                if tag != "img":
                    problems.append(f"{where}: <{tag}> fetched from another host: {url}")
            elif not parts.scheme and not (path.parent / unquote(parts.path)).is_file():
                problems.append(f"{where}: <{tag}> {url}: no such file")   # (data: URLs aside)
        for url in page.links:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//"):
                continue   # another host, mailto:
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path.resolve()
            if parts.path and target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                problems.append(f"{where}: link {url}: no such file")
            elif parts.fragment and target.suffix == ".html" and \
                    unquote(parts.fragment) not in ids.get(target, set()):
                problems.append(f"{where}: link {url}: "
                                f"{target.relative_to(site.resolve()).as_posix()} has no anchor "
                                f"#{unquote(parts.fragment)}")
    return problems


# ---- build --------------------------------------------------------------------------------------

def build(preset: str = DEFAULT_PRESET, out: Path = SITE_DIR, run_missing: bool = True) -> int:
    started = time.monotonic()
    executed = executions(notebook_tool.default_notebooks(), preset, run_missing)
    if executed is None:
        return 1
    source = SOURCE_DIR.with_name(f"{SOURCE_DIR.name}-{preset}")
    written = write_sources(site_sources(executed), source)
    print(f"{len(executed)} notebooks from {executed_root() / preset}; {written} source files "
          f"changed in {source}", flush=True)
    out = Path(out)
    if out.exists():
        if not (out / ".buildinfo").is_file():
            print(f"{out} exists and is not a site that Sphinx built: choose another --out")
            return 1
        shutil.rmtree(out)   # no page of a notebook or guide removed since stays behind
    doctrees = DOCTREES.with_name(f"{DOCTREES.name}-{preset}")
    command = [sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-q",
               "-c", str(CONF_DIR), "-d", str(doctrees), str(source), str(out)]
    if subprocess.run(command, check=False).returncode != 0:
        print("the site did not build (the warnings above are errors)")
        return 1
    problems = check_links(out)
    print("\n".join(problems + [f"{len(problems)} broken links in {out}"]) if problems else
          f"the site: {out}/index.html ({sum(1 for _ in out.rglob('*.html'))} pages, every "
          f"internal link and anchor checked), {time.monotonic() - started:.0f} s")
    return int(bool(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("build", help="build the site (make site)")
    command.add_argument("--preset", default=DEFAULT_PRESET,
                         help=f"whose executions (default {DEFAULT_PRESET})")
    command.add_argument("--out", type=Path, default=SITE_DIR,
                         help=f"default {SITE_DIR.relative_to(REPO)}/")
    command.add_argument("--no-execute", action="store_true",
                         help="fail, naming them, when notebooks have no current execution")
    command = commands.add_parser("execute", help="run notebooks, save their executions")
    command.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    command.add_argument("--preset", default=DEFAULT_PRESET)
    command.add_argument("--cell-timeout", type=int, default=1800,
                         help="seconds per cell (default 1800)")
    command = commands.add_parser("check-links", help="check a built site's internal links")
    command.add_argument("site", type=Path)
    args = parser.parse_args(argv)

    if args.command == "check-links":
        problems = check_links(args.site)
        print("\n".join(problems) or f"{args.site}: every internal link and anchor leads somewhere")
        return int(bool(problems))
    if args.command == "execute":
        for path in args.notebooks or notebook_tool.default_notebooks():
            print(f"executing {path} in the {args.preset} preset ...", flush=True)
            print(f"saved {execute(path.resolve(), args.preset, args.cell_timeout)}")
        return 0
    return build(args.preset, args.out, not args.no_execute)


if __name__ == "__main__":
    sys.exit(main())
