"""Memory under a crowd of large bodies: N concurrent 20 MB webhooks with a bad signature
against `eventsvc run`, the peak RSS of the service process, with the default
`http.maxInflightBytes` (100 MB) and, as the baseline in the same run, with the budget
lifted (10 GB: every body is read at once, as before the budget existed).

    python -m bench.body_budget [--senders 50] [--megabytes 20]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import start_eventsvc, stop


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _send(port: int, body: bytes, delivery: str, answers: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (f"POST /webhooks/github HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
             f"X-GitHub-Event: push\r\nX-GitHub-Delivery: {delivery}\r\n"
             f"X-Hub-Signature-256: sha256={'0' * 64}\r\nContent-Length: {len(body)}\r\n"
             "Connection: close\r\n\r\n").encode()
        )
        writer.write(body)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 120)
        answers.append(int(status.split()[1]))
    except (ConnectionError, ValueError, IndexError):
        answers.append(0)  # the server ended the connection before the answer
    finally:
        writer.close()


async def crowd(budget: str, senders: int, megabytes: int) -> tuple[float, float, dict[int, int]]:
    with tempfile.TemporaryDirectory() as tmp:
        sensors = Path(tmp) / "sensors"
        sensors.mkdir()
        env = {"EVENTSVC_MAX_BODY_BYTES": "25MB", "EVENTSVC_MAX_INFLIGHT_BYTES": budget}
        proc, port = await start_eventsvc(Path(tmp) / "data", sensors, env)
        try:
            idle = rss_mb(proc.pid)
            body = b'{"x":"' + b"y" * (megabytes * 2**20) + b'"}'
            answers: list[int] = []
            peak = idle
            sending = asyncio.gather(*(_send(port, body, f"d{i}", answers)
                                       for i in range(senders)))  # fmt: skip
            while not sending.done():
                peak = max(peak, rss_mb(proc.pid))
                await asyncio.sleep(0.02)
            await sending
            counts: dict[int, int] = {}
            for status in answers:
                counts[status] = counts.get(status, 0) + 1
            return idle, peak, counts
        finally:
            await stop(proc)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--megabytes", type=int, default=20)
    args = parser.parse_args()
    print(f"{args.senders} concurrent {args.megabytes} MB webhooks with a bad signature; "
          "service RSS in MB (idle -> peak) and the answers")  # fmt: skip
    results = {}
    for label, budget in (("budget 100MB (default)", "100MB"), ("no budget (baseline)", "10GB")):
        started = time.perf_counter()
        idle, peak, counts = await crowd(budget, args.senders, args.megabytes)
        results[label] = peak
        shown = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        print(f"  {label:<24} {idle:7.0f} -> {peak:7.0f} MB   answers {shown}   "
              f"{time.perf_counter() - started:5.1f} s")  # fmt: skip
    default, baseline = results.values()
    print(f"peak RSS with the default budget / without: {default / baseline:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
