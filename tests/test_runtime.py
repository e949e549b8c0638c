"""Lifecycle: health, readiness, metrics, and a graceful stop that finishes in-flight work."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from eventsvc import events
from eventsvc.bus import Bus
from eventsvc.bus.embedded import EmbeddedNats, free_port
from tests.conftest import SECRET, http_sensor, write_sensor

REPO = Path(__file__).resolve().parents[1]


async def test_health_readiness_and_metrics(start_service: Any, nats_server: EmbeddedNats) -> None:
    svc = await start_service(nats_url=nats_server.url)
    async with aiohttp.ClientSession() as http:
        async with http.get(svc.url + "/healthz") as r:
            assert r.status == 200
        async with http.get(svc.url + "/readyz") as r:
            assert r.status == 200
            assert (await r.json())["checks"] == {"bus_connected": True, "streams_ready": True,
                                                  "not_stopping": True, "sensors_loaded": True}  # fmt: skip
        async with http.get(svc.url + "/metrics") as r:
            text = await r.text()
    for name in ("eventsvc_events_received_total", "eventsvc_events_rejected_total",
                 "eventsvc_events_published_total", "eventsvc_publish_duration_seconds",
                 "eventsvc_sensor_events_matched_total", "eventsvc_trigger_runs_total",
                 "eventsvc_trigger_duration_seconds"):  # fmt: skip
        assert f"# TYPE {name.removesuffix('_total')}" in text


async def test_stop_waits_for_a_trigger_in_flight(
    start_service: Any, nats_server: EmbeddedNats, tmp_path: Path, receiver: Any, bus: Bus
) -> None:
    receiver.delay = 1.0
    write_sensor(tmp_path / "sensors", "slow", http_sensor("slow", receiver.url, subject="events.ci.>"))
    svc = await start_service(nats_url=nats_server.url)
    ev = events.make_event({"specversion": "1.0", "id": "f-1", "type": "t", "source": "s"}, None)
    await bus.publish("events.ci.x", *reversed(events.to_binary(ev)), msg_id="f-1")
    for _ in range(500):
        if receiver.attempts:
            break
        await asyncio.sleep(0.02)
    await svc.stop()  # the request is still being answered: stop must let it finish
    assert receiver.ids() == ["f-1"]
    info = await bus.stream_messages("EVENTS")
    assert len(info) == 1  # and it was acked: a new engine would not see it again


async def test_eventsvc_run_with_embedded_nats_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port, nats_port = free_port(), free_port()
    sensors = tmp_path / "sensors"
    write_sensor(sensors, "log", (REPO / "sensors" / "pr-main.yaml").read_text())
    env = {**os.environ, "EVENTSVC_GITHUB_WEBHOOK_SECRET": SECRET, "EVENTSVC_LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventsvc", "run", "--port", str(port), "--nats-port", str(nats_port),
        "--data-dir", str(tmp_path / "data"), "--sensors", str(sensors), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("eventsvc run never became ready")
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    log = err.decode()
    assert '"event": "embedded nats started"' in log
    assert '"event": "embedded nats stopped"' in log
    assert (tmp_path / "data" / "nats" / "jetstream").is_dir()
