"""What every HTTP gateway shares: rejections mapped to statuses in one place,
and publishing with metrics and the bus-unavailable answer."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from eventsvc import logs, metrics
from eventsvc.bus import Bus, PublishAck
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
            metrics.EVENTS_REJECTED.labels(gateway, r.reason).inc()
            # a wrong secret or a broken sender must show in the log, not only in a metric
            glog.warning("request refused", status=r.status, reason=r.reason, error=r.message,
                         event_id=request.headers.get("X-GitHub-Delivery")
                         or request.headers.get("ce-id"),
                         remote=request.remote)  # fmt: skip
            return json_response(
                r.status, {"error": r.message, "reason": r.reason}, headers=r.headers
            )

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


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refused with 413 past `limit` bytes (checked before and while reading)."""
    too_big = Rejection(
        413,
        "too_large",
        f"body is larger than the {limit} byte limit; raise http.maxBodyBytes "
        "(EVENTSVC_MAX_BODY_BYTES) if such bodies are expected",
    )
    if request.content_length is not None:
        if request.content_length > limit:
            raise too_big
        return await request.read()  # the length is known and within the limit
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)
