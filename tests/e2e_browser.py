"""The course in a real JupyterLab, driven by headless Chromium (make test-browser; CI runs it when
Chromium is installable).

The test starts JupyterLab on a free port in a folder holding notebook 02 and the student copy of
notebook 01, and drives Debian's `chromium` through `chromium-driver` (Selenium). Notebook 02 runs
top to bottom in the smoke preset with nbgrader's caps on training (one epoch over 512 images, runs
in the lab's own folder): this test is about what the browser shows, not what training reaches. Its
explorer widget must render (the figure of the anchor and its k hardest negatives, the summary line,
the temperature slider), and moving the slider and picking another anchor must change the view. In
the student copy of notebook 01, the first exercise's checker must say that the exercise is not
implemented yet. A screenshot of each step goes to $BROWSER_ARTEFACTS (default .cache/browser/).

Not collected by `pytest tests/` (it needs Chromium and takes minutes): run it by path."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest
from chromium import needs_chromium, screenshot, session, wait_for
from repository import REPO, load_script
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

tool = load_script(REPO / "tools" / "notebooks.py")
pytestmark = needs_chromium
EXPLORER_NOTEBOOK = REPO / "notebooks" / "02_embedding_geometry_and_hard_negatives.ipynb"
STUDENT_NOTEBOOK = REPO / "notebooks" / "01_simclr_from_scratch.ipynb"
TOKEN = "clcourse-browser-test"
# Notebook 02 in the smoke preset with the training caps: under a minute on 2 cores.
RUN_ALL_SECONDS = int(os.environ.get("BROWSER_RUN_ALL_SECONDS", 300))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a folder with notebook 02 and the student copy of
    notebook 01; yields its URL."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(EXPLORER_NOTEBOOK, root / EXPLORER_NOTEBOOK.name)
    student, _ = tool.student_notebook(tool.read(STUDENT_NOTEBOOK), STUDENT_NOTEBOOK.name)
    nbformat.write(student, root / STUDENT_NOTEBOOK.name)
    port = free_port()
    env = dict(os.environ, CLCOURSE_PRESET="smoke", CLCOURSE_MAX_EPOCHS="1",
               CLCOURSE_MAX_TRAIN_IMAGES="512", CLCOURSE_RUNS=str(root / "runs"),
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    env.pop("MPLBACKEND", None)     # the kernel's inline backend, as students have it
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
               f"--ServerApp.token={TOKEN}",
               f"--ServerApp.root_dir={root}", "--ServerApp.ip=127.0.0.1"]
    if hasattr(os, "getuid") and os.getuid() == 0:
        command.append("--allow-root")
    log = open(root.parent / f"{root.name}-jupyterlab.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, \
                    "JupyterLab did not start"
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def browser():
    yield from session()


def open_notebook(driver, url, path):
    driver.get(f"{url}/lab/tree/{path.name}?token={TOKEN}")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell"), 90,
             f"{path.name} to open", driver, "open")
    # the kernel has started once the toolbar's kernel status says idle
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel "
                                          ".jp-Notebook-ExecutionIndicator[data-status='idle']"),
             90, "the kernel", driver, "kernel")


def menu(driver, *labels):
    """Click through the menu bar, e.g. menu(driver, "Run", "Run All Cells")."""
    driver.find_element(By.XPATH, "//div[contains(@class, 'lm-MenuBar-itemLabel') and "
                                  f"text()='{labels[0]}']").click()
    for label in labels[1:]:
        # wait_for calls the lambda before the loop moves on, so it sees this iteration's label
        wait_for(lambda: driver.find_element(
            By.XPATH,
            f"//div[contains(@class, 'lm-Menu-itemLabel') and text()='{label}']"),  # noqa: B023
                 10, label).click()


def run_all(driver, timeout):
    """Run every cell and wait until none is queued or running; returns the code cells' prompts."""
    menu(driver, "Run", "Run All Cells")
    time.sleep(2)

    def finished():
        prompts = [element.text for element in driver.find_elements(
            By.CSS_SELECTOR, ".jp-NotebookPanel .jp-CodeCell .jp-InputPrompt")]
        busy = driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel "
                                    ".jp-Notebook-ExecutionIndicator[data-status='busy']")
        return prompts if prompts and not busy and not any("*" in prompt for prompt in prompts) \
            else None
    return wait_for(finished, timeout, "the notebook to finish running", driver, "run-all")


def errors(driver):
    return [element.text for element in driver.find_elements(
        By.CSS_SELECTOR,
        ".jp-NotebookPanel .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        if "Error" in element.text or "Traceback" in element.text]


def explorer_view(explorer):
    """What the explorer shows: its summary line and the figure (its Image widget's source URL)."""
    summary = explorer.find_element(By.CSS_SELECTOR, ".widget-html").text
    image = explorer.find_element(By.CSS_SELECTOR, "img.widget-image").get_attribute("src")
    return summary, image


def new_view(driver, explorer, before, what, name):
    """Wait until the explorer shows a new summary and a new figure, and they stay so for a second
    (the kernel may redraw several times, once per slider step); returns (summary, figure)."""
    seen = []

    def settled():
        seen.append(explorer_view(explorer))
        current = seen[-1]
        changed = current[0] != before[0] and current[1] != before[1]
        return current if changed and len(seen) > 2 and seen[-3] == current else None
    return wait_for(settled, 60, what, driver, name)


def temperature_in(summary):
    return float(re.search(r"τ = ([0-9.]+)", summary).group(1))


def check_explorer(driver, prefix):
    """The last explorer widget on the page renders (controls, summary, figure), and follows its
    temperature slider and a new anchor; a screenshot of each step."""
    explorer = wait_for(lambda: [box
                                 for box in driver.find_elements(By.CSS_SELECTOR, ".widget-vbox")
                                 if box.find_elements(By.CSS_SELECTOR, "img.widget-image")][-1], 60,
                        "the explorer widget", driver, "explorer")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", explorer)
    labels = [element.text for element in explorer.find_elements(By.CSS_SELECTOR, ".widget-label")]
    assert {"class", "index", "τ", "k"} <= set(labels), labels
    summary, image = explorer_view(explorer)
    assert "hardest negatives" in summary and "τ = 0.5" in summary, summary
    figure = explorer.find_element(By.CSS_SELECTOR, "img.widget-image")
    # the PNG arrived and decoded: a picture several hundred pixels wide, not a broken-image icon
    wait_for(lambda: figure.get_property("complete") and figure.get_property("naturalWidth") > 300,
             30, "the explorer's figure to load", driver, f"{prefix}-figure")
    screenshot(driver, f"{prefix}-explorer")

    # move the temperature slider: focus its handle and step it with the keyboard
    temperature = [slider for slider in explorer.find_elements(By.CSS_SELECTOR, ".widget-slider")
                   if slider.find_element(By.CSS_SELECTOR, ".widget-label").text == "τ"][0]
    handle = temperature.find_element(By.CSS_SELECTOR, ".noUi-handle, .ui-slider-handle")
    handle.click()
    for _ in range(5):
        handle.send_keys(Keys.ARROW_RIGHT)
    moved = new_view(driver, explorer, (summary, image),
                     "the view to follow the temperature slider", "slider")
    assert temperature_in(moved[0]) > 0.55, moved[0]      # five steps of 0.05 in log10: about 0.89
    screenshot(driver, f"{prefix}-slider-moved")

    # pick another anchor
    explorer.find_element(By.XPATH, ".//button[contains(., 'random anchor')]").click()
    anchored = new_view(driver, explorer, moved, "the view to follow the new anchor", "anchor")
    # "anchor #i (class)"
    assert anchored[0].split(",")[0] != moved[0].split(",")[0], anchored[0]
    assert temperature_in(anchored[0]) == temperature_in(moved[0]), anchored[0]
    screenshot(driver, f"{prefix}-new-anchor")


def test_notebook_02_runs_and_its_explorer_reacts_to_the_slider_and_the_anchor(lab, browser):
    open_notebook(browser, lab, EXPLORER_NOTEBOOK)
    screenshot(browser, "02-opened")
    run_all(browser, RUN_ALL_SECONDS)
    assert not errors(browser), errors(browser)[0]
    check_explorer(browser, "02")


def test_the_student_copy_of_notebook_01_says_an_exercise_is_not_implemented(lab, browser):
    open_notebook(browser, lab, STUDENT_NOTEBOOK)
    run_all(browser, 120)    # JupyterLab stops at the first error: the first exercise's checker
    messages = wait_for(lambda: [text for text in errors(browser) if "not implemented yet" in text],
                        30, "the checker's message", browser, "student")
    assert "ExerciseError" in messages[0] and "raise NotImplementedError" in messages[0], \
        messages[0]
    failing = browser.find_element(By.XPATH, "//div[contains(@class, 'jp-OutputArea-output') and "
                                             "contains(., 'not implemented yet')]")
    # the message ends it
    browser.execute_script("arguments[0].scrollIntoView({block: 'end'});", failing)
    screenshot(browser, "01-student-not-implemented")
