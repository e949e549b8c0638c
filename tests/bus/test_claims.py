"""Claim checks: bodies larger than the server's max_payload (1 MB here) are stored in the
object store and read back whole; routing sees the message's headers unchanged."""

from __future__ import annotations

import os

import pytest

from eventsvc import bus as bus_mod
from eventsvc.bus import claims
from eventsvc.bus.streams import EVENTS
from eventsvc.errors import ClaimGoneError


@pytest.mark.parametrize("size", [2 * 2**20, 9 * 2**20])
async def test_a_body_above_max_payload_is_stored_apart_and_read_back(
    bus: bus_mod.Bus, size: int
) -> None:
    body = os.urandom(size)
    headers = {"ce-id": "big", "ce-type": "t", "ce-source": "s", "ce-specversion": "1.0"}
    ack = await bus.publish("events.test.big", body, headers, msg_id=f"big-{size}")
    assert not ack.duplicate
    [msg] = await bus.stream_messages(EVENTS, "events.test.big")
    assert msg.data == b""
    assert msg.headers[claims.HEADER] == claims.reference(claims.name_of(body))
    assert msg.headers["ce-id"] == "big"  # routing needs no body
    assert await bus.body_of(msg.headers, msg.data) == body


async def test_a_small_body_is_not_stored_apart(bus: bus_mod.Bus) -> None:
    await bus.publish("events.test.small", b"{}", {"ce-id": "small"})
    [msg] = await bus.stream_messages(EVENTS, "events.test.small")
    assert msg.data == b"{}" and claims.HEADER not in msg.headers
    assert await bus.body_of(msg.headers, msg.data) == b"{}"


async def test_a_claim_that_names_nothing_stored_is_gone(bus: bus_mod.Bus) -> None:
    for ref in ("eventsvc-bodies/" + "0" * 64, "other-bucket/x", "eventsvc-bodies/../x"):
        with pytest.raises(ClaimGoneError):
            await bus.body_of({claims.HEADER: ref}, b"")


def test_claim_names_are_content_addresses() -> None:
    assert claims.name_of(b"a") == claims.name_of(b"a") != claims.name_of(b"b")
    assert claims.parse(claims.reference(claims.name_of(b"a"))) == claims.name_of(b"a")
