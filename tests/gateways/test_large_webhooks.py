"""GitHub sends webhooks up to 25 MB; the embedded nats-server takes 1 MB per message. A
signed 2, 9 or 20 MB webhook is accepted (202, not 500) and stored whole."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import pytest

from eventsvc.bus.streams import EVENTS
from tests.conftest import github_headers, pr_payload, sign


@pytest.mark.parametrize("megabytes", [2, 9, 20])
async def test_a_large_signed_webhook_is_accepted_and_stored_whole(
    svc: Any, http: aiohttp.ClientSession, megabytes: int
) -> None:
    payload = pr_payload()
    payload["pull_request"]["body"] = "x" * (megabytes * 2**20)
    body = json.dumps(payload).encode()
    headers = github_headers("pull_request", body, delivery=f"large-{megabytes}")
    headers["X-Hub-Signature-256"] = sign(body)
    sent = io.BytesIO(body)  # what aiohttp wants for a large body
    async with http.post(svc.url + "/webhooks/github", data=sent, headers=headers) as resp:
        assert resp.status == 202, await resp.text()
    bus = svc.service.state.bus_ref.bus
    [msg] = await bus.stream_messages(EVENTS, "events.github.pull_request")
    assert json.loads(await bus.body_of(msg.headers, msg.data)) == payload
