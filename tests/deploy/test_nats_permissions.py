"""deploy/nats/nats-server.conf's users, on a real nats-server started from it (its
cluster block left out, so one node is a whole server): the example publisher `ci` may
publish on its own subtree with JetStream acks and nothing else; eventsvc's own user still
does everything eventsvc needs."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from eventsvc import bus as bus_mod
from eventsvc.bus.embedded import free_port, server_binary
from eventsvc.bus.streams import EVENTS
from eventsvc.config import Config
from tests.deploy.conftest import NATS_CONF

PASSWORDS = {"EVENTSVC_NATS_PASSWORD": "eventsvc-pw", "NATS_CI_PASSWORD": "ci-pw",
             "NATS_SYS_PASSWORD": "sys-pw"}  # fmt: skip


def single_node(text: str, port: int, store: Path) -> str:
    """The shipped configuration on loopback, without its cluster block."""
    text, n = re.subn(r"^cluster \{.*?^\}\n", "", text, flags=re.MULTILINE | re.DOTALL)
    assert n == 1, "expected one top-level cluster block"
    text = re.sub(r"^listen: .*$", f"listen: 127.0.0.1:{port}", text, flags=re.MULTILINE)
    text = re.sub(r"^http: .*$", "", text, flags=re.MULTILINE)
    return re.sub(r"^(\s+)store_dir: /data$", rf"\1store_dir: {store}", text, flags=re.MULTILINE)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    conf = tmp_path / "nats-server.conf"
    conf.write_text(single_node(NATS_CONF.read_text(), port, tmp_path / "store"))
    proc = await asyncio.create_subprocess_exec(
        server_binary(), "-c", str(conf), "-l", str(tmp_path / "server.log"),
        env={**os.environ, "SERVER_NAME": "n1", **PASSWORDS},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"nats://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                nc = await nats.connect(url, user="eventsvc", password="eventsvc-pw",
                                        allow_reconnect=False)  # fmt: skip
                await nc.close()
                break
            except (OSError, nats.errors.Error):
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        await proc.wait()


@pytest.fixture
async def eventsvc_bus(server: str, config_factory: Any) -> AsyncIterator[bus_mod.Bus]:
    config: Config = config_factory(nats_url=server, nats_user="eventsvc",
                                    nats_password="eventsvc-pw")  # fmt: skip
    bus = await bus_mod.connect(server, config)
    await bus.ensure_streams(bus_mod.default_streams(config))
    yield bus
    await bus.close()


async def test_eventsvc_user_does_what_eventsvc_needs(eventsvc_bus: bus_mod.Bus) -> None:
    await eventsvc_bus.publish("events.github.push", b"{}", {"ce-id": "1"}, msg_id="1")
    kv = await eventsvc_bus.kv("eventsvc-fired")
    await kv.put("k", b"v")
    assert (await kv.get("k") or (b"", 0))[0] == b"v"
    assert len(await eventsvc_bus.stream_messages(EVENTS)) == 1


async def test_ci_publishes_its_own_subtree_and_nothing_else(
    server: str, eventsvc_bus: bus_mod.Bus
) -> None:
    refusals: list[str] = []

    async def on_error(e: Exception) -> None:
        refusals.append(str(e))

    nc = await nats.connect(server, user="ci", password="ci-pw", inbox_prefix="_INBOX_ci",
                            error_cb=on_error, allow_reconnect=False)  # fmt: skip
    try:
        js = nc.jetstream(timeout=1.0)
        ack = await js.publish("events.ci.build", b'{"ok": true}')
        assert ack.stream == EVENTS
        for subject in ("events.github.push", "events.http.x", "events.cron.nightly"):
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await js.publish(subject, b"forged")
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await js.key_value("eventsvc-fired")  # $JS.API: refused
        results = await nc.subscribe("results.>")
        await eventsvc_bus.publish("results.s.t", b"{}")
        with pytest.raises(nats.errors.TimeoutError):
            await results.next_msg(timeout=1.0)
    finally:
        await nc.close()
    stored = [m.subject for m in await eventsvc_bus.stream_messages(EVENTS)]
    assert stored == ["events.ci.build"], "only the ci subtree was stored"
    said = [r.lower() for r in refusals]
    for refused in ('publish to "events.github.push"', 'publish to "events.http.x"',
                    'publish to "$js.api.stream.info.kv_eventsvc-fired"',
                    'subscription to "results.>"'):  # fmt: skip
        assert any(f"permissions violation for {refused}" in r for r in said), refusals
