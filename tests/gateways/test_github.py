"""GitHub gateway against a real nats-server: what is stored, what is refused, and why."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from eventsvc import events
from eventsvc.bus import Bus
from eventsvc.bus.embedded import EmbeddedNats
from tests.conftest import github_headers, post_github, pr_payload, sign


async def stored(bus: Bus, subject: str = "events.github.>") -> list[events.CloudEvent]:
    return [events.from_nats(m.headers, m.data) for m in await bus.stream_messages("EVENTS", subject)]


@pytest.mark.parametrize(
    ("event", "payload", "ce_type", "ce_subject"),
    [
        ("pull_request", pr_payload("opened"), "com.github.pull_request.opened", "7"),
        ("pull_request", pr_payload("synchronize"), "com.github.pull_request.synchronize", "7"),
        ("pull_request", pr_payload("closed"), "com.github.pull_request.closed", "7"),
        (
            "push",
            {"ref": "refs/heads/main", "after": "abc", "repository": {"html_url": "https://github.com/acme/shop"}},
            "com.github.push",
            "refs/heads/main",
        ),
        (
            "release",
            {"action": "published", "release": {"tag_name": "v1.2.0"},
             "repository": {"html_url": "https://github.com/acme/shop"}},
            "com.github.release.published",
            "v1.2.0",
        ),
    ],
)
async def test_signed_webhook_is_stored_as_binary_cloudevent(
    svc: Any, http: aiohttp.ClientSession, bus: Bus, event: str, payload: dict[str, Any],
    ce_type: str, ce_subject: str,
) -> None:  # fmt: skip
    resp = await post_github(http, svc.url, event, payload, delivery="d-100")
    assert resp.status == 202
    msgs = await bus.stream_messages("EVENTS", f"events.github.{event}")
    assert len(msgs) == 1
    assert msgs[0].headers["Nats-Msg-Id"] == "4242:d-100"
    assert msgs[0].headers["ce-type"] == ce_type  # binary mode
    ev = events.from_nats(msgs[0].headers, msgs[0].data)
    assert ev.get_id() == "d-100"
    assert ev.get_type() == ce_type
    assert ev.get_subject() == ce_subject
    assert ev.get_source() == "https://github.com/acme/shop"
    assert ev.get_extension("githubdelivery") == "d-100"
    assert ev.get_extension("githubhookid") == "4242"
    assert ev.get_data() == payload
    assert msgs[0].data == json.dumps(payload).encode()  # the body as GitHub sent it


async def test_form_encoded_payload_is_accepted(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    raw = json.dumps(pr_payload("opened")).encode()
    body = urlencode({"payload": raw.decode()}).encode()
    headers = github_headers("pull_request", body, delivery="form-1")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    async with http.post(svc.url + "/webhooks/github", data=body, headers=headers) as resp:
        assert resp.status == 202
    [ev] = await stored(bus)
    assert ev.get_data() == pr_payload("opened")


async def test_ping_answers_200_and_stores_nothing(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    resp = await post_github(http, svc.url, "ping", {"zen": "Keep it simple.", "hook_id": 1})
    assert resp.status == 200
    assert await stored(bus) == []


@pytest.mark.parametrize(
    ("signature", "reason"),
    [(None, "signature_missing"), ("sha256=00ff", "signature_invalid"), ("md5=abc", "signature_malformed")],
)
async def test_bad_or_missing_signature_is_401(
    svc: Any, http: aiohttp.ClientSession, bus: Bus, signature: str | None, reason: str
) -> None:
    body = json.dumps(pr_payload()).encode()
    headers = github_headers("pull_request", body)
    if signature is None:
        del headers["X-Hub-Signature-256"]
    else:
        headers["X-Hub-Signature-256"] = signature
    async with http.post(svc.url + "/webhooks/github", data=body, headers=headers) as resp:
        assert resp.status == 401
        assert (await resp.json())["reason"] == reason
    assert await stored(bus) == []
    async with http.get(svc.url + "/metrics") as resp:
        text = await resp.text()
    assert f'eventsvc_events_rejected_total{{gateway="github",reason="{reason}"}}' in text


async def test_second_secret_is_accepted_for_rotation(
    start_service: Any, nats_server: EmbeddedNats, http: aiohttp.ClientSession
) -> None:
    svc = await start_service(nats_url=nats_server.url, components=("gateway",),
                              github_webhook_secrets=("old", "new"))  # fmt: skip
    body = json.dumps(pr_payload()).encode()
    for secret in ("new", "old"):
        headers = github_headers("pull_request", body)
        headers["X-Hub-Signature-256"] = sign(body, secret)
        async with http.post(svc.url + "/webhooks/github", data=body, headers=headers) as resp:
            assert resp.status == 202
    headers["X-Hub-Signature-256"] = sign(body, "other")
    async with http.post(svc.url + "/webhooks/github", data=body, headers=headers) as resp:
        assert resp.status == 401


async def test_malformed_json_is_400_naming_the_problem(svc: Any, http: aiohttp.ClientSession) -> None:
    body = b'{"action": "opened",'
    async with http.post(svc.url + "/webhooks/github", data=body,
                         headers=github_headers("pull_request", body)) as resp:  # fmt: skip
        assert resp.status == 400
        assert "not valid JSON" in (await resp.json())["error"]


async def test_missing_event_header_is_400(svc: Any, http: aiohttp.ClientSession) -> None:
    body = b"{}"
    headers = github_headers("pull_request", body)
    del headers["X-GitHub-Event"]
    async with http.post(svc.url + "/webhooks/github", data=body, headers=headers) as resp:
        assert resp.status == 400
        assert "X-GitHub-Event" in (await resp.json())["error"]


async def test_oversized_body_is_413(
    start_service: Any, nats_server: EmbeddedNats, http: aiohttp.ClientSession, bus: Bus
) -> None:
    svc = await start_service(nats_url=nats_server.url, components=("gateway",), max_body_bytes=1024)
    body = json.dumps(pr_payload(padding="x" * 4096)).encode()
    async with http.post(svc.url + "/webhooks/github", data=body,
                         headers=github_headers("pull_request", body)) as resp:  # fmt: skip
        assert resp.status == 413
        assert "maxBodyBytes" in (await resp.json())["error"]
    assert await stored(bus) == []


async def test_event_outside_allow_list_is_not_published(
    start_service: Any, nats_server: EmbeddedNats, http: aiohttp.ClientSession, bus: Bus
) -> None:
    svc = await start_service(nats_url=nats_server.url, components=("gateway",),
                              github_allowed_events=("pull_request",))  # fmt: skip
    resp = await post_github(http, svc.url, "issues", {"action": "opened", "issue": {"number": 1}})
    assert resp.status == 200
    resp = await post_github(http, svc.url, "pull_request", pr_payload())
    assert resp.status == 202
    assert [e.get_type() for e in await stored(bus)] == ["com.github.pull_request.opened"]


async def test_duplicate_delivery_is_stored_once(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    first = await post_github(http, svc.url, "pull_request", pr_payload(), delivery="same")
    second = await post_github(http, svc.url, "pull_request", pr_payload(), delivery="same")
    assert (first.status, second.status) == (202, 200)
    assert len(await stored(bus)) == 1


async def test_bus_down_gives_503_then_accepts_after_restart(
    svc: Any, http: aiohttp.ClientSession, nats_server: EmbeddedNats
) -> None:
    await nats_server.stop()
    resp = await post_github(http, svc.url, "pull_request", pr_payload(), delivery="while-down")
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()
    async with http.get(svc.url + "/readyz") as r:
        assert r.status == 503
    await nats_server.start()  # same port, same store
    bus = svc.service.state.bus_ref.bus
    for _ in range(100):
        if bus.connected:
            break
        import asyncio

        await asyncio.sleep(0.1)
    resp = await post_github(http, svc.url, "pull_request", pr_payload(), delivery="while-down")
    assert resp.status == 202
    async with http.get(svc.url + "/readyz") as r:
        assert r.status == 200


async def test_no_secret_refuses_to_start_unless_insecure(
    start_service: Any, nats_server: EmbeddedNats, http: aiohttp.ClientSession
) -> None:
    from eventsvc.errors import ConfigError

    with pytest.raises(ConfigError, match="EVENTSVC_GITHUB_WEBHOOK_SECRET"):
        await start_service(nats_url=nats_server.url, github_webhook_secrets=())
    svc = await start_service(nats_url=nats_server.url, components=("gateway",),
                              github_webhook_secrets=(), github_insecure_no_signature=True)  # fmt: skip
    body = json.dumps(pr_payload()).encode()
    headers = github_headers("pull_request", body)
    del headers["X-Hub-Signature-256"]
    async with http.post(svc.url + "/webhooks/github", data=body, headers=headers) as resp:
        assert resp.status == 202


@pytest.mark.parametrize("delivery", ["d-plain-1", 'd "quoted" \\ é'])
async def test_accepted_answer_names_the_delivery_and_headers_match_the_generic_codec(
    svc: Any, http: aiohttp.ClientSession, bus: Bus, delivery: str
) -> None:
    body = json.dumps(pr_payload("opened")).encode()
    headers = github_headers("pull_request", body, delivery=delivery)
    async with http.post(svc.url + "/webhooks/github", data=body, headers=headers) as resp:
        assert resp.status == 202
        assert resp.content_type == "application/json"
        assert await resp.json() == {"status": "accepted", "id": delivery}
    (msg,) = await bus.stream_messages("EVENTS", "events.github.pull_request")
    ev = events.from_nats(msg.headers, msg.data)
    assert ev.get_id() == delivery
    # the gateway builds its headers directly: the same as the generic binary-mode encoder
    expected = events.binary_headers(
        {**ev.get_attributes(), "time": msg.headers["ce-time"]}
    )
    assert {k: v for k, v in msg.headers.items() if k != "Nats-Msg-Id"} == expected
    assert msg.headers["ce-githubevent"] == "pull_request"


def test_format_now_is_rfc3339_utc_with_microseconds() -> None:
    from datetime import UTC, datetime

    text = events.format_now()
    assert len(text) == len("2026-01-01T00:00:00.000000Z") and text.endswith("Z")
    assert datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo == UTC


async def test_refusals_are_logged_with_their_reason(
    start_service: Any, nats_server: EmbeddedNats, http: aiohttp.ClientSession
) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as entries:
        svc = await start_service(nats_url=nats_server.url, components=("gateway",))
        body = json.dumps(pr_payload()).encode()
        headers = github_headers("pull_request", body, delivery="wrong-secret")
        headers["X-Hub-Signature-256"] = sign(body, "not-the-secret")
        async with http.post(svc.url + "/webhooks/github", data=body, headers=headers) as resp:
            assert resp.status == 401
    refused = [e for e in entries if e["event"] == "request refused"]
    assert len(refused) == 1
    assert refused[0]["reason"] == "signature_invalid"
    assert refused[0]["event_id"] == "wrong-secret"
    assert refused[0]["log_level"] == "warning"
