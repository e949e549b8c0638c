"""Delivery: retries by redelivery then DLQ, once-only firing after a crash, and
`replace` concurrency, against a real nats-server and a local HTTP recorder."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from eventsvc import bus as bus_mod
from eventsvc.errors import BusUnavailableError
from eventsvc.sensors import delivery, results
from eventsvc.sensors.model import ConcurrencyPolicy, RetryStrategy
from eventsvc.sensors.runs import Runs
from eventsvc.sensors.worker import SensorWorker
from tests.sensors.conftest import (
    EngineFactory,
    Recorder,
    dlq_records,
    eventually,
    first_life,
    http_sensor,
    load_sensor,
    results_of,
    send,
)


def sensor_text(name: str, url: str, extra: str = "") -> str:
    return http_sensor(name, url, "call", extra)


async def fail(request: web.Request, body: dict[str, Any]) -> web.Response:
    return web.Response(status=503, text="down for maintenance")


async def test_retries_then_dlq_with_dlq_trigger(
    tmp_path: Path, bus: bus_mod.Bus, recorder: Recorder, start_engine: EngineFactory
) -> None:
    recorder.handlers["/call"] = fail
    extra = f"""\
      retryStrategy: {{steps: 3, duration: 0.2s, factor: 1}}
      dlqTrigger:
        template:
          name: alert
          http: {{url: "{recorder.url}/dlq"}}
"""
    spec = load_sensor(tmp_path, sensor_text("flaky", recorder.url, extra))
    await start_engine([spec])
    event_id = await send(bus, "com.example.thing", {"n": 1})

    records = await eventually(lambda: dlq_records(bus, "flaky"), "a DLQ record")
    assert recorder.ids("/call") == [event_id] * 3  # steps bounds the attempts
    assert recorder.ids("/dlq") == [event_id]
    (record,) = records
    assert record["trigger"] == "call"
    assert record["attempts"] == 3
    assert record["reason"] == "retries exhausted"
    assert "503" in record["error"] and "down for maintenance" in record["error"]
    assert record["events"]["thing"]["id"] == event_id
    assert record["event"]["id"] == event_id

    outcomes = await eventually(
        lambda: _outcomes(bus, "flaky", want=4), "results of every attempt and the DLQ trigger"
    )
    assert outcomes == [
        ("call", "retry", 1), ("call", "retry", 2), ("call", "failed", 3), ("alert", "success", 1)
    ]  # fmt: skip


async def test_the_dlq_trigger_is_rendered_with_its_event(
    tmp_path: Path, bus: bus_mod.Bus, recorder: Recorder, start_engine: EngineFactory
) -> None:
    """`{{ }}` and `parameters` of a dlqTrigger are rendered like any trigger's."""
    recorder.handlers["/call"] = fail
    headers: list[str] = []

    async def alert(request: web.Request, body: dict[str, Any]) -> web.Response:
        headers.append(request.headers.get("X-Team", ""))
        return web.json_response({})

    recorder.handlers["/dlq/7"] = alert
    extra = f"""      retryStrategy: {{steps: 1, duration: 0.1s}}
      dlqTrigger:
        template:
          name: alert
          http: {{url: "{recorder.url}/dlq/{{{{ data.n }}}}", headers: {{X-Team: none}}}}
        parameters:
          - src: {{dependencyName: thing, dataKey: team}}
            dest: headers.X-Team
"""
    await start_engine([load_sensor(tmp_path, sensor_text("alerting", recorder.url, extra))])
    event_id = await send(bus, "com.example.thing", {"n": 7, "team": "payments"})
    await eventually(lambda: _has(recorder, "/dlq/7", event_id), "the rendered DLQ trigger")
    assert headers == ["payments"]


async def test_a_retrying_event_does_not_block_others(
    tmp_path: Path, bus: bus_mod.Bus, recorder: Recorder, start_engine: EngineFactory
) -> None:
    calls = 0

    async def first_fails(request: web.Request, body: dict[str, Any]) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=503 if body["data"]["n"] == 1 else 200)

    recorder.handlers["/call"] = first_fails
    extra = "      retryStrategy: {steps: 2, duration: 5s}\n"
    spec = load_sensor(tmp_path, sensor_text("busy", recorder.url, extra))
    await start_engine([spec])
    slow = await send(bus, "com.example.thing", {"n": 1})
    fast = await send(bus, "com.example.thing", {"n": 2})
    # the second event fires while the first waits 5 s for its retry
    await eventually(lambda: _has(recorder, "/call", fast), "the second event to fire")
    assert recorder.ids("/call").count(slow) == 1


async def test_redelivery_after_crash_between_trigger_and_ack_fires_once(
    tmp_path: Path,
    bus: bus_mod.Bus,
    recorder: Recorder,
    start_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = load_sensor(tmp_path, sensor_text("crashy", recorder.url))
    settled = asyncio.Event()

    async def crash_before_ack(self: SensorWorker, *args: Any) -> None:
        settled.set()
        await asyncio.Event().wait()  # the process "dies" here: no ack, no nak

    monkeypatch.setattr(SensorWorker, "_settle", crash_before_ack)
    event_id = await first_life(start_engine, spec, bus, settled, monkeypatch)
    assert recorder.ids("/call") == [event_id]

    await start_engine([spec])  # a new engine on the same durable consumer
    outcomes = await eventually(
        lambda: _outcomes(bus, "crashy", want=2), "the redelivered event to be settled"
    )
    assert outcomes == [("call", "success", 1), ("call", "duplicate", 1)]
    assert recorder.ids("/call") == [event_id]  # fired once


async def test_a_result_lost_in_a_crash_after_the_ledger_is_published_on_redelivery(
    tmp_path: Path,
    bus: bus_mod.Bus,
    recorder: Recorder,
    start_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ledger says the run succeeded, but the process died before its result was
    stored: the redelivered event publishes that result (under the run's own id, so it
    could never be there twice), and a follower of results still hears of the success."""
    spec = load_sensor(tmp_path, sensor_text("lossy", recorder.url))
    died = asyncio.Event()
    publish = Runs.result

    async def die_before_the_result(self: Runs, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("key") and args[2] is delivery.Outcome.SUCCESS:
            died.set()
            await asyncio.Event().wait()
        await publish(self, *args, **kwargs)

    monkeypatch.setattr(Runs, "result", die_before_the_result)
    event_id = await first_life(start_engine, spec, bus, died, monkeypatch)

    await start_engine([spec])
    outcomes = await eventually(
        lambda: _outcomes(bus, "lossy", want=2), "the redelivered event to be settled"
    )
    assert outcomes == [("call", "success", 1), ("call", "duplicate", 1)]
    assert recorder.ids("/call") == [event_id]


async def test_every_attempt_of_a_run_carries_the_same_idempotency_key(
    tmp_path: Path, bus: bus_mod.Bus, recorder: Recorder, start_engine: EngineFactory
) -> None:
    keys: list[str] = []

    async def twice_down(request: web.Request, body: dict[str, Any]) -> web.Response:
        keys.append(request.headers.get("Idempotency-Key", ""))
        return web.Response(status=503 if len(keys) <= 2 else 200)

    recorder.handlers["/call"] = twice_down
    extra = "      retryStrategy: {steps: 3, duration: 0.1s, factor: 1}\n"
    await start_engine([load_sensor(tmp_path, sensor_text("keyed", recorder.url, extra))])
    first = await send(bus, "com.example.thing", {"n": 1})
    await eventually(lambda: _with_outcome(bus, "keyed", "success"), "the third attempt")
    second = await send(bus, "com.example.thing", {"n": 2})
    await eventually(lambda: _has(recorder, "/call", second), "the second event")
    assert recorder.ids("/call") == [first] * 3 + [second]
    assert len(set(keys[:3])) == 1 and keys[0].startswith("run.keyed.call.")
    assert keys[3] != keys[0], "another run, another key"


async def test_an_unreadable_run_ledger_makes_the_run_wait_not_run_blind(
    tmp_path: Path,
    bus: bus_mod.Bus,
    recorder: Recorder,
    start_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read = delivery.Ledger.get
    failures = 0

    async def flaky_read(self: delivery.Ledger, key: str) -> delivery.RunState | None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise BusUnavailableError("kv get: NATS unavailable (test)")
        return await read(self, key)

    monkeypatch.setattr(delivery.Ledger, "get", flaky_read)
    await start_engine([load_sensor(tmp_path, sensor_text("careful", recorder.url))])
    event_id = await send(bus, "com.example.thing", {"n": 1})
    [run] = await eventually(lambda: _with_outcome(bus, "careful", "success"), "the run")
    assert failures == 2 and recorder.ids("/call") == [event_id]
    assert run["attempt"] == 1


async def test_a_result_that_cannot_be_stored_is_stored_by_the_redelivery(
    tmp_path: Path,
    bus: bus_mod.Bus,
    recorder: Recorder,
    start_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RESULTS refuses for longer than the publish retries: the event is not acknowledged,
    comes back, finds its run done and publishes the final result then."""
    publish = bus_mod.Bus.publish
    refused = 0

    async def results_down(self: bus_mod.Bus, subject: str, *args: Any, **kw: Any) -> Any:
        nonlocal refused
        if subject.startswith("results.") and refused < len(results.RETRY_PAUSES) + 1:
            refused += 1
            raise BusUnavailableError(f"publish to {subject}: NATS unavailable (test)")
        return await publish(self, subject, *args, **kw)

    monkeypatch.setattr(bus_mod.Bus, "publish", results_down)
    await start_engine([load_sensor(tmp_path, sensor_text("stubborn", recorder.url))])
    event_id = await send(bus, "com.example.thing", {"n": 1})
    outcomes = await eventually(lambda: _outcomes(bus, "stubborn", want=2), "the results")
    assert outcomes == [("call", "success", 1), ("call", "duplicate", 1)]
    assert recorder.ids("/call") == [event_id]


async def test_replace_concurrency_drops_the_superseded_event(
    tmp_path: Path, bus: bus_mod.Bus, recorder: Recorder, start_engine: EngineFactory
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request, body: dict[str, Any]) -> web.Response:
        await release.wait()
        return web.json_response({"ok": True})

    recorder.handlers["/call"] = slow
    extra = "      concurrency: {key: data.pr, policy: replace}\n"
    spec = load_sensor(tmp_path, sensor_text("envs", recorder.url, extra))
    await start_engine([spec])
    e1 = await send(bus, "com.example.thing", {"pr": 7, "n": 1})
    await eventually(lambda: _has(recorder, "/call", e1), "the first run to start")
    e2 = await send(bus, "com.example.thing", {"pr": 7, "n": 2})
    e3 = await send(bus, "com.example.thing", {"pr": 7, "n": 3})
    superseded = await eventually(
        lambda: _with_outcome(bus, "envs", "superseded"), "the queued event to be superseded"
    )
    release.set()
    await eventually(lambda: _has(recorder, "/call", e3), "the newest event to run")
    assert [r["eventIds"] for r in superseded] == [[e2]]
    assert recorder.ids("/call") == [e1, e3]


def test_backoff_grows_and_is_capped() -> None:
    strategy = RetryStrategy(steps=5, duration=1.0, factor=2.0, jitter=0.5, max_duration=5.0)
    assert [delivery.backoff(strategy, n, rand=lambda: 0.0) for n in (1, 2, 3, 4)] == [
        1.0, 2.0, 4.0, 5.0
    ]  # fmt: skip
    assert delivery.backoff(strategy, 1, rand=lambda: 1.0) == 1.5


async def test_gate_queue_runs_in_order_and_replace_keeps_the_newest() -> None:
    gate = delivery.KeyedGate(ConcurrencyPolicy.QUEUE)
    assert await gate.acquire("k", 1)
    second = asyncio.create_task(gate.acquire("k", 2))
    await asyncio.sleep(0)
    assert gate.queued("k") == 1
    gate.release("k")
    assert await second
    gate.release("k")

    gate = delivery.KeyedGate(ConcurrencyPolicy.REPLACE)
    assert await gate.acquire("k", 1)
    older = asyncio.create_task(gate.acquire("k", 2))
    await asyncio.sleep(0)
    newer = asyncio.create_task(gate.acquire("k", 3))
    await asyncio.sleep(0)
    assert await older is False
    assert not await gate.acquire("k", 2)  # a redelivered older event loses too
    gate.release("k")
    assert await newer
    gate.release("k")
    assert gate.queued("k") == 0


async def _outcomes(bus: bus_mod.Bus, sensor: str, want: int) -> list[tuple[str, str, int]]:
    found = [(r["trigger"], r["outcome"], r["attempt"]) for r in await results_of(bus, sensor)]
    return found if len(found) >= want else []


async def _with_outcome(bus: bus_mod.Bus, sensor: str, outcome: str) -> list[dict[str, Any]]:
    return [r for r in await results_of(bus, sensor) if r["outcome"] == outcome]


async def _has(recorder: Recorder, path: str, event_id: str) -> bool:
    return event_id in recorder.ids(path)
