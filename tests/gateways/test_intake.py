"""Every bad request is a 4xx naming the problem, never a 500; nothing accepted is
undecodable by consumers (`events.from_nats`); nothing sent makes nats-server drop us."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from eventsvc import events
from eventsvc.bus import Bus
from eventsvc.gateways.common import MAX_ATTRIBUTE_CHARS, MAX_BATCH_EVENTS, MAX_JSON_DEPTH
from tests.conftest import github_headers, pr_payload

STRUCTURED = {"Content-Type": events.STRUCTURED_CONTENT_TYPE}
BATCH = {"Content-Type": events.BATCH_CONTENT_TYPE}


def ce(i: int = 1, **extra: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"e-{i}", "type": "com.example.thing",
            "source": "https://example.test/x", "datacontenttype": "application/json",
            "data": {"n": i}, **extra}  # fmt: skip


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


async def raw_post(url: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[
    int, dict[str, Any]
]:
    """POST with header bytes sent as they are (aiohttp's client will not send bad UTF-8)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = [b"POST " + path.encode() + b" HTTP/1.1", b"Host: " + parts.netloc.encode(),
            b"Connection: close", b"Content-Length: " + str(len(body)).encode()]  # fmt: skip
    head += [k + b": " + v for k, v in headers]
    writer.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload or b"{}")


async def post_events(http: aiohttp.ClientSession, svc: Any, body: Any, headers: dict[str, str]) -> tuple[
    int, dict[str, Any]
]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(svc.url + "/events", data=io.BytesIO(data), headers=headers) as resp:
        return resp.status, await resp.json()


async def stored(bus: Bus) -> list[events.CloudEvent]:
    """Every stored event, decoded as a consumer decodes it."""
    return [events.from_nats(m.headers, await bus.body_of(m.headers, m.data))
            for m in await bus.stream_messages("EVENTS")]  # fmt: skip


async def still_publishing(http: aiohttp.ClientSession, svc: Any, bus: Bus) -> None:
    """The bus connection survived: a good event is stored now."""
    status, body = await post_events(http, svc, ce(999), STRUCTURED)
    assert status == 202, body
    assert svc.service.state.bus_ref.bus.connected


# --- GitHub -------------------------------------------------------------------------------


async def post_gh(http: aiohttp.ClientSession, svc: Any, body: bytes, **kw: str) -> tuple[int, dict[str, Any]]:
    headers = github_headers("pull_request", body, **kw)
    async with http.post(svc.url + "/webhooks/github", data=body, headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("levels", [100_000, MAX_JSON_DEPTH + 1])
async def test_github_json_nested_too_deep_is_400(svc: Any, http: aiohttp.ClientSession, bus: Bus, levels: int) -> None:
    body = b'{"action":"opened","x":' + deep(levels) + b"}"
    status, answer = await post_gh(http, svc, body)
    assert status == 400, answer
    assert answer["reason"] == "json_too_deep"
    assert str(MAX_JSON_DEPTH) in answer["error"] and "flatten" in answer["error"]
    assert await stored(bus) == []


async def test_github_json_nested_to_the_limit_is_accepted(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    body = b'{"action":"opened","x":' + deep(MAX_JSON_DEPTH - 1) + b',"s":"[[[[{{"}'
    status, answer = await post_gh(http, svc, body)
    assert status == 202, answer
    [ev] = await stored(bus)
    assert ev.get_type() == "com.github.pull_request.opened"


async def test_github_non_ascii_signature_is_401(svc: Any) -> None:
    body = json.dumps(pr_payload()).encode()
    headers = [(k.encode(), v.encode()) for k, v in github_headers("pull_request", body).items()
               if k != "X-Hub-Signature-256"]  # fmt: skip
    for signature in ("sha256=é".encode(), b"sha256=\xff\xfe", ("sha256=" + "ü" * 64).encode()):
        status, answer = await raw_post(svc.url, "/webhooks/github",
                                        [*headers, (b"X-Hub-Signature-256", signature)], body)  # fmt: skip
        assert status == 401, answer
        assert answer["reason"] == "signature_malformed"


@pytest.mark.parametrize("header", [b"X-GitHub-Event", b"X-GitHub-Delivery", b"X-GitHub-Hook-ID"])
async def test_github_header_not_utf8_is_400(svc: Any, bus: Bus, header: bytes) -> None:
    body = json.dumps(pr_payload()).encode()
    headers = [(k.encode(), v.encode()) for k, v in github_headers("pull_request", body).items()
               if k.encode() != header]  # fmt: skip
    status, answer = await raw_post(svc.url, "/webhooks/github", [*headers, (header, b"a\xff\xfeb")], body)
    assert status == 400, answer
    assert answer["reason"] == "invalid_header"
    assert header.decode() in answer["error"] and "UTF-8" in answer["error"]
    assert await stored(bus) == []


async def test_github_utf8_headers_are_accepted(svc: Any, bus: Bus) -> None:
    body = json.dumps(pr_payload()).encode()
    headers = [(k.encode(), v.encode()) for k, v in github_headers("pull_request", body).items()
               if k != "X-GitHub-Delivery"]  # fmt: skip
    status, answer = await raw_post(svc.url, "/webhooks/github",
                                    [*headers, (b"X-GitHub-Delivery", "dé-1".encode())], body)  # fmt: skip
    assert status == 202, answer
    [ev] = await stored(bus)
    assert ev.get_id() == "dé-1"


async def test_github_lone_surrogate_in_an_attribute_is_400(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    body = b'{"action":"opened","repository":{"html_url":"https://github.com/a\\ud800"}}'
    status, answer = await post_gh(http, svc, body)
    assert status == 400, answer
    assert answer["reason"] == "invalid_attribute" and "'source'" in answer["error"]
    assert await stored(bus) == []


async def test_github_long_event_name_is_400_and_the_connection_survives(
    svc: Any, http: aiohttp.ClientSession, bus: Bus
) -> None:
    body = json.dumps(pr_payload()).encode()
    headers = github_headers("e" * 5000, body)
    async with http.post(svc.url + "/webhooks/github", data=body, headers=headers) as resp:
        assert resp.status == 400
        answer = await resp.json()
    assert answer["reason"] == "attribute_too_large"
    assert "'type'" in answer["error"] and str(MAX_ATTRIBUTE_CHARS) in answer["error"]
    await still_publishing(http, svc, bus)


async def test_github_empty_ref_and_hook_id_leave_no_empty_attribute(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    body = json.dumps({"ref": "", "repository": {"html_url": "https://github.com/a/b"}}).encode()
    headers = github_headers("push", body, delivery="empty-1")
    headers["X-GitHub-Hook-ID"] = ""
    async with http.post(svc.url + "/webhooks/github", data=body, headers=headers) as resp:
        assert resp.status == 202, await resp.text()
    [msg] = await bus.stream_messages("EVENTS")
    assert msg.headers["Nats-Msg-Id"] == "0:empty-1"
    ev = events.from_nats(msg.headers, msg.data)
    assert ev.get_subject() is None
    assert ev.get_extension("githubhookid") == "0"


async def test_github_msg_id_is_hook_and_delivery(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    body = json.dumps(pr_payload()).encode()
    status, _ = await post_gh(http, svc, body, delivery="a:b")
    assert status == 202
    [msg] = await bus.stream_messages("EVENTS")
    assert msg.headers["Nats-Msg-Id"] == "4242:a:b"


# --- /events ------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [100_000, MAX_JSON_DEPTH + 1])
async def test_events_json_nested_too_deep_is_400(svc: Any, http: aiohttp.ClientSession, bus: Bus, levels: int) -> None:
    nested = deep(levels)
    structured = b'{"specversion":"1.0","id":"1","type":"t","source":"s","data":' + nested + b"}"
    binary = {"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t", "ce-source": "s",
              "Content-Type": "application/json"}  # fmt: skip
    for body, headers in ((structured, STRUCTURED), (b"[" + structured + b"]", BATCH), (nested, binary)):
        status, answer = await post_events(http, svc, body, headers)
        assert status == 400, answer
        assert "deep" in answer["error"], answer
    assert await stored(bus) == []


async def test_events_ce_id_not_utf8_is_400(svc: Any, bus: Bus) -> None:
    headers = [(b"ce-specversion", b"1.0"), (b"ce-id", b"\xff\xfe"), (b"ce-type", b"t"),
               (b"ce-source", b"s"), (b"Content-Type", b"application/json")]  # fmt: skip
    status, answer = await raw_post(svc.url, "/events", headers, b"{}")
    assert status == 400, answer
    assert answer["reason"] == "invalid_attribute" and "'id'" in answer["error"]
    assert await stored(bus) == []


async def test_events_lone_surrogate_in_text_data_is_400(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    body = json.dumps(ce(datacontenttype="text/plain", data="a\ud800b")).encode()
    status, answer = await post_events(http, svc, body, STRUCTURED)
    assert status == 400, answer
    assert answer["reason"] == "invalid_data" and "surrogate" in answer["error"]
    assert await stored(bus) == []


async def test_events_lone_surrogate_in_json_data_is_kept(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    status, answer = await post_events(http, svc, ce(data={"s": "a\ud800b"}), STRUCTURED)
    assert status == 202, answer
    [ev] = await stored(bus)
    assert ev.get_data() == {"s": "a\ud800b"}


@pytest.mark.parametrize("value", [123, None, ["QUJD"], {"a": 1}])
async def test_events_non_string_data_base64_is_400(svc: Any, http: aiohttp.ClientSession, value: Any) -> None:
    status, answer = await post_events(http, svc, ce(data_base64=value, datacontenttype="application/octet-stream"), STRUCTURED)
    assert status == 400, answer
    assert "data_base64 must be a string" in answer["error"]


async def test_events_data_base64_needs_a_datacontenttype(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    doc = ce(data_base64="AAEC/w==")
    del doc["datacontenttype"], doc["data"]
    status, answer = await post_events(http, svc, doc, STRUCTURED)
    assert status == 400, answer
    assert answer["reason"] == "undecodable_event" and "application/json" in answer["error"]
    doc["datacontenttype"] = "application/octet-stream"
    status, answer = await post_events(http, svc, doc, STRUCTURED)
    assert status == 202, answer
    [ev] = await stored(bus)
    assert ev.get_data() == b"\x00\x01\x02\xff"


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00"])
async def test_events_time_out_of_range_is_400(svc: Any, http: aiohttp.ClientSession, bus: Bus, when: str) -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t", "ce-source": "s",
               "ce-time": when, "Content-Type": "application/json"}  # fmt: skip
    status, answer = await post_events(http, svc, b"{}", headers)
    assert status == 400, answer
    assert "time" in answer["error"] and "out of range" in answer["error"]
    status, answer = await post_events(http, svc, ce(time=when), STRUCTURED)
    assert status == 400, answer
    assert await stored(bus) == []


@pytest.mark.parametrize("content_type", [events.STRUCTURED_CONTENT_TYPE, " application/cloudevents+json",
                                          "application/cloudevents+json; charset=utf-8"])
async def test_events_cloudevents_datacontenttype_is_400(
    svc: Any, http: aiohttp.ClientSession, bus: Bus, content_type: str
) -> None:
    status, answer = await post_events(http, svc, ce(datacontenttype=content_type), STRUCTURED)
    assert status == 400, answer
    assert answer["reason"] == "invalid_datacontenttype"
    assert await stored(bus) == []


@pytest.mark.parametrize("content_type", ["application/jsön", "text/plain\x7f", "a\tb"])
async def test_events_datacontenttype_outside_printable_ascii_is_400(
    svc: Any, http: aiohttp.ClientSession, bus: Bus, content_type: str
) -> None:
    """It travels as a raw `content-type` header: a consumer reading it back through the
    stream API got a header object instead of text (found by the property suite)."""
    status, answer = await post_events(http, svc, ce(datacontenttype=content_type), STRUCTURED)
    assert status == 400, answer
    assert "printable ASCII" in answer["error"]
    assert await stored(bus) == []


async def test_events_empty_attribute_is_400(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    status, answer = await post_events(http, svc, ce(tenant=""), STRUCTURED)
    assert status == 400, answer
    assert answer["reason"] == "empty_attribute" and "'tenant'" in answer["error"]
    headers = {"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t", "ce-source": "s",
               "ce-tenant": "", "Content-Type": "application/json"}  # fmt: skip
    status, answer = await post_events(http, svc, b"{}", headers)
    assert status == 400, answer
    assert answer["reason"] == "empty_attribute"
    assert await stored(bus) == []


@pytest.mark.parametrize("value", [{"a": 1}, [1], 1.5])
async def test_events_extension_that_is_not_a_scalar_is_400(svc: Any, http: aiohttp.ClientSession, value: Any) -> None:
    status, answer = await post_events(http, svc, ce(tenant=value), STRUCTURED)
    assert status == 400, answer
    assert answer["reason"] == "invalid_attribute" and "'tenant'" in answer["error"]


@pytest.mark.parametrize("attr", ["type", "source", "subject", "id"])
async def test_events_long_attribute_is_400_and_the_connection_survives(
    svc: Any, http: aiohttp.ClientSession, bus: Bus, attr: str
) -> None:
    status, answer = await post_events(http, svc, ce(**{attr: "a" * 5000}), STRUCTURED)
    assert status == 400, answer
    assert answer["reason"] == "attribute_too_large"
    assert f"'{attr}'" in answer["error"] and str(MAX_ATTRIBUTE_CHARS) in answer["error"]
    await still_publishing(http, svc, bus)
    assert len(await stored(bus)) == 1


async def test_events_attribute_at_the_limit_is_accepted(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    status, answer = await post_events(http, svc, ce(type="t" * MAX_ATTRIBUTE_CHARS), STRUCTURED)
    assert status == 202, answer
    [ev] = await stored(bus)
    assert ev.get_type() == "t" * MAX_ATTRIBUTE_CHARS


async def test_events_header_block_too_large_is_400_and_the_connection_survives(
    svc: Any, http: aiohttp.ClientSession, bus: Bus
) -> None:
    extensions = {f"ext{i}": "v" * 1000 for i in range(12)}
    status, answer = await post_events(http, svc, ce(**extensions), STRUCTURED)
    assert status == 400, answer
    assert answer["reason"] == "headers_too_large" and "8192" in answer["error"]
    await still_publishing(http, svc, bus)


async def test_events_batch_over_the_limit_is_413(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    batch = [ce(i) for i in range(MAX_BATCH_EVENTS + 1)]
    status, answer = await post_events(http, svc, batch, BATCH)
    assert status == 413, answer
    assert answer["reason"] == "too_many_events"
    assert str(MAX_BATCH_EVENTS) in answer["error"] and "smaller batches" in answer["error"]
    status, answer = await post_events(http, svc, [ce(i) for i in range(100_000)], BATCH)
    assert status == 413, answer
    assert await stored(bus) == []


async def test_events_bad_item_refuses_the_whole_batch(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    status, answer = await post_events(http, svc, [ce(1), ce(2, type="t" * 5000)], BATCH)
    assert status == 400, answer
    assert "batch item 1 (id 'e-2')" in answer["error"] and "nothing of the batch" in answer["error"]
    assert await stored(bus) == []


async def test_events_source_and_id_with_colons_do_not_collide(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    for source, ident in (("a:b", "c"), ("a", "b:c"), ("a%3Ab", "c")):
        status, answer = await post_events(http, svc, ce(source=source, id=ident), STRUCTURED)
        assert status == 202, answer
        assert answer["events"][0]["duplicate"] is False
    msgs = await bus.stream_messages("EVENTS")
    assert len({m.headers["Nats-Msg-Id"] for m in msgs}) == 3
    status, answer = await post_events(http, svc, ce(source="a:b", id="c"), STRUCTURED)
    assert answer["status"] == "duplicate"  # the same pair is still recognised
