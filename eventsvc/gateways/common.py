"""What every HTTP gateway shares: rejections mapped to statuses in one place,
and publishing with metrics and the bus-unavailable answer."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from eventsvc import events, logs, metrics
from eventsvc.bus import Bus, PublishAck
from eventsvc.bus.natsclient import encode_headers
from eventsvc.errors import BusError, BusUnavailableError

log = logs.get("eventsvc.gateways")
RETRY_AFTER_SECONDS = 5
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BusRef:
    """The bus, once connected: the HTTP server may start before (and outlive) it."""

    def __init__(self, bus: Bus | None = None) -> None:
        self.bus = bus


class Rejection(Exception):
    """A refused request: HTTP status, a metric reason, and a message naming the fix."""

    def __init__(
        self, status: int, reason: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = dict(headers or {})


_JSON_HEADERS = {"Content-Type": "application/json"}
BEARER_REALM = "eventsvc"


def unauthorized(reason: str, message: str, *, invalid_token: bool = False) -> Rejection:
    """401 with the `WWW-Authenticate: Bearer` challenge of RFC 6750 (`error="invalid_token"`
    when a token was sent and is not accepted). `message` must never hold the token."""
    challenge = f'Bearer realm="{BEARER_REALM}"'
    if invalid_token:
        challenge += ', error="invalid_token"'
    return Rejection(401, reason, message, headers={"WWW-Authenticate": challenge})


def forbidden(reason: str, message: str) -> Rejection:
    """403: the credentials are good, and do not allow this (RFC 6750 `insufficient_scope`)."""
    challenge = f'Bearer realm="{BEARER_REALM}", error="insufficient_scope"'
    return Rejection(403, reason, message, headers={"WWW-Authenticate": challenge})


def json_response(
    status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> web.Response:
    # a header dict rather than `content_type=`: aiohttp's content-type path costs more
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        headers={**_JSON_HEADERS, **headers} if headers else _JSON_HEADERS,
    )


def accepted_response(event_id: str) -> web.Response:
    """202 `{"status":"accepted","id":...}`: compact, and formatted without a JSON encoder
    when the id needs no escaping (as delivery ids do). The stream sequence is left out:
    the client has no use for it, and every byte of the answer costs the sender too."""
    if event_id.isascii() and event_id.isprintable() and '"' not in event_id:
        if "\\" not in event_id:
            return web.Response(status=202, body=b'{"status":"accepted","id":"%s"}'
                                % event_id.encode(), headers=_JSON_HEADERS)  # fmt: skip
    body = json.dumps({"status": "accepted", "id": event_id}, separators=(",", ":")).encode()
    return web.Response(status=202, body=body, headers=_JSON_HEADERS)


def guarded(gateway: str, handler: Handler) -> Handler:
    """`handler` with every `Rejection` answered by its status and counted by its reason.

    The one place where refusals become HTTP answers (a wrapper per route rather than
    an application middleware: the middleware chain costs more on the hot path).
    """

    glog = log.bind(gateway=gateway)

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Rejection as r:
            release_body(request)  # the refusal does not need the body: free it now
            metrics.EVENTS_REJECTED.labels(gateway, r.reason).inc()
            # a wrong secret or a broken sender must show in the log, not only in a metric
            glog.warning("request refused", status=r.status, reason=r.reason, error=r.message,
                         event_id=request.headers.get("X-GitHub-Delivery")
                         or request.headers.get("ce-id"),
                         remote=request.remote)  # fmt: skip
            return json_response(
                r.status, {"error": r.message, "reason": r.reason}, headers=r.headers
            )
        finally:
            release_body(request)

    return handle


async def publish(
    bus: Bus | None,
    gateway: str,
    subject: str,
    headers: Mapping[str, str],
    body: bytes,
    msg_id: str,
) -> PublishAck:
    """Store the event in JetStream; a 503 `Rejection` with Retry-After when the bus is down."""
    if bus is None or not bus.connected:
        raise _unavailable("not connected to NATS")
    started = time.perf_counter()
    try:
        ack = await bus.publish(subject, body, headers, msg_id=msg_id)
    except BusUnavailableError as e:
        raise _unavailable(str(e)) from e
    except BusError as e:
        raise Rejection(500, "bus_error", f"the bus refused the event: {e}") from e
    metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
    metrics.published(gateway, ack.duplicate).inc()
    return ack


def _unavailable(detail: str) -> Rejection:
    return Rejection(
        503,
        "bus_unavailable",
        f"event not accepted: the event bus is unavailable ({detail}); retry later",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


BUSY_RETRY_AFTER_SECONDS = 1
_RESERVED = web.RequestKey("eventsvc.body_reservation", tuple)  # (BodyBudget, bytes held)


class BodyBudget:
    """Bytes of request bodies the process holds at once, shared by every intake endpoint.

    A request reserves its `Content-Length` before its body is read (a chunked one, chunk by
    chunk) and gives it back when its answer is made (`guarded`). Past the budget the request
    is answered 503 + Retry-After without reading the body: a crowd of large senders, or one
    sender holding many connections, cannot take the process past its memory limit.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0

    def reserve(self, request: web.Request, size: int) -> None:
        if self.used + size > self.total:
            raise Rejection(
                503, "busy",
                f"too many request bodies are being received at once ({self.used} of "
                f"{self.total} bytes held; http.maxInflightBytes); retry after "
                f"{BUSY_RETRY_AFTER_SECONDS} s",
                headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
            )  # fmt: skip
        self.used += size
        held = request.get(_RESERVED)
        request[_RESERVED] = (self, (held[1] if held else 0) + size)


def release_body(request: web.Request) -> None:
    """Give back what `BodyBudget.reserve` took for this request (once)."""
    held = request.pop(_RESERVED, None)
    if held is not None:
        budget, size = held
        budget.used -= size


async def read_body(request: web.Request, limit: int, budget: BodyBudget | None = None) -> bytes:
    """The raw body, refused with 413 past `limit` bytes (checked before and while reading),
    and with 503 when `budget` has no room for it (see `BodyBudget`)."""
    too_big = Rejection(
        413,
        "too_large",
        f"body is larger than the {limit} byte limit; raise http.maxBodyBytes "
        "(EVENTSVC_MAX_BODY_BYTES) if such bodies are expected",
    )
    if request.content_length is not None:
        if request.content_length > limit:
            raise too_big
        if budget is not None:
            budget.reserve(request, request.content_length)
        return await request.read()  # the length is known and within the limit
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise too_big
        if budget is not None:
            budget.reserve(request, len(chunk))
        chunks.append(chunk)
    return b"".join(chunks)


# What an accepted event may hold: past these, nats-server closes the connection (a subject
# over its control line, a header block past max_payload) or consumers cannot decode it.
MAX_ATTRIBUTE_CHARS = 1024
"""Longest value of any one CloudEvent attribute (type, source, subject, id, extensions)."""
MAX_HEADER_BYTES = 8192
"""Largest NATS header block of one event (every ce-* header, content-type, Nats-Msg-Id)."""
MAX_SUBJECT_BYTES = 2048
"""Longest NATS subject published (nats-server's control line is 4096 bytes with the rest)."""
MAX_JSON_DEPTH = 256
"""Deepest nesting of JSON arrays and objects in a body (consumers decode recursively)."""
MAX_BATCH_EVENTS = 1000
"""Most events in one `application/cloudevents-batch+json` request."""


def header_text(name: str, value: str | None) -> str | None:
    """An HTTP header's value, refused with 400 unless it is UTF-8 text (aiohttp hands
    bytes that are not UTF-8 over as lone surrogates, which no header or JSON can carry)."""
    if value is None or value.isascii() or _is_text(value):
        return value
    raise Rejection(400, "invalid_header",
                    f"header {name} is not valid UTF-8; send it as UTF-8 text")  # fmt: skip


def _is_text(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def too_deep(what: str) -> Rejection:
    return Rejection(400, "json_too_deep",
                     f"{what} nests JSON arrays and objects more than {MAX_JSON_DEPTH} levels "
                     "deep; flatten it")  # fmt: skip


def parse_json(raw: bytes, what: str) -> Any:
    """`raw` parsed as JSON; a 400 `Rejection` when it is not JSON or nests too deep."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise too_deep(what) from None
    except ValueError as e:
        raise Rejection(400, "malformed_json", f"{what} is not valid JSON: {e}") from e
    if json_too_deep(raw):
        raise too_deep(what)
    return doc


_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `raw`, valid JSON, nests arrays and objects more than `limit` deep. Cheap, all
    in C: two counts for most bodies; else strings dropped (escaped backslashes, then escaped
    quotes, then every other stretch between quotes) and brackets peeled a level at a time.
    Only for JSON already parsed: that relies on every string being terminated."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKET)
    brackets = brackets.replace(b"{", b"[").replace(b"}", b"]")  # valid JSON balances them
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace(b"[]", b"")  # the innermost level
    return bool(brackets)


def check_attributes(attributes: Mapping[str, Any]) -> None:
    """A 400 `Rejection` naming the first attribute no consumer could read back as sent:
    not a string, integer, boolean or time; empty; longer than `MAX_ATTRIBUTE_CHARS`;
    or text that is not Unicode (lone surrogates)."""
    for name, value in attributes.items():
        if value is None or isinstance(value, datetime):
            continue
        if isinstance(value, str):
            text = value
        elif isinstance(value, int):  # bool too
            text = str(value)
        else:
            raise Rejection(400, "invalid_attribute",
                            f"attribute {name!r} is a JSON {_json_kind(value)}; CloudEvents "
                            "attributes are strings, integers, booleans or times: send it "
                            "as a string, or move it into data")  # fmt: skip
        if not text:
            raise Rejection(400, "empty_attribute",
                            f"attribute {name!r} is empty; leave it out or give it a "
                            "value")  # fmt: skip
        if len(text) > MAX_ATTRIBUTE_CHARS:
            raise Rejection(400, "attribute_too_large",
                            f"attribute {name!r} is {len(text)} characters long; the limit is "
                            f"{MAX_ATTRIBUTE_CHARS}: shorten it, or move the value into "
                            "data")  # fmt: skip
        if not text.isascii() and not _is_text(text):
            raise Rejection(400, "invalid_attribute",
                            f"attribute {name!r} is not valid Unicode text (a lone surrogate, "
                            "or bytes that are not UTF-8); send UTF-8")  # fmt: skip


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return "number" if isinstance(value, float) else type(value).__name__


def check_subject(subject: str) -> None:
    if len(subject.encode()) > MAX_SUBJECT_BYTES:
        raise Rejection(400, "subject_too_large",
                        f"the NATS subject of the event is {len(subject.encode())} bytes; the "
                        f"limit is {MAX_SUBJECT_BYTES}: shorten the event type")  # fmt: skip


def header_block_too_large(size: int) -> Rejection:
    return Rejection(400, "headers_too_large",
                     f"the event's attributes take {size} bytes as NATS headers; the limit is "
                     f"{MAX_HEADER_BYTES}: shorten them or drop extension attributes (or move "
                     "them into data)")  # fmt: skip


_KNOWN_KEYS: set[str] = set()


def as_consumed(headers: Mapping[str, str]) -> tuple[dict[str, str], int]:
    """The headers a consumer reads back from the header block the bus writes for `headers`
    (values trimmed, CR/LF as spaces, UTF-8 read with replacement, as nats-py parses them),
    and the size of that block."""
    block = encode_headers(headers, _KNOWN_KEYS)
    out: dict[str, str] = {}
    for line in block.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if key and not any(c.isspace() for c in key):
            out[key] = value.strip().decode("utf-8", "replace")
    return out, len(block)


def check_decodes(subject: str, headers: Mapping[str, str], body: bytes, msg_id: str) -> None:
    """A 400 `Rejection` unless the message about to be published is within the NATS limits
    and decodes, read back as a consumer reads it, with `events.from_nats`."""
    check_subject(subject)
    consumed, size = as_consumed({**headers, "Nats-Msg-Id": msg_id})
    if size > MAX_HEADER_BYTES:
        raise header_block_too_large(size)
    try:
        events.from_nats(consumed, body)
    except events.EventDecodeError as e:
        raise Rejection(400, "undecodable_event",
                        f"the event would not decode as a CloudEvent when read back from the "
                        f"bus: {e}") from e  # fmt: skip
