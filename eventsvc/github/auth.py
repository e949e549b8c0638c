"""Credentials for the GitHub REST API and for git over HTTPS.

A GitHub App (preferred) signs a short RS256 JWT with its private key and trades
it for an installation access token (`POST /app/installations/{id}/access_tokens`),
which is cached until shortly before its `expires_at`. A personal access token is
used as is.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt

# renew an installation token this long before GitHub says it expires
RENEW_MARGIN = 300.0
# GitHub refuses app JWTs that live longer than 10 minutes; allow for clock drift
JWT_LIFETIME = 540.0
JWT_BACKDATE = 60.0

# (method, path, auth mode, repo) -> decoded JSON; supplied by the client
Fetch = Callable[..., Awaitable[Any]]


@dataclass(slots=True)
class CachedToken:
    token: str
    expires_at: float  # epoch seconds


def parse_expiry(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class TokenAuth:
    """A personal access token (classic or fine-grained) or any token handed in."""

    kind = "token"

    def __init__(self, token: str) -> None:
        self._token = token

    async def installation_token(self, fetch: Fetch, repo: str | None) -> str:
        return self._token

    def app_jwt(self) -> str:
        raise RuntimeError("this endpoint needs GitHub App credentials, not a token")

    def invalidate(self, repo: str | None) -> None:
        """A token cannot be renewed; nothing to forget."""


class AppAuth:
    """GitHub App credentials: JWT for `/app/...`, installation tokens for the rest."""

    kind = "app"

    def __init__(
        self,
        app_id: str,
        private_key: str,
        installation_id: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app_id = app_id
        self.private_key = private_key
        self.installation_id = installation_id
        self.clock = clock
        self._jwt: CachedToken | None = None
        self._tokens: dict[int, CachedToken] = {}
        self._installations: dict[str, int] = {}

    def app_jwt(self) -> str:
        now = self.clock()
        if self._jwt is None or now >= self._jwt.expires_at - 60:
            issued = time.time()  # GitHub checks the claims against real time
            claims = {"iat": int(issued - JWT_BACKDATE), "exp": int(issued + JWT_LIFETIME),
                      "iss": self.app_id}  # fmt: skip
            token = jwt.encode(claims, self.private_key, algorithm="RS256")
            self._jwt = CachedToken(token, now + JWT_LIFETIME)
        return self._jwt.token

    async def installation_token(self, fetch: Fetch, repo: str | None) -> str:
        installation = await self._installation(fetch, repo)
        cached = self._tokens.get(installation)
        if cached is not None and self.clock() < cached.expires_at - RENEW_MARGIN:
            return cached.token
        body = await fetch("POST", f"/app/installations/{installation}/access_tokens", "app", repo)
        token = CachedToken(str(body["token"]), parse_expiry(str(body["expires_at"])))
        self._tokens[installation] = token
        return token.token

    async def _installation(self, fetch: Fetch, repo: str | None) -> int:
        if self.installation_id is not None:
            return self.installation_id
        if repo is None:
            raise RuntimeError(
                "no installation id: set github.installationId (or EVENTSVC_GITHUB_INSTALLATION_ID)"
            )
        if repo not in self._installations:
            body = await fetch("GET", f"/repos/{repo}/installation", "app", repo)
            self._installations[repo] = int(body["id"])
        return self._installations[repo]

    def invalidate(self, repo: str | None) -> None:
        """Forget the token used for `repo` (GitHub refused it before its expiry)."""
        installation = self.installation_id or self._installations.get(repo or "")
        if installation is not None:
            self._tokens.pop(installation, None)
        self._jwt = None


Auth = TokenAuth | AppAuth
