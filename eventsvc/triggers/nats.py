"""`nats`: publish the matched event (binary mode) to a subject."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from eventsvc import events
from eventsvc.errors import (
    BusError,
    BusUnavailableError,
    PermanentTriggerError,
    TemporaryTriggerError,
)
from eventsvc.triggers.base import Services, TriggerContext, TriggerResult


class NatsTrigger:
    key: ClassVar[str] = "nats"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["subject"],
        "properties": {
            "subject": {
                "type": "string",
                "pattern": r"^[^\s*>]+$",
                "x-hint": "a NATS subject has no spaces or wildcards",
                "description": "Subject to publish on; must be captured by a JetStream stream.",
            },
        },
    }

    def __init__(self, services: Services) -> None:
        self.services = services

    @classmethod
    def explain(cls, spec: Mapping[str, Any], first: events.CloudEvent | None) -> str:
        return f"publishes the event on {spec.get('subject')} (JetStream, acknowledged)"

    @classmethod
    def check(cls, spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        subject = spec.get("subject")
        if isinstance(subject, str) and (subject.startswith(".") or ".." in subject):
            return [(("subject",), f"{subject!r} has an empty token")]
        return []

    async def execute(self, spec: Mapping[str, Any], ctx: TriggerContext) -> TriggerResult:
        bus = self.services.bus
        if bus is None:
            raise PermanentTriggerError("nats trigger needs the bus, which is not running")
        subject = str(spec["subject"])
        event = ctx.first
        headers, body = events.to_binary(event)
        # a redelivered event must not publish twice: the id is the event id plus the target
        msg_id = f"{ctx.sensor}:{ctx.trigger}:{event.get_id()}"
        try:
            ack = await bus.publish(subject, body, headers, msg_id=msg_id)
        except BusUnavailableError as e:
            raise TemporaryTriggerError(str(e)) from e
        except BusError as e:
            raise PermanentTriggerError(
                f"{e}; is {subject!r} captured by a stream (e.g. events.> in EVENTS)?"
            ) from e
        detail = {"subject": subject, "seq": ack.seq, "duplicate": ack.duplicate}
        return TriggerResult(detail=detail)
