"""`POST /events`: the CloudEvents HTTP binding (binary, structured, batch) onto the bus.

Published binary mode to `events.http.<type>` (each type token made safe for
NATS); `Nats-Msg-Id` = source + id, the pair CloudEvents defines as unique.
"""

from __future__ import annotations

import json

from aiohttp import web

from eventsvc import events, logs, metrics, subjects
from eventsvc.config import Config
from eventsvc.events import CloudEvent
from eventsvc.gateways.common import (
    BusRef,
    Rejection,
    guarded,
    json_response,
    publish,
    read_body,
)

log = logs.get("eventsvc.gateways.cloudevents")
GATEWAY = "cloudevents"


def subject_for(event: CloudEvent) -> str:
    tokens = [subjects.token(t) for t in event.get_type().split(".")]
    return "events.http." + ".".join(tokens)


def decode_request(headers: dict[str, str], content_type: str, body: bytes) -> list[CloudEvent]:
    """Events in the request, whichever content mode; `Rejection` 400 naming what is wrong."""
    try:
        if content_type == events.BATCH_CONTENT_TYPE:
            try:
                docs = json.loads(body)
            except ValueError as e:
                raise events.EventDecodeError(f"batch is not valid JSON: {e}") from e
            if not isinstance(docs, list):
                raise events.EventDecodeError("a batch must be a JSON array of CloudEvents")
            return [_item(i, doc) for i, doc in enumerate(docs)]
        if content_type == events.STRUCTURED_CONTENT_TYPE:
            return [events.from_structured(body)]
        if any(k.lower().startswith(events.CE_PREFIX) for k in headers):
            return [events.from_binary(headers, body)]
    except events.EventDecodeError as e:
        raise Rejection(400, "invalid_cloudevent", str(e)) from e
    raise Rejection(400, "invalid_cloudevent",
                    "not a CloudEvent: send ce-* headers (binary mode), or Content-Type "
                    f"{events.STRUCTURED_CONTENT_TYPE} (structured) or "
                    f"{events.BATCH_CONTENT_TYPE} (batch)")  # fmt: skip


def _item(index: int, doc: object) -> CloudEvent:
    try:
        return events.from_dict(doc)
    except events.EventDecodeError as e:
        raise events.EventDecodeError(f"batch item {index}: {e}") from e


class CloudEventsGateway:
    def __init__(self, config: Config, bus_ref: BusRef) -> None:
        self.limit = config.max_body_bytes
        self.bus_ref = bus_ref

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/events", guarded(GATEWAY, self.handle))]

    async def handle(self, request: web.Request) -> web.Response:
        body = await read_body(request, self.limit)
        received = decode_request(dict(request.headers), request.content_type, body)
        metrics.received(GATEWAY).inc(len(received))
        results = []
        for event in received:
            headers, data = events.to_binary(event)
            ack = await publish(
                self.bus_ref.bus, GATEWAY, subject_for(event), headers, data,
                msg_id=f"{event.get_source()}:{event.get_id()}",
            )  # fmt: skip
            log.debug("event accepted", event_id=event.get_id(), type=event.get_type(),
                     duplicate=ack.duplicate)  # fmt: skip
            results.append({"id": event.get_id(), "seq": ack.seq, "duplicate": ack.duplicate})
        if all(r["duplicate"] for r in results):
            return json_response(200, {"status": "duplicate", "events": results})
        return json_response(202, {"status": "accepted", "events": results})
