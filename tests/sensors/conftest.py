"""Fixtures for the engine: sensors from YAML text, engines on the real bus, a local
HTTP recorder, and polling helpers for the RESULTS and DLQ streams."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from eventsvc import bus as bus_mod
from eventsvc import events, loader
from eventsvc.bus.streams import DLQ, EVENTS, RESULTS, WORK
from eventsvc.config import Config
from eventsvc.sensors import dispatch
from eventsvc.sensors.engine import Engine
from eventsvc.sensors.model import SensorSpec
from eventsvc.triggers import Services

Handler = Callable[[web.Request, dict[str, Any]], Awaitable[web.Response]]


HTTP_SENSOR = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: {name}}}
spec:
  dependencies:
    - name: thing
      eventSubject: events.test.>
      filters:
        context: {{type: com.example.thing}}
  triggers:
    - template:
        name: call
        http: {{url: "{url}/{path}"}}
{extra}
"""


def http_sensor(name: str, url: str, path: str = "call", extra: str = "") -> str:
    """A sensor calling `url`/`path` for every `com.example.thing` on `events.test.>`;
    `extra` is YAML added to its trigger item (retryStrategy, dlqTrigger, ...)."""
    return HTTP_SENSOR.format(name=name, url=url, path=path, extra=extra)


async def first_life(
    start: Callable[[list[SensorSpec]], Awaitable[Engine]],
    spec: SensorSpec,
    bus: bus_mod.Bus,
    reached: asyncio.Event,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """An engine that "dies" where a patched step sets `reached` and hangs: start it, send
    one event, wait for that point, stop it as a crash would (what hangs is cancelled,
    nothing is acknowledged) and undo the patch. The event's id."""
    engine = await start([spec])
    event_id = await send(bus, "com.example.thing", {"n": 1})
    await asyncio.wait_for(reached.wait(), 30)
    await engine.stop(asyncio.get_running_loop().time())
    monkeypatch.undo()
    return event_id


def load_sensor(directory: Path, text: str, name: str = "sensor") -> SensorSpec:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    loaded = loader.load_paths([path])
    assert not loaded.problems, "\n".join(map(str, loaded.problems))
    return loaded.sensors[0]


async def send(
    bus: bus_mod.Bus, type_: str, data: Any, subject: str = "events.test.thing", **attrs: Any
) -> str:
    event_id = attrs.pop("id", None) or str(uuid.uuid4())
    event = events.make_event(
        {"specversion": "1.0", "id": event_id, "type": type_, "source": "https://test",
         "datacontenttype": "application/json", **attrs},
        data,
    )  # fmt: skip
    headers, body = events.to_binary(event)
    await bus.publish(subject, body, headers, msg_id=event_id)
    return event_id


async def results_of(bus: bus_mod.Bus, sensor: str) -> list[dict[str, Any]]:
    out = []
    for msg in await bus.stream_messages(RESULTS, f"results.{sensor}.>"):
        data = events.from_nats(msg.headers, msg.data).get_data()
        assert isinstance(data, dict)
        out.append(data)
    return out


async def dlq_records(bus: bus_mod.Bus, sensor: str) -> list[dict[str, Any]]:
    return [json.loads(m.data) for m in await bus.stream_messages(DLQ, f"dlq.{sensor}")]


async def idle(bus: bus_mod.Bus) -> bool:
    """Nothing left to dispatch, and nothing handed off left unfinished."""
    for stream in (EVENTS, RESULTS):
        if await bus.consumer_backlog(stream, dispatch.DURABLE):
            return False
    return all(c.pending == 0 for c in await bus.consumer_states(WORK))


async def eventually(
    probe: Callable[[], Awaitable[Any]], what: str, within: float = 30.0
) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what`."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class Recorder:
    """A local HTTP endpoint that records structured CloudEvents by path."""

    url: str = ""
    got: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    handlers: dict[str, Handler] = field(default_factory=dict)

    def ids(self, path: str) -> list[str]:
        return [e.get("id", "") for e in self.got.get(path, [])]


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        rec.got.setdefault(request.path, []).append(body)
        handler = rec.handlers.get(request.path)
        if handler is not None:
            return await handler(request, body)
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 2**20)  # large events reach it whole
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    rec.url = f"http://127.0.0.1:{port}"
    yield rec
    await runner.cleanup()


EngineFactory = Callable[[list[SensorSpec]], Awaitable[Engine]]


@pytest.fixture
def engine_config(nats_server: Any, config_factory: Callable[..., Config]) -> Config:
    return config_factory(nats_url=nats_server.url, ack_wait=2.0, redelivery_delay=0.2,
                          drain_timeout=2.0)  # fmt: skip


@pytest.fixture
async def start_engine(
    bus: bus_mod.Bus, engine_config: Config
) -> AsyncIterator[EngineFactory]:
    """Start engines on the shared bus; every one still running is stopped at the end."""
    running: list[tuple[Engine, Services]] = []

    async def start(sensors: list[SensorSpec]) -> Engine:
        services = Services(engine_config, bus)
        engine = Engine(bus, services, engine_config)
        await engine.start(sensors)
        running.append((engine, services))
        return engine

    yield start
    loop = asyncio.get_running_loop()
    for engine, services in running:
        await engine.stop(loop.time() + 2)
        await services.close()
