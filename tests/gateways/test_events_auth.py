"""POST /events: who may publish. Bearer tokens (constant-time, each possibly limited to
type and source prefixes), open without a token on loopback only, and never a token logged."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web

from eventsvc import events, logs
from eventsvc.bus import Bus
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.config import Config, load_config, parse_events_tokens
from eventsvc.gateways.app import build_app
from eventsvc.gateways.cloudevents_http import CloudEventsGateway, is_loopback
from eventsvc.gateways.common import BusRef

CI_TOKEN = "ci-0f3e9a7c41d2b865"
ADMIN_TOKEN = "admin-7b1c44e09a5f3d62"
# the CI token may publish its own events only; the admin token anything
TOKENS = f"{CI_TOKEN}:type=com.example.ci.;source=https://ci.example/,{ADMIN_TOKEN}"
STRUCTURED = {"Content-Type": events.STRUCTURED_CONTENT_TYPE}
BATCH = {"Content-Type": events.BATCH_CONTENT_TYPE}


def ce(i: int = 1, **attrs: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"ci-{i}", "type": "com.example.ci.build.done",
            "source": "https://ci.example/acme/shop", "data": {"n": i}, **attrs}  # fmt: skip


def forged_push() -> dict[str, Any]:
    """What fired the deploy sensor: a push of acme/shop, not sent by GitHub."""
    return ce(99, type="com.github.push", source="https://github.com/acme/shop")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(http: aiohttp.ClientSession, url: str, body: Any,
               headers: dict[str, str]) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:  # fmt: skip
    async with http.post(url + "/events", data=json.dumps(body), headers=headers) as resp:
        return resp.status, await resp.json(), resp


@pytest.fixture
async def secured(start_service: Any, nats_server: EmbeddedNats) -> Any:
    return await start_service(nats_url=nats_server.url, components=("gateway",),
                               events_tokens=parse_events_tokens(TOKENS))  # fmt: skip


@pytest.fixture
async def serve_gateway(bus: Bus) -> AsyncIterator[Callable[[Config], Any]]:
    """The CloudEvents gateway for `config`, served on 127.0.0.1 whatever `config.http_host`
    says: how the gateway behaves on a non-loopback bind, without listening on one."""
    runners: list[web.AppRunner] = []

    async def serve(config: Config) -> str:
        app = build_app(CloudEventsGateway(config, BusRef(bus)).routes(), dict,
                        config.max_body_bytes)  # fmt: skip
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()


async def test_a_configured_token_publishes(secured: Any, http: aiohttp.ClientSession,
                                            bus: Bus) -> None:  # fmt: skip
    status, body, _ = await post(http, secured.url, ce(1), {**STRUCTURED, **bearer(CI_TOKEN)})
    assert status == 202, body
    # any configured token is accepted (two at once: rotation), and the scheme is caseless
    status, body, _ = await post(http, secured.url, ce(2),
                                 {**STRUCTURED, "Authorization": f"bearer {ADMIN_TOKEN}"})  # fmt: skip
    assert status == 202, body
    assert len(await bus.stream_messages("EVENTS", "events.http.>")) == 2


@pytest.mark.parametrize(("headers", "reason", "challenge"), [
    ({}, "token_missing", 'Bearer realm="eventsvc"'),
    (bearer("ci-0f3e9a7c41d2b86"), "token_invalid", 'Bearer realm="eventsvc", error="invalid_token"'),
    (bearer(CI_TOKEN + "0"), "token_invalid", 'Bearer realm="eventsvc", error="invalid_token"'),
    ({"Authorization": CI_TOKEN}, "token_malformed", 'Bearer realm="eventsvc"'),
    ({"Authorization": f"Basic {CI_TOKEN}"}, "token_malformed", 'Bearer realm="eventsvc"'),
    ({"Authorization": "Bearer "}, "token_malformed", 'Bearer realm="eventsvc"'),
])  # fmt: skip
async def test_missing_or_wrong_token_is_401_with_a_bearer_challenge(
    secured: Any, http: aiohttp.ClientSession, bus: Bus,
    headers: dict[str, str], reason: str, challenge: str,
) -> None:  # fmt: skip
    status, body, resp = await post(http, secured.url, ce(), {**STRUCTURED, **headers})
    assert status == 401
    assert resp.headers["WWW-Authenticate"] == challenge
    assert body["reason"] == reason
    assert "EVENTSVC_EVENTS_TOKEN" in body["error"] or reason == "token_malformed"
    assert CI_TOKEN not in json.dumps(body)
    assert await bus.stream_messages("EVENTS") == []


async def test_a_limited_token_publishes_its_types_and_nothing_else(
    secured: Any, http: aiohttp.ClientSession, bus: Bus
) -> None:
    ci = {**STRUCTURED, **bearer(CI_TOKEN)}
    status, _, _ = await post(http, secured.url, ce(1), ci)
    assert status == 202
    status, body, resp = await post(http, secured.url, forged_push(), ci)
    assert status == 403
    assert body["reason"] == "type_not_allowed"
    assert body["error"] == ("this token may not publish type 'com.github.push'; "
                             "allowed type prefixes: com.example.ci.")  # fmt: skip
    assert resp.headers["WWW-Authenticate"].endswith('error="insufficient_scope"')
    # an allowed type from another source: the source prefix is checked as well
    status, body, _ = await post(http, secured.url,
                                 ce(2, source="https://github.com/acme/shop"), ci)  # fmt: skip
    assert status == 403
    assert body["reason"] == "source_not_allowed"
    assert "allowed source prefixes: https://ci.example/" in body["error"]
    [msg] = await bus.stream_messages("EVENTS")
    assert msg.headers["ce-id"] == "ci-1"  # only the allowed event was stored
    # the unrestricted token may publish what the CI token may not
    status, _, _ = await post(http, secured.url, forged_push(), {**STRUCTURED, **bearer(ADMIN_TOKEN)})
    assert status == 202


async def test_a_batch_with_one_forbidden_event_is_refused_whole(
    secured: Any, http: aiohttp.ClientSession, bus: Bus
) -> None:
    batch = [ce(1), ce(2), forged_push()]
    status, body, _ = await post(http, secured.url, batch, {**BATCH, **bearer(CI_TOKEN)})
    assert status == 403
    assert body["error"].startswith("batch item 2 (id 'ci-99'): this token may not publish "
                                    "type 'com.github.push'")  # fmt: skip
    assert body["error"].endswith("nothing of the batch was stored")
    assert await bus.stream_messages("EVENTS") == []
    status, _, _ = await post(http, secured.url, batch[:2], {**BATCH, **bearer(CI_TOKEN)})
    assert status == 202
    assert len(await bus.stream_messages("EVENTS")) == 2


async def test_binary_mode_is_checked_on_its_decoded_attributes(
    secured: Any, http: aiohttp.ClientSession, bus: Bus
) -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "b-1", "ce-type": "com.github.push",
               "ce-source": "https://github.com/acme/shop", "Content-Type": "application/json",
               **bearer(CI_TOKEN)}  # fmt: skip
    async with http.post(secured.url + "/events", data=b"{}", headers=headers) as resp:
        assert resp.status == 403
    assert await bus.stream_messages("EVENTS") == []


async def test_refusals_are_counted_by_reason(secured: Any, http: aiohttp.ClientSession) -> None:
    await post(http, secured.url, ce(), {**STRUCTURED, **bearer("nope")})
    await post(http, secured.url, forged_push(), {**STRUCTURED, **bearer(CI_TOKEN)})
    async with http.get(secured.url + "/metrics") as resp:
        text = await resp.text()
    for reason in ("token_invalid", "type_not_allowed"):
        assert f'eventsvc_events_rejected_total{{gateway="cloudevents",reason="{reason}"}}' in text


async def test_no_token_and_not_loopback_refuses_everything_naming_the_setting(
    serve_gateway: Callable[[Config], Any], config_factory: Callable[..., Config],
    http: aiohttp.ClientSession, bus: Bus,
) -> None:  # fmt: skip
    url = await serve_gateway(config_factory(http_host="0.0.0.0"))
    for headers in (STRUCTURED, {**STRUCTURED, **bearer("anything")}):
        status, body, resp = await post(http, url, ce(), headers)
        assert status == 401
        assert body["reason"] == "auth_not_configured"
        assert "set EVENTSVC_EVENTS_TOKEN or EVENTSVC_EVENTS_TOKEN_FILE" in body["error"]
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert await bus.stream_messages("EVENTS") == []


async def test_no_token_on_loopback_is_open(svc: Any, http: aiohttp.ClientSession, bus: Bus) -> None:
    status, _, _ = await post(http, svc.url, ce(), STRUCTURED)
    assert status == 202
    assert len(await bus.stream_messages("EVENTS")) == 1


async def test_a_configured_token_is_required_on_loopback_too(
    secured: Any, http: aiohttp.ClientSession
) -> None:
    status, _, _ = await post(http, secured.url, ce(), STRUCTURED)
    assert status == 401


async def test_tokens_from_a_file(
    start_service: Any, nats_server: EmbeddedNats, tmp_path: Path,
    http: aiohttp.ClientSession, bus: Bus,
) -> None:  # fmt: skip
    path = tmp_path / "tokens"
    path.write_text(f"{CI_TOKEN}:type=com.example.ci.\n{ADMIN_TOKEN}\n")  # one a line, as mounted
    tokens = load_config(environ={"EVENTSVC_EVENTS_TOKEN_FILE": str(path)}).events_tokens
    svc = await start_service(nats_url=nats_server.url, components=("gateway",),
                              events_tokens=tokens)  # fmt: skip
    status, _, _ = await post(http, svc.url, ce(), {**STRUCTURED, **bearer(CI_TOKEN)})
    assert status == 202
    status, _, _ = await post(http, svc.url, forged_push(), {**STRUCTURED, **bearer(CI_TOKEN)})
    assert status == 403
    status, _, _ = await post(http, svc.url, forged_push(), {**STRUCTURED, **bearer(ADMIN_TOKEN)})
    assert status == 202


async def test_a_named_token_file_that_is_missing_keeps_events_closed_even_on_loopback(
    start_service: Any, nats_server: EmbeddedNats, tmp_path: Path,
    http: aiohttp.ClientSession, bus: Bus,
) -> None:  # fmt: skip
    # as in a pod whose optional Secret is not created yet: it starts, /events stays shut
    missing = str(tmp_path / "secrets" / "tokens")
    config = load_config(environ={"EVENTSVC_EVENTS_TOKEN_FILE": missing})
    assert config.events_tokens == () and config.events_token_file == missing
    svc = await start_service(nats_url=nats_server.url, components=("gateway",),
                              events_token_file=missing)  # fmt: skip
    status, body, _ = await post(http, svc.url, ce(), STRUCTURED)
    assert status == 401
    assert body["reason"] == "auth_not_configured"
    assert await bus.stream_messages("EVENTS") == []


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], str]]:
    """Everything logged while the test runs, rendered as in production (JSON) at debug."""
    buffer = io.StringIO()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", buffer)  # the stream `logs.configure` writes to
        logs.configure("json", "debug")
    yield buffer.getvalue
    structlog.reset_defaults()


async def test_tokens_never_appear_in_the_logs(
    logged: Callable[[], str], start_service: Any, nats_server: EmbeddedNats,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    wrong = "wrong-5e2d8c61f0a94b37"
    svc = await start_service(nats_url=nats_server.url, components=("gateway",),
                              events_tokens=parse_events_tokens(TOKENS))  # fmt: skip
    logs.get("eventsvc").info("starting", config=svc.service.config.redacted())  # as `run` does
    assert (await post(http, svc.url, ce(1), {**STRUCTURED, **bearer(CI_TOKEN)}))[0] == 202
    assert (await post(http, svc.url, ce(2), {**STRUCTURED, **bearer(wrong)}))[0] == 401
    assert (await post(http, svc.url, ce(3), {**STRUCTURED, "Authorization": wrong}))[0] == 401
    assert (await post(http, svc.url, forged_push(), {**STRUCTURED, **bearer(CI_TOKEN)}))[0] == 403
    await svc.stop()
    out = logged()
    # the log did record all of it: start-up, the acceptance, every refusal with its reason
    assert '"POST /events requires a bearer token"' in out and '"limited": 1' in out
    assert '"event accepted"' in out
    for reason in ("token_invalid", "token_malformed", "type_not_allowed"):
        assert f'"reason": "{reason}"' in out
    assert "<redacted>" in out
    for secret in (CI_TOKEN, ADMIN_TOKEN, wrong):
        assert secret not in out


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LocalHost", True),
    ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False),
    ("::ffff:127.0.0.1", False), ("events.example.com", False), ("localhost.evil", False),
])  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
