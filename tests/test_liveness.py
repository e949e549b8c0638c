"""`/healthz` fails when NATS stays unreachable beyond `nats.unhealthyAfter`, so Kubernetes
restarts a pod whose client cannot find its way back; it recovers with the connection."""

from __future__ import annotations

from typing import Any

import aiohttp

from eventsvc.bus.embedded import EmbeddedNats
from tests.sensors.conftest import eventually


async def _health(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url + "/healthz") as resp:
        return resp.status, await resp.json()


async def test_healthz_fails_while_the_bus_stays_away_and_recovers(
    start_service: Any, nats_server: EmbeddedNats
) -> None:
    svc = await start_service(nats_url=nats_server.url, components=("gateway",),
                              nats_unhealthy_after=0.5)  # fmt: skip
    async with aiohttp.ClientSession() as session:
        assert (await _health(session, svc.url))[0] == 200
        await nats_server.stop()

        async def unhealthy() -> dict[str, Any] | None:
            status, body = await _health(session, svc.url)
            return body if status == 503 else None

        body = await eventually(unhealthy, "/healthz to fail")
        assert "NATS unreachable" in body["error"] and "nats.unhealthyAfter" in body["error"]
        await nats_server.start()

        async def healthy() -> bool:
            return (await _health(session, svc.url))[0] == 200

        await eventually(healthy, "/healthz to recover after the reconnect")
