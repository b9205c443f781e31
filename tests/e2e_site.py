"""The course site as a reader sees it (make test-site, after make site; CI runs it where Chromium
is installable).

The built site (.cache/site/, or $SITE_DIR) is served on a local port, and two pages are opened in
headless Chromium, started as the browser test starts it (tests/chromium.py): notebook 01 (SimCLR)
and notebook 02 (the explorer of hardest negatives). On each, the equations must be typeset by the
site's own MathJax (its fonts loaded from the site, no MathJax error), the output figures (and
notebook 01's method diagram) must be loaded images, the sidebar must list every notebook, the page
must keep its Colab badge and say which preset and machine produced its outputs, and every
resource it loads from the site must answer. Notebook 02's explorer, an ipywidgets view, must leave
no widget behind: the figure it drew is there instead, as is the static figure before it. A
screenshot of each page goes to $BROWSER_ARTEFACTS (default .cache/browser/).

Not collected by `pytest tests/` (it needs Chromium and a built site): run it by path."""
import functools
import http.server
import os
import threading
from pathlib import Path

import pytest
from chromium import needs_chromium, screenshot, session, wait_for
from repository import NOTEBOOKS, REPO, load_script
from selenium.webdriver.common.by import By

pytestmark = needs_chromium
course_site = load_script(REPO / "tools" / "course_site.py")
SITE = Path(os.environ.get("SITE_DIR", course_site.SITE_DIR))
SIMCLR = "notebooks/01_simclr_from_scratch.html"
EXPLORER = "notebooks/02_embedding_geometry_and_hard_negatives.html"
EXPLORER_CELLS = ("static_neighbourhood_explorer(state)", "\nneighbourhood_explorer(state)")

# The resources the page loaded from the site that failed (Chromium's Resource Timing has
# their status); not the favicon.ico the browser asks the server's root for on its own.
FAILED_RESOURCES = """
return performance.getEntriesByType('resource')
    .filter(entry => entry.name.startsWith(location.origin) && entry.responseStatus >= 400)
    .filter(entry => entry.name !== location.origin + '/favicon.ico')
    .map(entry => entry.responseStatus + ' ' + entry.name);
"""
# MathJax's typeset equations and its web fonts, once its startup has finished.
MATH = """
if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) return null;
const done = arguments[arguments.length - 1];
MathJax.startup.promise.then(() => document.fonts.ready).then(() => done({
    equations: document.querySelectorAll('.bd-article mjx-container').length,
    errors: document.querySelectorAll('.bd-article mjx-merror').length,
    rendered: [...document.querySelectorAll('.bd-article mjx-container')]
        .filter(e => e.getBoundingClientRect().width > 0).length,
    fonts: [...document.fonts]
        .filter(f => f.family.includes('MJX') && f.status === 'loaded').length,
}));
"""


@pytest.fixture(scope="module")
def browser():
    yield from session()


@pytest.fixture(scope="module")
def site():
    """The built site served on a free local port; yields its URL."""
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no site in {SITE}: build it first (make site)")
    handler = functools.partial(Quiet, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def open_page(driver, url, page):
    driver.get(f"{url}/{page}")
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 30,
             f"{page} to load", driver, "load")


def check_math(driver, name):
    driver.set_script_timeout(60)
    math = wait_for(lambda: driver.execute_async_script(MATH), 60, "MathJax to typeset the page",
                    driver, name)
    assert math["equations"] > 0 and math["rendered"] == math["equations"], math
    assert math["errors"] == 0, f"MathJax could not typeset {math['errors']} equations"
    assert math["fonts"] > 0, "MathJax's fonts did not load from the site"


def check_figures(driver, minimum, diagram=None):
    """At least `minimum` output figures, `diagram` (a file of notebooks/figures/) shown, and every
    image the page has from the site loaded (an image from another host, the Colab badge, aside)."""
    outputs = driver.find_elements(By.CSS_SELECTOR, ".cell_output img")
    assert len(outputs) >= minimum, f"{len(outputs)} output figures, at least {minimum} expected"
    images = driver.execute_script(
        "return [...document.querySelectorAll('.bd-article img')]"
        ".filter(image => image.currentSrc.startsWith(location.origin))"
        ".map(image => [image.currentSrc, image.complete && image.naturalWidth > 0])")
    broken = [source for source, loaded in images if not loaded]
    assert not broken, f"images that did not load: {broken}"
    if diagram is not None:
        assert any(source.endswith(f"/{diagram}") for source, _ in images), \
            f"the method diagram {diagram} is not on the page"


def check_sidebar(driver):
    links = driver.find_elements(By.CSS_SELECTOR, ".bd-sidebar-primary nav a")
    targets = {link.get_attribute("href").rsplit("/", 1)[-1].split("#")[0] for link in links}
    missing = [path.stem for path in NOTEBOOKS if f"{path.stem}.html" not in targets]
    assert not missing, f"the sidebar does not list {missing}"
    assert driver.find_element(By.CSS_SELECTOR, ".bd-sidebar-primary").is_displayed()


def check_page(driver, page):
    badge = driver.find_elements(
        By.CSS_SELECTOR, f"a[href$='/notebooks/{Path(page).stem}.ipynb'] img[alt='Open In Colab']")
    assert badge, "the page has lost its Colab badge"
    note = driver.find_element(By.CSS_SELECTOR, ".admonition.note").text
    assert "smoke preset" in note or "colab preset" in note or "full preset" in note, note
    assert "CPU" in note or "GPU" in note, note
    assert driver.execute_script(FAILED_RESOURCES) == []


def test_simclr_page_has_its_equations_figures_diagram_and_sidebar(site, browser):
    open_page(browser, site, SIMCLR)
    check_math(browser, "simclr-math")
    check_figures(browser, minimum=3, diagram="simclr.svg")
    check_sidebar(browser)
    check_page(browser, SIMCLR)
    screenshot(browser, "site-01-simclr")


def test_explorer_page_shows_the_explorers_figures_and_no_widget(site, browser):
    open_page(browser, site, EXPLORER)
    check_math(browser, "explorer-math")
    check_figures(browser, minimum=3)
    check_sidebar(browser)
    check_page(browser, EXPLORER)
    cells = browser.find_elements(By.CSS_SELECTOR, "div.cell")
    for code in EXPLORER_CELLS:   # the static figure's cell, then the explorer's own
        cell = next((cell for cell in cells if code in "\n" + "\n".join(
            pre.text for pre in cell.find_elements(By.CSS_SELECTOR, ".cell_input pre"))), None)
        assert cell is not None, f"no cell runs {code.strip()}"
        images = cell.find_elements(By.CSS_SELECTOR, ".cell_output img")
        assert images, f"the cell that runs {code.strip()} shows no figure"
    text = browser.find_element(By.TAG_NAME, "body").text
    leftovers = [word for word in ("VBox(", "HBox(", "Loading widget", "IntSlider(", "Dropdown(")
                 if word in text]
    leftovers += browser.find_elements(By.CSS_SELECTOR, ".jupyter-widgets, .widget-area")
    assert not leftovers, f"widgets left on the page: {leftovers}"
    browser.execute_script("arguments[0].scrollIntoView()", images[0])
    screenshot(browser, "site-02-explorer")
