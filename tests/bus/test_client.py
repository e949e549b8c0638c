"""The bus against real nats-servers: auth, streams, KV, errors that say what failed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from eventsvc import bus as bus_mod
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.bus.streams import StreamSpec
from eventsvc.errors import BusUnavailableError


@pytest.fixture
async def auth_server(tmp_path: Path) -> Any:
    server = EmbeddedNats(tmp_path / "auth", port=0, extra_args=("--user", "svc", "--pass", "pw"))
    await server.start()
    yield server
    await server.stop()


async def test_user_password_auth(auth_server: EmbeddedNats, config_factory: Any) -> None:
    good = await bus_mod.connect(auth_server.url, config_factory(nats_user="svc", nats_password="pw"))
    assert good.connected
    await good.close()
    with pytest.raises(BusUnavailableError, match=r"cannot connect to NATS at .*credentials"):
        await bus_mod.connect(auth_server.url, config_factory(nats_user="svc", nats_password="no"))


async def test_stream_is_reconciled_when_settings_change(bus: bus_mod.Bus) -> None:
    await bus.ensure_stream(StreamSpec("T", ("t.>",), duplicate_window=60))
    await bus.ensure_stream(StreamSpec("T", ("t.>", "u.>"), duplicate_window=30))
    ack = await bus.publish("u.x", b"1", msg_id="a")
    assert ack.stream == "T"
    assert (await bus.publish("u.x", b"1", msg_id="a")).duplicate


async def test_kv_create_and_compare_and_set(bus: bus_mod.Bus) -> None:
    kv = await bus.kv("test-kv")
    assert await kv.create("k", b"1")
    assert not await kv.create("k", b"2")
    value, rev = await kv.get("k") or (b"", 0)
    assert value == b"1"
    assert await kv.update("k", b"3", last=rev)
    assert not await kv.update("k", b"4", last=rev)
    assert await kv.keys() == ["k"]
    await kv.delete("k")
    assert await kv.get("k") is None


async def test_publish_when_server_gone_is_unavailable(
    nats_server: EmbeddedNats, config_factory: Any
) -> None:
    b = await bus_mod.connect(nats_server.url, config_factory())
    await b.ensure_streams(bus_mod.default_streams(config_factory()))
    await nats_server.stop()
    with pytest.raises(BusUnavailableError, match=r"publish to events\.x"):
        await b.publish("events.x", b"1")
    await b.close()


def test_header_block_is_what_nats_py_writes() -> None:
    from eventsvc.bus.natsclient import encode_headers

    headers = {"ce-id": " a\r\nb ", " Nats-Msg-Id ": "1:d", " ": "skipped", "ce-x": "%22"}
    assert encode_headers(headers, set()) == (
        b"NATS/1.0\r\nce-id: a  b\r\nNats-Msg-Id: 1:d\r\nce-x: %22\r\n\r\n"
    )


async def test_fast_publish_stores_once_and_maps_errors(bus: bus_mod.Bus) -> None:
    from eventsvc.errors import BusError

    headers = {"ce-id": "x1", "content-type": "application/json"}
    first = await bus.publish("events.github.push", b"{}", headers, msg_id="1:x1")
    again = await bus.publish("events.github.push", b"{}", headers, msg_id="1:x1")
    assert (first.stream, first.duplicate) == ("EVENTS", False)
    assert (again.seq, again.duplicate) == (first.seq, True)
    (msg,) = await bus.stream_messages("EVENTS", "events.github.push")
    assert msg.headers == {**headers, "Nats-Msg-Id": "1:x1"}
    with pytest.raises(BusUnavailableError, match=r"no-stream\.here"):
        await bus.publish("no-stream.here", b"{}", headers, msg_id="1:x2")
    with pytest.raises(BusError, match="BadHeaderError"):
        await bus.publish("events.github.push", b"{}", {"bad key": "v"})
    with pytest.raises(BusError, match="BadSubjectError"):
        await bus.publish("events. github", b"{}", headers)


async def test_fast_publish_times_out_as_unavailable(bus: bus_mod.Bus) -> None:
    nc = bus._nc
    sub = await nc.subscribe("silent.subject")  # a responder that never answers
    quick = bus_mod.Bus(nc, bus.url, publish_timeout=0.2)
    with pytest.raises(BusUnavailableError, match="TimeoutError"):
        await quick.publish("silent.subject", b"{}", {"ce-id": "1"})
    assert not nc._resp_map  # the pending request is forgotten
    await sub.unsubscribe()


@pytest.mark.parametrize("offence", ["control_line", "payload"])
async def test_a_server_side_close_is_followed_by_a_reconnect(
    nats_server: EmbeddedNats, config_factory: Any, offence: str
) -> None:
    """nats-server answers a protocol violation with -ERR and closes the connection; nats-py
    would then close the client for good. The bus reconnects instead, and says so."""
    states: list[str] = []
    b = await bus_mod.connect(nats_server.url, config_factory(), on_state=states.append)
    try:
        await b.ensure_streams(bus_mod.default_streams(config_factory()))
        nc = b._nc
        if offence == "control_line":  # a subject past the server's 4 KB control line
            await nc.publish("events.x." + "a" * 5000, b"")
        else:  # a message past max_payload, sent around the client's own check
            nc._max_payload = 1 << 30
            await nc.publish("events.x", b"x" * (nats_server_max_payload() + 1))
        await nc.flush(timeout=5) if nc.is_connected else None
        for _ in range(200):
            if "reconnected" in states and b.connected:
                break
            await asyncio.sleep(0.05)
        assert states[:2] == ["disconnected", "reconnected"], states
        assert not nc.is_closed
        ack = await b.publish("events.after", b"1", msg_id="after-close")
        assert ack.stream == "EVENTS"
    finally:
        await b.close()


def nats_server_max_payload() -> int:
    return 1 << 20  # the embedded server's default
