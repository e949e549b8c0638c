"""Shared pieces for benchmarks: processes, ports, signed webhooks, percentiles."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from eventsvc.bus.embedded import free_port

SECRET = "bench-secret"


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def pr_body(i: int) -> bytes:
    payload = {
        "action": "synchronize",
        "number": i,
        "pull_request": {
            "number": i, "state": "open", "draft": False, "title": f"Change {i}",
            "head": {"ref": f"feature/{i}", "sha": hashlib.sha1(str(i).encode()).hexdigest()},
            "base": {"ref": "main"}, "labels": [{"name": "preview"}],
            "body": "x" * 2000,  # real PR payloads are several KB
        },
        "repository": {"full_name": "acme/shop", "html_url": "https://github.com/acme/shop"},
        "sender": {"login": "dev"},
    }  # fmt: skip
    return json.dumps(payload).encode()


def signed_headers(body: bytes, delivery: str) -> dict[str, str]:
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": sig,
    }


async def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready in {timeout}s")


async def start_eventsvc(data_dir: Path, sensors: Path, extra_env: dict[str, str] | None = None
                         ) -> tuple[asyncio.subprocess.Process, int]:  # fmt: skip
    port, nats_port = free_port(), free_port()
    env = {**os.environ, "EVENTSVC_GITHUB_WEBHOOK_SECRET": SECRET, "EVENTSVC_LOG_FORMAT": "json",
           **(extra_env or {})}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventsvc", "run", "--host", "127.0.0.1", "--port", str(port),
        "--nats-port", str(nats_port), "--data-dir", str(data_dir), "--sensors", str(sensors),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await wait_http(f"http://127.0.0.1:{port}/readyz")
    return proc, port


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def load(url: str, total: int, concurrency: int, prefix: str) -> tuple[float, list[float], int]:
    """Send `total` signed webhooks over `concurrency` connections: (seconds, latencies, errors)."""
    bodies = [pr_body(i) for i in range(256)]
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as http:

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                body = bodies[i % len(bodies)]
                headers = signed_headers(body, f"{prefix}-{i}")
                t0 = time.perf_counter()
                async with http.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 202:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, errors


def summary(name: str, total: int, elapsed: float, lat: list[float], errors: int) -> dict[str, float]:
    rate = total / elapsed
    p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
    print(f"  {name:<10} {rate:>9.0f} events/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   "
          f"errors {errors}   (mean {statistics.fmean(lat) * 1000:.2f} ms)")  # fmt: skip
    return {"rate": rate, "p50": p50, "p99": p99}
