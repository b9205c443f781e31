"""Sphinx's configuration of the course site: tools/course_site.py writes the pages it reads
(README.md as the landing page, the executed notebooks, the guides) and runs Sphinx with it
(make site)."""
import importlib.util
import sys
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parent.parent / "course_site.py"
_spec = importlib.util.spec_from_file_location("tools_course_site", _SCRIPT)
course_site = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = course_site
_spec.loader.exec_module(course_site)
_site = course_site.sphinx_config()

project = "clcourse"
html_title = _site["title"]
root_doc = course_site.INDEX
extensions = [
    "myst_nb",                  # Markdown (MyST) and notebooks, rendered with their stored outputs
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",   # MathJax 3 served from _static/mathjax/, not from a CDN
]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 4        # GitHub's anchors (#presets-one-notebook-three-budgets)
nb_execution_mode = "off"       # the notebooks come executed (tools/course_site.py)
nb_ipywidgets_js = {}           # no widget scripts from a CDN: the pages drop widget views
nb_merge_streams = True

html_theme = "sphinx_book_theme"
html_theme_options = {
    "repository_url": _site["repository_url"],
    "repository_branch": _site["branch"],
    "use_repository_button": True,
    "use_download_button": False,
    "show_toc_level": 2,
}
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None


def setup(app):
    course_site.sphinx_setup(app)
