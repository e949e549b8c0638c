"""SIGTERM with clients on keep-alive connections: every request already sent gets an
answer, and the answers during the grace period tell clients to reconnect elsewhere."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from eventsvc.bus.embedded import EmbeddedNats


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   body: bytes) -> tuple[int, dict[str, str]]:  # fmt: skip
    writer.write(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json"
                 b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    status_line = await reader.readline()
    assert status_line, "connection closed without an answer"
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode().partition(":")
        headers[key.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers


def _event(n: int) -> bytes:
    return json.dumps({"specversion": "1.0", "id": f"e{n}", "type": "com.example.t",
                       "source": "https://test"}).encode()  # fmt: skip


async def test_a_request_sent_on_a_keep_alive_connection_after_sigterm_is_answered(
    start_service: Any, nats_server: EmbeddedNats
) -> None:
    svc = await start_service(nats_url=nats_server.url, components=("gateway",),
                              shutdown_grace=1.0)  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", svc.service.state.http_port)
    try:
        status, headers = await _request(reader, writer, _event(1))
        assert status == 202 and headers.get("connection", "").lower() != "close"
        svc.stop_event.set()  # what SIGTERM does
        await asyncio.sleep(0.2)
        status, headers = await _request(reader, writer, _event(2))
        assert status == 202, "accepted while the service drains"
        assert headers.get("connection", "").lower() == "close", "told to go elsewhere"
    finally:
        writer.close()
    await asyncio.wait_for(svc.task, 30)
    assert not svc.service.state.readiness(svc.service.config)["not_stopping"]
