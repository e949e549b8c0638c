"""`POST /events`: the CloudEvents HTTP binding (binary, structured, batch) onto the bus.

Published binary mode to `events.http.<type>` (each type token made safe for
NATS); `Nats-Msg-Id` = source + id, the pair CloudEvents defines as unique, encoded so
that no two pairs share one (`msg_id`).

Every event is checked before any of the request is stored: attributes within
`common.MAX_ATTRIBUTE_CHARS`, the header block and subject within what NATS takes, and
the message as published decoding with `events.from_nats` as consumers read it.

Who may publish: `Authorization: Bearer <token>` with a token of EVENTSVC_EVENTS_TOKEN
(or its _FILE), each possibly limited to `type` and `source` prefixes (`EventsAuth`).
Without any token the endpoint is open only on a loopback bind address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json

from aiohttp import web

from eventsvc import events, logs, metrics, subjects
from eventsvc.config import EVENTS_TOKEN_ENV, Config, EventsToken
from eventsvc.events import CloudEvent
from eventsvc.gateways.common import (
    MAX_BATCH_EVENTS,
    BodyBudget,
    BusRef,
    Rejection,
    check_attributes,
    check_decodes,
    forbidden,
    guarded,
    json_response,
    json_too_deep,
    publish,
    read_body,
    too_deep,
    unauthorized,
)

log = logs.get("eventsvc.gateways.cloudevents")
GATEWAY = "cloudevents"


def subject_for(event: CloudEvent) -> str:
    tokens = [subjects.token(t) for t in event.get_type().split(".")]
    return "events.http." + ".".join(tokens)


def msg_id(event: CloudEvent) -> str:
    """`<source>:<id>`, both percent-encoded as header values are, and `:` too in the source:
    the first `:` ends the source, so no two (source, id) pairs share a `Nats-Msg-Id`."""
    source = events.encode_header_value(event.get_source()).replace(":", "%3A")
    return f"{source}:{events.encode_header_value(event.get_id())}"


def decode_request(headers: dict[str, str], content_type: str, body: bytes) -> list[CloudEvent]:
    """Events in the request, whichever content mode; `Rejection` 400 naming what is wrong."""
    try:
        if content_type == events.BATCH_CONTENT_TYPE:
            try:
                docs = json.loads(body)
            except RecursionError:
                raise too_deep("the batch") from None
            except ValueError as e:
                raise events.EventDecodeError(f"batch is not valid JSON: {e}") from e
            if not isinstance(docs, list):
                raise events.EventDecodeError("a batch must be a JSON array of CloudEvents")
            if len(docs) > MAX_BATCH_EVENTS:
                raise Rejection(413, "too_many_events",
                                f"the batch holds {len(docs)} events; the limit is "
                                f"{MAX_BATCH_EVENTS} per request: send it in smaller "
                                "batches")  # fmt: skip
            if json_too_deep(body):
                raise too_deep("the batch")
            return [_item(i, doc) for i, doc in enumerate(docs)]
        if content_type == events.STRUCTURED_CONTENT_TYPE:
            event = events.from_structured(body)
            if json_too_deep(body):
                raise too_deep("the event")
            return [event]
        if any(k.lower().startswith(events.CE_PREFIX) for k in headers):
            event = events.from_binary(headers, body)
            if events.is_json(event.get_datacontenttype()) and json_too_deep(body):
                raise too_deep("data")
            return [event]
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


Prepared = tuple[str, dict[str, str], bytes, str]
"""What is published for one event: subject, headers, body, Nats-Msg-Id."""


def prepare(event: CloudEvent) -> Prepared:
    """The message for `event`, or a 400 `Rejection` naming why no consumer could read it:
    checked attribute by attribute, then read back through `events.from_nats` as stored."""
    attributes = event.get_attributes()
    check_attributes(attributes)
    content_type = attributes.get("datacontenttype")
    if isinstance(content_type, str) and content_type.strip().lower().startswith(
        "application/cloudevents"
    ):
        raise Rejection(400, "invalid_datacontenttype",
                        f"datacontenttype {content_type!r} is a CloudEvents format, which "
                        "would make the stored event read as a different one: send the event "
                        "itself in structured mode, or give the data's own media type")  # fmt: skip
    try:
        headers, data = events.to_binary(event)
    except UnicodeEncodeError as e:
        raise Rejection(400, "invalid_data",
                        "data is text that is not valid Unicode (a lone surrogate); send "
                        "UTF-8 text, or binary data as data_base64") from e  # fmt: skip
    subject, ident = subject_for(event), msg_id(event)
    check_decodes(subject, headers, data, ident)
    return subject, headers, data, ident


def is_loopback(host: str) -> bool:
    """Whether binding `host` listens on loopback only: 127.0.0.0/8, ::1 or `localhost`.
    Anything else (0.0.0.0, ::, an interface address, another name, empty) is not."""
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


_TOKEN_SETTING = f"{EVENTS_TOKEN_ENV} or {EVENTS_TOKEN_ENV}_FILE"


class EventsAuth:
    """Who may publish on `POST /events`, decided before the body is read.

    Tokens are compared as SHA-256 digests with `hmac.compare_digest`, against every
    configured token (no early exit, and no length of a token told by the timing).
    """

    def __init__(self, config: Config) -> None:
        self._tokens = [(token_digest(t.token), t) for t in config.events_tokens]
        # no token configured at all (not even a file that turned out missing or empty)
        self.open = (not self._tokens and config.events_token_file is None
                     and is_loopback(config.http_host))  # fmt: skip
        self._announce(config)

    def _announce(self, config: Config) -> None:
        """One start-up line saying whether /events is open, closed, or token-protected."""
        host = config.http_host
        if self._tokens:
            limited = sum(1 for t in config.events_tokens if t.types or t.sources)
            log.info("POST /events requires a bearer token",
                     tokens=len(self._tokens), limited=limited)  # fmt: skip
        elif config.events_token_file is not None:
            log.warning(f"POST /events refuses every request: {EVENTS_TOKEN_ENV}_FILE names "
                        "a file that is missing or holds no token",
                        file=config.events_token_file)  # fmt: skip
        elif self.open:
            log.info("POST /events accepts events without a token: no token is configured "
                     f"and the server listens on loopback only; set {_TOKEN_SETTING} "
                     "before binding another address", host=host)  # fmt: skip
        else:
            log.warning("POST /events refuses every request: no token is configured and the "
                        f"server does not listen on loopback only; set {_TOKEN_SETTING}",
                        host=host)  # fmt: skip

    def authenticate(self, authorization: str | None) -> EventsToken | None:
        """The token the request carries; None when the endpoint is open. A 401 `Rejection`
        otherwise; its message never holds what was sent."""
        if self.open:
            return None
        if not self._tokens:
            raise unauthorized("auth_not_configured",
                               "POST /events is closed: no token is configured and the server "
                               f"does not listen on loopback only; set {_TOKEN_SETTING} on the "
                               "server and send 'Authorization: Bearer <token>'")  # fmt: skip
        if not authorization:
            raise unauthorized("token_missing",
                               "missing Authorization header; send "
                               "'Authorization: Bearer <token>' with a token configured in "
                               f"{_TOKEN_SETTING}")  # fmt: skip
        scheme, _, presented = authorization.strip().partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise unauthorized("token_malformed",
                               "the Authorization header must be 'Bearer <token>'")  # fmt: skip
        digest = token_digest(presented)
        match: EventsToken | None = None
        for expected, token in self._tokens:
            # every token is compared: no early exit that would time which one matched
            if hmac.compare_digest(digest, expected) and match is None:
                match = token
        if match is None:
            raise unauthorized("token_invalid",
                               "the bearer token is not one the server accepts; check it "
                               f"against {_TOKEN_SETTING}", invalid_token=True)  # fmt: skip
        return match


def token_digest(token: str) -> bytes:
    # surrogatepass: a header decoded with surrogates still encodes (and matches nothing)
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def check_allowed(token: EventsToken | None, received: list[CloudEvent], batch: bool) -> None:
    """A 403 `Rejection` unless `token` may publish every event of the request; a batch is
    refused whole, before any of it is stored."""
    if token is None or not (token.types or token.sources):
        return
    for index, event in enumerate(received):
        for attr, value, prefixes in (("type", event.get_type(), token.types),
                                      ("source", event.get_source(), token.sources)):  # fmt: skip
            if prefixes and not value.startswith(prefixes):
                where = f"batch item {index} (id {event.get_id()!r}): " if batch else ""
                whole = "; nothing of the batch was stored" if batch else ""
                raise forbidden(f"{attr}_not_allowed",
                                f"{where}this token may not publish {attr} {value!r}; allowed "
                                f"{attr} prefixes: {', '.join(prefixes)}{whole}")  # fmt: skip


class CloudEventsGateway:
    def __init__(
        self, config: Config, bus_ref: BusRef, budget: BodyBudget | None = None
    ) -> None:
        self.limit = config.max_body_bytes
        self.budget = budget or BodyBudget(config.max_inflight_bytes)
        self.bus_ref = bus_ref
        self.auth = EventsAuth(config)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/events", guarded(GATEWAY, self.handle))]

    async def handle(self, request: web.Request) -> web.Response:
        token = self.auth.authenticate(request.headers.get("Authorization"))
        body = await read_body(request, self.limit, self.budget)
        received = decode_request(dict(request.headers), request.content_type, body)
        metrics.received(GATEWAY).inc(len(received))
        batch = request.content_type == events.BATCH_CONTENT_TYPE
        check_allowed(token, received, batch)
        # every event is checked before any is stored: a batch is refused whole
        prepared = [_prepared(index, event, batch) for index, event in enumerate(received)]
        results = []
        for event, (subject, headers, data, ident) in zip(received, prepared, strict=True):
            ack = await publish(self.bus_ref.bus, GATEWAY, subject, headers, data, msg_id=ident)
            log.debug("event accepted", event_id=event.get_id(), type=event.get_type(),
                     duplicate=ack.duplicate)  # fmt: skip
            results.append({"id": event.get_id(), "seq": ack.seq, "duplicate": ack.duplicate})
        if all(r["duplicate"] for r in results):
            return json_response(200, {"status": "duplicate", "events": results})
        return json_response(202, {"status": "accepted", "events": results})


def _prepared(index: int, event: CloudEvent, batch: bool) -> Prepared:
    try:
        return prepare(event)
    except Rejection as r:
        if batch:
            r.message = (f"batch item {index} (id {event.get_id()!r}): {r.message}; nothing "
                         "of the batch was stored")  # fmt: skip
        raise
