"""Request bodies held at once are bounded across every request (`http.maxInflightBytes`):
past the budget a request gets 503 + Retry-After before its body is read; the room comes
back when a request is answered, whatever its answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from eventsvc.bus import Bus
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.bus.streams import EVENTS
from eventsvc.errors import ConfigError
from tests.conftest import github_headers, pr_payload, sign

MB = 2**20


@pytest.fixture
async def tight(start_service: Any, nats_server: EmbeddedNats) -> Any:
    # room for one largest body and a half: a second large one must wait
    return await start_service(nats_url=nats_server.url, components=("gateway",),
                               max_body_bytes=MB, max_inflight_bytes=MB + MB // 2)  # fmt: skip


def _signed_webhook(delivery: str, size: int) -> tuple[bytes, dict[str, str]]:
    payload = pr_payload()
    payload["pull_request"]["body"] = ""
    filler = size - len(json.dumps(payload).encode())
    payload["pull_request"]["body"] = "x" * filler
    body = json.dumps(payload).encode()
    headers = github_headers("pull_request", body, delivery=delivery)
    headers["X-Hub-Signature-256"] = sign(body)
    return body, headers


async def _start_slow_request(url: str, body: bytes, headers: dict[str, str]) -> tuple[
    asyncio.StreamReader, asyncio.StreamWriter
]:
    """Send the head and the first few bytes of a request whose Content-Length is the whole
    body; the rest waits for `writer`."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST /webhooks/github HTTP/1.1\r\nHost: {host}\r\n{head}"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:1000])  # fmt: skip
    await writer.drain()
    return reader, writer


async def _raw_post(url: str, body: bytes, headers: dict[str, str],
                    path: str = "/webhooks/github") -> tuple[int, dict[str, str], bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{head}Content-Length: "
                     f"{len(body)}\r\nConnection: close\r\n\r\n".encode())  # fmt: skip
        writer.write(body)
        await writer.drain()
        status = await _status_of(reader)
        answer_headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            answer_headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(answer_headers["content-length"]))
        return status, answer_headers, raw
    finally:
        writer.close()


def _held(svc: Any) -> int:
    budget = svc.service.state.body_budget
    assert budget is not None
    return int(budget.used)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(600):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached within 30 s")


async def _status_of(reader: asyncio.StreamReader) -> int:
    line = await asyncio.wait_for(reader.readline(), 30)
    return int(line.split()[1])


async def test_a_body_past_the_budget_waits_its_turn_with_503(tight: Any, bus: Bus) -> None:
    first, first_headers = _signed_webhook("held", MB - 10)
    reader, writer = await _start_slow_request(tight.url, first, first_headers)
    try:
        second, second_headers = _signed_webhook("refused", MB - 10)
        await _until(lambda: _held(tight) == len(first))  # reserved once its head was read
        # answered before its body is read (a client may see the connection end while it
        # still sends: the answer is read from a socket that sends the whole body first)
        status, answer_headers, raw = await _raw_post(tight.url, second, second_headers)
        assert status == 503, raw
        assert answer_headers["retry-after"] == "1"
        answer = json.loads(raw)
        assert answer["reason"] == "busy"
        async with aiohttp.ClientSession() as http:
            assert "http.maxInflightBytes" in answer["error"]
            # the budget is shared: /events is refused too (a small event still fits)
            big_event = {"specversion": "1.0", "id": "e1", "type": "t", "source": "s",
                         "data": {"x": "y" * (MB - 1000)}}  # fmt: skip
            status, _, raw = await _raw_post(
                tight.url, json.dumps(big_event).encode(),
                {"Content-Type": "application/cloudevents+json"}, path="/events")  # fmt: skip
            assert status == 503, raw
            small = {**big_event, "id": "e2", "data": {"x": "y"}}
            async with http.post(tight.url + "/events", json=small,
                                 headers={"Content-Type": "application/cloudevents+json"}
                                 ) as resp:  # fmt: skip
                assert resp.status == 202, await resp.text()

            # the slow request completes: accepted, and its room comes back
            writer.write(first[1000:])
            await writer.drain()
            assert await _status_of(reader) == 202
            async with http.post(tight.url + "/webhooks/github", data=second,
                                 headers=second_headers) as resp:  # fmt: skip
                assert resp.status == 202, await resp.text()
    finally:
        writer.close()
    stored = await bus.stream_messages(EVENTS, "events.>")
    ids = sorted(m.headers["ce-id"] for m in stored if m.headers)
    assert ids == ["e2", "held", "refused"]


async def test_a_refused_or_abandoned_request_gives_its_room_back(tight: Any) -> None:
    body, headers = _signed_webhook("bad-signature", MB - 10)
    headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
    async with aiohttp.ClientSession() as http:
        for _ in range(5):  # five refusals in a row: each one's reservation was released
            async with http.post(tight.url + "/webhooks/github", data=body,
                                 headers=headers) as resp:  # fmt: skip
                assert resp.status == 401
    # a sender that goes away halfway through its body
    assert _held(tight) == 0
    _, writer = await _start_slow_request(tight.url, *_signed_webhook("gone", MB - 10))
    await _until(lambda: _held(tight) > 0)
    writer.close()
    await _until(lambda: _held(tight) == 0)
    good, good_headers = _signed_webhook("after", MB - 10)
    async with aiohttp.ClientSession() as http:
        async with http.post(tight.url + "/webhooks/github", data=good,
                             headers=good_headers) as resp:  # fmt: skip
            assert resp.status == 202, await resp.text()


def test_a_budget_below_the_body_limit_is_a_configuration_error(
    config_factory: Any,
) -> None:
    with pytest.raises(ConfigError, match="maxInflightBytes"):
        config_factory(max_body_bytes=2 * MB, max_inflight_bytes=MB)
