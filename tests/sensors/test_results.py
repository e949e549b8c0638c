"""Results: a result event per run, shown by `eventsvc results` as a table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog

from eventsvc import bus as bus_mod
from eventsvc import cli
from tests.conftest import log_sensor
from tests.sensors.conftest import EngineFactory, eventually, load_sensor, results_of, send


async def test_results_table_by_sensor(
    tmp_path: Path,
    bus: bus_mod.Bus,
    start_engine: EngineFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    one = load_sensor(tmp_path, log_sensor("one", message="seen"), "one")
    two = load_sensor(tmp_path, log_sensor("two", message="seen"), "two")
    await start_engine([one, two])
    event_id = await send(bus, "com.example.thing", {"n": 1})
    await eventually(lambda: results_of(bus, "two"), "a result for sensor two")
    await eventually(lambda: results_of(bus, "one"), "a result for sensor one")
    capsys.readouterr()

    try:
        code = await asyncio.to_thread(cli.main, ["results", "--sensor", "one",
                                                  "--nats-url", bus.url])  # fmt: skip
    finally:
        structlog.reset_defaults()  # the command configured logging for the process
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].split() == ["TIME", "SENSOR", "TRIGGER", "OUTCOME", "ATTEMPT", "DURATION",
                              "EVENTS", "ERROR/DETAIL"]  # fmt: skip
    (row,) = out[1:]
    cells = row.split()
    assert cells[2:6] == ["one", "note", "success", "1"]
    assert event_id[:20] in row


def test_result_subject_is_per_sensor_and_trigger() -> None:
    from eventsvc.sensors import results

    assert results.subject("pr-previews", "deploy") == "results.pr-previews.deploy"


async def test_a_kind_that_had_nothing_to_do_is_recorded_as_skipped(
    tmp_path: Path, bus: bus_mod.Bus, start_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collections.abc import Mapping
    from typing import Any

    from eventsvc.triggers import REGISTRY, TriggerContext, TriggerResult
    from eventsvc.triggers.log import LogTrigger

    class Gated(LogTrigger):
        async def execute(self, spec: Mapping[str, Any], ctx: TriggerContext) -> TriggerResult:
            return TriggerResult(outcome="skipped", detail={"why": "draft"})

    monkeypatch.setitem(REGISTRY, "log", Gated)
    sensor = load_sensor(tmp_path, log_sensor("gated", message="seen"), "gated")
    await start_engine([sensor])
    await send(bus, "com.example.thing", {"n": 1})
    [result] = await eventually(lambda: results_of(bus, "gated"), "a result for sensor gated")
    assert result["outcome"] == "skipped"
    assert result["detail"] == {"why": "draft"}
