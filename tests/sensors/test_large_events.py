"""Events larger than the NATS server's max_payload (1 MB here; GitHub sends up to 25 MB)
reach sensors whole: the body is stored apart (`bus.claims`) and read back where needed."""

from __future__ import annotations

from pathlib import Path

from eventsvc import bus as bus_mod
from eventsvc import events
from tests.sensors.conftest import EngineFactory, Recorder, eventually, http_sensor, load_sensor


async def test_a_sensor_matches_and_runs_on_a_9_mb_event(
    tmp_path: Path, bus: bus_mod.Bus, recorder: Recorder, start_engine: EngineFactory
) -> None:
    """A data filter reads the claimed body in the dispatcher; the trigger gets it whole."""
    text = http_sensor("big", recorder.url, "big").replace(
        "context: {type: com.example.thing}",
        "context: {type: com.example.thing}\n        data: [{path: kind, value: large}]",
    )
    await start_engine([load_sensor(tmp_path, text)])
    data = {"kind": "large", "blob": "x" * (9 * 2**20)}
    event = events.make_event({"specversion": "1.0", "id": "e-big", "type": "com.example.thing",
                               "source": "https://test", "datacontenttype": "application/json"},
                              data)  # fmt: skip
    headers, body = events.to_binary(event)
    await bus.publish("events.test.big", body, headers, msg_id="e-big")
    small = events.make_event({"specversion": "1.0", "id": "e-small", "type": "com.example.thing",
                               "source": "https://test", "datacontenttype": "application/json"},
                              {"kind": "small"})  # fmt: skip
    headers, body = events.to_binary(small)
    await bus.publish("events.test.small", body, headers, msg_id="e-small")

    [got] = await eventually(lambda: _calls(recorder), "the large event's trigger")
    assert got["id"] == "e-big" and got["data"] == data
    assert recorder.ids("/big") == ["e-big"]  # the small one fails the data filter


async def _calls(recorder: Recorder) -> list[dict[str, object]]:
    return recorder.got.get("/big", [])
