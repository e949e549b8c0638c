"""deploy/nats/nats-server.conf as a real 3-node JetStream cluster on loopback:
eventsvc keeps every accepted webhook when a node dies in the middle of a burst.

Three nats-server processes start from the shipped file with only addresses, ports
and store directories rewritten. eventsvc runs in-process against all three with
streams of 3 replicas. A burst of signed webhooks is posted; part-way through, the
node leading the EVENTS stream is killed (SIGKILL, a crash). Refused posts (503) are
retried with the same delivery id, as GitHub redelivers. Every event answered 2xx
must then be in the stream exactly once and must have reached its sensor's trigger.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventsvc.bus import Bus, Delivery
from eventsvc.bus.embedded import free_port, server_binary
from eventsvc.errors import BusUnavailableError
from tests.conftest import RunningService, http_sensor, post_github, pr_payload, write_sensor
from tests.deploy.conftest import NATS_CONF
from tests.receiver import Receiver

PASSWORD = "cluster-test-password"
EVENTS = 120
KILL_AFTER = 40  # accepted events before the stream leader is killed
CONCURRENCY = 8


CI_PASSWORD = "ci-" + PASSWORD


@dataclass
class Node:
    name: str
    store: Path
    client_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def monitor(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def _sub(
    text: str, pattern: str, repl: str | Callable[[re.Match[str]], str], count: int = 1
) -> str:
    new, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
    assert n == count, f"{NATS_CONF.name}: expected {count} line(s) matching {pattern!r}, got {n}"
    return new


def node_conf(text: str, node: Node, nodes: list[Node]) -> str:
    """The shipped configuration with loopback addresses, free ports and a temp store."""
    text = _sub(text, r"^listen: 0\.0\.0\.0:4222$", f"listen: 127.0.0.1:{node.client_port}")
    text = _sub(text, r"^http: 0\.0\.0\.0:8222$", f"http: 127.0.0.1:{node.http_port}")
    text = _sub(text, r"^(\s+)store_dir: /data$", rf"\1store_dir: {node.store}")
    text = _sub(
        text, r"^(\s+)listen: 0\.0\.0\.0:6222$", rf"\1listen: 127.0.0.1:{node.cluster_port}"
    )
    routes = iter(f"nats://127.0.0.1:{n.cluster_port}" for n in nodes)
    return _sub(text, r"nats://\S+:6222$", lambda _: next(routes), count=len(nodes))


async def start_node(node: Node, conf: str) -> None:
    node.store.mkdir(parents=True)
    path = node.store / "nats-server.conf"
    path.write_text(conf)
    env = {**os.environ, "SERVER_NAME": node.name, "EVENTSVC_NATS_PASSWORD": PASSWORD,
           "NATS_SYS_PASSWORD": "sys-" + PASSWORD, "NATS_CI_PASSWORD": CI_PASSWORD}  # fmt: skip
    node.proc = await asyncio.create_subprocess_exec(
        server_binary(), "-c", str(path), "-l", str(node.store / "server.log"),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def stop_node(node: Node, *, kill: bool = False) -> None:
    proc, node.proc = node.proc, None
    if proc is None or proc.returncode is not None:
        return
    proc.kill() if kill else proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def monitor(session: aiohttp.ClientSession, node: Node, path: str) -> Any:
    async with session.get(node.monitor + path) as resp:
        return resp.status, await resp.json(content_type=None)


async def wait_healthy(session: aiohttp.ClientSession, nodes: list[Node], within: float) -> None:
    """Every node answers /healthz 200: routes up, JetStream meta leader elected."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pending = list(nodes)
    while pending:
        node = pending[0]
        assert node.proc is not None and node.proc.returncode is None, (
            f"{node.name} exited; see {node.store / 'server.log'}"
        )
        with contextlib.suppress(aiohttp.ClientError):
            status, _ = await monitor(session, node, "/healthz")
            if status == 200:
                pending.pop(0)
                continue
        assert loop.time() < deadline, f"{node.name} not healthy in {within:g}s"
        await asyncio.sleep(0.1)


async def stream_leader(session: aiohttp.ClientSession, nodes: list[Node], stream: str) -> str:
    for node in nodes:
        _, jsz = await monitor(session, node, "/jsz?accounts=true&streams=true")
        for account in jsz.get("account_details") or []:
            for detail in account.get("stream_detail") or []:
                if detail["name"] == stream and detail.get("cluster", {}).get("leader"):
                    return str(detail["cluster"]["leader"])
    raise AssertionError(f"no leader for stream {stream}")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[list[Node]]:
    nodes = [Node(f"nats-{i}", tmp_path / f"nats-{i}") for i in range(3)]
    text = NATS_CONF.read_text()
    try:
        for node in nodes:
            await start_node(node, node_conf(text, node, nodes))
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, nodes, within=30)
        yield nodes
    finally:
        await asyncio.gather(*(stop_node(n) for n in nodes))


async def deliver(
    session: aiohttp.ClientSession, url: str, number: int, accepted: Callable[[str], None]
) -> None:
    """Post one webhook until it is accepted, with the same delivery id each time."""
    delivery = str(uuid.uuid4())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 40
    while True:
        try:
            resp = await post_github(session, url, "pull_request", pr_payload(number=number),
                                     delivery=delivery)  # fmt: skip
            status = resp.status
        except aiohttp.ClientError:
            status = 0
        if 200 <= status < 300:
            accepted(delivery)
            return
        assert status in (0, 503), f"delivery {delivery}: unexpected {status}"
        assert loop.time() < deadline, f"delivery {delivery} never accepted"
        await asyncio.sleep(0.2)


async def read_stream(bus: Bus, stream: str) -> list[Delivery]:
    """The stream's messages, retried while the cluster settles after losing a node."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        try:
            return await bus.stream_messages(stream)
        except BusUnavailableError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


@pytest.mark.slow
async def test_accepted_events_survive_losing_a_node(
    cluster: list[Node],
    receiver: Receiver,
    start_service: Callable[..., Any],
    tmp_path: Path,
) -> None:
    sensor = http_sensor("burst", receiver.url, subject="events.github.pull_request",
                         type_prefix="com.github.pull_request.")  # fmt: skip
    write_sensor(tmp_path / "sensors", "burst", sensor)
    service: RunningService = await start_service(
        nats_url=",".join(n.url for n in cluster),
        nats_user="eventsvc",
        nats_password=PASSWORD,
        stream_replicas=3,
        ack_wait=5.0,
    )
    accepted: list[str] = []
    killed_at: list[int] = []
    half_way = asyncio.Event()

    def on_accepted(delivery: str) -> None:
        accepted.append(delivery)
        if len(accepted) >= KILL_AFTER:
            half_way.set()

    async with aiohttp.ClientSession() as session:
        leader = await stream_leader(session, cluster, "EVENTS")
        victim = next(n for n in cluster if n.name == leader)
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(EVENTS):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                await deliver(session, service.url, queue.get_nowait(), on_accepted)

        async def killer() -> None:
            await half_way.wait()
            await stop_node(victim, kill=True)
            killed_at.append(len(accepted))

        kill = asyncio.create_task(killer(), name="kill-leader")
        try:
            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        finally:
            half_way.set()
            await kill
        assert killed_at and killed_at[0] < EVENTS, "the node must die during the burst"
        survivors = [n for n in cluster if n is not victim]
        assert await stream_leader(session, survivors, "EVENTS") != leader

    assert len(accepted) == EVENTS and len(set(accepted)) == EVENTS
    bus = service.service.state.bus_ref.bus
    assert bus is not None
    stored = [m.headers.get("ce-id", "") for m in await read_stream(bus, "EVENTS")]
    assert sorted(stored) == sorted(accepted), "stream differs from what was accepted"

    for _ in range(300):  # up to 30 s: redeliveries after a lost ack take ack_wait (5 s)
        if set(accepted) <= set(receiver.ids()):
            break
        await asyncio.sleep(0.1)
    lost = set(accepted) - set(receiver.ids())
    assert not lost, f"{len(lost)} accepted events never reached the sensor"
    for _ in range(30):  # the JetStream API may still be electing a meta leader after the loss
        try:
            kv = await bus.kv("eventsvc-fired")
            replicas = await kv.replicas()
            break
        except BusUnavailableError:
            await asyncio.sleep(1)
    else:
        pytest.fail("the KV bucket eventsvc-fired could not be read within 30 s of the loss")
    assert replicas == 3, "the fired-trigger ledger must be replicated like the streams"
    await service.stop()
