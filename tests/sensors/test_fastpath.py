"""The dispatcher's fast path: a binary-mode event is judged on its headers first, and one no
dependency can match is acknowledged without its body being decoded."""

from __future__ import annotations

import json
from pathlib import Path

from eventsvc import events
from eventsvc.bus import Bus
from eventsvc.sensors import filters
from tests.sensors.conftest import (
    EngineFactory,
    dlq_records,
    eventually,
    idle,
    load_sensor,
    results_of,
)

SENSOR = """apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: fast}
spec:
  dependencies:
    - name: build
      eventSubject: events.ci.>
      filters:
        context: {type: {prefix: com.example.build.}, source: https://ci.example}
        data: [{path: ok, value: true}]
  triggers:
    - template: {name: t, log: {message: built}}
"""
HEADERS = {"ce-specversion": "1.0", "ce-source": "https://ci.example",
           "content-type": "application/json"}  # fmt: skip


def test_binary_attributes_come_from_headers_only() -> None:
    attrs = events.binary_attributes({**HEADERS, "ce-id": "a", "ce-type": "x%20y"})
    assert attrs == {"specversion": "1.0", "source": "https://ci.example", "id": "a",
                     "type": "x y", "datacontenttype": "application/json"}  # fmt: skip
    assert events.binary_attributes({"content-type": "application/cloudevents+json",
                                     "ce-id": "a"}) is None  # fmt: skip
    assert events.binary_attributes({"content-type": "application/json"}) is None
    assert events.binary_attributes(None) is None


def test_gate_is_the_context_group_only_when_every_event_must_pass_it() -> None:
    context = {"context": {"type": "t"}, "data": [{"path": "a", "value": 1}]}
    _, gate = filters.compile_gated(context)
    assert isinstance(gate, filters.AttrMatch)
    assert filters.compile_gated({**context, "filtersLogicalOperator": "or"})[1] is None
    assert filters.compile_gated({"data": [{"path": "a", "value": 1}]})[1] is None
    assert filters.compile_gated({"context": {"type": "t"}, "filtersLogicalOperator": "or"})[1]


async def test_filtered_out_by_headers_is_acked_and_a_bad_body_that_passes_goes_to_dlq(
    bus: Bus, start_engine: EngineFactory, tmp_path: Path
) -> None:
    await start_engine([load_sensor(tmp_path, SENSOR)])

    async def binary(event_id: str, type_: str, body: bytes) -> None:
        headers = {**HEADERS, "ce-id": event_id, "ce-type": type_}
        await bus.publish("events.ci.build", body, headers, msg_id=event_id)

    # another type: ignored on its headers, so its broken body is never read
    await binary("other-bad", "com.example.deploy.done", b"{not json")
    # passes the headers, then the body cannot be decoded: dead-lettered as before
    await binary("match-bad", "com.example.build.done", b"{not json")
    # passes the headers, fails the data filter
    await binary("match-data-no", "com.example.build.done", b'{"ok": false}')
    await binary("match-ok", "com.example.build.done", b'{"ok": true}')
    # structured mode is always decoded in full
    doc = {"specversion": "1.0", "id": "structured-ok", "type": "com.example.build.done",
           "source": "https://ci.example", "data": {"ok": True}}  # fmt: skip
    await bus.publish("events.ci.build", json.dumps(doc).encode(),
                      {"content-type": "application/cloudevents+json"})  # fmt: skip

    async def fired() -> list[str]:
        got = sorted(i for r in await results_of(bus, "fast") for i in r["eventIds"])
        return got if len(got) == 2 else []

    assert await eventually(fired, "two runs") == ["match-ok", "structured-ok"]

    await eventually(lambda: idle(bus), "every event acknowledged")
    records = await dlq_records(bus, "fast")
    assert [(r["reason"], r["raw"]) for r in records] == [("decode", "{not json")]
