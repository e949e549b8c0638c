"""Who may read the console and its API, and who may change things (replay, discard).

On a loopback bind with no token configured the console is open, as `make run` wants.
Otherwise reading needs the read token (`EVENTSVC_UI_TOKEN`, or the file named by
`EVENTSVC_UI_TOKEN_FILE`) or the write token, and replay/discard need the write token
(`EVENTSVC_UI_WRITE_TOKEN(_FILE)`). A token comes as `Authorization: Bearer <token>`,
or as the cookie the login form sets (an `EventSource` cannot send headers).
Tokens are compared as digests in constant time, as the /events tokens are.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from enum import StrEnum

from aiohttp import web

from eventsvc import logs
from eventsvc.config import Config, read_secret
from eventsvc.gateways.cloudevents_http import is_loopback, token_digest
from eventsvc.gateways.common import forbidden, unauthorized

log = logs.get("eventsvc.console")
READ_TOKEN_ENV = "EVENTSVC_UI_TOKEN"
WRITE_TOKEN_ENV = "EVENTSVC_UI_WRITE_TOKEN"
COOKIE = "eventsvc_ui"
_READ = f"{READ_TOKEN_ENV} (or {READ_TOKEN_ENV}_FILE)"
_WRITE = f"{WRITE_TOKEN_ENV} (or {WRITE_TOKEN_ENV}_FILE)"


class Access(StrEnum):
    READ = "read"
    WRITE = "write"


class ConsoleAuth:
    def __init__(self, config: Config, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        read = read_secret(READ_TOKEN_ENV, env, missing_ok=True)
        write = read_secret(WRITE_TOKEN_ENV, env, missing_ok=True)
        self._read = token_digest(read) if read else None
        self._write = token_digest(write) if write else None
        # a token file that is named but missing or empty keeps the console closed
        named = any(env.get(n) or env.get(n + "_FILE") for n in (READ_TOKEN_ENV, WRITE_TOKEN_ENV))
        self.open = not named and is_loopback(config.http_host)
        self._announce(config.http_host)

    def _announce(self, host: str) -> None:
        if self.open:
            log.info("the console (/ui/, /api/v1/) is open: no token is configured and the "
                     f"server listens on loopback only; set {_READ} before binding another "
                     "address", host=host)  # fmt: skip
        elif self._read is None and self._write is None:
            log.warning(f"the console refuses every request: no token could be read; set "
                        f"{_READ} and {_WRITE}", host=host)  # fmt: skip
        else:
            log.info("the console needs a token", read=self._read is not None,
                     write=self._write is not None)  # fmt: skip

    def presented(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization")
        if header:
            scheme, _, token = header.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise unauthorized("token_malformed",
                                   "the Authorization header must be 'Bearer <token>'")  # fmt: skip
            return token.strip()
        return request.cookies.get(COOKIE) or None

    def check(self, request: web.Request, access: Access) -> None:
        """Nothing when `request` may do `access`; a 401 or 403 `Rejection` otherwise,
        whose message names the setting (never what was sent)."""
        if not self.open:
            self.check_token(self.presented(request), access)

    def check_token(self, token: str | None, access: Access) -> None:
        """As `check`, for a token given directly (the login form's)."""
        if self.open:
            return
        if self._read is None and self._write is None:
            raise unauthorized("auth_not_configured",
                               "the console is closed: no token is configured (or its "
                               "_FILE is missing or empty) and the server does not listen "
                               f"on loopback only; set {_READ} and {_WRITE} on the "
                               "server")  # fmt: skip
        if token is None:
            raise unauthorized("token_missing",
                               f"the console needs a token: send 'Authorization: Bearer "
                               f"<token>' with the token of {_READ}, or log in at "
                               "/ui/login")  # fmt: skip
        digest = token_digest(token)
        # both compared, no early exit: the timing tells nothing about which one matched
        is_write = self._write is not None and hmac.compare_digest(digest, self._write)
        is_read = self._read is not None and hmac.compare_digest(digest, self._read)
        if not (is_write or is_read):
            raise unauthorized("token_invalid",
                               f"the token is not one the server accepts; check it against "
                               f"{_READ} (reading) or {_WRITE} (replay, discard)",
                               invalid_token=True)  # fmt: skip
        if access is Access.WRITE and not is_write:
            why = ("no write token is configured" if self._write is None
                   else "this token may only read")  # fmt: skip
            raise forbidden("write_token_needed",
                            f"replay and discard need the write token: {why}; set {_WRITE} "
                            "on the server and send that token")  # fmt: skip


