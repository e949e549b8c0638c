"""A headless Chromium driven by Selenium, for the console's browser tests.

Selenium's calls block; the service under test runs on the test's event loop, so every
call goes through a thread (`Browser` awaits them) and the loop keeps serving the page.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
)  # fmt: skip


def skip_reason() -> str | None:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        return (f"{CHROMIUM} or {CHROMEDRIVER} missing: `make test` installs the Debian "
                "packages chromium and chromium-driver when apt-get can")  # fmt: skip
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def start_driver() -> tuple[Any, str]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="eventsvc-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    return driver, profile


def stop_driver(driver: Any, profile: str) -> None:
    try:
        driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Browser:
    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def open(self, url: str) -> None:
        """Load `url` and wait until the console drew its page (`body[data-ready]`)."""
        await asyncio.to_thread(self.driver.get, url)
        await self.wait(lambda d: d.execute_script("return document.body.dataset.ready === '1'"),
                        f"the page {url} to be drawn")  # fmt: skip

    async def wait(self, probe: Callable[[Any], Any], what: str, timeout: float = 30) -> Any:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        def run() -> Any:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.2).until(probe)

        try:
            return await asyncio.to_thread(run)
        except TimeoutException:
            raise AssertionError(f"timed out waiting for {what}") from None

    async def css(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(await asyncio.to_thread(self.driver.find_elements, By.CSS_SELECTOR, selector))

    async def text(self, selector: str) -> str:
        found = await self.css(selector)
        return "\n".join([await asyncio.to_thread(lambda e=e: e.text) for e in found])

    async def click(self, selector: str) -> None:
        (element, *_) = await self.css(selector)
        await asyncio.to_thread(element.click)

    async def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.driver.save_screenshot, str(path))


def require_browser() -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
