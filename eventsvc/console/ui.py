"""The console's pages: one small HTML shell and its script and style, served from package
data (`static/`). Every `/ui/...` path answers the shell, whose script draws the page for
that path from the JSON API: deep links work, and no page holds data in its HTML.

The answers forbid scripts from anywhere but this server and inline code
(Content-Security-Policy), a second guard behind the script writing text only.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

STATIC = resources.files("eventsvc.console") / "static"
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
         ".html": "text/html"}  # fmt: skip
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _asset(name: str) -> bytes | None:
    if "/" in name or name.startswith("."):
        return None
    item = STATIC / name
    return item.read_bytes() if item.is_file() else None


async def shell(request: web.Request) -> web.Response:
    body = _asset("index.html") or b""
    return web.Response(body=body, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache",
                                            "Content-Type": "text/html; charset=utf-8"})


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = _asset(name)
    kind = TYPES.get("." + name.rsplit(".", 1)[-1]) if "." in name else None
    if body is None or kind is None:
        raise web.HTTPNotFound(text="no such console file")
    return web.Response(body=body, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache",
                                            "Content-Type": f"{kind}; charset=utf-8"})


async def to_console(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ui/")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/", to_console),
        web.get("/ui", to_console),
        web.get("/ui/static/{name}", asset),
        web.get("/ui/{path:.*}", shell),
    ]
