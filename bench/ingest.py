"""bench.ingest: signed pull_request webhooks at 32 connections, eventsvc vs a bare baseline.

Both run as separate processes on this machine with their own nats-server; the load
generator is this process. Also measures webhook → `http` trigger received (end to end).
Targets (issue 2): eventsvc >= 0.8x the baseline's throughput, p99 <= 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from bench import common
from eventsvc.bus.embedded import EmbeddedNats, free_port


async def start_baseline(tmp: Path) -> tuple[EmbeddedNats, asyncio.subprocess.Process, str]:
    server = EmbeddedNats(tmp / "base-nats", port=0)
    await server.start()
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.baseline_server", str(port), server.url,
    )  # fmt: skip
    await common.wait_http(f"http://127.0.0.1:{port}/readyz")
    return server, proc, f"http://127.0.0.1:{port}/webhooks/github"


async def compare(tmp: Path, total: int, concurrency: int, rounds: int) -> None:
    """Both servers up at once; rounds alternate so drifting machine load hits both alike."""
    server, base_proc, base_url = await start_baseline(tmp)
    sensors = tmp / "no-sensors"
    sensors.mkdir()
    svc_proc, port = await common.start_eventsvc(tmp / "svc", sensors)
    svc_url = f"http://127.0.0.1:{port}/webhooks/github"
    results: dict[str, list[dict[str, float]]] = {"baseline": [], "eventsvc": []}
    try:
        for name, url in (("baseline", base_url), ("eventsvc", svc_url)):
            await common.load(url, min(2000, total), concurrency, f"warm-{name}")
        for r in range(rounds):
            for name, url in (("baseline", base_url), ("eventsvc", svc_url)):
                elapsed, lat, errors = await common.load(url, total, concurrency, f"{name}-{r}")
                results[name].append(common.summary(name, total, elapsed, lat, errors))
    finally:
        await common.stop(svc_proc)
        await common.stop(base_proc)
        await server.stop()
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("rate", "p50", "p99")}
           for k, v in results.items()}  # fmt: skip
    for name, m in med.items():
        print(f"  median {name:<10} {m['rate']:>7.0f} events/s   p50 {m['p50']:.2f} ms   "
              f"p99 {m['p99']:.2f} ms")  # fmt: skip
    ratio = med["eventsvc"]["rate"] / med["baseline"]["rate"]
    print(f"  ratio eventsvc/baseline throughput (medians of {rounds} alternating rounds): "
          f"{ratio:.2f}x (target >= 0.80); eventsvc p99 {med['eventsvc']['p99']:.2f} ms "
          "(target <= 20 ms)")  # fmt: skip


async def run_end_to_end(tmp: Path, count: int) -> None:
    arrived: dict[str, float] = {}
    done = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        doc = await request.json()
        arrived[doc["id"]] = time.perf_counter()
        if len(arrived) >= count:
            done.set()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    rport = free_port()
    await web.TCPSite(runner, "127.0.0.1", rport).start()
    sensors = tmp / "e2e-sensors"
    sensors.mkdir()
    (sensors / "e2e.yaml").write_text(f"""apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: e2e}}
spec:
  dependencies:
    - name: pr
      eventSubject: events.github.pull_request
      filters:
        context: {{type: {{prefix: com.github.pull_request.}}}}
        data: [{{path: pull_request.base.ref, value: [main]}}]
  triggers:
    - template:
        name: notify
        http: {{url: "http://127.0.0.1:{rport}/hook"}}
""")
    proc, port = await common.start_eventsvc(tmp / "e2e", sensors)
    sent: dict[str, float] = {}
    try:
        import aiohttp

        url = f"http://127.0.0.1:{port}/webhooks/github"
        async with aiohttp.ClientSession() as http:
            for i in range(count):  # paced: latency, not throughput
                body = common.pr_body(i)
                delivery = f"e2e-{i}"
                sent[delivery] = time.perf_counter()
                async with http.post(url, data=body, headers=common.signed_headers(body, delivery)) as r:
                    assert r.status == 202, r.status
                await asyncio.sleep(0.005)
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await common.stop(proc)
        await runner.cleanup()
    lat = [arrived[k] - sent[k] for k in sent if k in arrived]
    print(f"  end-to-end webhook -> http trigger received over {len(lat)} events: "
          f"p50 {common.percentile(lat, 50) * 1000:.2f} ms   p99 {common.percentile(lat, 99) * 1000:.2f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=5000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--e2e-events", type=int, default=500)
    args = parser.parse_args()
    print(f"bench.ingest: {args.rounds} rounds x {args.events} signed pull_request webhooks, "
          f"{args.concurrency} connections")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        await compare(tmp, args.events, args.concurrency, args.rounds)
        await run_end_to_end(tmp, args.e2e_events)


if __name__ == "__main__":
    asyncio.run(main())
