"""The `http` trigger target of bench.faults, in a process of its own so that it outlives
every fault the harness injects into eventsvc and NATS.

    python -m bench.faults_receiver --port PORT --out FILE [--delay SECONDS]

Every request to `POST /hook/<name>` is appended to FILE as one JSON line, at arrival and
before the answer (a request that arrived had its effect, whatever happens to its sender
next): `{"path", "id" (the CloudEvent's id), "key" (Idempotency-Key), "t" (epoch seconds),
"size" (body bytes), "bodylen" (length of data.pull_request.body, to check large bodies
arrived whole)}`. The answer is 200 after `--delay` seconds, so trigger runs are in flight
when a process is killed. `GET /readyz` answers 200.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path
from typing import IO, Any

from aiohttp import web

MAX_BODY = 64 * 2**20  # a 20 MB webhook arrives as a structured CloudEvent of ~20 MB


def _bodylen(doc: Any) -> int | None:
    data = doc.get("data") if isinstance(doc, dict) else None
    pr = data.get("pull_request") if isinstance(data, dict) else None
    body = pr.get("body") if isinstance(pr, dict) else None
    return len(body) if isinstance(body, str) else None


def build(out: IO[str], delay: float) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = {}
        record = {
            "path": request.path,
            "id": doc.get("id") if isinstance(doc, dict) else None,
            "key": request.headers.get("Idempotency-Key"),
            "t": time.time(),
            "size": len(raw),
            "bodylen": _bodylen(doc),
        }
        out.write(json.dumps(record) + "\n")
        out.flush()
        if delay:
            await asyncio.sleep(delay)
        return web.json_response({"ok": True})

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/hook/{name}", hook)
    app.router.add_get("/readyz", ready)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with args.out.open("a", encoding="utf-8") as out:
        runner = web.AppRunner(build(out, args.delay), access_log=None,
                               handle_signals=False)  # fmt: skip
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        await stop.wait()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
