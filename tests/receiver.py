"""A local HTTP receiver for `http` triggers: records what arrives, can fail on purpose."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web


class Receiver:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.fail_first = 0  # answer 500 to this many requests first
        self.status_on_fail = 500
        self.attempts = 0
        self.delay = 0.0  # seconds to wait before answering
        self._arrived = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.attempts <= self.fail_first:
            return web.Response(status=self.status_on_fail, text="not yet")
        async with self._arrived:
            self.received.append(json.loads(body))
            self.headers.append(dict(request.headers))
            self._arrived.notify_all()
        return web.Response(status=200, text="ok")

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        async with self._arrived:
            await asyncio.wait_for(
                self._arrived.wait_for(lambda: len(self.received) >= count), timeout
            )
        return self.received

    def ids(self) -> list[str]:
        return [r["id"] for r in self.received]
