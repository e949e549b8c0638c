"""The real sensor engine end to end, on an embedded nats-server: sensors sharing a subject.

Run: `python -m bench.engine [--sizes 10,100,300] [--events N]`.

Every sensor reads `events.github.pull_request` through its own durable consumer (as
the engine requires), with context filters (`type` prefix, the `source` of one of ten
repositories: a tenth of the sensors pass an event's context filters) and data filters
(a preview on pull requests to main, a clean-up on merge, a label-triggered deploy), and
a `log` trigger at log level warning. The events are full-size binary-mode GitHub
pull_request CloudEvents (headers built as the GitHub gateway builds them, bodies of
~15 KB with three repository objects).

Per size: the engine starts once to create its consumers and stops; N events are
published; then the clock starts with a new engine on those consumers and stops when
every consumer has acknowledged every event (consumer info: nothing pending, nothing
awaiting an ack). Figures: events/s fully processed, engine (this process) CPU per
event and per delivery (one delivery per event per sensor), nats-server CPU per event.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds
from bench.match import payload
from eventsvc import bus as bus_mod
from eventsvc import events, logs, specfile
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.bus.streams import EVENTS, RESULTS
from eventsvc.config import load_config
from eventsvc.gateways import github
from eventsvc.sensors.engine import Engine
from eventsvc.sensors.spec import SensorSpec, parse_sensor
from eventsvc.triggers import Services

ORG = "acme"
REPOS = [f"repo-{i:02d}" for i in range(10)]
SUBJECT = "events.github.pull_request"
TEMPLATES = [
    ("preview", """
        context: {{type: {{prefix: com.github.pull_request.}}, source: "{url}"}}
        data:
          - {{path: pull_request.base.ref, value: [main]}}
          - {{path: action, value: [opened, reopened, synchronize]}}"""),
    ("cleanup", """
        context: {{type: {{prefix: com.github.pull_request.}}, source: "{url}"}}
        data: [{{path: action, value: closed}}, {{path: pull_request.merged, value: true}}]"""),
    ("label-deploy", """
        context: {{type: {{prefix: com.github.pull_request.}}, source: "{url}"}}
        data: [{{path: label.name, regex: "^deploy(/.*)?$"}}]"""),
]


def build_sensors(n: int) -> list[SensorSpec]:
    out = []
    for i in range(n):
        repo = REPOS[i % len(REPOS)]
        kind, body = TEMPLATES[(i // len(REPOS)) % len(TEMPLATES)]
        text = f"""apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: s{i:03d}-{repo}-{kind}}}
spec:
  dependencies:
    - name: pr
      eventSubject: {SUBJECT}
      filters:{body.format(url=f"https://github.com/{ORG}/{repo}")}
  triggers:
    - template: {{name: t, log: {{message: "{{{{ event.type }}}}"}}}}
"""
        docs, _ = specfile.parse_documents(text, f"s{i}.yaml")
        spec, problems = parse_sensor(docs[0])
        assert spec is not None, problems
        out.append(spec)
    return out


def build_messages(count: int) -> list[tuple[dict[str, str], bytes]]:
    """Binary-mode messages as the GitHub gateway publishes them."""
    rng = random.Random(7)
    out = []
    for i in range(count):
        name, doc = payload("pull_request", rng.choice(REPOS), rng)
        delivery = f"bench-{i}"
        attributes: dict[str, Any] = {
            "specversion": "1.0", "id": delivery, "source": github.event_source(doc),
            "type": github.event_type(name, doc), "subject": github.event_subject(name, doc),
            "time": datetime.now(UTC), "datacontenttype": "application/json",
            "githubdelivery": delivery, "githubhookid": "1", "githubevent": name,
        }  # fmt: skip
        out.append((events.binary_headers(attributes), json.dumps(doc).encode()))
    return out


async def caught_up(bus: bus_mod.Bus, durables: list[str]) -> None:
    """Wait until every consumer has acked everything (the first one polled alone first)."""
    while True:
        if await bus.consumer_backlog(EVENTS, durables[0]):
            await asyncio.sleep(0.1)
            continue
        backlog = 0
        for d in durables:
            backlog += await bus.consumer_backlog(EVENTS, d)
            if backlog:
                break
        if not backlog:
            return
        await asyncio.sleep(0.1)


async def measure(n: int, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(Path(tmp) / "nats", port=0)
        await server.start()
        config = load_config(environ={}, nats_url=server.url, data_dir=tmp)
        bus = await bus_mod.connect(server.url, config)
        try:
            await bus.ensure_streams(bus_mod.default_streams(config))
            sensors = build_sensors(n)
            services = Services(config, bus)
            setup = Engine(bus, services, config)
            await setup.start(sensors)  # creates the durable consumers
            await setup.stop(asyncio.get_running_loop().time() + 5)
            messages = build_messages(count)
            size = sum(len(b) for _, b in messages) / count
            for i, (headers, body) in enumerate(messages):
                await bus.publish(SUBJECT, body, headers, msg_id=f"m{i}")
            assert server.pid is not None
            srv0, cpu0, t0 = cpu_seconds(server.pid, False), time.process_time(), time.perf_counter()
            engine = Engine(bus, services, config)
            await engine.start(sensors)
            started = time.perf_counter() - t0
            await caught_up(bus, [f"sensor-{s.name}" for s in sensors])
            wall = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            srv = cpu_seconds(server.pid, False) - srv0
            await engine.stop(asyncio.get_running_loop().time() + 5)
            await services.close()
            runs = len(await bus.stream_messages(RESULTS))
        finally:
            await bus.close()
            await server.stop()
    return {"sensors": n, "events": count, "size": size, "wall": wall, "start": started,
            "rate": count / wall, "cpu_event": cpu / count * 1e3,
            "cpu_delivery": cpu / (count * n) * 1e6, "srv_event": srv / count * 1e3, "runs": runs}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.engine")
    parser.add_argument("--sizes", default="10,100,300", help="sensor counts (comma-separated)")
    parser.add_argument("--events", type=int, default=0,
                        help="events per size (default: 60,000 deliveries in all, 100 to 2000 events)")
    args = parser.parse_args()
    logs.configure("json", "warning")
    sizes = [int(s) for s in args.sizes.split(",")]
    print("bench.engine: real engine, embedded nats-server, every sensor on "
          f"{SUBJECT}, ~1 in 10 sensors passes an event's context filters")  # fmt: skip
    print(f"{'sensors':>7} {'events':>6} {'body KB':>7} {'events/s':>9} {'wall s':>7} "
          f"{'start s':>7} {'engine CPU ms/event':>19} {'us/delivery':>11} "
          f"{'nats CPU ms/event':>17} {'runs':>5}")  # fmt: skip
    for n in sizes:
        count = args.events or max(100, min(2000, 60_000 // n))
        r = asyncio.run(measure(n, count))
        print(f"{n:>7} {count:>6} {r['size'] / 1024:>7.1f} {r['rate']:>9.0f} {r['wall']:>7.2f} "
              f"{r['start']:>7.2f} {r['cpu_event']:>19.2f} {r['cpu_delivery']:>11.0f} "
              f"{r['srv_event']:>17.2f} {r['runs']:>5.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
