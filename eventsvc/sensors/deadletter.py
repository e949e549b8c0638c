"""Dead letters: one JSON record per event a sensor gave up on, on `dlq.<sensor>` (stream
DLQ). A record says which sensor and trigger, why (`decode`, `permanent failure`,
`retries exhausted`), the error, the attempts, and the events themselves, so that it can
be read, replayed or discarded later.

Events no sensor could even be chosen for (a message on `events.>` that is not a
CloudEvent at all) go to `dlq._dispatch` once, not once per sensor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eventsvc import events, logs, subjects
from eventsvc.bus import Bus
from eventsvc.errors import BusError
from eventsvc.events import CloudEvent
from eventsvc.sensors import delivery

log = logs.get("eventsvc.sensors")
DISPATCH = "_dispatch"  # not an RFC 1123 name: no sensor can have it


@dataclass(frozen=True, slots=True)
class Letter:
    sensor: str
    reason: str
    error: str
    subject: str  # the subject the event was published on
    seq: int  # its sequence in EVENTS or RESULTS
    deliveries: int
    trigger: str | None = None
    attempts: int | None = None
    by_dep: Mapping[str, CloudEvent] | None = None  # None: the event could not be decoded
    event: CloudEvent | None = None  # the event this delivery carried
    raw: bytes = b""  # its body, when it could not be decoded
    extra: Mapping[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "trigger": self.trigger,
            "reason": self.reason,
            "error": self.error,
            "attempts": self.attempts if self.attempts is not None else self.deliveries,
            "deliveries": self.deliveries,
            "subject": self.subject,
            "streamSequence": self.seq,
            "event": events.to_dict(self.event) if self.event is not None else None,
            "events": {d: events.to_dict(e) for d, e in (self.by_dep or {}).items()},
            "raw": None if self.by_dep is not None else self.raw.decode(errors="replace"),
            **self.extra,
        }

    @property
    def msg_id(self) -> str:
        if self.by_dep:
            ids = sorted({e.get_id() for e in self.by_dep.values()})
            return delivery.run_key(self.sensor, self.trigger or "-", ids)
        return f"{self.sensor}:{self.seq}"


async def send(bus: Bus, letter: Letter) -> bool:
    """Store the record; False (logged) when it could not be stored."""
    body = json.dumps(letter.record(), default=str).encode()
    try:
        await bus.publish(subjects.dlq(letter.sensor), body, msg_id=letter.msg_id)
    except BusError as e:
        log.error("DLQ publish failed; leaving the event for redelivery", sensor=letter.sensor,
                  error=str(e))  # fmt: skip
        return False
    return True
