"""The bare baseline for bench.ingest: verify the HMAC, publish to JetStream, await the ack.

Nothing else: no CloudEvent, no metrics, no logs. Run: python -m bench.baseline_server PORT NATS_URL
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sys

import nats
from aiohttp import web

from bench.common import SECRET


async def main(port: int, nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name="BASE", subjects=["base.>"])
    key = SECRET.encode()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        sig = request.headers.get("X-Hub-Signature-256", "")
        expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sig, expected):
            return web.Response(status=401)
        await js.publish("base.github", body,
                         headers={"Nats-Msg-Id": request.headers["X-GitHub-Delivery"]})  # fmt: skip
        return web.Response(status=202)

    async def ready(_: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/webhooks/github", handle)
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
