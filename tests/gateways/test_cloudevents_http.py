"""POST /events: the CloudEvents HTTP binding in all three content modes."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from eventsvc import events
from eventsvc.bus import Bus


def ce(i: int = 1, **extra: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"img-{i}", "type": "com.example.image.pushed",
            "source": "https://registry.example/acme/shop", "subject": "sha-abc",
            "datacontenttype": "application/json", "data": {"tag": f"1.{i}.0"}, **extra}  # fmt: skip


async def test_binary_mode(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "b-1", "ce-type": "com.example.image.pushed",
               "ce-source": "https://registry.example/acme%20shop", "ce-tenant": "blue",
               "Content-Type": "application/json"}  # fmt: skip
    async with http.post(svc.url + "/events", data=b'{"tag":"1.0.0"}', headers=headers) as resp:
        assert resp.status == 202, await resp.text()
    [msg] = await bus.stream_messages("EVENTS", "events.http.com.example.image.pushed")
    ev = events.from_nats(msg.headers, msg.data)
    assert ev.get_source() == "https://registry.example/acme shop"
    assert ev.get_extension("tenant") == "blue"
    assert ev.get_data() == {"tag": "1.0.0"}


async def test_structured_mode(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    async with http.post(svc.url + "/events", data=json.dumps(ce()),
                         headers={"Content-Type": events.STRUCTURED_CONTENT_TYPE}) as resp:  # fmt: skip
        assert resp.status == 202
    [msg] = await bus.stream_messages("EVENTS", "events.http.>")
    assert msg.headers["ce-id"] == "img-1"  # re-published in binary mode
    assert events.from_nats(msg.headers, msg.data).get_data() == {"tag": "1.1.0"}


async def test_batch_mode(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    batch = [ce(1), ce(2), ce(3, type="com.example.deploy.done")]
    async with http.post(svc.url + "/events", data=json.dumps(batch),
                         headers={"Content-Type": events.BATCH_CONTENT_TYPE}) as resp:  # fmt: skip
        assert resp.status == 202
        assert [e["id"] for e in (await resp.json())["events"]] == ["img-1", "img-2", "img-3"]
    msgs = await bus.stream_messages("EVENTS", "events.http.>")
    assert sorted(m.subject for m in msgs) == [
        "events.http.com.example.deploy.done",
        "events.http.com.example.image.pushed",
        "events.http.com.example.image.pushed",
    ]


async def test_missing_attributes_are_named(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    bad = {"specversion": "1.0", "type": "x"}
    async with http.post(svc.url + "/events", data=json.dumps(bad),
                         headers={"Content-Type": events.STRUCTURED_CONTENT_TYPE}) as resp:  # fmt: skip
        assert resp.status == 400
        assert "missing required CloudEvents attributes: id, source" in (await resp.json())["error"]
    batch = [ce(1), {"specversion": "1.0", "id": "x"}]
    async with http.post(svc.url + "/events", data=json.dumps(batch),
                         headers={"Content-Type": events.BATCH_CONTENT_TYPE}) as resp:  # fmt: skip
        assert resp.status == 400
        assert "batch item 1" in (await resp.json())["error"]
    assert await bus.stream_messages("EVENTS") == []  # nothing of a refused batch is stored


async def test_plain_json_is_refused_with_the_modes_explained(svc: Any, http: aiohttp.ClientSession) -> None:
    async with http.post(svc.url + "/events", json={"hello": 1}) as resp:
        assert resp.status == 400
        assert "binary mode" in (await resp.json())["error"]


async def test_type_is_sanitised_for_nats(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    async with http.post(svc.url + "/events", data=json.dumps(ce(type="my type.*.x>")),
                         headers={"Content-Type": events.STRUCTURED_CONTENT_TYPE}) as resp:  # fmt: skip
        assert resp.status == 202
    [msg] = await bus.stream_messages("EVENTS")
    assert msg.subject == "events.http.my_type._.x_"
