"""An async GitHub REST client on aiohttp: App or token auth, rate limits, clear errors.

- Auth: a GitHub App (JWT -> installation token, cached) is preferred; a personal
  token works too. `apiUrl` points at GitHub Enterprise (`https://HOST/api/v3`).
- Rate limits: 403/429 with `Retry-After`, or `X-RateLimit-Remaining: 0` with
  `X-RateLimit-Reset`, or a "secondary rate limit" message, are waited out inline
  when the wait is short (`maxWait`), with at most `maxAttempts` tries; a longer
  wait becomes `GitHubRetryableError(delay=...)` so the sensor engine redelivers
  the event later instead of holding a worker.
- 401/403/404/422 become `GitHubApiError` messages that say what to fix.
- Credentials stay on the configured GitHub: a request (or a `Link: rel="next"` page)
  whose URL is not under `apiUrl` (same scheme, host and port) is refused before
  anything is sent; git gets a token only for the hosts of `GitHubSettings.git_hosts`.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import aiohttp

from eventsvc import logs
from eventsvc.config import Config, read_secret
from eventsvc.errors import (
    ConfigError,
    ExternalError,
    RefusedValueError,
    RetryableExternalError,
)
from eventsvc.github.auth import AppAuth, Auth, TokenAuth
from eventsvc.github.gitops import https_host

log = logs.get("eventsvc.github")
DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
Sleep = Callable[[float], Awaitable[None]]
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class GitHubApiError(ExternalError):
    """GitHub refused the request; retrying the same request will not help."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class GitHubRetryableError(RetryableExternalError):
    """Rate limited, server error or network trouble: try again after `delay`."""


@dataclass(frozen=True, slots=True)
class GitHubSettings:
    api_url: str = DEFAULT_API_URL
    token: str | None = field(default=None, repr=False)
    app_id: str | None = None
    private_key: str | None = field(default=None, repr=False)
    installation_id: int | None = None
    max_attempts: int = 5
    max_wait: float = 60.0  # longest rate-limit wait taken inline
    backoff: float = 1.0  # first wait after a 5xx or network error, doubled each time
    secondary_backoff: float = 60.0  # first wait after a secondary limit without Retry-After

    @classmethod
    def from_config(
        cls, config: Config, environ: Mapping[str, str] | None = None
    ) -> GitHubSettings:
        """Config section `github` (apiUrl, appId, installationId, privateKeyFile, ...)
        with EVENTSVC_GITHUB_* variables on top; secrets via `read_secret` (`*_FILE`)."""
        env = os.environ if environ is None else environ
        sec = config.section("github")

        def pick(key: str, env_name: str) -> Any:
            return env.get(env_name) or sec.get(key)

        key = read_secret("EVENTSVC_GITHUB_APP_PRIVATE_KEY", env)
        key_file = pick("privateKeyFile", "EVENTSVC_GITHUB_APP_PRIVATE_KEY_PATH")
        if key is None and key_file:
            try:
                key = Path(str(key_file)).read_text()
            except OSError as e:
                raise ConfigError(
                    f"Config 'github.privateKeyFile' has value {str(key_file)!r}: cannot be "
                    f"read ({e.strerror}); mount the App's private key PEM there"
                ) from e
        installation = pick("installationId", "EVENTSVC_GITHUB_INSTALLATION_ID")
        try:
            installation_id = int(installation) if installation not in (None, "") else None
        except ValueError as e:
            raise ConfigError(
                f"Config 'github.installationId' has value {installation!r}. Not an integer."
            ) from e
        # the id is not secret, but it sits in the same Secret as the key: *_FILE works too
        app_id = read_secret("EVENTSVC_GITHUB_APP_ID", env) or sec.get("appId")
        numbers = {
            name: sec[name] for name in ("maxAttempts", "maxWait", "backoff") if name in sec
        }
        return cls(
            api_url=str(pick("apiUrl", "EVENTSVC_GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/"),
            token=read_secret("EVENTSVC_GITHUB_TOKEN", env),
            app_id=str(app_id) if app_id not in (None, "") else None,
            private_key=key,
            installation_id=installation_id,
            max_attempts=int(numbers.get("maxAttempts", 5)),
            max_wait=float(numbers.get("maxWait", 60.0)),
            backoff=float(numbers.get("backoff", 1.0)),
        )

    def git_hosts(self) -> frozenset[str]:
        """`host:port` of the GitHub that `apiUrl` names, where git may send the token:
        the API host and its web host (api.github.com -> github.com, api.X -> X;
        GitHub Enterprise Server's https://HOST/api/v3 -> HOST), over https only."""
        parts = urlsplit(self.api_url)
        host = (parts.hostname or "").lower()
        if not host:
            return frozenset()
        try:
            port = parts.port or 443
        except ValueError:
            return frozenset()
        web = "github.com" if host == "api.github.com" else host.removeprefix("api.")
        return frozenset({f"{host}:{port}", f"{web}:{port}"})

    def auth(self, clock: Callable[[], float] = time.time) -> Auth:
        if self.app_id and self.private_key:
            return AppAuth(self.app_id, self.private_key, self.installation_id, clock=clock)
        if self.token:
            return TokenAuth(self.token)
        if self.app_id:
            raise ConfigError(
                f"github.appId is {self.app_id!r} but no private key: set "
                "EVENTSVC_GITHUB_APP_PRIVATE_KEY(_FILE) or github.privateKeyFile"
            )
        raise ConfigError(
            "no GitHub credentials: configure a GitHub App (github.appId plus "
            "EVENTSVC_GITHUB_APP_PRIVATE_KEY_FILE or github.privateKeyFile) or set "
            "EVENTSVC_GITHUB_TOKEN(_FILE) to a personal access token"
        )


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: Any


class GitHubClient:
    """REST calls against one GitHub (or GitHub Enterprise) API root."""

    def __init__(
        self,
        settings: GitHubSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.api_url = settings.api_url.rstrip("/")
        self.auth = settings.auth(clock)
        self.sleep = sleep
        self.clock = clock
        self._session = session
        self._own_session = session is None
        self.calls = 0  # requests sent, for benchmarks and tests

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30, connect=5),
                headers={"User-Agent": "eventsvc"},
            )
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()

    async def token_for(self, repo: str | None) -> str:
        """The token to use for `repo` (installation token or personal token), e.g. for git."""
        return await self.auth.installation_token(self._fetch_for_auth, repo)

    async def git_token(self, url: str, repo: str | None) -> str | None:
        """The token for git on `url`, or None when `url` is not https on the configured
        GitHub (`GitHubSettings.git_hosts`): no token is even made for another host."""
        if https_host(url) not in self.settings.git_hosts():
            return None
        return await self.token_for(repo)

    def owns(self, url: str) -> bool:
        """True when `url` is under the API root: same scheme, host and port, and below
        its path (`/api/v3` on GitHub Enterprise Server). Only there go credentials."""
        api, other = urlsplit(self.api_url), urlsplit(url)
        origin = _origin(other)
        root = api.path.rstrip("/") + "/"
        return origin is not None and origin == _origin(api) and (
            other.path.rstrip("/") + "/").startswith(root)  # fmt: skip

    async def _fetch_for_auth(self, method: str, path: str, auth: str, repo: str | None) -> Any:
        return (await self.request(method, path, auth=auth, repo=repo)).body

    async def call(self, method: str, path: str, **kw: Any) -> Any:
        """`request` returning the decoded body only."""
        return (await self.request(method, path, **kw)).body

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        repo: str | None = None,
        auth: str = "installation",
    ) -> Response:
        """One API call with retries; `path` is relative to the API root or an absolute URL.

        `repo` ("owner/name") picks the App installation and names the repository in
        error messages; `auth` is "installation" (default), "app" (JWT) or "none".
        """
        url = path if path.startswith(("http://", "https://")) else self.api_url + path
        if not path.startswith(("/", "http://", "https://")) or not self.owns(url):
            raise GitHubApiError(
                f"{method} {path[:200]!r}: refused, not a URL under the configured GitHub API "
                f"{self.api_url} (github.apiUrl); eventsvc sends its credentials only there"
            )
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            headers = await self._headers(auth, repo)
            try:
                resp = await self._send(method, url, headers, json, params)
            except (aiohttp.ClientError, TimeoutError) as e:
                wait = self.settings.backoff * 2 ** (attempt - 1)
                what = f"{method} {_path(url)}: {type(e).__name__}: {e}"
                if attempt >= self.settings.max_attempts:
                    raise GitHubRetryableError(what, delay=wait) from e
                log.warning("github request failed, retrying", error=what, wait=wait)
                await self.sleep(wait)
                continue
            if resp.status < 400:
                return resp
            if resp.status == 401 and auth == "installation" and not renewed:
                # an installation token revoked or expired early: get a new one, once
                renewed = self.auth.kind == "app"
                if not renewed:
                    raise explain(method, url, resp, repo)
                self.auth.invalidate(repo)
                attempt -= 1
                continue
            wait = self._retry_wait(resp, attempt)
            if wait is None:
                raise explain(method, url, resp, repo)
            what = f"{method} {_path(url)} answered {resp.status}: {_message(resp.body)}"
            if wait > self.settings.max_wait or attempt >= self.settings.max_attempts:
                raise GitHubRetryableError(f"{what}; retry in {wait:.0f}s", delay=wait)
            log.info("github rate limited or unavailable, waiting", request=what, wait=wait,
                     attempt=attempt)  # fmt: skip
            await self.sleep(wait)

    async def paginate(
        self, path: str, *, params: Mapping[str, Any] | None = None, repo: str | None = None,
        auth: str = "installation", limit: int | None = None,
    ) -> AsyncIterator[Any]:  # fmt: skip
        """Every item of a list endpoint, following `Link: rel="next"` (page or cursor).

        A next link off the configured API (another scheme, host or port) is not
        followed: it raises GitHubApiError before the token could go there, rather than
        returning part of the list as if it were all of it."""
        url: str | None = path
        query: Mapping[str, Any] | None = {"per_page": 100, **(params or {})}
        seen = 0
        while url:
            resp = await self.request("GET", url, params=query, repo=repo, auth=auth)
            for item in resp.body or []:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            link = next_link(resp.headers.get("Link", ""))
            if link is not None and link.startswith(("http://", "https://")) \
                    and not self.owns(link):  # fmt: skip
                log.warning("next page link off the configured API not followed",
                            request=_path(url), link=link[:200], api=self.api_url)  # fmt: skip
                raise GitHubApiError(
                    f"GET {_path(url)}: the answer's Link header puts the next page at "
                    f"{link[:200]!r}, outside the configured GitHub API {self.api_url}; not "
                    "followed, so the token is not sent there. Check github.apiUrl (the API "
                    "root GitHub links to, e.g. https://HOST/api/v3) and any proxy in between"
                )
            url, query = link, None

    async def _headers(self, auth: str, repo: str | None) -> dict[str, str]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION}
        if auth == "app":
            headers["Authorization"] = f"Bearer {self.auth.app_jwt()}"
        elif auth == "installation":
            headers["Authorization"] = f"Bearer {await self.token_for(repo)}"
        return headers

    async def _send(
        self, method: str, url: str, headers: dict[str, str], body: Any,
        params: Mapping[str, Any] | None,
    ) -> Response:  # fmt: skip
        self.calls += 1
        async with self.session.request(
            method, url, headers=headers, json=body, params=params
        ) as resp:
            raw = await resp.read()
            data: Any = None
            if raw:
                try:
                    data = await resp.json(content_type=None)
                except ValueError:
                    data = raw.decode(errors="replace")
            return Response(resp.status, dict(resp.headers), data)

    def _retry_wait(self, resp: Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when retrying will not help."""
        h = resp.headers
        if resp.status in (403, 429):
            retry_after = h.get("Retry-After")
            if retry_after is not None and retry_after.strip().isdigit():
                return float(retry_after)
            reset = str(h.get("X-RateLimit-Reset", ""))
            if h.get("X-RateLimit-Remaining") == "0" and reset.isdigit():
                return max(0.0, float(reset) - self.clock()) + 1.0
            if resp.status == 429 or "rate limit" in _message(resp.body).lower():
                return float(self.settings.secondary_backoff * 2 ** (attempt - 1))
            return None
        if resp.status >= 500:
            return float(self.settings.backoff * 2 ** (attempt - 1))
        return None


def _origin(parts: SplitResult) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port filled in; None when unusable."""
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"https": 443, "http": 80}.get(scheme)
    except ValueError:  # a port that is no number
        return None
    if not parts.hostname or port is None:
        return None
    return scheme, parts.hostname, port


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _message(body: Any) -> str:
    if isinstance(body, Mapping):
        return str(body.get("message", "")) or str(body)[:300]
    return str(body or "")[:300]


def next_link(header: str) -> str | None:
    for part in header.split(","):
        segs = part.split(";")
        if len(segs) >= 2 and any(s.strip() == 'rel="next"' for s in segs[1:]):
            return segs[0].strip().strip("<>")
    return None


def explain(method: str, url: str, resp: Response, repo: str | None) -> GitHubApiError:
    """A message naming the request, what GitHub said, and what to change."""
    what = f"{method} {_path(url)} answered {resp.status}: {_message(resp.body) or '(no message)'}"
    status = resp.status
    if status == 401:
        fix = ("the credentials were refused; check EVENTSVC_GITHUB_TOKEN, or the App's "
               "github.appId and private key (EVENTSVC_GITHUB_APP_PRIVATE_KEY)")  # fmt: skip
    elif status == 403:
        wanted = resp.headers.get("X-Accepted-GitHub-Permissions")
        fix = "the app or token lacks a permission for this call" + (
            f" (GitHub accepts: {wanted})" if wanted else ""
        ) + "; grant it in the App's permissions or the token's scopes"
    elif status == 404 and repo:
        fix = (f"repository {repo!r} does not exist, the app is not installed on the repo, "
               "or the token lacks access; install the app on it or use a token that can "
               "see it (GitHub answers 404, not 403, to hide private repositories)")  # fmt: skip
    elif status == 404:
        fix = "not found; check the owner, repository, hook id or number in the trigger spec"
    elif status == 422:
        errors = resp.body.get("errors") if isinstance(resp.body, Mapping) else None
        detail = "; ".join(
            str(e.get("message") or e) if isinstance(e, Mapping) else str(e) for e in errors or []
        )
        fix = "GitHub refused the values" + (f" ({detail})" if detail else "") + (
            "; check the branch names, labels, reviewers or state in the trigger spec"
        )
    else:
        fix = "unexpected answer from GitHub"
    return GitHubApiError(f"{what}; {fix}", status, resp.body)


def repo_problem(repo: str) -> str | None:
    """Why `repo` cannot go into an API path as `owner/name`, or None."""
    if not _REPO.fullmatch(repo) or any(part in (".", "..") for part in repo.split("/")):
        return "is not owner/name (letters, digits, '-', '_', '.')"
    return None


def check_repo(repo: str, field: str = "repo", where: str = "") -> str:
    """`repo`, or RefusedValueError naming `field` (and `where` it came from)."""
    problem = repo_problem(repo)
    if problem is not None:
        shown = repr(repo if len(repo) <= 200 else repo[:200] + "...")
        raise RefusedValueError(
            f"{field}: {shown}{where} {problem}; refused. Give owner/name, e.g. acme/deploy"
        )
    return repo


def parse_repo(url_or_name: str) -> str | None:
    """`owner/name` from a GitHub HTTPS/SSH URL or `owner/name`; None for other URLs."""
    text = url_or_name.strip()
    if text.startswith("git@") and ":" in text:
        path = text.split(":", 1)[1]
    elif "://" in text:
        parts = urlsplit(text)
        if parts.scheme == "file":
            return None
        path = parts.path
    else:
        path = text
    path = path.strip("/").removesuffix(".git")
    bits = path.split("/")
    return "/".join(bits[-2:]) if len(bits) >= 2 and all(bits[-2:]) else None
