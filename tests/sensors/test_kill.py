"""`kill -9` of a replica loses nothing: two real `eventsvc run` processes of the sensor part
share the dispatch and work consumers of one nats-server; one is killed with SIGKILL while
events flow, and every event is still run, with one successful run each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import uuid
from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import pytest
from aiohttp import web

from eventsvc import bus as bus_mod
from eventsvc.bus.streams import WORK
from eventsvc.sensors import worker
from tests.sensors.conftest import Recorder, eventually, idle, load_sensor, results_of, send

REPO = Path(__file__).resolve().parents[2]
NAME = "survive"
TYPE = "com.example.thing"
EVENTS = 300
PACE = 0.01  # seconds between two events sent
CONCURRENCY = 16  # sensors.concurrency of each replica: trigger runs one may hold at once
HANDLER_DELAY = 0.05  # each call takes a while, so runs are in flight when the kill comes

pytestmark = pytest.mark.slow

SENSOR = f"""\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: {NAME}}}
spec:
  dependencies:
    - name: thing
      eventSubject: events.test.>
      filters:
        context: {{type: {TYPE}}}
  triggers:
    - template:
        name: call
        http: {{url: "{{url}}/{NAME}"}}
"""


@dataclass
class Replica:
    """One `eventsvc run --components sensors` process, its JSON log lines in a file."""

    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    log_file: IO[bytes]

    def log(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    out.append(entry)
        return out

    def fired(self) -> list[str]:
        """Event ids of the trigger runs this replica finished (as it logged them)."""
        return [e.get("event_id", "") for e in self.log() if e.get("event") == "trigger fired"]

    def tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return f"--- {self.name} (exit {self.proc.returncode}) ---\n" + "\n".join(text[-lines:])


def _open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


async def _start_replica(name: str, tmp_path: Path, nats_url: str, sensors: Path) -> Replica:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSVC_")}
    env.update({
        "EVENTSVC_ACK_WAIT": "2s",  # the killed replica's unfinished work comes back after this
        "EVENTSVC_REDELIVERY_DELAY": "200ms",
        "EVENTSVC_SENSOR_CONCURRENCY": str(CONCURRENCY),
        "EVENTSVC_DRAIN_TIMEOUT": "1s",
        "EVENTSVC_LOG_FORMAT": "json",
    })  # fmt: skip
    log_path = tmp_path / f"{name}.log"
    log_file = _open_log(log_path)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventsvc", "run", "--components", "sensors",
            "--nats-url", nats_url, "--sensors", str(sensors), "--host", "127.0.0.1",
            "--port", "0", "--data-dir", str(tmp_path / f"data-{name}"),
            cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip
    except BaseException:
        log_file.close()
        raise
    return Replica(name, proc, log_path, log_file)


async def _ready(replica: Replica) -> bool:
    if replica.proc.returncode is not None:
        raise AssertionError(f"{replica.name} exited while starting\n{replica.tail()}")
    return any(e.get("event") == "eventsvc ready" for e in replica.log())


async def _stop(replica: Replica) -> None:
    try:
        if replica.proc.returncode is None:
            replica.proc.terminate()
            try:
                await asyncio.wait_for(replica.proc.wait(), 10)
            except TimeoutError:
                replica.proc.kill()
                await replica.proc.wait()
    finally:
        replica.log_file.close()


async def test_sigkill_of_a_replica_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path, nats_server: Any, bus: bus_mod.Bus, recorder: Recorder
) -> None:
    async def slowish(request: web.Request, body: dict[str, Any]) -> web.Response:
        await asyncio.sleep(HANDLER_DELAY)
        return web.json_response({"ok": True})

    recorder.handlers[f"/{NAME}"] = slowish
    sensors = tmp_path / "sensors"
    load_sensor(sensors, SENSOR.replace("{url}", recorder.url), NAME)
    ids = [str(uuid.uuid4()) for _ in range(EVENTS)]
    sent: list[str] = []

    async def flow() -> None:
        for n, event_id in enumerate(ids):
            await send(bus, TYPE, {"n": n}, id=event_id)
            sent.append(event_id)
            await asyncio.sleep(PACE)

    replicas: list[Replica] = []
    flowing: asyncio.Task[None] | None = None
    try:
        for name in ("victim", "survivor"):
            replicas.append(await _start_replica(name, tmp_path, nats_server.url, sensors))
        victim, survivor = replicas
        for replica in replicas:
            await eventually(partial(_ready, replica), f"{replica.name} to be ready", 30)
        assert await bus.consumer_exists(WORK, worker.durable(NAME))

        flowing = asyncio.create_task(flow(), name="flow")

        async def kill_time() -> bool:
            if flowing.done():
                flowing.result()
                raise AssertionError("every event sent before the victim ran any")
            return len(sent) >= EVENTS // 3 and bool(victim.fired())

        await eventually(kill_time, "a third of the events sent and the victim at work", 30)
        os.kill(victim.proc.pid, signal.SIGKILL)
        # ids[:cut] may have reached the victim: the one being sent at the kill is the last
        cut = len(sent) + 1
        assert await asyncio.wait_for(victim.proc.wait(), 10) == -signal.SIGKILL
        await asyncio.wait_for(flowing, 30)

        async def settled() -> bool:
            """Every event has a final result and nothing is left to do: the victim's
            unacknowledged work came back after the ack wait and was settled too, so a
            second run of anything would be among the results."""
            if survivor.proc.returncode is not None:
                raise AssertionError(f"the survivor exited\n{survivor.tail()}")
            runs = await _runs(bus)
            final = set(runs["success"]) | set(runs["duplicate"])
            return set(ids) <= final and await idle(bus)

        try:
            await eventually(settled, "a final result for every event", 60)
        except AssertionError as e:
            runs = await _runs(bus)
            missing = sorted(set(ids) - set(runs["success"]) - set(runs["duplicate"]))
            raise AssertionError(
                f"{e}: {len(missing)} of {EVENTS} events without a final result, e.g. "
                f"{ {i: _outcomes(runs, i) for i in missing[:5]} }\n"
                f"{victim.tail()}\n{survivor.tail()}"
            ) from None

        runs = await _runs(bus)
        calls = Counter(recorder.ids(f"/{NAME}"))
        # nothing lost: every event reached the endpoint
        assert not set(ids) - set(calls), f"never called for {sorted(set(ids) - set(calls))}"
        assert set(calls) == set(ids), "called for events never sent"
        # the run ledger: each event was run to completion once, whatever was redelivered
        doubled = {i: n for i, n in runs["success"].items() if n > 1}
        assert not doubled, f"events with more than one successful run: {doubled}"
        # ... and its success is on record: a redelivered run found finished in the ledger
        # only says `duplicate`, so a success result that never went out stays missing
        lost = {i: _outcomes(runs, i) for i in sorted(set(ids) - set(runs["success"]))}
        assert not lost, f"{len(lost)} events without a success result: {lost}"
        assert set(runs) <= {"success", "duplicate"}, f"unexpected outcomes: {set(runs)}"
        # A repeated call is allowed only for a run the victim was executing when it died:
        # its call went out but its ledger entry was not written, so the survivor runs it
        # again when the event comes back. The victim's worker holds at most `concurrency`
        # events at once, each run at most once more, and only events sent before the kill.
        repeated = {i: n for i, n in calls.items() if n > 1}
        assert len(repeated) <= CONCURRENCY, f"{len(repeated)} events called twice: {repeated}"
        assert set(repeated.values()) <= {2}, f"events called more than twice: {repeated}"
        assert set(repeated) <= set(ids[:cut]), "an event sent after the kill was repeated"
        assert survivor.fired(), "the survivor ran nothing"
    finally:
        if flowing is not None and not flowing.done():
            flowing.cancel()
            await asyncio.gather(flowing, return_exceptions=True)
        for replica in replicas:
            await _stop(replica)


async def _runs(bus: bus_mod.Bus) -> dict[str, Counter[str]]:
    """outcome → how many results with that outcome each event id has."""
    out: dict[str, Counter[str]] = {}
    for r in await results_of(bus, NAME):
        out.setdefault(r["outcome"], Counter()).update(r["eventIds"])
    out.setdefault("success", Counter())
    out.setdefault("duplicate", Counter())
    return out


def _outcomes(runs: dict[str, Counter[str]], event_id: str) -> list[str]:
    return sorted(o for o, ids in runs.items() for _ in range(ids[event_id]))
