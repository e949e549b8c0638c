"""Cron gateway benchmark: 1,000 schedules firing every second for 30 s in one gateway.

    python -m bench.cron [--schedules 1000] [--seconds 30] [--publishers 64]

Starts an embedded nats-server, runs one CronGateway, then reads every tick back
from the EVENTS stream and prints ticks published per second, lateness
(firedTime - scheduledTime) p50/p99/max, missing ticks in the measured window,
and CPU seconds of the gateway process and of nats-server. Targets: no tick
missing, p99 lateness <= 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from eventsvc import bus as bus_mod
from eventsvc import schedules, yamldoc
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.bus.streams import EVENTS
from eventsvc.config import load_config
from eventsvc.gateways.cron import CronGateway


def make(name: str, expr: str) -> schedules.Schedule:
    text = (
        "apiVersion: eventsvc.dev/v1alpha1\nkind: Schedule\n"
        f"metadata: {{name: {name}}}\nspec: {{schedule: '{expr}'}}\n"
    )
    docs, _ = yamldoc.parse_documents(text, f"{name}.yaml")
    schedule, problems = schedules.parse_schedule(docs[0])
    assert schedule is not None, problems
    return schedule


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


async def run(count: int, seconds: int, publishers: int, expr: str, flush: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(Path(tmp) / "nats", port=0)
        url = await server.start()
        config = load_config(environ={}, nats_url=url, data_dir=tmp)
        bus = await bus_mod.connect(url, config)
        await bus.ensure_streams(bus_mod.default_streams(config))
        jobs = [make(f"bench-{i:04d}", expr) for i in range(count)]
        gateway = CronGateway(bus, publishers=publishers, flush_interval=flush)
        cpu0, wall0 = cpu(resource.RUSAGE_SELF), time.perf_counter()
        await gateway.start(jobs)
        first = datetime.fromtimestamp(math.floor(time.time()) + 1, UTC)
        last = first + timedelta(seconds=seconds - 1)
        await asyncio.sleep(last.timestamp() - time.time() + 0.5)
        await gateway.stop()
        gateway_cpu, wall = cpu(resource.RUSAGE_SELF) - cpu0, time.perf_counter() - wall0
        messages = await bus.stream_messages(EVENTS, "events.cron.>")
        await bus.close()
        await server.stop()
        server_cpu = cpu(resource.RUSAGE_CHILDREN)

    seen: set[tuple[str, datetime]] = set()
    lateness: list[float] = []
    for msg in messages:
        data = json.loads(msg.data)
        scheduled = datetime.fromisoformat(data["scheduledTime"])
        if not first <= scheduled <= last:
            continue
        seen.add((msg.subject, scheduled))
        lateness.append((datetime.fromisoformat(data["firedTime"]) - scheduled).total_seconds())
    expected = count * seconds
    print(f"schedules            {count} x '{expr}', {seconds} s window, {publishers} publishers")
    print(f"ticks published      {len(seen)} of {expected} in window "
          f"({len(seen) / seconds:.0f}/s); {len(messages)} stored in total")  # fmt: skip
    print(f"missing ticks        {expected - len(seen)}")
    print(f"duplicates stored    {len(lateness) - len(seen)}")
    if lateness:
        print(f"lateness p50         {percentile(lateness, 0.50) * 1000:.1f} ms")
        print(f"lateness p99         {percentile(lateness, 0.99) * 1000:.1f} ms")
        print(f"lateness max         {max(lateness) * 1000:.1f} ms")
    print(f"gateway CPU          {gateway_cpu:.1f} s over {wall:.1f} s wall "
          f"({gateway_cpu / wall * 100:.0f}% of one core)")  # fmt: skip
    print(f"nats-server CPU      {server_cpu:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--publishers", type=int, default=64)
    parser.add_argument("--expr", default="* * * * * *", help="every second, seconds field")
    parser.add_argument("--flush-interval", type=float, default=5.0, help="KV state, seconds")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(run(args.schedules, args.seconds, args.publishers, args.expr, args.flush_interval))


if __name__ == "__main__":
    main()
