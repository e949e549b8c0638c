"""Fixtures for the HTTP gateways: a gateway-only service on a real nats-server."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from eventsvc.bus.embedded import EmbeddedNats


@pytest.fixture
async def svc(start_service: Any, nats_server: EmbeddedNats) -> Any:
    return await start_service(nats_url=nats_server.url, components=("gateway",))


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as s:
        yield s
