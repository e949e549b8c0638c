"""The HTTP server: gateways' routes, health, readiness and metrics on one port."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from eventsvc import metrics
from eventsvc.gateways.common import json_response

ReadinessCheck = Callable[[], dict[str, bool]]


def build_app(
    routes: list[web.RouteDef],
    readiness: ReadinessCheck,
    max_body: int,
    liveness: Callable[[], str | None] = lambda: None,
) -> web.Application:
    """`liveness` says why the process should be restarted, or None while it is healthy."""
    # the gateways read bodies themselves with their own limit; this cap is a backstop
    app = web.Application(client_max_size=max_body + 1)
    app.add_routes(routes)

    async def healthz(_: web.Request) -> web.Response:
        problem = liveness()
        if problem is not None:
            return json_response(503, {"status": "unhealthy", "error": problem})
        return json_response(200, {"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = readiness()
        ready = all(checks.values())
        return json_response(200 if ready else 503, {"ready": ready, "checks": checks})

    async def metrics_handler(_: web.Request) -> web.Response:
        body, content_type = metrics.exposition()
        resp = web.Response(body=body)
        resp.headers["Content-Type"] = content_type
        return resp

    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics_handler),
        ]
    )
    return app
