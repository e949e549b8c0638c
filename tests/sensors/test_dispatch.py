"""The dispatcher: every event read once and handed off durably to each matching sensor,
against a real nats-server: crashes between hand-off and ack, isolation of a slow sensor,
sensors added and removed while events flow, and the upgrade from per-sensor consumers."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from eventsvc import bus as bus_mod
from eventsvc.bus.streams import EVENTS, RESULTS, WORK
from eventsvc.sensors import dispatch
from eventsvc.sensors.dispatch import Dispatcher
from tests.sensors.conftest import (
    EngineFactory,
    Recorder,
    eventually,
    first_life,
    http_sensor,
    idle,
    load_sensor,
    results_of,
    send,
)


def sensor_text(name: str, url: str) -> str:
    return http_sensor(name, url, name)


async def _successes(bus: bus_mod.Bus, sensor: str) -> Counter[str]:
    return Counter(
        i for r in await results_of(bus, sensor) if r["outcome"] == "success" for i in r["eventIds"]
    )


async def test_a_dispatcher_dying_between_hand_off_and_ack_hands_off_once(
    tmp_path: Path,
    bus: bus_mod.Bus,
    recorder: Recorder,
    start_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = load_sensor(tmp_path, sensor_text("once", recorder.url))
    handed = asyncio.Event()

    async def die_before_ack(self: Dispatcher, *args: Any) -> None:
        # the hand-off is stored and run to the end; then the process "dies": no dispatch ack
        await eventually(lambda: _has_call(recorder, "/once"), "the hand-off to be run")
        await eventually(lambda: idle_work(bus), "the run to finish")
        handed.set()
        await asyncio.Event().wait()

    monkeypatch.setattr(Dispatcher, "_settle", die_before_ack)
    event_id = await first_life(start_engine, spec, bus, handed, monkeypatch)

    await start_engine([spec])  # the event comes back to a dispatcher after the ack wait
    await eventually(lambda: _dispatched(bus), "the event to be dispatched again and acked")
    await eventually(lambda: idle(bus), "nothing left to do")
    assert recorder.ids("/once") == [event_id]
    assert (await bus.stream_state(WORK)).last_seq == 1, "the second hand-off was a duplicate"


async def idle_work(bus: bus_mod.Bus) -> bool:
    return all(c.pending == 0 for c in await bus.consumer_states(WORK))


async def _has_call(recorder: Recorder, path: str) -> bool:
    return bool(recorder.got.get(path))


async def _dispatched(bus: bus_mod.Bus) -> bool:
    states = {c.name: c for c in await bus.consumer_states(EVENTS)}
    return states[dispatch.DURABLE].pending == 0 and states[dispatch.DURABLE].ack_floor == 1


async def test_a_slow_sensor_does_not_hold_up_another(
    tmp_path: Path, bus: bus_mod.Bus, recorder: Recorder, start_engine: EngineFactory,
    engine_config: Any,
) -> None:
    release = asyncio.Event()

    async def stuck(request: web.Request, body: dict[str, Any]) -> web.Response:
        await release.wait()
        return web.json_response({"ok": True})

    recorder.handlers["/slow"] = stuck
    slow = load_sensor(tmp_path, sensor_text("slow", recorder.url), "slow")
    fast = load_sensor(tmp_path, sensor_text("fast", recorder.url), "fast")
    await start_engine([slow, fast])
    sent = [await send(bus, "com.example.thing", {"n": n}) for n in range(3 * 16)]
    try:
        # three times what the slow sensor may hold at once: its backlog is its own
        await eventually(lambda: _all_called(recorder, "/fast", sent), "every fast call")
        assert len(recorder.ids("/slow")) <= engine_config.sensor_concurrency
    finally:
        release.set()
    await eventually(lambda: _all_called(recorder, "/slow", sent), "every slow call")


async def _all_called(recorder: Recorder, path: str, ids: list[str]) -> bool:
    return sorted(recorder.ids(path)) == sorted(ids)


async def test_sensors_added_and_removed_while_events_flow(
    tmp_path: Path, bus: bus_mod.Bus, recorder: Recorder, start_engine: EngineFactory
) -> None:
    steady = load_sensor(tmp_path, sensor_text("steady", recorder.url), "steady")
    passing = load_sensor(tmp_path, sensor_text("passing", recorder.url), "passing")
    engine = await start_engine([steady])
    sent: list[str] = []

    async def flow(count: int) -> None:
        for _ in range(count):
            sent.append(await send(bus, "com.example.thing", {"n": len(sent)}))
            await asyncio.sleep(0.005)

    flowing = asyncio.create_task(flow(150))
    await asyncio.sleep(0.2)
    await engine.apply([steady, passing])
    await asyncio.sleep(0.3)
    await engine.apply([steady])
    await flowing
    await eventually(lambda: idle(bus), "every event dispatched and run")

    runs = await _successes(bus, "steady")
    assert sorted(runs) == sorted(sent) and set(runs.values()) == {1}, "each event once"
    assert Counter(recorder.ids("/steady")) == Counter(sent)
    passed = await _successes(bus, "passing")
    assert passed and set(passed.values()) == {1}
    assert set(passed) < set(sent)
    assert not await bus.consumer_exists(WORK, "work-passing")
    assert (await bus.stream_state(WORK)).messages == 0, "nothing left for the removed sensor"


async def test_upgrade_from_per_sensor_consumers_runs_nothing_twice(
    tmp_path: Path, bus: bus_mod.Bus, recorder: Recorder, start_engine: EngineFactory
) -> None:
    """An earlier version read EVENTS with a consumer per sensor. Events its consumer had
    acknowledged are not run again; those it had not are run once."""
    old = await bus.pull_consumer(bus_mod.ConsumerSpec(
        EVENTS, "sensor-legacy", ("events.>",), ack_wait=30, max_deliver=5,
        start=bus_mod.START_ALL))  # fmt: skip
    ids = [await send(bus, "com.example.thing", {"n": n}) for n in range(4)]
    batch = await old.fetch(2, timeout=5)
    for msg in batch:
        await msg.ack()
    await old.fetch(1, timeout=5)  # delivered, never acknowledged: the old version died
    await old.close()

    await start_engine([load_sensor(tmp_path, sensor_text("legacy", recorder.url))])
    assert not await bus.consumer_exists(EVENTS, "sensor-legacy")
    late = await send(bus, "com.example.thing", {"n": 4})
    await eventually(lambda: _all_called(recorder, "/legacy", [*ids[2:], late]), "the rest")
    await eventually(lambda: idle(bus), "nothing left to do")
    assert sorted(recorder.ids("/legacy")) == sorted([*ids[2:], late])


async def test_events_stored_before_any_sensor_runs_are_dispatched(
    tmp_path: Path, bus: bus_mod.Bus, recorder: Recorder, start_engine: EngineFactory,
    engine_config: Any,
) -> None:
    """The runtime creates the dispatch consumers before a gateway may answer 2xx, so an
    event accepted while no sensor part runs yet (a gateway Deployment that started first)
    reaches the sensors once they start."""
    await dispatch.ensure_consumers(bus, engine_config)
    for stream in (EVENTS, RESULTS):
        assert await bus.consumer_exists(stream, dispatch.DURABLE)
    early = [await send(bus, "com.example.thing", {"n": n}) for n in range(3)]
    await start_engine([load_sensor(tmp_path, sensor_text("late", recorder.url))])
    await eventually(lambda: _all_called(recorder, "/late", early), "the early events")
