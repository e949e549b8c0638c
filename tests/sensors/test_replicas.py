"""Two engines on one nats-server, each with its own connection, as two replicas of the
sensor part would run: correlation claims, concurrency keys, rate limits and long
runs hold across them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from eventsvc import bus as bus_mod
from eventsvc.bus import KeyValueStore
from eventsvc.config import Config
from eventsvc.sensors import delivery
from eventsvc.sensors.engine import Engine
from eventsvc.sensors.model import ConcurrencyPolicy, RateLimit, SensorSpec
from eventsvc.triggers import Services
from tests.sensors.conftest import Recorder, eventually, load_sensor, results_of, send

Replica = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def replica(
    nats_server: Any, config_factory: Callable[..., Config]
) -> AsyncIterator[Replica]:
    """Start an engine on its own NATS connection; all are stopped at the end."""
    running: list[tuple[Engine, Services, bus_mod.Bus]] = []

    async def start(sensors: list[SensorSpec], **overrides: Any) -> Engine:
        settings: dict[str, Any] = {"ack_wait": 2.0, "redelivery_delay": 0.2,
                                    "drain_timeout": 1.0, **overrides}  # fmt: skip
        config = config_factory(nats_url=nats_server.url, **settings)
        bus = await bus_mod.connect(nats_server.url, config)
        await bus.ensure_streams(bus_mod.default_streams(config))
        services = Services(config, bus)
        engine = Engine(bus, services, config)
        await engine.start(sensors)
        running.append((engine, services, bus))
        return engine

    yield start
    loop = asyncio.get_running_loop()
    for engine, services, bus in running:
        await engine.stop(loop.time() + 1)
        await services.close()
        await bus.close()


# -- 1. a partial match completed by two replicas at once fires once -------------------

PAIR = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: pair}
spec:
  dependencies:
    - name: build
      eventSubject: events.ci.>
      filters: {context: {type: com.example.image.built}}
      correlate: data.sha
    - name: approved
      eventSubject: events.github.>
      filters: {context: {type: com.github.pull_request.labeled}}
      correlate: data.pull_request.head.sha
  triggers:
    - template:
        name: deploy
        conditions: build && approved
        log: {message: deploy}
"""
LABELED = "com.github.pull_request.labeled"


def _slow_reads(kv: KeyValueStore, pause: float) -> None:
    """Widen the read-modify-write window of one engine's partial store, so two merges
    read the same revision and race for the write."""
    read = kv.get

    async def get(key: str) -> tuple[bytes, int] | None:
        entry = await read(key)
        await asyncio.sleep(pause)
        return entry

    kv.get = get  # type: ignore[method-assign]


async def test_two_replicas_completing_one_partial_match_fire_once(
    tmp_path: Path, bus: bus_mod.Bus, replica: Replica
) -> None:
    spec = load_sensor(tmp_path, PAIR)
    engines = [await replica([spec]), await replica([spec])]
    for engine in engines:
        _slow_reads(engine.stores.partials.kv, 0.2)  # type: ignore[union-attr]
    shas = [f"sha{n}" for n in range(20)]
    builds = {sha: await send(bus, "com.example.image.built", {"sha": sha},
                              subject="events.ci.image") for sha in shas}  # fmt: skip
    await eventually(lambda: _stored(bus, len(shas)), "every build stored as a partial match")

    approvals = await asyncio.gather(*(
        send(bus, LABELED, _pr(sha), subject="events.github.pr") for sha in shas for _ in (1, 2)
    ))  # fmt: skip
    by_sha = {sha: set(approvals[2 * n : 2 * n + 2]) for n, sha in enumerate(shas)}
    runs = await eventually(lambda: _successes(bus, "pair", len(shas)), "one run per commit")
    for sha in shas:
        mine = [ids for ids in runs if builds[sha] in ids]
        assert len(mine) == 1, f"{sha}: {mine}"
        assert len(set(mine[0]) & by_sha[sha]) == 1  # with one of its two approvals
    # the losing approval was kept as a partial match: a new build pairs with it
    again = await send(bus, "com.example.image.built", {"sha": shas[0]}, subject="events.ci.x")
    runs = await eventually(lambda: _successes(bus, "pair", len(shas) + 1), "the loser's run")
    (last,) = [ids for ids in runs if again in ids]
    assert set(last) - {again} < by_sha[shas[0]]
    assert not set(last) & {builds[shas[0]]}
    assert len(runs) == len(shas) + 1


def _pr(sha: str) -> dict[str, Any]:
    return {"pull_request": {"head": {"sha": sha}}}


async def _stored(bus: bus_mod.Bus, want: int) -> bool:
    kv = await bus.kv("eventsvc-partial")
    return len(await kv.keys()) >= want


async def _successes(bus: bus_mod.Bus, sensor: str, want: int) -> list[list[str]]:
    runs = [r["eventIds"] for r in await results_of(bus, sensor) if r["outcome"] == "success"]
    return runs if len(runs) >= want else []


# -- 2. one run per concurrency key across replicas --------------------------------------

GATED = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: gated}}
spec:
  dependencies:
    - name: thing
      eventSubject: events.test.>
      filters: {{context: {{type: com.example.thing}}}}
  triggers:
    - template:
        name: call
        http: {{url: "{url}/call"}}
      concurrency: {{key: data.pr, policy: {policy}}}
"""


class Blocking:
    """A trigger target whose calls wait until the test lets each one go."""

    def __init__(self, recorder: Recorder) -> None:
        self.gates: dict[int, asyncio.Event] = {}
        self.running = 0
        self.most = 0
        recorder.handlers["/call"] = self.handle

    def gate(self, n: int) -> asyncio.Event:
        return self.gates.setdefault(n, asyncio.Event())

    async def handle(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.gate(int(body["data"]["n"])).wait()
        finally:
            self.running -= 1
        return web.json_response({"ok": True})


async def test_queue_concurrency_holds_across_replicas(
    tmp_path: Path,
    bus: bus_mod.Bus,
    recorder: Recorder,
    replica: Replica,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused: list[int] = []
    take = delivery.Coordinator._take

    async def spied(self: delivery.Coordinator, kv_key: str, seq: int) -> int | None:
        got = await take(self, kv_key, seq)
        if got == 0:
            refused.append(seq)
        return got

    monkeypatch.setattr(delivery.Coordinator, "_take", spied)
    target = Blocking(recorder)
    spec = load_sensor(tmp_path, GATED.format(url=recorder.url, policy="queue"))
    # one event at a time per engine: while one engine runs e1 the other must take e2
    first, second = await replica([spec], sensor_concurrency=1), await replica(
        [spec], sensor_concurrency=1
    )
    e1 = await send(bus, "com.example.thing", {"pr": 7, "n": 1})
    await eventually(lambda: _has(recorder, e1), "the first run to start")
    e2 = await send(bus, "com.example.thing", {"pr": 7, "n": 2})
    await eventually(lambda: _inflight(first, second, 2), "both engines to hold an event")
    await eventually(lambda: _count(refused, 1), "e2 to find the key's lease taken")
    other = await send(bus, "com.example.thing", {"pr": 8, "n": 3})
    target.gate(3).set()  # the other key's run may go through at once: it has its own lease
    assert e2 not in recorder.ids("/call")  # e2 waits for the key's lease on the other engine
    target.gate(1).set()
    await eventually(lambda: _has(recorder, e2), "the second run after the first finished")
    target.gate(2).set()
    await eventually(lambda: _has(recorder, other), "the other key's run")
    assert target.most == 1


async def test_replace_supersedes_an_older_event_waiting_on_another_replica(
    tmp_path: Path, bus: bus_mod.Bus, recorder: Recorder, replica: Replica
) -> None:
    target = Blocking(recorder)
    spec = load_sensor(tmp_path, GATED.format(url=recorder.url, policy="replace"))
    first = await replica([spec], sensor_concurrency=1)
    e1 = await send(bus, "com.example.thing", {"pr": 7, "n": 1})
    await eventually(lambda: _has(recorder, e1), "the first run to start")
    second = await replica([spec], sensor_concurrency=1)  # takes e2: the first is busy
    e2 = await send(bus, "com.example.thing", {"pr": 7, "n": 2})
    await eventually(lambda: _inflight(first, second, 2), "the second engine to hold e2")
    third = await replica([spec], sensor_concurrency=1)  # takes e3
    e3 = await send(bus, "com.example.thing", {"pr": 7, "n": 3})
    superseded = await eventually(
        lambda: _outcome(bus, "gated", "superseded"), "e2 to be superseded by e3"
    )
    assert [r["eventIds"] for r in superseded] == [[e2]]
    target.gate(3).set()
    target.gate(1).set()
    await eventually(lambda: _has(recorder, e3), "the newest event to run")
    assert recorder.ids("/call") == [e1, e3]
    assert target.most == 1
    del third


async def test_a_crashed_holders_lease_expires(
    nats_server: Any, config_factory: Callable[..., Config]
) -> None:
    config = config_factory(nats_url=nats_server.url)
    buses = [await bus_mod.connect(nats_server.url, config) for _ in range(2)]
    try:
        coordinators = [
            delivery.Coordinator(
                await b.kv("lease-test", ttl=1.0), await b.kv("shared-test"), f"r{n}", 1.0, 0.1
            )
            for n, b in enumerate(buses)
        ]
        gates = [delivery.KeyedGate(ConcurrencyPolicy.QUEUE) for _ in coordinators]
        held = await coordinators[0].acquire(gates[0], "s.t", "pr-7", 1)
        assert held is not None and held.heartbeat is not None
        held.heartbeat.cancel()  # the holder dies without releasing
        await asyncio.gather(held.heartbeat, return_exceptions=True)
        entry = await coordinators[1].leases.get(held.kv_key)
        assert entry is not None and json.loads(entry[0])["holder"] == "r0"
        taken = await asyncio.wait_for(coordinators[1].acquire(gates[1], "s.t", "pr-7", 2), 30)
        assert taken is not None
        await coordinators[1].release(taken)
        assert await coordinators[1].leases.get(taken.kv_key) is None
        gates[0].release("pr-7")
    finally:
        for b in buses:
            await b.close()


async def _has(recorder: Recorder, event_id: str) -> bool:
    return event_id in recorder.ids("/call")


async def _inflight(a: Engine, b: Engine, want: int) -> bool:
    return sum(len(r._inflight) for e in (a, b) for r in e.workers.values()) >= want


async def _outcome(bus: bus_mod.Bus, sensor: str, outcome: str) -> list[dict[str, Any]]:
    return [r for r in await results_of(bus, sensor) if r["outcome"] == outcome]


# -- 3. a rate limit shared by replicas --------------------------------------------------

LIMITED = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: limited}}
spec:
  dependencies:
    - name: thing
      eventSubject: events.test.>
      filters: {{context: {{type: com.example.thing}}}}
  triggers:
    - template:
        name: call
        http: {{url: "{url}/call"}}
      rateLimit: {{requestsPerUnit: 2, unit: Hour}}
"""


async def test_rate_limit_is_shared_by_replicas(
    tmp_path: Path,
    bus: bus_mod.Bus,
    recorder: Recorder,
    replica: Replica,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered: list[float] = []
    passed: list[float] = []
    asking: set[str] = set()
    rate = delivery.Coordinator.rate

    async def counted(self: delivery.Coordinator, scope: str, limit: RateLimit,
                      fallback: delivery.RateLimiter) -> float:  # fmt: skip
        entered.append(time.time())
        asking.add(self.replica)
        waited = await rate(self, scope, limit, fallback)
        passed.append(time.time())
        return waited

    monkeypatch.setattr(delivery.Coordinator, "rate", counted)
    spec = load_sensor(tmp_path, LIMITED.format(url=recorder.url))
    first = await replica([spec], sensor_concurrency=2)
    second = await replica([spec], sensor_concurrency=2)
    started = time.time()
    for n in range(4):
        await send(bus, "com.example.thing", {"n": n})
    await eventually(lambda: _inflight(first, second, 2), "both engines to hold events")
    await eventually(lambda: _count(entered, 4), "every event to ask for a slot")
    await eventually(lambda: _calls(recorder, 2), "two runs")
    assert len(asking) == 2  # both engines had events: a limit per engine would allow 3 or 4
    windows = len({int(t // 3600) for t in (started, time.time())})
    assert len(passed) == 2 * windows  # two per hour across both engines, not per engine


async def _count(items: list[Any], want: int) -> bool:
    return len(items) >= want


async def _calls(recorder: Recorder, want: int) -> bool:
    return len(recorder.ids("/call")) >= want


# -- 4. a run longer than the ack wait is not redelivered to the other replica ----------


async def test_a_run_longer_than_ack_wait_runs_once_across_replicas(
    tmp_path: Path, bus: bus_mod.Bus, recorder: Recorder, replica: Replica
) -> None:
    async def slow(request: web.Request, body: dict[str, Any]) -> web.Response:
        await asyncio.sleep(3.5)  # three and a half ack waits
        return web.json_response({"ok": True})

    recorder.handlers["/call"] = slow
    spec = load_sensor(tmp_path, LIMITED.format(url=recorder.url).replace(
        "      rateLimit: {requestsPerUnit: 2, unit: Hour}\n", ""))  # fmt: skip
    await replica([spec], ack_wait=1.0)
    await replica([spec], ack_wait=1.0)
    event_id = await send(bus, "com.example.thing", {"n": 1})
    done = await eventually(lambda: _outcome(bus, "limited", "success"), "the run to finish")
    assert [r["eventIds"] for r in done] == [[event_id]]
    assert recorder.ids("/call") == [event_id]
    outcomes = [r["outcome"] for r in await results_of(bus, "limited")]
    assert outcomes == ["success"]
