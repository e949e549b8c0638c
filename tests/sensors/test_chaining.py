"""Sensors following trigger results: a consumer per stream, the result's shape, loop guard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eventsvc import bus as bus_mod
from eventsvc import events
from eventsvc.bus.streams import EVENTS, RESULTS, WORK
from eventsvc.sensors import results
from eventsvc.sensors.compiled import CompiledSensor
from tests.conftest import pr_payload
from tests.sensors.conftest import EngineFactory, eventually, idle, load_sensor, results_of, send

FIRST = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: first}
spec:
  dependencies:
    - {name: pr, eventSubject: events.test.>}
  triggers:
    - template:
        name: work
        log: {message: working}
"""
FOLLOW = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: follow}
spec:
  dependencies:
    - name: done
      eventSubject: results.first.work
      filters:
        data:
          - {path: outcome, value: [success]}
    - {name: direct, eventSubject: events.test.direct}
  triggers:
    - template:
        name: report
        conditions: done
        log:
          message: "{{ data.events.pr.data.repository.full_name }}#{{ data.events.pr.data.number }}"
    - template:
        name: direct
        conditions: direct
        log: {message: direct}
"""


def test_a_consumer_per_stream(tmp_path: Path, engine_config: Any) -> None:
    sensor = CompiledSensor(load_sensor(tmp_path, FOLLOW, "follow"), engine_config)
    assert sensor.streams == {EVENTS: ("events.test.direct",), RESULTS: ("results.first.work",)}
    first = CompiledSensor(load_sensor(tmp_path, FIRST, "first"), engine_config)
    assert first.streams == {EVENTS: ("events.test.>",)}


def test_overlapping_subjects_are_folded(tmp_path: Path, engine_config: Any) -> None:
    text = FIRST.replace("    - {name: pr, eventSubject: events.test.>}\n",
                         "    - {name: pr, eventSubject: events.test.>}\n"
                         "    - {name: b, eventSubject: events.test.x}\n"
                         "    - {name: c, eventSubject: events.other.*}\n")  # fmt: skip
    sensor = CompiledSensor(load_sensor(tmp_path, text, "first"), engine_config)
    assert sensor.streams == {EVENTS: ("events.other.*", "events.test.>")}


async def test_a_sensor_fires_on_another_sensors_result(
    tmp_path: Path, bus: bus_mod.Bus, start_engine: EngineFactory
) -> None:
    first = load_sensor(tmp_path, FIRST, "first")
    follow = load_sensor(tmp_path, FOLLOW, "follow")
    await start_engine([first, follow])
    # one dispatch consumer per stream reads results and events for every sensor
    assert await bus.consumer_exists(RESULTS, "dispatch")
    assert await bus.consumer_exists(EVENTS, "dispatch")
    assert not await bus.consumer_exists(RESULTS, "sensor-follow")
    event_id = await send(bus, "com.github.pull_request.opened", pr_payload(), subject="events.test.pr")

    [done] = await eventually(lambda: results_of(bus, "first"), "first's result")
    assert done["outcome"] == "success" and done["depth"] == 1
    cause = done["events"]["pr"]
    assert {k: cause[k] for k in ("id", "source", "type")} == {
        "id": event_id, "source": "https://test", "type": "com.github.pull_request.opened"}
    assert cause["data"]["repository"]["full_name"] == "acme/shop"

    [report] = await eventually(lambda: results_of(bus, "follow"), "follow's result")
    assert (report["trigger"], report["outcome"], report["depth"]) == ("report", "success", 2)
    assert report["events"]["done"]["type"] == results.RESULT_TYPE
    assert report["events"]["done"]["data"]["events"]["pr"]["id"] == event_id


async def test_a_sensor_that_stops_following_results_no_longer_gets_them(
    tmp_path: Path, bus: bus_mod.Bus, start_engine: EngineFactory
) -> None:
    engine = await start_engine([load_sensor(tmp_path, FOLLOW, "follow")])
    assert await bus.consumer_exists(WORK, "work-follow")
    events_only = FOLLOW.replace("eventSubject: results.first.work", "eventSubject: events.x.y")
    await engine.apply([load_sensor(tmp_path, events_only, "follow")])
    await send(bus, results.RESULT_TYPE, {"outcome": "success", "depth": 1},
               subject="results.first.work", id="old-interest")  # fmt: skip
    await send(bus, results.RESULT_TYPE, {"outcome": "success", "depth": 1},
               subject="events.x.y", id="new-interest")  # fmt: skip
    await eventually(lambda: results_of(bus, "follow"), "follow's result")
    await eventually(lambda: idle(bus), "every event dispatched and handled")
    assert {i for r in await results_of(bus, "follow") for i in r["eventIds"]} == {"new-interest"}
    await engine.apply([])
    assert not await bus.consumer_exists(WORK, "work-follow")


async def test_a_too_deep_chain_of_results_does_not_fire(
    tmp_path: Path, bus: bus_mod.Bus, start_engine: EngineFactory
) -> None:
    await start_engine([load_sensor(tmp_path, FOLLOW, "follow")])
    for depth in (results.MAX_DEPTH, 1):  # the deep one first: then only the shallow one fires
        await send(bus, results.RESULT_TYPE, {"outcome": "success", "depth": depth},
                   subject="results.first.work", id=f"r-{depth}")  # fmt: skip
    [report] = await eventually(lambda: results_of(bus, "follow"), "follow's result")
    assert report["eventIds"] == ["r-1"]


def test_large_event_data_is_trimmed_to_what_a_follow_up_needs() -> None:
    body = pr_payload("synchronize")
    body["pull_request"]["body"] = "x" * 50_000
    body["pull_request"]["labels"] = [{"name": "preview", "color": "fff", "id": 1}]
    body["repository"]["owner"] = {"login": "acme", "id": 5, "avatar_url": "https://a"}
    event = events.make_event({"specversion": "1.0", "id": "e1", "type": "t", "source": "s",
                               "subject": "7"}, body)  # fmt: skip
    [(dep, record)] = results.cause({"pr": event}).items()
    assert dep == "pr" and record["dataTrimmed"] is True
    assert (record["id"], record["subject"]) == ("e1", "7")
    assert record["data"] == {
        "action": "synchronize", "number": 7,
        "repository": {"full_name": "acme/shop", "name": "shop",
                       "html_url": "https://github.com/acme/shop",
                       "clone_url": "https://github.com/acme/shop.git", "owner": {"login": "acme"}},
        "pull_request": {"number": 7, "html_url": "https://github.com/acme/shop/pull/7",
                         "title": "Add checkout", "state": "open", "draft": False,
                         "head": {"sha": "0123456789abcdef0123456789abcdef01234567",
                                  "ref": "feature/checkout"},
                         "base": {"ref": "main"}, "labels": [{"name": "preview"}]},
        "sender": {"login": "dev"},
    }  # fmt: skip
    small = results.cause({"pr": events.make_event(
        {"specversion": "1.0", "id": "e2", "type": "t", "source": "s"}, {"a": {"b": 1}})})
    assert small["pr"]["data"] == {"a": {"b": 1}} and "dataTrimmed" not in small["pr"]
