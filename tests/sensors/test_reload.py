"""Hot reload: add, change, remove a sensor file while the service runs; an invalid
change is rejected and the running version kept."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from eventsvc.bus.streams import WORK
from eventsvc.sensors.engine import Engine
from tests.conftest import log_sensor, write_sensor
from tests.sensors.conftest import eventually

text = log_sensor


async def test_add_change_remove_and_reject_invalid(
    tmp_path: Path, start_service: Callable[..., Awaitable[Any]]
) -> None:
    sensors = tmp_path / "sensors"
    write_sensor(sensors, "keep", text("keep"))
    svc = await start_service(components=("sensors",), nats_port=0)
    engine: Engine = svc.service.state.engine
    reloader = svc.service._reloader
    bus = svc.service.state.bus_ref.bus
    assert sorted(engine.workers) == ["keep"]

    added = write_sensor(sensors, "added", text("added"))
    await eventually(lambda: _names(engine, ["added", "keep"]), "the new sensor to start")
    assert await bus.consumer_exists(WORK, "work-added")

    before = engine.workers["added"]
    added.write_text(text("added", subject="events.other.>", message="changed"))
    await eventually(lambda: _replaced(engine, "added", before), "the changed sensor to restart")
    assert engine.workers["added"].sensor.subjects == ("events.other.>",)

    running = engine.workers["added"]
    generation = reloader.generation
    added.write_text(text("added").replace("eventSubject", "eventSubjekt") + "  bogus: 1\n")
    await eventually(lambda: _after(reloader, generation), "the invalid change to be seen")
    problems = [str(p) for p in reloader.problems[added]]
    assert any(p.startswith(f"{added}:7: spec.dependencies[0].eventSubjekt:") for p in problems)
    assert any(f"{added}:12: spec.bogus:" in p for p in problems)
    assert engine.workers["added"] is running  # the running version is kept

    added.unlink()
    await eventually(lambda: _names(engine, ["keep"]), "the removed sensor to stop")
    await eventually(lambda: _gone(bus, "work-added"), "its work consumer to be deleted")
    assert svc.service.state.readiness(svc.service.config)["sensors_loaded"]


async def _gone(bus: Any, durable: str) -> bool:
    return not await bus.consumer_exists(WORK, durable)


async def _names(engine: Engine, names: list[str]) -> bool:
    return sorted(engine.workers) == names


async def _replaced(engine: Engine, name: str, before: object) -> bool:
    current = engine.workers.get(name)
    return current is not None and current is not before


async def _after(reloader: Any, generation: int) -> bool:
    return bool(reloader.generation > generation)
