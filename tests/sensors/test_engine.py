"""Events reach sensors and triggers fire: from GitHub, and from plain NATS publishers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import nats

from eventsvc import events
from eventsvc.bus import Bus
from eventsvc.bus.embedded import EmbeddedNats
from tests.conftest import http_sensor, post_github, pr_payload, write_sensor


async def start_with_sensor(start_service: Any, nats_server: EmbeddedNats, tmp_path: Path,
                            text: str, **kw: Any) -> Any:  # fmt: skip
    write_sensor(tmp_path / "sensors", "s", text)
    return await start_service(nats_url=nats_server.url, **kw)


async def test_plain_nats_publishers_reach_a_sensor_in_both_modes(
    start_service: Any, nats_server: EmbeddedNats, tmp_path: Path, receiver: Any
) -> None:
    await start_with_sensor(start_service, nats_server, tmp_path,
                            http_sensor("ci", receiver.url, subject="events.ci.>"))  # fmt: skip
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    # binary mode, as another service would publish it
    await js.publish("events.ci.build", b'{"sha":"abc"}', headers={
        "ce-specversion": "1.0", "ce-id": "bin-1", "ce-type": "com.example.build.done",
        "ce-source": "https://ci.example", "content-type": "application/json"})  # fmt: skip
    # structured mode
    doc = {"specversion": "1.0", "id": "str-1", "type": "com.example.build.done",
           "source": "https://ci.example", "data": {"sha": "def"}}  # fmt: skip
    await js.publish("events.ci.build", json.dumps(doc).encode(),
                     headers={"content-type": "application/cloudevents+json"})  # fmt: skip
    await nc.close()
    got = await receiver.wait_for(2)
    assert sorted(r["id"] for r in got) == ["bin-1", "str-1"]
    assert {r["id"]: r["data"]["sha"] for r in got} == {"bin-1": "abc", "str-1": "def"}
    assert receiver.headers[0]["Content-Type"] == "application/cloudevents+json"


async def test_webhook_fires_http_trigger_exactly_once_per_event(
    start_service: Any, nats_server: EmbeddedNats, tmp_path: Path, receiver: Any
) -> None:
    svc = await start_with_sensor(
        start_service, nats_server, tmp_path,
        http_sensor("prs", receiver.url, subject="events.github.pull_request",
                    type_prefix="com.github.pull_request.",
                    extra_filters="\n        data:\n          - {path: pull_request.base.ref, value: [main]}"),
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        for i, base in enumerate(["main", "develop", "main"]):
            resp = await post_github(http, svc.url, "pull_request", pr_payload(number=i, base=base),
                                     delivery=f"d-{i}")  # fmt: skip
            assert resp.status == 202
        # a redelivery by GitHub of the same delivery id
        await post_github(http, svc.url, "pull_request", pr_payload(number=0), delivery="d-0")
    await receiver.wait_for(2)
    await svc.stop()  # drains: anything else in flight would arrive before stop returns
    assert sorted(receiver.ids()) == ["d-0", "d-2"]


async def test_failing_http_trigger_is_retried_until_it_succeeds(
    start_service: Any, nats_server: EmbeddedNats, tmp_path: Path, receiver: Any, bus: Bus
) -> None:
    receiver.fail_first = 2
    await start_with_sensor(start_service, nats_server, tmp_path,
                            http_sensor("retry", receiver.url, subject="events.ci.>"))  # fmt: skip
    ev = events.make_event({"specversion": "1.0", "id": "r-1", "type": "t", "source": "s"}, {"a": 1})
    await bus.publish("events.ci.x", *reversed(events.to_binary(ev)), msg_id="r-1")
    await receiver.wait_for(1)
    assert receiver.attempts == 3
    assert receiver.ids() == ["r-1"]


async def test_exhausted_retries_land_in_the_dlq(
    start_service: Any, nats_server: EmbeddedNats, tmp_path: Path, receiver: Any, bus: Bus
) -> None:
    import asyncio

    receiver.fail_first = 100
    await start_with_sensor(start_service, nats_server, tmp_path,
                            http_sensor("dead", receiver.url, subject="events.ci.>"),
                            max_deliveries=2, redelivery_delay=0.1)  # fmt: skip
    ev = events.make_event({"specversion": "1.0", "id": "x-1", "type": "t", "source": "s"}, None)
    await bus.publish("events.ci.x", *reversed(events.to_binary(ev)), msg_id="x-1")
    for _ in range(200):
        dlq = await bus.stream_messages("DLQ")
        if dlq:
            break
        await asyncio.sleep(0.1)
    [msg] = dlq
    record = json.loads(msg.data)
    assert msg.subject == "dlq.dead"
    assert record["reason"] == "retries exhausted"
    assert record["attempts"] == 2
    assert record["event"]["id"] == "x-1"
    assert "answered 500" in record["error"]


async def test_permanent_failure_goes_to_dlq_without_retry(
    start_service: Any, nats_server: EmbeddedNats, tmp_path: Path, receiver: Any, bus: Bus
) -> None:
    import asyncio

    receiver.fail_first = 100
    receiver.status_on_fail = 400
    await start_with_sensor(start_service, nats_server, tmp_path,
                            http_sensor("perm", receiver.url, subject="events.ci.>"))  # fmt: skip
    ev = events.make_event({"specversion": "1.0", "id": "p-1", "type": "t", "source": "s"}, None)
    await bus.publish("events.ci.x", *reversed(events.to_binary(ev)), msg_id="p-1")
    for _ in range(200):
        if dlq := await bus.stream_messages("DLQ"):
            break
        await asyncio.sleep(0.1)
    assert json.loads(dlq[0].data)["reason"] == "permanent failure"
    assert receiver.attempts == 1


async def test_nats_trigger_republishes_the_event(
    start_service: Any, nats_server: EmbeddedNats, tmp_path: Path, bus: Bus
) -> None:
    import asyncio

    text = """apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: fwd}
spec:
  dependencies:
    - {name: ev, eventSubject: events.ci.>}
  triggers:
    - template:
        name: forward
        nats: {subject: events.forwarded.build}
"""
    await start_with_sensor(start_service, nats_server, tmp_path, text)
    ev = events.make_event({"specversion": "1.0", "id": "n-1", "type": "t", "source": "s"}, {"k": 1})
    await bus.publish("events.ci.x", *reversed(events.to_binary(ev)), msg_id="n-1")
    for _ in range(200):
        if out := await bus.stream_messages("EVENTS", "events.forwarded.build"):
            break
        await asyncio.sleep(0.1)
    assert events.from_nats(out[0].headers, out[0].data).get_id() == "n-1"


async def test_invalid_sensor_stops_start_up_with_every_error(
    start_service: Any, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    import pytest

    from eventsvc.errors import SpecError

    write_sensor(tmp_path / "sensors", "bad", "apiVersion: eventsvc.dev/v1alpha1\nkind: Sensor\n"
                 "metadata: {name: bad}\nspec:\n  dependencies: [{name: a, filterz: {}}]\n"
                 "  triggers: [{template: {name: t, log: {}, conditions: b}}]\n")  # fmt: skip
    with pytest.raises(SpecError) as err:
        await start_service(nats_url=nats_server.url)
    text = str(err.value)
    assert "bad.yaml:5: spec.dependencies[0].filterz: unknown field; did you mean 'filters'?" in text
    assert "bad.yaml:6: spec.triggers[0].template.conditions: dependency 'b' is not declared" in text
