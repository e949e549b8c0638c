"""Conditions completed by different events, paired by `correlate`, across a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from eventsvc import bus as bus_mod
from eventsvc import events
from eventsvc.events import make_event
from eventsvc.sensors import conditions, correlation, delivery, keys
from tests.sensors.conftest import EngineFactory, eventually, load_sensor, results_of, send

SENSOR = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: ship}
spec:
  correlation: {window: 1h}
  dependencies:
    - name: build
      eventSubject: events.ci.>
      filters:
        context: {type: com.example.image.built}
      correlate: data.sha
    - name: approved
      eventSubject: events.github.>
      filters:
        context: {type: com.github.pull_request.labeled}
      correlate: data.pull_request.head.sha
    - name: hotfix
      eventSubject: events.ci.>
      filters:
        context: {type: com.example.hotfix}
  triggers:
    - template:
        name: deploy
        conditions: (build && approved) || hotfix
        log: {message: deploy}
"""


async def test_correlation_completes_across_an_engine_restart(
    tmp_path: Path, bus: bus_mod.Bus, start_engine: EngineFactory
) -> None:
    spec = load_sensor(tmp_path, SENSOR)
    first = await start_engine([spec])
    built = await send(bus, "com.example.image.built", {"sha": "aaa"}, subject="events.ci.image")
    # stored as a partial match, nothing fired; then the engine goes away
    await eventually(lambda: _partial_stored(first), "the partial match to be stored")
    await first.stop(asyncio.get_running_loop().time() + 2)

    await start_engine([spec])
    other = await send(bus, LABELED, _pr("bbb"), subject="events.github.pr")
    approved = await send(bus, LABELED, _pr("aaa"), subject="events.github.pr")
    hotfix = await send(bus, "com.example.hotfix", {}, subject="events.ci.hotfix")

    runs = await eventually(lambda: _runs(bus, want=2), "the deploy and the hotfix runs")
    assert sorted(map(sorted, runs)) == sorted([sorted([built, approved]), [hotfix]])
    assert all(other not in ids for ids in runs)  # its key (bbb) has no partner


async def test_a_used_event_does_not_pair_again(
    tmp_path: Path, bus: bus_mod.Bus, start_engine: EngineFactory
) -> None:
    await start_engine([load_sensor(tmp_path, SENSOR)])
    built = await send(bus, "com.example.image.built", {"sha": "ccc"}, subject="events.ci.image")
    pr = {"pull_request": {"head": {"sha": "ccc"}}}
    first = await send(bus, "com.github.pull_request.labeled", pr, subject="events.github.pr")
    await eventually(lambda: _runs(bus, want=1), "the first pairing")
    second = await send(bus, "com.github.pull_request.labeled", pr, subject="events.github.pr")
    again = await send(bus, "com.example.image.built", {"sha": "ccc"}, subject="events.ci.image")
    runs = await eventually(lambda: _runs(bus, want=2), "the second pairing")
    assert sorted(map(sorted, runs)) == sorted([sorted([built, first]), sorted([again, second])])


def test_key_expressions() -> None:
    event = make_event(
        {"specversion": "1.0", "id": "1", "type": "t", "source": "s", "subject": "42"},
        {"pull_request": {"head": {"sha": "abc"}, "labels": [{"name": "deploy"}], "number": 7}},
    )
    assert keys.compile_key("data.pull_request.head.sha")(event) == "abc"
    assert keys.compile_key("data.pull_request.labels[0].name")(event) == "deploy"
    assert keys.compile_key('data["pull_request"].number')(event) == "7"
    assert keys.compile_key("subject")(event) == "42"
    assert keys.compile_key("data.missing.path")(event) is None


LABELED = "com.github.pull_request.labeled"


def _pr(sha: str) -> dict[str, object]:
    return {"pull_request": {"head": {"sha": sha}}}


async def _partial_stored(engine: object) -> bool:
    partials = engine.stores.partials  # type: ignore[attr-defined]
    return bool(await partials.kv.keys())


async def _runs(bus: bus_mod.Bus, want: int) -> list[list[str]]:
    runs = [r["eventIds"] for r in await results_of(bus, "ship") if r["outcome"] == "success"]
    return runs if len(runs) >= want else []


def test_last_reset_is_the_latest_tick_before_now() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 3, 4, 10, 30, tzinfo=UTC).timestamp()
    tick = correlation.last_reset(["0 23 * * *", "0 6 * * 1-5"], now)
    assert datetime.fromtimestamp(tick, UTC) == datetime(2026, 3, 4, 6, 0, tzinfo=UTC)
    assert correlation.last_reset([], now) == 0.0


async def test_conditions_reset_drops_older_partial_matches(bus: bus_mod.Bus) -> None:
    ledger = delivery.Ledger(await bus.kv("test-ledger"))
    store = correlation.PartialStore(await bus.kv("test-partial"), ledger)
    cond, _ = conditions.parse("a && b")
    a = make_event({"specversion": "1.0", "id": "a1", "type": "t", "source": "s"}, {})
    b = make_event({"specversion": "1.0", "id": "b1", "type": "t", "source": "s"}, {})
    old = {"a": {"event": events.to_dict(a), "until": 4e9, "at": 1.0}}  # stored in 1970
    key = correlation.partial_key("s", "t", "k")
    await store.kv.put(key, json.dumps(old).encode())

    yearly = ["0 0 1 1 *"]  # a reset every 1 January drops what was stored in 1970
    assert await store.merge("s", "t", "k", {"b": b}, cond, 60, yearly) is None
    await store.kv.put(key, json.dumps(old).encode())
    done = await store.merge("s", "t", "k", {"b": b}, cond, 60)
    assert done is not None and sorted(e.get_id() for e in done.events.values()) == ["a1", "b1"]


def test_cel_key_expressions_when_cel_python_is_installed() -> None:
    import pytest

    pytest.importorskip("celpy")
    event = make_event(
        {"specversion": "1.0", "id": "1", "type": "t", "source": "s", "subject": "42"},
        {"pr": {"number": 7, "head": {"sha": "abc"}}},
    )
    assert keys.compile_key('data.pr.head.sha + "-" + subject')(event) == "abc-42"
    assert keys.compile_key("data.pr.number * 2")(event) == "14"
    assert keys.compile_key("data.pr.missing.x + 'a'")(event) is None
    with pytest.raises(keys.KeyExpressionError, match="CEL syntax error"):
        keys.compile_key("data.(")


async def test_partial_match_log_lines_carry_the_event_id(bus: bus_mod.Bus) -> None:
    from structlog.testing import capture_logs

    ledger = delivery.Ledger(await bus.kv("test-ledger"))
    store = correlation.PartialStore(await bus.kv("test-partial"), ledger)
    cond, _ = conditions.parse("a && b")
    a = make_event({"specversion": "1.0", "id": "a1", "type": "t", "source": "s"}, {})
    b = make_event({"specversion": "1.0", "id": "b1", "type": "t", "source": "s"}, {})
    with capture_logs() as logs:
        await store.merge("s", "t", "k", {"a": a}, cond, 60)
        await store.merge("s", "t", "k", {"b": b}, cond, 60)
    assert [(e["event"], e["event_id"]) for e in logs] == [
        ("partial match stored", "a1"), ("partial match completed and claimed", "b1"),
    ]  # fmt: skip
