"""`log`: write the matched events to the service log. For trying sensors out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from eventsvc import events, logs
from eventsvc.triggers.base import Services, TriggerContext, TriggerResult

log = logs.get("eventsvc.triggers.log")


class LogTrigger:
    key: ClassVar[str] = "log"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "message": {"type": "string", "description": "Text logged with the event."},
            "includeData": {"type": "boolean", "description": "Log the event data too."},
        },
    }

    def __init__(self, services: Services) -> None:
        self.services = services

    @classmethod
    def explain(cls, spec: Mapping[str, Any], first: events.CloudEvent | None) -> str:
        return "writes the message to the service's log"

    @classmethod
    def check(cls, spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        return []

    async def execute(self, spec: Mapping[str, Any], ctx: TriggerContext) -> TriggerResult:
        for dep, event in ctx.events.items():
            fields: dict[str, Any] = {
                "sensor": ctx.sensor,
                "trigger": ctx.trigger,
                "dependency": dep,
                "event_id": event.get_id(),
                "type": event.get_type(),
                "source": event.get_source(),
                "subject": event.get_subject(),
            }
            if spec.get("includeData"):
                fields["data"] = events.to_dict(event).get("data")
            log.info(spec.get("message", "event matched"), **fields)
        return TriggerResult(detail={"logged": len(ctx.events)})
