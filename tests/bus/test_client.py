"""The bus against real nats-servers: auth, streams, KV, errors that say what failed."""

from __future__ import annotations

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
