"""A service with three sensors for the console: one that takes pull requests to main,
one that rules them out by a data filter, and a flaky one that dead-letters its first
event; helpers to send events and wait."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventsvc import events
from eventsvc.bus.streams import DLQ, RESULTS
from tests.conftest import RunningService, post_github, pr_payload, write_sensor

PR_SENSOR = """apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: pr-main}
spec:
  dependencies:
    - name: pr
      eventSubject: events.github.pull_request
      filters:
        context: {type: {prefix: com.github.pull_request.}}
        data:
          - {path: pull_request.base.ref, value: [main]}
  triggers:
    - template:
        name: announce
        log: {message: "PR {{ data.pull_request.number }}"}
"""

RELEASE_SENSOR = """apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: pr-release}
spec:
  dependencies:
    - name: pr
      eventSubject: events.github.pull_request
      filters:
        data:
          - {path: pull_request.base.ref, value: [release]}
  triggers:
    - template:
        name: backport
        log: {message: backport}
"""

FLAKY_SENSOR = """apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: flaky}}
spec:
  dependencies:
    - name: thing
      eventSubject: events.test.>
      filters:
        context: {{type: com.example.thing}}
  triggers:
    - template:
        name: call
        http: {{url: "{url}"}}
      retryStrategy: {{steps: 1, duration: 0.1s}}
"""


def console_sensors(directory: Path, receiver_url: str) -> None:
    write_sensor(directory, "pr-main", PR_SENSOR)
    write_sensor(directory, "pr-release", RELEASE_SENSOR)
    write_sensor(directory, "flaky", FLAKY_SENSOR.format(url=receiver_url))


@pytest.fixture
async def console_service(
    tmp_path: Path, start_service: Callable[..., Awaitable[RunningService]], receiver: Any
) -> RunningService:
    console_sensors(tmp_path / "sensors", receiver.url)
    receiver.fail_first = 1  # the first call fails: the flaky sensor's first event is a letter
    return await start_service()


async def send_pr(session: aiohttp.ClientSession, url: str, title: str = "Add checkout",
                  number: int = 7) -> str:  # fmt: skip
    """A signed pull_request webhook; its delivery id (the CloudEvent id)."""
    delivery = str(uuid.uuid4())
    payload = pr_payload(number=number)
    payload["pull_request"]["title"] = title
    resp = await post_github(session, url, "pull_request", payload, delivery=delivery)
    assert resp.status == 202, resp.status
    return delivery


async def send_thing(service: RunningService) -> str:
    bus = service.service.state.bus_ref.bus
    assert bus is not None
    event_id = str(uuid.uuid4())
    event = events.make_event({"specversion": "1.0", "id": event_id, "type": "com.example.thing",
                               "source": "https://test", "datacontenttype": "application/json"},
                              {"n": 1})  # fmt: skip
    headers, body = events.to_binary(event)
    await bus.publish("events.test.thing", body, headers, msg_id=event_id)
    return event_id


async def eventually(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def stream_count(service: RunningService, stream: str) -> int:
    bus = service.service.state.bus_ref.bus
    assert bus is not None
    return (await bus.stream_state(stream)).messages


__all__ = ["DLQ", "RESULTS", "eventually", "send_pr", "send_thing", "stream_count"]
