"""Trigger run results: one CloudEvent per run on `results.<sensor>.<trigger>` (stream
RESULTS), and the table `eventsvc results` prints."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eventsvc import events, logs
from eventsvc.bus import Bus
from eventsvc.errors import BusError
from eventsvc.events import CloudEvent

log = logs.get("eventsvc.sensors")
RESULT_TYPE = "dev.eventsvc.trigger.result"


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
        }


def subject(sensor: str, trigger: str) -> str:
    return f"results.{events.sanitize_token(sensor)}.{events.sanitize_token(trigger)}"


def to_event(result: RunResult) -> CloudEvent:
    return events.make_event(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "type": RESULT_TYPE,
            "source": f"eventsvc/sensors/{result.sensor}",
            "subject": result.trigger,
            "time": datetime.now(UTC),
            "datacontenttype": "application/json",
        },
        result.data(),
    )


async def publish(bus: Bus, result: RunResult) -> None:
    """Publish; a failure is logged, never raised (a result must not fail the run)."""
    headers, body = events.to_binary(to_event(result))
    try:
        await bus.publish(subject(result.sensor, result.trigger), body, headers)
    except BusError as e:
        log.warning("result not published", sensor=result.sensor, trigger=result.trigger,
                    outcome=result.outcome, error=str(e))  # fmt: skip


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
