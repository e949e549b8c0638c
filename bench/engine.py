"""The real sensor engine end to end, on an embedded nats-server: many sensors, one subject.

Run: `python -m bench.engine [--sizes 10,100,1000] [--parts throughput,variant,latency,
isolation,replicas] [--profile]`.

N sensors all read `events.github.pull_request`; each is scoped to one repository by its
context filters (`type` prefix, `source`) and has data filters (pull requests to main),
as a GitOps organisation writes them. The events are full-size binary-mode GitHub
pull_request CloudEvents (headers as the GitHub gateway builds them, bodies of ~15 KB).

- throughput: every event matches exactly one sensor (N repositories). `count` events are
  stored first; the clock runs from the engine's start until every event is dispatched
  and every hand-off finished (the dispatch consumer has nothing pending and the WORK
  stream, a work queue, is empty). Log triggers (below the log level). Figures: events/s,
  this process's CPU and nats-server's CPU per event.
- variant: the same with one sensor in ten matching each event (10 repositories).
- latency: 1000 sensors with http triggers to a local receiver; events published at
  200/s; publish → trigger request received, p50/p99.
- isolation: the same, plus one sensor matching every event whose trigger takes 2 s:
  the other sensors' p99 with and without it.
- replicas: two engines (two connections, same process) share the dispatch and worker
  consumers: how the events split between them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import multiprocessing
import pstats
import random
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.common import cpu_seconds, percentile
from bench.match import payload
from eventsvc import bus as bus_mod
from eventsvc import events, logs, yamldoc
from eventsvc.bus.embedded import EmbeddedNats, free_port
from eventsvc.bus.streams import EVENTS, RESULTS, WORK
from eventsvc.config import Config, load_config
from eventsvc.gateways import github
from eventsvc.sensors import dispatch
from eventsvc.sensors.engine import Engine
from eventsvc.sensors.model import SensorSpec, parse_sensor
from eventsvc.triggers import Services

ORG = "acme"
SUBJECT = "events.github.pull_request"
FILTERS = """
        context: {{type: {{prefix: com.github.pull_request.}}, source: "{url}"}}
        data: [{{path: pull_request.base.ref, value: [main]}}]"""


def repos(count: int) -> list[str]:
    return [f"repo-{i:04d}" for i in range(count)]


def build_sensors(n: int, repo_count: int, trigger: str) -> list[SensorSpec]:
    names = repos(repo_count)
    return [
        sensor(f"s{i:04d}", names[i % repo_count], trigger) for i in range(n)
    ]


def sensor(name: str, repo: str | None, trigger: str) -> SensorSpec:
    url = f"https://github.com/{ORG}/{repo}"
    body = FILTERS.format(url=url) if repo else " {}"
    text = f"""apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: {name}}}
spec:
  dependencies:
    - name: pr
      eventSubject: {SUBJECT}
      filters:{body}
  triggers:
    - template: {{name: t, {trigger}}}
"""
    docs, _ = yamldoc.parse_documents(text, f"{name}.yaml")
    spec, problems = parse_sensor(docs[0])
    assert spec is not None, problems
    return spec


def build_message(i: int, repo: str, rng: random.Random) -> tuple[dict[str, str], bytes]:
    """A binary-mode pull_request event to main, as the GitHub gateway publishes it."""
    name, doc = payload("pull_request", repo, rng)
    doc["pull_request"]["base"]["ref"] = "main"
    delivery = f"bench-{i}"
    attributes: dict[str, Any] = {
        "specversion": "1.0", "id": delivery, "source": github.event_source(doc),
        "type": github.event_type(name, doc), "subject": github.event_subject(name, doc),
        "time": datetime.now(UTC), "datacontenttype": "application/json",
        "githubdelivery": delivery, "githubhookid": "1", "githubevent": name,
    }  # fmt: skip
    return events.binary_headers(attributes), json.dumps(doc).encode()


def build_messages(count: int, repo_count: int) -> list[tuple[dict[str, str], bytes]]:
    rng = random.Random(7)
    names = repos(repo_count)
    return [build_message(i, rng.choice(names), rng) for i in range(count)]


@dataclass
class Env:
    server: EmbeddedNats
    config: Config
    bus: bus_mod.Bus

    def server_cpu(self) -> float:
        assert self.server.pid is not None
        return cpu_seconds(self.server.pid, False)


@asynccontextmanager
async def environment(**settings: Any) -> AsyncIterator[Env]:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(Path(tmp) / "nats", port=0)
        await server.start()
        config = load_config(environ={}, nats_url=server.url, data_dir=tmp, **settings)
        bus = await bus_mod.connect(server.url, config)
        try:
            await bus.ensure_streams(bus_mod.default_streams(config))
            await dispatch.ensure_consumers(bus, config)
            yield Env(server, config, bus)
        finally:
            await bus.close()
            await server.stop()


@asynccontextmanager
async def engine_on(env: Env, sensors: list[SensorSpec], bus: bus_mod.Bus | None = None
                    ) -> AsyncIterator[Engine]:  # fmt: skip
    bus = bus or env.bus
    services = Services(env.config, bus)
    engine = Engine(bus, services, env.config)
    await engine.start(sensors)
    try:
        yield engine
    finally:
        await engine.stop(asyncio.get_running_loop().time() + 5)
        await services.close()


async def finished(bus: bus_mod.Bus, runs: int) -> None:
    """Every stored event dispatched and every hand-off run: `runs` results stored."""
    while True:
        if not await bus.consumer_backlog(EVENTS, dispatch.DURABLE):
            if (await bus.stream_state(RESULTS)).messages >= runs:
                return
        await asyncio.sleep(0.05)


async def throughput(n: int, count: int, repo_count: int, profile: bool) -> dict[str, float]:
    async with environment() as env:
        sensors = build_sensors(n, repo_count, 'log: {message: "{{ event.type }}"}')
        messages = build_messages(count, repo_count)
        size = sum(len(b) for _, b in messages) / count
        for i, (headers, body) in enumerate(messages):
            await env.bus.publish(SUBJECT, body, headers, msg_id=f"m{i}")
        profiler = cProfile.Profile() if profile else None
        t_start = time.perf_counter()
        engine = Engine(env.bus, Services(env.config, env.bus), env.config)
        await engine.start(sensors)  # consumers made and bound
        started = time.perf_counter() - t_start
        srv0, cpu0, t0 = env.server_cpu(), time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        expected = len(messages) * (n // repo_count)  # one result per hand-off
        try:
            await finished(env.bus, expected)
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            srv = env.server_cpu() - srv0
        finally:
            if profiler:
                profiler.disable()
            await engine.stop(asyncio.get_running_loop().time() + 5)
            await engine.services.close()
        if profiler:
            print(f"-- profile, {n} sensors (tottime, top 25) --")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        handoffs = (await env.bus.stream_state(WORK)).last_seq
    work = wall
    return {"sensors": n, "events": count, "size": size, "wall": wall, "start": started,
            "rate": count / work, "handoffs": handoffs / count,
            "cpu_event": cpu / count * 1e3, "srv_event": srv / count * 1e3}  # fmt: skip


class Receiver:
    """Records when each event's trigger request arrives; `/slow` takes 2 s to answer."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.slow = 0
        self._more = asyncio.Event()

    async def hit(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrived.setdefault(body["id"], time.perf_counter())
        self._more.set()
        return web.json_response({"ok": True})

    async def all_in(self, count: int) -> None:
        while len(self.arrived) < count:
            self._more.clear()
            await self._more.wait()

    async def slow_hit(self, request: web.Request) -> web.Response:
        await asyncio.sleep(2.0)
        self.slow += 1
        return web.json_response({"ok": True})

    @asynccontextmanager
    async def serving(self, port: int = 0) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_post("/hit", self.hit)
        app.router.add_post("/slow", self.slow_hit)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        try:
            yield f"http://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()


async def offer(bus: bus_mod.Bus, messages: list[tuple[dict[str, str], bytes]], rate: float
                ) -> dict[str, float]:  # fmt: skip
    """Publish at `rate` per second; the time each event's publish began, by id."""
    sent: dict[str, float] = {}
    start = time.perf_counter()
    pending: set[asyncio.Task[Any]] = set()
    for i, (headers, body) in enumerate(messages):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        event_id = headers["ce-id"]
        sent[event_id] = time.perf_counter()
        task = asyncio.create_task(bus.publish(SUBJECT, body, headers, msg_id=event_id))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    return sent


def load_process(nats_url: str, port: int, n: int, seconds: float, rate: float,
                 go: Any, out: Any) -> None:  # fmt: skip
    """The outside world, in a process of its own: a gateway publishing at `rate` and the
    receiver of the http triggers. Times are CLOCK_MONOTONIC, shared by both processes."""

    async def main() -> dict[str, Any]:
        receiver = Receiver()
        config = load_config(environ={}, nats_url=nats_url)
        bus = await bus_mod.connect(nats_url, config)
        try:
            async with receiver.serving(port):
                messages = build_messages(int(seconds * rate), n)
                out.put("ready")
                await asyncio.get_running_loop().run_in_executor(None, go.wait)
                sent = await offer(bus, messages, rate)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(receiver.all_in(len(sent)), 30)
                await asyncio.sleep(1.0)  # what the slow sensor still finishes
        finally:
            await bus.close()
        took = [(receiver.arrived[i] - t) * 1e3 for i, t in sent.items() if i in receiver.arrived]
        return {"p50": percentile(took, 50), "p99": percentile(took, 99), "max": max(took),
                "got": len(took), "sent": len(sent), "slow_done": receiver.slow}  # fmt: skip

    logs.configure("json", "warning")
    out.put(asyncio.run(main()))


async def latency(n: int, seconds: float, rate: float, slow: bool) -> dict[str, Any]:
    """Engine here; the publisher and the trigger receiver in another process."""
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    async with environment() as env:
        child = ctx.Process(target=load_process,
                            args=(env.server.url, port, n, seconds, rate, go, out))  # fmt: skip
        child.start()
        loop = asyncio.get_running_loop()
        try:
            assert await loop.run_in_executor(None, out.get) == "ready"
            sensors = build_sensors(n, n, f'http: {{url: "{url}/hit"}}')
            if slow:
                sensors.append(sensor("slow", None, f'http: {{url: "{url}/slow", timeout: 10s}}'))
            async with engine_on(env, sensors):
                await asyncio.sleep(1.0)  # consumers bound, pull requests waiting
                go.set()
                result: dict[str, Any] = await loop.run_in_executor(None, out.get)
        finally:
            child.join(10)
            if child.is_alive():
                child.kill()
    return result


async def replicas(n: int, count: int) -> dict[str, Any]:
    async with environment() as env:
        sensors = build_sensors(n, n, 'log: {message: "{{ event.type }}"}')
        second_bus = await bus_mod.connect(env.server.url, env.config)
        try:
            async with engine_on(env, sensors) as a, engine_on(env, sensors, second_bus) as b:
                messages = build_messages(count, n)
                await offer(env.bus, messages, 500)
                await finished(env.bus, len(messages))
                runs = [sum(w.handled for w in e.workers.values()) for e in (a, b)]
                return {"dispatched": [a.dispatcher.handled, b.dispatcher.handled],
                        "runs": runs}  # fmt: skip
        finally:
            await second_bus.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engine")
    parser.add_argument("--sizes", default="10,100,1000", help="sensor counts (comma-separated)")
    parser.add_argument("--events", type=int, default=3000, help="events per size (throughput)")
    parser.add_argument("--parts", default="throughput,variant,latency,isolation,replicas")
    parser.add_argument("--profile", action="store_true", help="profile the largest size")
    parser.add_argument("--rates", default="50,100,200",
                        help="events/s offered for latency (isolation uses the first)")
    args = parser.parse_args()
    logs.configure("json", "warning")
    sizes = [int(s) for s in args.sizes.split(",")]
    parts = set(args.parts.split(","))
    run: Callable[[Awaitable[Any]], Any] = asyncio.run

    print(f"bench.engine: real engine, embedded nats-server, every sensor on {SUBJECT}")
    header = (f"{'sensors':>7} {'events':>6} {'body KB':>7} {'hand-offs/ev':>12} {'events/s':>9} "
              f"{'start s':>7} {'engine CPU ms/ev':>16} {'nats CPU ms/ev':>14}")  # fmt: skip
    rates: dict[str, dict[int, float]] = {}
    for part, repo_of in (("throughput", lambda n: n), ("variant", lambda n: 10)):
        if part not in parts:
            continue
        what = "one sensor" if part == "throughput" else "one sensor in ten"
        print(f"\n{part}: each event matches {what}; log triggers")
        print(header)
        rates[part] = {}
        for n in sizes:
            count = args.events if part == "throughput" else max(200, args.events * 10 // n)
            count = min(count, args.events)
            prof = args.profile and n == sizes[-1] and part == "throughput"
            r = run(throughput(n, count, repo_of(n), prof))
            rates[part][n] = r["rate"]
            print(f"{n:>7} {count:>6} {r['size'] / 1024:>7.1f} {r['handoffs']:>12.1f} "
                  f"{r['rate']:>9.0f} {r['start']:>7.2f} {r['cpu_event']:>16.2f} "
                  f"{r['srv_event']:>14.2f}", flush=True)  # fmt: skip
        if len(sizes) > 1:
            lo, hi = sizes[0], sizes[-1]
            print(f"events/s at {hi} vs {lo} sensors: {rates[part][hi] / rates[part][lo]:.2f}x")
    top = sizes[-1]
    rates_offered = [float(r) for r in args.rates.split(",")]
    if "latency" in parts:
        print(f"\nlatency: {top} sensors, http triggers, publisher and receiver in another "
              "process, 10 s per rate, publish -> trigger request received")
        for rate in rates_offered:
            r = run(latency(top, 10, rate, slow=False))
            print(f"  {rate:>5.0f} events/s: p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms  "
                  f"max {r['max']:.1f} ms  ({r['got']}/{r['sent']} fired)", flush=True)  # fmt: skip
    if "isolation" in parts:
        rate = rates_offered[0]
        print(f"\nisolation: {top} sensors at {rate:.0f} events/s, without and with one more "
              "sensor taking 2 s on every event")
        base = run(latency(top, 10, rate, slow=False))
        slow = run(latency(top, 10, rate, slow=True))
        for label, r in (("without", base), ("with", slow)):
            print(f"  {label:>7}: p50 {r['p50']:.1f} ms  p99 {r['p99']:.1f} ms  max "
                  f"{r['max']:.1f} ms  ({r['got']}/{r['sent']} fired; slow runs finished "
                  f"{r['slow_done']})")  # fmt: skip
        print(f"  p99 moved by {slow['p99'] - base['p99']:+.1f} ms")
    if "replicas" in parts:
        r = run(replicas(min(top, 100), 2000))
        d, w = r["dispatched"], r["runs"]
        print(f"\nreplicas: two engines, {min(top, 100)} sensors, 2000 events at 500/s")
        print(f"  dispatched: {d[0]} / {d[1]}   trigger runs: {w[0]} / {w[1]}")


if __name__ == "__main__":
    main()
