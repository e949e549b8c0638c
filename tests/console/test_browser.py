"""The console in a real headless Chromium: the live tail, an event's verdicts and runs,
a dead letter replayed from the page, and event data shown as text.

Screenshots for the README: `EVENTSVC_SCREENSHOTS=docs .venv/bin/python -m pytest
tests/console/test_browser.py` writes them to that directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningService
from tests.console.browser import Browser, require_browser, start_driver, stop_driver
from tests.console.conftest import eventually, send_pr, send_thing

SHOTS = os.environ.get("EVENTSVC_SCREENSHOTS")


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    require_browser()
    drv, profile = start_driver()
    yield drv
    stop_driver(drv, profile)


@pytest.fixture
def browser(driver: Any) -> Browser:
    driver.delete_all_cookies()
    return Browser(driver)


async def shot(browser: Browser, name: str) -> None:
    if SHOTS:
        await browser.screenshot(Path(SHOTS) / f"console-{name}.png")


async def test_live_tail_then_detail_with_verdicts_and_run(
    console_service: RunningService, browser: Browser
) -> None:
    base = console_service.url
    await browser.open(f"{base}/ui/events")
    await browser.wait(lambda d: d.find_element("id", "live-status").text == "live",
                       "the live tail to connect")  # fmt: skip
    title = "<script>document.title='owned'</script><img src=x onerror=alert(1)>"
    async with aiohttp.ClientSession() as session:
        event_id = await send_pr(session, base, title=title)
        row = f'#events-body tr[data-id="{event_id}"]'
        await browser.wait(lambda d: d.find_elements("css selector", row),
                           "the webhook to appear in the live tail")  # fmt: skip
        # its run is recorded before the detail page is asked for
        await eventually(lambda: _runs(session, base, event_id), "the PR's run")

    await browser.click(f"{row} a")
    await browser.wait(lambda d: d.execute_script("return document.body.dataset.ready === '1'")
                       and d.find_elements("id", "verdicts"), "the event page")  # fmt: skip
    matched = await browser.text('#verdicts tr[data-sensor="pr-main"]')
    assert "matched by pr" in matched
    ruled_out = await browser.text('#verdicts tr[data-sensor="pr-release"]')
    assert "not matched" in ruled_out
    assert "FAIL  data" in ruled_out and "pull_request.base.ref" in ruled_out
    runs = await browser.text("#runs")
    assert "announce" in runs and "success" in runs

    # the title is text in the data tree, not markup: no script ran, no element was made
    data = await browser.text("#data")
    assert title in data
    assert browser.driver.title == "eventsvc console"
    assert await browser.css("#data img, #data script") == []
    await shot(browser, "event")

    await browser.click('#runs tr[data-sensor="pr-main"] td a')
    await browser.wait(lambda d: "Run " in d.find_element("tag name", "h1").text, "the run page")
    await shot(browser, "run")
    await browser.open(f"{base}/ui/")
    flow = await browser.text("#flow")
    for name in ("pr-main", "pr-release", "flaky"):
        assert name in flow
    await shot(browser, "flow")

    # the dry run of a sensor against this stored event, from the page
    await browser.open(f"{base}/ui/try?sensor=pr-release&event={event_id}")
    await browser.click("#main form button")
    await browser.wait(lambda d: "does not fire" in d.find_element("id", "try-out").text,
                       "the dry run's report")  # fmt: skip
    assert "FAIL  data.pull_request.base.ref" in await browser.text("#try-out pre")


async def _runs(session: aiohttp.ClientSession, base: str, event_id: str) -> list[Any]:
    async with session.get(f"{base}/api/v1/runs", params={"event": event_id}) as resp:
        return list((await resp.json())["runs"])


async def test_a_dead_letter_replayed_from_the_page_runs_again(
    console_service: RunningService, browser: Browser, receiver: Any
) -> None:
    base = console_service.url
    first = await send_thing(console_service)
    async with aiohttp.ClientSession() as session:

        async def letters() -> list[Any]:
            async with session.get(f"{base}/api/v1/dlq") as resp:
                return list((await resp.json())["letters"])

        (letter,) = await eventually(letters, "a dead letter")
    await browser.open(f"{base}/ui/dlq")
    row = f'#letters tr[data-seq="{letter["seq"]}"]'
    assert first in await browser.text(row)
    await shot(browser, "dlq")
    await browser.click(f"{row} button.replay")
    await browser.wait(lambda d: "replayed #" in d.find_element("id", "main").text,
                       "the replay to be confirmed")  # fmt: skip
    got = await receiver.wait_for(1)
    assert got[0]["replayof"] == first and got[0]["id"] != first
    assert await browser.css(row) == []
