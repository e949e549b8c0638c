"""Property: whatever the body and headers, both HTTP gateways answer 2xx or 4xx (never
5xx), and every event they accept decodes with `events.from_nats` from what the EVENTS
stream holds, as a sensor reads it.

Hypothesis drives plain `http.client` requests from a worker thread against the running
service (`svc`, a real nats-server); the stream is read back on the service's loop."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventsvc import events
from eventsvc.bus import Bus
from eventsvc.bus.streams import EVENTS
from tests.conftest import sign

T = TypeVar("T")
SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))  # fmt: skip

INTERESTING = ["", " ", "1.0", "0.3", "a:b", "a%3Ab", "\ud800", "x" * 1100, "é", "a\tb",
               "2024-05-01T10:00:00Z", "2024-05-01T10:00:00", "9999-12-31T23:59:59-23:59",
               "0001-01-01T00:00:00+01:00", "not a time", "application/json", "text/plain",
               "application/octet-stream", "application/cloudevents+json", " application/json",
               "application/cloudevents-batch+json", "text/plain; charset=utf-8"]  # fmt: skip
NAMES = ["id", "source", "type", "subject", "time", "datacontenttype", "dataschema",
         "specversion", "tenant", "ext1", "Bad-Name", "", "data", "a" * 30]  # fmt: skip

texts = st.one_of(st.text(max_size=20), st.sampled_from(INTERESTING))
scalars = st.one_of(texts, st.integers(), st.booleans(), st.none(), st.floats())
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=8,
)
header_values = st.one_of(
    texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=20),
).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b""))


@st.composite
def cloudevent_docs(draw: st.DrawFn) -> Any:
    doc: dict[str, Any] = {"specversion": "1.0", "id": draw(st.sampled_from(["e-1", "e-2"])),
                           "source": "https://example.test", "type": "com.example.t"}  # fmt: skip
    doc.update(draw(st.dictionaries(st.sampled_from(NAMES), scalars, max_size=3)))
    data = draw(st.sampled_from(["none", "data", "base64", "bad_base64"]))
    if data == "data":
        doc["data"] = draw(json_values)
    elif data == "base64":
        doc["data_base64"] = base64.b64encode(draw(st.binary(max_size=16))).decode()
    elif data == "bad_base64":
        doc["data_base64"] = draw(scalars)
    return doc if draw(st.integers(0, 9)) else draw(json_values)


@st.composite
def events_requests(draw: st.DrawFn) -> tuple[list[tuple[str, bytes]], bytes]:
    mode = draw(st.sampled_from(["binary", "structured", "batch", "raw"]))
    if mode == "structured":
        body = json.dumps(draw(cloudevent_docs())).encode()
        return [("Content-Type", events.STRUCTURED_CONTENT_TYPE.encode())], body
    if mode == "batch":
        body = json.dumps(draw(st.lists(cloudevent_docs(), max_size=3))).encode()
        return [("Content-Type", events.BATCH_CONTENT_TYPE.encode())], body
    if mode == "raw":
        content_type = draw(st.sampled_from([events.STRUCTURED_CONTENT_TYPE,
                                             events.BATCH_CONTENT_TYPE, "application/json"]))  # fmt: skip
        return [("Content-Type", content_type.encode())], draw(st.binary(max_size=64))
    headers = [("ce-specversion", b"1.0"), ("ce-id", b"b-1"), ("ce-source", b"s"),
               ("ce-type", b"com.example.b")]  # fmt: skip
    extra = draw(st.dictionaries(st.sampled_from(NAMES), header_values, max_size=3))
    headers += [("ce-" + name, value) for name, value in extra.items() if name]
    if draw(st.booleans()):
        headers.append(("Content-Type", draw(st.sampled_from(INTERESTING)).encode("utf-8", "surrogatepass")))
    body = draw(st.one_of(st.binary(max_size=32), json_values.map(lambda v: json.dumps(v).encode())))
    return headers, body


@st.composite
def github_requests(draw: st.DrawFn) -> tuple[list[tuple[str, bytes]], bytes]:
    payload: dict[str, Any] = draw(st.fixed_dictionaries({}, optional={
        "action": scalars, "ref": scalars, "zen": scalars,
        "repository": st.fixed_dictionaries({}, optional={"html_url": scalars}),
        "organization": st.fixed_dictionaries({}, optional={"login": scalars}),
        "pull_request": st.fixed_dictionaries({}, optional={"number": scalars}),
        "release": st.fixed_dictionaries({}, optional={"tag_name": scalars}),
        "extra": json_values,
    }))  # fmt: skip
    body = draw(st.one_of(st.just(json.dumps(payload).encode()), st.binary(max_size=32)))
    event = draw(st.one_of(st.sampled_from([b"pull_request", b"push", b"ping"]), header_values))
    headers = [("X-GitHub-Event", event), ("X-GitHub-Delivery", draw(header_values) or b"d"),
               ("X-GitHub-Hook-ID", draw(header_values)),
               ("Content-Type", draw(st.sampled_from([b"application/json",
                                                      b"application/x-www-form-urlencoded"])))]  # fmt: skip
    signature = sign(body).encode() if draw(st.integers(0, 9)) else draw(header_values)
    return [*headers, ("X-Hub-Signature-256", signature)], body


class Stream:
    """The EVENTS stream, read from the worker thread on the service's loop."""

    def __init__(self, bus: Bus, loop: asyncio.AbstractEventLoop, last: int) -> None:
        self.bus, self.loop, self.last = bus, loop, last

    def run(self, coro: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await coro

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(30)

    def new_events(self) -> list[events.CloudEvent]:
        """Every event stored since the last call, decoded as a consumer decodes it."""
        last = self.run(self.bus.stream_state(EVENTS)).last_seq
        out = []
        for seq in range(self.last + 1, last + 1):
            stored = self.run(self.bus.get_message(EVENTS, seq))
            assert stored is not None
            headers, body = stored
            body = self.run(self.bus.body_of(headers, body))
            out.append(events.from_nats(headers, body))  # raises when a sensor could not
        self.last = last
        return out


def post(url: str, path: str, headers: list[tuple[str, bytes]], body: bytes) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.putrequest("POST", path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


async def test_events_endpoint_answers_4xx_or_stores_decodable_events(svc: Any, bus: Bus) -> None:
    stream = Stream(bus, asyncio.get_running_loop(), (await bus.stream_state(EVENTS)).last_seq)

    @SETTINGS
    @given(events_requests())
    def check(request: tuple[list[tuple[str, bytes]], bytes]) -> None:
        status, answer = post(svc.url, "/events", *request)
        assert status < 500, answer
        stored = stream.new_events()
        if status in (200, 202):
            results = json.loads(answer)["events"]
            assert len(stored) == sum(1 for r in results if not r["duplicate"])
        else:
            assert 400 <= status < 500 and stored == [], answer

    await asyncio.to_thread(check)


async def test_github_endpoint_answers_4xx_or_stores_decodable_events(svc: Any, bus: Bus) -> None:
    stream = Stream(bus, asyncio.get_running_loop(), (await bus.stream_state(EVENTS)).last_seq)

    @SETTINGS
    @given(github_requests())
    def check(request: tuple[list[tuple[str, bytes]], bytes]) -> None:
        status, answer = post(svc.url, "/webhooks/github", *request)
        assert status < 500, answer
        stored = stream.new_events()
        if status == 202:
            assert len(stored) == 1, answer
        else:
            assert stored == [], answer

    await asyncio.to_thread(check)
