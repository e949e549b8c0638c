"""Trigger run results: one CloudEvent per run on `results.<sensor>.<trigger>` (stream
RESULTS), and the table `eventsvc results` prints.

A result is an event other sensors can depend on (`eventSubject: results.<sensor>.<trigger>`),
so it says what a follow-up needs: `outcome`, `detail` (what the trigger reported) and
`events.<dependency>`, the events the run fired on (id, source, type, subject, time and
`data`). `data` is copied whole when small; a larger payload (a GitHub webhook body is
20-60 KiB) is cut to its top-level scalars plus a fixed view of the GitHub objects
(`TRIMMED_PATHS`), marked `dataTrimmed: true`. `depth` counts results of results; the
engine does not fire on a result deeper than `MAX_DEPTH`, so a loop across sensors ends.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eventsvc import events, logs, subjects
from eventsvc.bus import Bus
from eventsvc.errors import BusError
from eventsvc.events import CloudEvent

log = logs.get("eventsvc.sensors")
RESULT_TYPE = "dev.eventsvc.trigger.result"
MAX_DEPTH = 8  # results of results of ... beyond this do not fire triggers
KEEP_WHOLE_BYTES = 4096  # event data up to this size (as JSON) is copied whole
TRIMMED_PATHS: Mapping[str, tuple[str, ...]] = {
    "repository": ("full_name", "name", "html_url", "clone_url", "default_branch",
                   "owner.login"),
    "pull_request": ("number", "html_url", "title", "state", "draft", "merged", "updated_at",
                     "head.sha", "head.ref", "base.ref", "user.login", "labels.*.name"),
    "issue": ("number", "html_url", "title", "state", "pull_request.html_url"),
    "sender": ("login",),
    "label": ("name",),
    "release": ("tag_name", "html_url"),
    "check_suite": ("head_sha", "head_branch", "conclusion"),
    "workflow_run": ("head_sha", "head_branch", "conclusion", "html_url"),
    "deployment": ("sha", "ref", "environment"),
}  # fmt: skip


def _pick(node: Any, path: list[str]) -> Any:
    """The parts of `node` on `path` (`*` maps over a list), or None when absent."""
    if not path:
        return node
    head, rest = path[0], path[1:]
    if head == "*":
        if not isinstance(node, list):
            return None
        return [_pick(item, rest) for item in node]
    if not isinstance(node, Mapping) or head not in node:
        return None
    value = _pick(node[head], rest)
    return None if value is None else {head: value}


def _merge(into: dict[str, Any], part: Mapping[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


def _surely_larger(node: Any, budget: int) -> int:
    """`budget` less a lower bound of `node`'s size as JSON, stopping once it is spent
    (a 20 KB webhook body is not serialised whole to learn that it is large)."""
    stack = [node]
    while stack and budget >= 0:
        item = stack.pop()
        if isinstance(item, str):
            budget -= len(item) + 2
        elif isinstance(item, Mapping):
            budget -= 2 + sum(len(str(k)) + 4 for k in item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            budget -= 2 + len(item)
            stack.extend(item)
        else:
            budget -= 1
    return budget


def trim(data: Any) -> tuple[Any, bool]:
    """(`data`, False) when small, else (a trimmed view, True); see the module doc."""
    if _surely_larger(data, KEEP_WHOLE_BYTES) >= 0:
        try:
            size = len(json.dumps(data, default=str))
        except (TypeError, ValueError):
            return None, True
        if size <= KEEP_WHOLE_BYTES:
            return data, False
    if not isinstance(data, Mapping):
        return None, True
    view: dict[str, Any] = {k: v for k, v in data.items()
                            if v is None or isinstance(v, str | int | float | bool)}  # fmt: skip
    for key, paths in TRIMMED_PATHS.items():
        for path in paths:
            part = _pick(data, [key, *path.split(".")])
            if part is not None:
                _merge(view, part)
    return view, True


def cause(by_dep: Mapping[str, CloudEvent]) -> dict[str, dict[str, Any]]:
    """The events of a run, by dependency, as a result carries them."""
    out: dict[str, dict[str, Any]] = {}
    for dep, event in by_dep.items():
        doc = events.to_dict(event)
        keys: tuple[str, ...] = ("id", "source", "type", "subject", "time")
        record: dict[str, Any] = {k: doc[k] for k in keys if k in doc}
        record["data"], trimmed = trim(doc.get("data"))
        if trimmed:
            record["dataTrimmed"] = True
        out[dep] = record
    return out


def depth_of(event: CloudEvent) -> int:
    """How many results deep `event` is: 0 for an event that is not a result."""
    if event.get_type() != RESULT_TYPE:
        return 0
    data = event.get_data()
    depth = data.get("depth") if isinstance(data, Mapping) else None
    return depth if isinstance(depth, int) and depth > 0 else 1


@dataclass(frozen=True, slots=True)
class RunResult:
    sensor: str
    trigger: str
    event_ids: Sequence[str]
    outcome: str
    attempt: int
    duration: float  # seconds
    error: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)
    dlq: bool = False  # this run is the DLQ trigger of `trigger`
    events: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # see `cause`
    depth: int = 1
    event_id: str = ""
    """Set for a run's final outcome: the same for every publication of it, so a result
    published again (after a crash) is dropped by JetStream or recognised by its id."""

    def data(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "trigger": self.trigger,
            "eventIds": list(self.event_ids),
            "outcome": self.outcome,
            "attempt": self.attempt,
            "durationMs": round(self.duration * 1000, 3),
            "error": self.error or None,
            "detail": dict(self.detail),
            "dlqTrigger": self.dlq,
            "events": dict(self.events),
            "depth": self.depth,
        }


def subject(sensor: str, trigger: str) -> str:
    return subjects.result(sensor, trigger)


def to_event(result: RunResult) -> CloudEvent:
    return events.make_event(
        {
            "specversion": "1.0",
            "id": result.event_id or str(uuid.uuid4()),
            "type": RESULT_TYPE,
            "source": f"eventsvc/sensors/{result.sensor}",
            "subject": result.trigger,
            "time": datetime.now(UTC),
            "datacontenttype": "application/json",
        },
        result.data(),
    )


RETRY_PAUSES = (0.2, 0.5, 1.0)  # then the caller leaves the event for redelivery


async def publish(bus: Bus, result: RunResult) -> bool:
    """Publish, retrying a few times; False (logged, never raised) when it was not stored.
    A run whose final result was not stored leaves its event for redelivery, which
    publishes it again under the same id (see `RunResult.event_id`)."""
    headers, body = events.to_binary(to_event(result))
    for pause in (*RETRY_PAUSES, None):
        try:
            await bus.publish(subject(result.sensor, result.trigger), body, headers,
                              msg_id=result.event_id or None)  # fmt: skip
            return True
        except BusError as e:
            if pause is None:
                log.warning("result not published; the event will come back to publish it",
                            sensor=result.sensor, trigger=result.trigger,
                            outcome=result.outcome, error=str(e))  # fmt: skip
                return False
            await asyncio.sleep(pause)
    return False


# --- the `eventsvc results` table ---

COLUMNS = ("TIME", "SENSOR", "TRIGGER", "OUTCOME", "ATTEMPT", "DURATION", "EVENTS", "ERROR/DETAIL")
_WIDTHS = (19, 18, 18, 10, 7, 9, 24, 0)


def _cell(text: str, width: int) -> str:
    if not width:
        return text
    return text if len(text) <= width else text[: width - 1] + "…"


def header() -> str:
    return "  ".join(_cell(c, w).ljust(w) for c, w in zip(COLUMNS, _WIDTHS, strict=True)).rstrip()


def row(event: CloudEvent) -> str:
    data = event.get_data()
    if not isinstance(data, Mapping):
        data = {}
    when = event.get_time()
    stamp = (
        when.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(when, datetime)
        else time.strftime("%Y-%m-%d %H:%M:%S")
    )
    trigger = str(data.get("trigger", ""))
    if data.get("dlqTrigger"):
        trigger += " (dlq)"
    pairs = (data.get("detail") or {}).items()
    detail = data.get("error") or " ".join(f"{k}={v}" for k, v in pairs)
    cells = (
        stamp,
        str(data.get("sensor", "")),
        trigger,
        str(data.get("outcome", "")),
        str(data.get("attempt", "")),
        f"{float(data.get('durationMs') or 0):.0f}ms",
        ",".join(data.get("eventIds") or []),
        str(detail),
    )
    return "  ".join(_cell(c, w).ljust(w) for c, w in zip(cells, _WIDTHS, strict=True)).rstrip()
