"""Headless Chromium for tests and benchmarks: the system browser (Debian ``chromium`` +
``chromium-driver``) driven by Selenium, with no network and no Selenium Manager downloads."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--window-size=1360,1000",
]


def find_browser() -> tuple[str, str] | None:
    """(chromium binary, chromedriver) when both are installed, else None."""
    binary = os.environ.get("SPECALIGN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("SPECALIGN_CHROMEDRIVER") or shutil.which("chromedriver")
    return (binary, driver) if binary and driver else None


@contextmanager
def chromium(width: int = 1360, height: int = 1000) -> Iterator:
    """A Selenium driver for headless Chromium that keeps the browser console log."""
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download a driver
    found = find_browser()
    if found is None:
        raise RuntimeError("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in CHROME_ARGS:
        options.add_argument(arg if not arg.startswith("--window-size") else f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=found[1]))
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[str]:  # noqa: ANN001
    """Console messages at SEVERE level (uncaught errors, CSP violations, failed loads)."""
    return [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
