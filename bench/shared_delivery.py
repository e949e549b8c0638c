"""Cost of the cross-replica delivery state per trigger run, on an embedded nats-server:
a concurrency lease (taken and released), a `replace` run (latest sequence + lease), a
shared rate-limit slot, and a correlation merge that completes and claims a partial match.

    python -m bench.shared_delivery
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.common import percentile
from eventsvc import bus as bus_mod
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.config import load_config
from eventsvc.events import make_event
from eventsvc.sensors import conditions, correlation, delivery
from eventsvc.sensors.model import ConcurrencyPolicy, RateLimit

N = 2000


async def timed(name: str, op: Callable[[int], Awaitable[None]]) -> None:
    lat = []
    started = time.perf_counter()
    for i in range(N):
        t = time.perf_counter()
        await op(i)
        lat.append(time.perf_counter() - t)
    took = time.perf_counter() - started
    print(f"{name:<38} {N / took:8.0f}/s  p50 {percentile(lat, 50) * 1e3:6.2f} ms"
          f"  p99 {percentile(lat, 99) * 1e3:6.2f} ms")  # fmt: skip


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedNats(Path(tmp) / "nats", port=0)
        await server.start()
        config = load_config(environ={}, nats_url=server.url, data_dir=tmp)
        bus = await bus_mod.connect(server.url, config)
        try:
            coord = delivery.Coordinator(
                await bus.kv(delivery.LEASE_BUCKET, ttl=delivery.LEASE_TTL),
                await bus.kv(delivery.SHARED_BUCKET, ttl=delivery.SHARED_TTL),
                "bench",
            )
            queue = delivery.KeyedGate(ConcurrencyPolicy.QUEUE)
            replace = delivery.KeyedGate(ConcurrencyPolicy.REPLACE)
            local = delivery.RateLimiter(RateLimit(10**9, 1.0))

            async def lease(i: int) -> None:
                held = await coord.acquire(queue, "s.t", f"k{i % 50}", i + 1)
                assert held is not None
                await coord.release(held)

            async def latest(i: int) -> None:
                held = await coord.acquire(replace, "s.r", f"k{i % 50}", i + 1)
                assert held is not None
                await coord.release(held)

            async def rate(i: int) -> None:
                await coord.rate("s.t", RateLimit(10**9, 3600.0), local)

            ledger = delivery.Ledger(await bus.kv(delivery.LEDGER_BUCKET))
            store = correlation.PartialStore(await bus.kv(correlation.PARTIAL_BUCKET), ledger)
            cond, _ = conditions.parse("a && b")

            async def claim(i: int) -> None:
                a = make_event({"specversion": "1.0", "id": f"a{i}", "type": "t", "source": "s"},
                               {})  # fmt: skip
                b = make_event({"specversion": "1.0", "id": f"b{i}", "type": "t", "source": "s"},
                               {})  # fmt: skip
                assert await store.merge("s", "t", f"c{i}", {"a": a}, cond, 60) is None
                done = await store.merge("s", "t", f"c{i}", {"b": b}, cond, 60)
                assert done is not None
                await store.consume("s", "t", done)

            print(f"{N} sequential operations, one connection, 2-core machine")
            await timed("concurrency lease (queue)", lease)
            await timed("concurrency lease (replace)", latest)
            await timed("shared rate-limit slot", rate)
            await timed("partial match: store, claim, consume", claim)
        finally:
            await bus.close()
            await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
