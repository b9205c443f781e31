"""Headless Chromium for the browser tests (tests/e2e_browser.py, tests/e2e_site.py): Debian's
chromium driven through chromium-driver by Selenium (the `browser` extra), a screenshot of each
step in $BROWSER_ARTEFACTS (default .cache/browser/), and waiting for what a page shows. Imported
by a module whose tests all need it: without selenium, that module is skipped."""
import os
import shutil
import time
from pathlib import Path

import pytest
from repository import REPO

webdriver = pytest.importorskip("selenium.webdriver",
                                reason="selenium is not installed: pip install selenium")
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Chromium and its driver: apt-get install chromium chromium-driver")
ARTEFACTS = Path(os.environ.get("BROWSER_ARTEFACTS", REPO / ".cache" / "browser"))


def session():
    """A Chromium session for a module's `browser` fixture (`yield from session()`): started
    headless, quit afterwards."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # No GPU, and none of the browser's own traffic (updates, sync, ...): the tests' machines are
    # offline, and a page must show what it serves itself.
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--window-size=1400,1100"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                              options=options)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name):
    # JupyterLab asks whether to fetch its news; its toast would cover the last cell's output
    for button in driver.find_elements(
            By.XPATH, "//div[contains(@class, 'Toastify')]//button[normalize-space()='No']"):
        button.click()
    driver.save_screenshot(str(ARTEFACTS / f"{name}.png"))


def wait_for(condition, timeout, what, driver=None, name=None):
    """Poll `condition()` until it returns something truthy; on a timeout, save a screenshot and
    fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:   # the page is still changing under us (stale elements, not there yet)
            value = None
        if value:
            return value
        time.sleep(0.5)
    if driver is not None:
        screenshot(driver, f"timeout-{name or 'wait'}")
    pytest.fail(f"timed out after {timeout} s waiting for {what}")
