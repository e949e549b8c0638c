"""What the console shows, as JSON-able dicts: sensors with their status, the verdicts of
every sensor on one event, the flow overview, schedules. The HTTP layer (`api`) only
parses requests and answers with these.

The verdicts are those `eventsvc test` prints (`eventsvc.dryrun`), not a second copy of
the filter logic: per dependency, every filter line, and the first one that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from eventsvc import dryrun, events, loader, metrics, schedules, subjects, yamldoc
from eventsvc.bus import Bus
from eventsvc.config import Config
from eventsvc.console import store
from eventsvc.errors import BusError, EventsvcError, SpecProblem
from eventsvc.events import CloudEvent
from eventsvc.gateways import cron
from eventsvc.gateways.common import BusRef
from eventsvc.sensors import dispatch, filters, params, worker
from eventsvc.sensors import model as sensor_model
from eventsvc.sensors.compiled import CompiledSensor
from eventsvc.sensors.engine import Engine
from eventsvc.subjects import DLQ, EVENTS, RESULTS, WORK

OVERVIEW_EVENTS = 1000  # the newest events the overview counts sources over
OVERVIEW_RESULTS = 2000  # the newest results it counts runs over
TRY_FILE = "try.yaml"  # the name the dry run gives the YAML it was sent
ATTEMPTS_WITHIN = timedelta(days=1)  # a run's earlier attempts are looked for this far back


class ServiceView(Protocol):
    """What the console reads of the running service (`runtime.State` is one)."""

    bus_ref: BusRef
    engine: Engine | None
    stopping: bool


Problems = Callable[[], Mapping[Path, list[SpecProblem]]]


class Views:
    def __init__(self, config: Config, service: ServiceView, problems: Problems) -> None:
        self.config = config
        self.service = service
        self.problems = problems

    def sensors(self) -> list[CompiledSensor]:
        """The sensors running here; when this process runs no sensors, those on disk."""
        engine = self.service.engine
        if engine is not None:
            return [engine.workers[n].sensor for n in sorted(engine.workers)]
        loaded = loader.load_paths([self.config.sensors_dir])
        return [CompiledSensor(s, self.config) for s in sorted(loaded.sensors,
                                                                key=lambda s: s.name)]  # fmt: skip

    def rejected(self) -> dict[str, list[str]]:
        """Problems of the last rejected reload, by file."""
        return {str(path): [str(p) for p in found] for path, found in self.problems().items()}

    # ------------------------------------------------------------ sensors

    def sensor_summary(self, sensor: CompiledSensor) -> dict[str, Any]:
        spec = sensor.spec
        return {
            "name": spec.name,
            "file": spec.file,
            "status": "rejected change" if spec.file in self.rejected() else "loaded",
            "dependencies": [{"name": d.name, "eventSubject": d.event_subject,
                              "filters": _jsonable(d.filters)}
                             for d in spec.dependencies],
            "triggers": [{"name": t.name, "kind": t.kind, "conditions": t.conditions}
                         for t in spec.triggers],
        }

    async def sensor_detail(self, bus: Bus, name: str) -> dict[str, Any] | None:
        sensor = next((s for s in self.sensors() if s.name == name), None)
        if sensor is None:
            return None
        out = self.sensor_summary(sensor)
        try:
            out["yaml"] = await asyncio.to_thread(Path(sensor.spec.file).read_text)
        except OSError as e:
            out["yaml"] = f"# {sensor.spec.file} cannot be read: {e.strerror}"
        out["problems"] = self.rejected().get(sensor.spec.file, [])
        out["backlog"] = await self._backlog(bus, name)
        out["runs"] = await store.list_runs(bus, sensor=name, limit=20)
        return out

    async def _backlog(self, bus: Bus, name: str) -> int | None:
        try:
            return await bus.consumer_backlog(WORK, worker.durable(name))
        except BusError:
            return None

    # ------------------------------------------------------------ one event

    def verdicts(self, nats_subject: str, event: CloudEvent) -> list[dict[str, Any]]:
        """Per sensor: matched (and by which dependencies), or the first filter that ruled
        it out in each dependency, with every line `eventsvc test` prints for it."""
        view = filters.EventView.of(event)
        out = []
        for sensor in self.sensors():
            deps = []
            for dep, checks in sensor.deps:
                ok, lines = dryrun.explain_dependency(
                    dep.event_subject, checks, nats_subject or None, view
                )
                failed = next((line for line in lines if line.startswith("FAIL")), None)
                deps.append({"name": dep.name, "matched": ok, "failed": failed, "lines": lines})
            matched = [d["name"] for d in deps if d["matched"]]
            out.append({"sensor": sensor.name, "matched": bool(matched),
                        "matchedDependencies": matched, "dependencies": deps})  # fmt: skip
        return out

    async def event_detail(self, bus: Bus, event_id: str, seq: int = 0) -> dict[str, Any] | None:
        found = await store.find_event(bus, event_id, seq)
        if found is None:
            return None
        msg, event = found
        doc = events.to_dict(event)
        data = doc.pop("data", None)
        data_b64 = doc.pop("data_base64", None)
        verdicts = self.verdicts(msg.subject, event)
        matched = [v["sensor"] for v in verdicts if v["matched"]]
        return {
            "seq": msg.seq,
            "natsSubject": msg.subject,
            "attributes": doc,
            "data": data if data_b64 is None else {"data_base64": data_b64},
            "verdicts": verdicts,
            "runs": await store.runs_of(bus, msg, event_id, matched),
        }

    # ------------------------------------------------------------ one run

    async def run_detail(self, bus: Bus, run_id: str) -> dict[str, Any] | None:
        """A run's result, every attempt of it (the results of the same trigger on the same
        events), and the body its trigger is given, rendered again from the stored events
        with the running sensor (as `eventsvc test` renders it)."""
        run = await store.find_run(bus, run_id)
        if run is None:
            return None
        sensor, trigger = str(run.get("sensor")), str(run.get("trigger"))
        ids = list(run.get("eventIds") or [])
        when = store.parse_time(str(run.get("time") or ""))
        attempts = await store.list_runs(
            bus, event_id=ids[0] if ids else "", since=when - ATTEMPTS_WITHIN if when else "",
            subject=subjects.result(sensor, trigger), limit=100,
        ) if ids else []  # fmt: skip
        run["attempts"] = sorted((a for a in attempts if a.get("eventIds") == ids),
                                 key=lambda a: a["seq"])  # fmt: skip
        run["rendered"] = await self._rendered(bus, sensor, trigger, run.get("events") or {})
        return run

    async def _rendered(
        self, bus: Bus, sensor: str, trigger: str, by_dep: Mapping[str, Any]
    ) -> dict[str, Any]:
        compiled = next((s for s in self.sensors() if s.name == sensor), None)
        named = [t for t in compiled.triggers if t.spec.name == trigger] if compiled else []
        if not named:
            return {"error": f"sensor {sensor!r} has no trigger {trigger!r} now (a "
                    "dlqTrigger is not rendered again)"}  # fmt: skip
        trig = named[0]
        events_by_dep: dict[str, CloudEvent] = {}
        for dep, doc in by_dep.items():
            found = await store.find_event(bus, str((doc or {}).get("id", "")))
            if found is None:
                return {"error": f"event {doc.get('id')!r} of dependency {dep!r} is no longer "
                        "stored (streams.events.maxAge)"}  # fmt: skip
            events_by_dep[dep] = found[1]
        try:
            return {"body": {trig.spec.kind: _jsonable(params.render(trig.spec, events_by_dep))}}
        except EventsvcError as e:
            return {"error": f"cannot render: {e}"}

    # ------------------------------------------------------------ try a sensor

    async def try_sensor(self, bus: Bus, text: str, event_id: str, seq: int = 0) -> dict[str, Any]:
        """The dry run of `eventsvc test` for the Sensor(s) in `text` against a stored event:
        its printed report, and the triggers that would fire. Nothing runs."""
        found = await store.find_event(bus, event_id, seq)
        if found is None:
            raise LookupError(f"no stored event with id {event_id[:200]!r}")
        msg, event = found
        return await asyncio.to_thread(_dry_run, text, msg, event)

    # ------------------------------------------------------------ overview

    async def overview(self, bus: Bus) -> dict[str, Any]:
        sources: Counter[tuple[str, str, str]] = Counter()
        seen: Counter[str] = Counter()  # NATS subjects
        async with contextlib.aclosing(store.newest(bus, EVENTS, scan=OVERVIEW_EVENTS)) as found:
            async for msg in found:
                attrs = store.attributes(msg) or {}
                origin = msg.subject.split(".")[1] if msg.subject.count(".") else msg.subject
                sources[(origin, str(attrs.get("source", "?")), str(attrs.get("type", "?")))] += 1
                seen[msg.subject] += 1
        runs = await store.run_counts(bus, OVERVIEW_RESULTS)
        backlogs = {c.name: c.pending for c in await _consumers(bus, WORK)}
        matched = _matched_here()
        sensors = []
        for sensor in self.sensors():
            item = self.sensor_summary(sensor)
            item["backlog"] = backlogs.get(worker.durable(sensor.name))
            item["matchedHere"] = matched.get(sensor.name, 0)
            patterns = [d.event_subject for d in sensor.spec.dependencies]
            item["listensTo"] = sorted(
                s for s in seen if any(subjects.matches(pat, s) for pat in patterns)
            )
            for trig in item["triggers"]:
                trig["runs"] = {o: n for (s, t, o), n in runs.items()
                                if s == sensor.name and t == trig["name"]}  # fmt: skip
            sensors.append(item)
        return {
            "sources": [{"origin": o, "source": s, "type": t, "count": n}
                        for (o, s, t), n in sources.most_common(200)],
            "subjects": [{"subject": s, "count": n} for s, n in seen.most_common(100)],
            "sensors": sensors,
            "rejected": self.rejected(),
            "bus": await self.bus_health(bus),
        }

    async def bus_health(self, bus: Bus) -> dict[str, Any]:
        streams: dict[str, Any] = {}
        for name in (EVENTS, RESULTS, DLQ):
            try:
                state = await bus.stream_state(name)
                streams[name] = {"messages": state.messages, "lastSeq": state.last_seq}
            except BusError as e:
                streams[name] = {"error": str(e)}
        dispatch_backlog = {c.name: c.pending for c in await _consumers(bus, EVENTS)}
        return {"connected": bus.connected, "streams": streams,
                "dispatchBacklog": dispatch_backlog.get(dispatch.DURABLE)}  # fmt: skip

    # ------------------------------------------------------------ schedules

    async def schedules(self, bus: Bus | None, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        found, problems = await asyncio.to_thread(schedules.load_schedules,
                                                  [self.config.sensors_dir])  # fmt: skip
        kv = await bus.kv(cron.KV_BUCKET) if bus is not None else None
        out = []
        for s in sorted(found, key=lambda s: s.name):
            upcoming: list[str] = []
            after = now
            with contextlib.suppress(schedules.NoNextFire):
                for _ in range(3):
                    after = schedules.next_fire(s, after)
                    upcoming.append(after.isoformat())
            last = await kv.get(s.name) if kv is not None else None
            last_at = cron.decode_last(last[0]) if last else None
            out.append({"name": s.name, "file": s.file, "expression": s.expression,
                        "timezone": s.timezone, "catchup": str(s.catchup),
                        "maxCatchupSeconds": s.max_catchup, "next": upcoming,
                        "lastTick": last_at.isoformat() if last_at else None})  # fmt: skip
        return {"now": now.isoformat(), "schedules": out,
                "problems": [str(p) for p in problems]}  # fmt: skip


def _dry_run(text: str, msg: store.Stored, event: CloudEvent) -> dict[str, Any]:
    docs, problems = yamldoc.parse_documents(text, TRY_FILE)
    sensors = []
    for doc in docs:
        if isinstance(doc.value, dict) and doc.value.get("kind") == "Sensor":
            spec, found = sensor_model.parse_sensor(doc)
            problems += [p for p in found if p.severity != "warning"]
            if spec is not None:
                sensors.append(spec)
    if problems or not sensors:
        lines = [str(p) for p in problems] or [f"{TRY_FILE}: no Sensor document"]
        return {"ok": False, "report": "\n".join(lines), "fires": []}
    out = io.StringIO()
    fires: set[str] = set()
    item = dryrun.Input(event, msg.subject or None, f"stored event #{msg.seq}")
    for spec in sensors:
        fired, _ = dryrun.run_sensor(spec, [item], out)
        fires |= fired
    return {"ok": True, "report": out.getvalue(), "fires": sorted(fires)}


def _matched_here() -> dict[str, float]:
    """Events each sensor matched in this process since it started (its metric), read once."""
    out: dict[str, float] = {}
    for family in metrics.EVENTS_MATCHED.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                out[sample.labels.get("sensor", "")] = sample.value
    return out


async def _consumers(bus: Bus, stream: str) -> list[Any]:
    try:
        return list(await bus.consumer_states(stream))
    except BusError:
        return []


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
