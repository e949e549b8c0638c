"""The JSON API under `/api/v1/` (the console's, and scripts' too), and the live tail as
server-sent events fed from a NATS subscription on `events.>`.

Every handler goes through `_guarded`: a `Rejection` (401/403/400/404) and a bus that
cannot answer (503) become JSON answers in one place.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from eventsvc import events, logs
from eventsvc.bus import Bus
from eventsvc.console import store
from eventsvc.console.auth import COOKIE, Access, ConsoleAuth
from eventsvc.console.views import Views
from eventsvc.errors import BusError, EventsvcError
from eventsvc.gateways.common import Rejection, json_response, parse_json

log = logs.get("eventsvc.console")
PREFIX = "/api/v1"
MAX_LIMIT = 1000
MAX_TRY_BYTES = 256 * 1024  # the YAML sent to the dry run
KEEPALIVE = 15.0  # seconds between comments on an idle live tail (proxies close silent ones)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _int(request: web.Request, name: str, default: int, most: int = 1 << 62) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Rejection(400, "bad_query", f"query parameter {name!r} must be an integer, "
                        f"got {raw[:40]!r}") from None  # fmt: skip
    if value < 0:
        raise Rejection(400, "bad_query", f"query parameter {name!r} must not be negative")
    return min(value, most)


MAX_JSON_BODY = 64 * 1024  # replay/discard lists and login: small by nature
MAX_SEQ = 2**63 - 1  # JetStream sequences are unsigned 64-bit; past that the API refuses


async def _json_body(request: web.Request, limit: int = MAX_JSON_BODY) -> Any:
    """The request's JSON, read up to `limit` bytes: None when it is not JSON; a 400 when it
    nests too deep, a 413 when it is larger (never a traceback)."""
    if request.content_length is not None and request.content_length > limit:
        raise Rejection(413, "too_large", f"send at most {limit} bytes")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise Rejection(413, "too_large", f"send at most {limit} bytes")
    try:
        return parse_json(raw, "the request body")
    except Rejection as r:
        if r.reason == "malformed_json":
            return None
        raise


def _filters(request: web.Request) -> dict[str, str]:
    return {k: request.query.get(k, "") for k in ("type", "source", "subject")}


class Api:
    def __init__(self, views: Views, auth: ConsoleAuth) -> None:
        self.views = views
        self.auth = auth

    def routes(self) -> list[web.RouteDef]:
        r, w = Access.READ, Access.WRITE
        return [
            web.get(f"{PREFIX}/overview", self._guard(r, self.overview)),
            web.get(f"{PREFIX}/events", self._guard(r, self.list_events)),
            web.get(f"{PREFIX}/events/stream", self._guard(r, self.stream)),
            web.get(f"{PREFIX}/events/{{id}}", self._guard(r, self.event)),
            web.get(f"{PREFIX}/sensors", self._guard(r, self.sensors)),
            web.get(f"{PREFIX}/sensors/{{name}}", self._guard(r, self.sensor)),
            web.get(f"{PREFIX}/runs", self._guard(r, self.runs)),
            web.get(f"{PREFIX}/runs/{{id}}", self._guard(r, self.run)),
            web.get(f"{PREFIX}/dlq", self._guard(r, self.letters)),
            web.post(f"{PREFIX}/dlq/replay", self._guard(w, self.replay)),
            web.post(f"{PREFIX}/dlq/discard", self._guard(w, self.discard)),
            web.get(f"{PREFIX}/schedules", self._guard(r, self.schedules)),
            web.post(f"{PREFIX}/try", self._guard(r, self.try_sensor)),
            web.get(f"{PREFIX}/whoami", self._guard(r, self.whoami)),
            web.post(f"{PREFIX}/login", self.login),
        ]

    def _guard(self, access: Access, handler: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                self.auth.check(request, access)
                if access is Access.WRITE and request.content_type != "application/json":
                    # a cross-site form cannot send JSON without the browser asking first
                    raise Rejection(415, "json_required", "send the request as "
                                    "application/json")  # fmt: skip
                return await handler(request)
            except Rejection as r:
                return json_response(r.status, {"error": r.message, "reason": r.reason},
                                     headers=r.headers)  # fmt: skip
            except BusError as e:
                log.warning("console request failed on the bus", path=request.path,
                            error=str(e))  # fmt: skip
                return json_response(503, {"error": f"NATS JetStream cannot answer: {e}",
                                           "reason": "bus_unavailable"},
                                     headers={"Retry-After": "5"})  # fmt: skip

        return handle

    def _bus(self) -> Bus:
        bus = self.views.service.bus_ref.bus
        if bus is None:
            raise Rejection(503, "bus_unavailable", "not connected to NATS yet; try again",
                            headers={"Retry-After": "2"})  # fmt: skip
        return bus

    # ------------------------------------------------------------ reads

    async def overview(self, request: web.Request) -> web.Response:
        return json_response(200, await self.views.overview(self._bus()))

    async def list_events(self, request: web.Request) -> web.Response:
        items = await store.list_events(
            self._bus(), _filters(request), limit=_int(request, "limit", 100, MAX_LIMIT),
            before=_int(request, "before", 0),
        )  # fmt: skip
        return json_response(200, {"events": items})

    async def event(self, request: web.Request) -> web.Response:
        event_id = request.match_info["id"]
        detail = await self.views.event_detail(self._bus(), event_id, _int(request, "seq", 0))
        if detail is None:
            raise Rejection(404, "not_found", f"no stored event with id {event_id[:200]!r} "
                            "(EVENTS keeps events for streams.events.maxAge)")  # fmt: skip
        return json_response(200, detail)

    async def sensors(self, request: web.Request) -> web.Response:
        items = [self.views.sensor_summary(s) for s in self.views.sensors()]
        return json_response(200, {"sensors": items, "rejected": self.views.rejected()})

    async def sensor(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        detail = await self.views.sensor_detail(self._bus(), name)
        if detail is None:
            raise Rejection(404, "not_found", f"no sensor named {name[:200]!r} is loaded")
        return json_response(200, detail)

    async def runs(self, request: web.Request) -> web.Response:
        q = request.query
        items = await store.list_runs(
            self._bus(), sensor=q.get("sensor", ""), trigger=q.get("trigger", ""),
            outcome=q.get("outcome", ""), since=q.get("since", ""), event_id=q.get("event", ""),
            limit=_int(request, "limit", 100, MAX_LIMIT),
        )  # fmt: skip
        return json_response(200, {"runs": items})

    async def run(self, request: web.Request) -> web.Response:
        run_id = request.match_info["id"]
        found = await self.views.run_detail(self._bus(), run_id)
        if found is None:
            raise Rejection(404, "not_found", f"no stored run result with id {run_id[:200]!r}")
        return json_response(200, found)

    async def letters(self, request: web.Request) -> web.Response:
        items = await store.list_letters(self._bus(), request.query.get("sensor", ""),
                                         limit=_int(request, "limit", 200, MAX_LIMIT))  # fmt: skip
        return json_response(200, {"letters": items})

    async def schedules(self, request: web.Request) -> web.Response:
        return json_response(200, await self.views.schedules(self.views.service.bus_ref.bus))

    async def try_sensor(self, request: web.Request) -> web.Response:
        """POST {"yaml": ..., "event": <id>, "seq": <optional>}: the dry run, no effects."""
        body = await _json_body(request, MAX_TRY_BYTES)
        if not isinstance(body, dict) or not isinstance(body.get("yaml"), str) or not (
                isinstance(body.get("event"), str) and body["event"]):
            raise Rejection(400, "bad_request", 'send {"yaml": "<Sensor YAML>", "event": "<id>"}')
        seq = body.get("seq")
        try:
            result = await self.views.try_sensor(self._bus(), body["yaml"], body["event"],
                                                 seq if isinstance(seq, int) and not
                                                 isinstance(seq, bool) and 0 < seq <= MAX_SEQ
                                                 else 0)  # fmt: skip
        except LookupError as e:
            raise Rejection(404, "not_found", str(e)) from e
        return json_response(200, result)

    async def whoami(self, request: web.Request) -> web.Response:
        try:
            self.auth.check(request, Access.WRITE)
            write = True
        except Rejection:
            write = False
        return json_response(200, {"read": True, "write": write, "open": self.auth.open})

    # ------------------------------------------------------------ changes

    async def _seqs(self, request: web.Request) -> list[int]:
        body = await _json_body(request)
        seqs = body.get("seqs") if isinstance(body, dict) else None
        if not isinstance(seqs, list) or not seqs or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_SEQ
                for s in seqs):
            raise Rejection(400, "bad_request", 'send {"seqs": [<dead letter sequence>, ...]}')
        return seqs[:MAX_LIMIT]

    async def replay(self, request: web.Request) -> web.Response:
        bus = self._bus()
        done: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for seq in await self._seqs(request):
            try:
                done.append({"seq": seq, "ids": await store.replay(bus, seq)})
            except store.ReplayError as e:
                failed.append({"seq": seq, "error": str(e)})
        log.info("dead letters replayed", replayed=[d["seq"] for d in done],
                 failed=[f["seq"] for f in failed])  # fmt: skip
        return json_response(200 if not failed else 207, {"replayed": done, "failed": failed})

    async def discard(self, request: web.Request) -> web.Response:
        bus = self._bus()
        seqs = await self._seqs(request)
        gone = [seq for seq in seqs if await store.discard(bus, seq)]
        log.info("dead letters discarded", discarded=gone)
        return json_response(200, {"discarded": gone,
                                   "missing": [s for s in seqs if s not in gone]})  # fmt: skip

    async def login(self, request: web.Request) -> web.Response:
        """Check a token and keep it in an HttpOnly cookie, for the browser's requests
        (`EventSource` cannot send an Authorization header)."""
        if request.content_type != "application/json":  # no login from another site's form
            return json_response(415, {"error": "send the token as application/json",
                                       "reason": "json_required"})  # fmt: skip
        try:
            body = await _json_body(request)
        except Rejection as r:
            return json_response(r.status, {"error": r.message, "reason": r.reason})
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            return json_response(400, {"error": 'send {"token": "..."}', "reason": "bad_request"})
        try:
            self.auth.check_token(token, Access.READ)
        except Rejection as r:
            return json_response(r.status, {"error": r.message, "reason": r.reason})
        resp = json_response(200, {"status": "ok"})
        resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/",
                        secure=request.secure)  # fmt: skip
        return resp

    # ------------------------------------------------------------ live tail

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: one `data:` line per event published on `events.>` from now
        on (attributes and NATS subject, no data), matching the type/source/subject filters."""
        bus = self._bus()
        test = store.contains(_filters(request))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})  # fmt: skip
        subscription = await bus.subscribe("events.>")  # before the client hears "open"
        try:
            await resp.prepare(request)
            await resp.write(b": live tail of events.>\n\n")
            idle = 0.0
            while not self.views.service.stopping:  # a stopping service ends the tail
                got = await subscription.next(timeout=1.0)
                if got is None:
                    idle += 1.0
                    if idle >= KEEPALIVE:
                        await resp.write(b": keepalive\n\n")
                        idle = 0.0
                    continue
                idle = 0.0
                item = await live_item(bus, *got)
                if item is not None and test(item):
                    await resp.write(b"data: " + json.dumps(item).encode() + b"\n\n")
        except ConnectionResetError:
            pass  # the client left
        finally:
            await subscription.close()
        return resp


async def live_item(bus: Bus, subject: str, headers: Any, body: bytes) -> dict[str, Any] | None:
    attrs = events.binary_attributes(headers)
    if attrs is None:
        try:
            doc = events.to_dict(events.from_nats(headers, await bus.body_of(headers, body)))
        except EventsvcError:
            return None
        attrs = {k: v for k, v in doc.items() if k not in ("data", "data_base64")}
    return {"natsSubject": subject, **attrs}
