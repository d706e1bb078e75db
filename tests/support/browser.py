"""Driving the sandbox page in a real headless browser (Debian's chromium through Debian's
chromium-driver; nothing is downloaded), for tests/sandbox/. The `browser` and `sandbox`
fixtures are in tests/sandbox/conftest.py."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

WAIT_S = 20


def _browser_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(
            "the browser tests need Debian's chromium and chromium-driver; "
            "`make test` installs them (apt-get install chromium chromium-driver)"
        )
    return browser, driver


@contextmanager
def headless_chromium() -> Iterator[WebDriver]:
    binary, driver_path = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,860",
                 "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, found: Callable[[WebDriver], object], what: str) -> object:
    # The page re-renders a message when it changes (an edit): a node can go stale.
    patient = WebDriverWait(
        driver, WAIT_S, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )
    return patient.until(found, message=what)


def attach(driver: WebDriver, path: Path) -> None:
    driver.find_element(By.ID, "file").send_keys(str(path))
    wait(driver, lambda d: d.find_element(By.ID, "pending").is_displayed(), "the upload")
