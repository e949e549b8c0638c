"""A local GitHub REST API for tests: the endpoints eventsvc uses, following GitHub's
conventions (status codes, `{"message": ...}` bodies, `Link` pagination with
`page` or `cursor`, rate-limit headers), recording every request it answers.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

PAT = "ghp_test_personal_token"
BODY: web.RequestKey[Any] = web.RequestKey("body", object)
APP_ID = "1234"
INSTALLATION_ID = 42


def make_private_key() -> tuple[str, str]:
    """A fresh RSA key pair as (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    auth: str


@dataclass
class Fault:
    method: str
    path_prefix: str
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    times: int


@dataclass
class FakeGitHub:
    public_key: str | None = None
    token_ttl: float = 3600.0
    page_size: int = 2  # small, so pagination is exercised
    requests: list[Recorded] = field(default_factory=list)
    pulls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # repo -> pulls
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # repo#n -> comments
    statuses: list[dict[str, Any]] = field(default_factory=list)
    check_runs: list[dict[str, Any]] = field(default_factory=list)
    deliveries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # hook key -> list
    tokens: dict[str, float] = field(default_factory=dict)  # installation token -> expiry
    tokens_issued: int = 0
    redelivery_status: int = 200  # status_code recorded for a redelivery attempt
    faults: list[Fault] = field(default_factory=list)
    missing_repos: set[str] = field(default_factory=set)
    git_repos: dict[str, str] = field(default_factory=dict)  # repo -> bare repo path, for shas
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1000))
    url: str = ""
    clock: Any = time.time  # when tokens expire; tests move it forward
    link_base: str | None = None  # Link: rel="next" on this scheme://host:port instead

    def _next(self, request: web.Request, **query: str) -> URL:
        nxt = request.url.update_query(**query)
        if self.link_base is None:
            return nxt
        return URL(self.link_base).with_path(nxt.path).with_query(nxt.query)

    # ---- test controls -------------------------------------------------------------
    def fail(self, method: str, path_prefix: str, status: int, *, times: int = 1,
             headers: dict[str, str] | None = None, message: str = "") -> None:  # fmt: skip
        self.faults.append(Fault(method, path_prefix, status, headers or {},
                                 {"message": message or f"fault {status}"}, times))  # fmt: skip

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def add_delivery(
        self, hook: str, guid: str, status_code: int, delivered_at: datetime,
        *, redelivery: bool = False, event: str = "push",
    ) -> dict[str, Any]:  # fmt: skip
        item = {
            "id": next(self._ids),
            "guid": guid,
            "delivered_at": delivered_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "redelivery": redelivery,
            "duration": 0.1,
            "status": "OK" if 200 <= status_code < 300 else "failed",
            "status_code": status_code,
            "event": event,
            "action": None,
            "installation_id": None,
            "repository_id": 1,
        }
        self.deliveries.setdefault(hook, []).insert(0, item)  # newest first, like GitHub
        return item

    def head_sha(self, repo: str, ref: str) -> str:
        path = self.git_repos.get(repo)
        if path is None:
            return "0" * 40
        cmd = ["git", "-C", path, "rev-parse", "--verify", "-q", f"refs/heads/{ref}"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return out.stdout.strip() or "0" * 40

    def merge_pull(self, repo: str, number: int) -> dict[str, Any]:
        """Close a pull request as merged (its branch is left in place, as GitHub does)."""
        pull = next(p for p in self.pulls[repo] if p["number"] == number)
        pull["head"]["sha"] = self.head_sha(repo, pull["head"]["ref"])
        pull.update(state="closed", merged=True)
        return pull

    def open_pulls(self, repo: str) -> list[dict[str, Any]]:
        return [p for p in self.pulls.get(repo, []) if p["state"] == "open"]

    def calls(self, method: str, prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    # ---- server --------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_post("/app/installations/{id}/access_tokens", self.access_token)
        r.add_get("/repos/{o}/{r}/installation", self.installation)
        r.add_get("/repos/{o}/{r}/pulls", self.list_pulls)
        r.add_post("/repos/{o}/{r}/pulls", self.create_pull)
        r.add_patch("/repos/{o}/{r}/pulls/{n}", self.update_pull)
        r.add_post("/repos/{o}/{r}/issues/{n}/labels", self.add_labels)
        r.add_post("/repos/{o}/{r}/pulls/{n}/requested_reviewers", self.request_reviewers)
        r.add_post("/repos/{o}/{r}/statuses/{sha}", self.create_status)
        r.add_post("/repos/{o}/{r}/check-runs", self.create_check_run)
        r.add_get("/repos/{o}/{r}/issues/{n}/comments", self.list_comments)
        r.add_post("/repos/{o}/{r}/issues/{n}/comments", self.create_comment)
        r.add_patch("/repos/{o}/{r}/issues/comments/{id}", self.update_comment)
        r.add_get("/repos/{o}/{r}/hooks/{hook}/deliveries", self.list_deliveries)
        r.add_post("/repos/{o}/{r}/hooks/{hook}/deliveries/{id}/attempts", self.redeliver)
        r.add_get("/app/hook/deliveries", self.list_deliveries)
        r.add_post("/app/hook/deliveries/{id}/attempts", self.redeliver)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        auth = request.headers.get("Authorization", "")
        self.requests.append(Recorded(request.method, request.path, dict(request.query), body,
                                      auth))  # fmt: skip
        for fault in self.faults:
            if fault.times > 0 and fault.method == request.method and request.path.startswith(
                fault.path_prefix
            ):
                fault.times -= 1
                return web.json_response(fault.body, status=fault.status, headers=fault.headers)
        problem = self._check_auth(request.path, auth)
        if problem is not None:
            return problem
        if request.match_info.get("o") and f"{request.match_info['o']}/{request.match_info['r']}" \
                in self.missing_repos:  # fmt: skip
            return _error(404, "Not Found")
        request[BODY] = body
        resp: web.StreamResponse = await handler(request)
        resp.headers["X-RateLimit-Remaining"] = "4999"
        resp.headers["X-RateLimit-Reset"] = str(int(time.time()) + 3600)
        return resp

    def _check_auth(self, path: str, auth: str) -> web.Response | None:
        scheme, _, cred = auth.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not cred:
            return _error(401, "Requires authentication")
        if path.startswith("/app/") or path.endswith("/installation"):
            if self.public_key is None:
                return _error(401, "A JSON web token could not be decoded")
            try:
                claims = jwt.decode(cred, self.public_key, algorithms=["RS256"])
            except jwt.PyJWTError:
                return _error(401, "A JSON web token could not be decoded")
            if str(claims.get("iss")) != APP_ID:
                return _error(401, "'Issuer' claim ('iss') must be an Integer")
            return None
        if cred == PAT:
            return None
        expiry = self.tokens.get(cred)
        if expiry is None or expiry <= self.clock():
            return _error(401, "Bad credentials")
        return None

    # ---- app auth ------------------------------------------------------------------
    async def access_token(self, request: web.Request) -> web.Response:
        self.tokens_issued += 1
        token = f"ghs_installation_{self.tokens_issued}"
        expires = self.clock() + self.token_ttl
        self.tokens[token] = expires
        stamp = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({"token": token, "expires_at": stamp}, status=201)

    async def installation(self, request: web.Request) -> web.Response:
        return web.json_response({"id": INSTALLATION_ID, "app_id": int(APP_ID)})

    # ---- pulls ---------------------------------------------------------------------
    async def list_pulls(self, request: web.Request) -> web.Response:
        repo = _repo(request)
        state = request.query.get("state", "open")
        head = request.query.get("head")
        out = [
            p for p in self.pulls.get(repo, [])
            if (state == "all" or p["state"] == state)
            and (head is None or f"{repo.split('/')[0]}:{p['head']['ref']}" == head)
        ]  # fmt: skip
        for p in out:
            if p["state"] == "open":
                p["head"]["sha"] = self.head_sha(repo, p["head"]["ref"])
        return self._page(request, out)

    async def create_pull(self, request: web.Request) -> web.Response:
        repo, body = _repo(request), request[BODY]
        missing = [k for k in ("title", "head", "base") if not body.get(k)]
        if missing:
            return _error(422, "Validation Failed",
                          [{"resource": "PullRequest", "code": "missing_field", "field": m}
                           for m in missing])  # fmt: skip
        for p in self.pulls.get(repo, []):
            if p["state"] == "open" and p["head"]["ref"] == body["head"]:
                return _error(422, "Validation Failed", [{
                    "resource": "PullRequest", "code": "custom",
                    "message": f"A pull request already exists for {repo.split('/')[0]}:"
                               f"{body['head']}.",
                }])  # fmt: skip
        number = len(self.pulls.get(repo, [])) + 1
        pull = {
            "id": next(self._ids), "number": number, "state": "open",
            "title": body["title"], "body": body.get("body"), "draft": bool(body.get("draft")),
            "head": {"ref": body["head"], "sha": self.head_sha(repo, body["head"])},
            "base": {"ref": body["base"]},
            "labels": [], "requested_reviewers": [], "requested_teams": [],
            "html_url": f"https://github.example/{repo}/pull/{number}",
        }  # fmt: skip
        self.pulls.setdefault(repo, []).append(pull)
        return web.json_response(pull, status=201)

    def _pull(self, request: web.Request) -> dict[str, Any] | None:
        number = int(request.match_info["n"])
        return next((p for p in self.pulls.get(_repo(request), []) if p["number"] == number),
                    None)  # fmt: skip

    async def update_pull(self, request: web.Request) -> web.Response:
        pull = self._pull(request)
        if pull is None:
            return _error(404, "Not Found")
        for key in ("title", "body", "state", "base"):
            if key in request[BODY]:
                pull[key] = request[BODY][key] if key != "base" else {"ref": request[BODY][key]}
        return web.json_response(pull)

    async def add_labels(self, request: web.Request) -> web.Response:
        pull = self._pull(request)
        if pull is None:
            return _error(404, "Not Found")
        for name in request[BODY]["labels"]:
            if name not in [lab["name"] for lab in pull["labels"]]:
                pull["labels"].append({"name": name})
        return web.json_response(pull["labels"])

    async def request_reviewers(self, request: web.Request) -> web.Response:
        pull = self._pull(request)
        if pull is None:
            return _error(404, "Not Found")
        body = request[BODY]
        if "nobody" in body.get("reviewers", []):
            return _error(422, "Reviews may only be requested from collaborators.")
        pull["requested_reviewers"] += [{"login": u} for u in body.get("reviewers", [])]
        pull["requested_teams"] += [{"slug": t} for t in body.get("team_reviewers", [])]
        return web.json_response(pull, status=201)

    # ---- statuses, checks, comments ------------------------------------------------
    async def create_status(self, request: web.Request) -> web.Response:
        body = dict(request[BODY])
        if body.get("state") not in ("error", "failure", "pending", "success"):
            return _error(422, "Validation Failed", [{"field": "state", "code": "invalid"}])
        body.update(sha=request.match_info["sha"], repo=_repo(request), id=next(self._ids))
        self.statuses.append(body)
        return web.json_response(body, status=201)

    async def create_check_run(self, request: web.Request) -> web.Response:
        body = dict(request[BODY], id=next(self._ids), repo=_repo(request))
        self.check_runs.append(body)
        return web.json_response(body, status=201)

    async def list_comments(self, request: web.Request) -> web.Response:
        key = f"{_repo(request)}#{request.match_info['n']}"
        return self._page(request, self.comments.get(key, []))

    async def create_comment(self, request: web.Request) -> web.Response:
        key = f"{_repo(request)}#{request.match_info['n']}"
        comment = {"id": next(self._ids), "body": request[BODY]["body"],
                   "user": {"login": "eventsvc[bot]"}}  # fmt: skip
        self.comments.setdefault(key, []).append(comment)
        return web.json_response(comment, status=201)

    async def update_comment(self, request: web.Request) -> web.Response:
        cid = int(request.match_info["id"])
        for items in self.comments.values():
            for comment in items:
                if comment["id"] == cid:
                    comment["body"] = request[BODY]["body"]
                    return web.json_response(comment)
        return _error(404, "Not Found")

    # ---- hook deliveries ------------------------------------------------------------
    def _hook_key(self, request: web.Request) -> str:
        if "hook" in request.match_info:
            return f"{_repo(request)}/{request.match_info['hook']}"
        return "app"

    async def list_deliveries(self, request: web.Request) -> web.Response:
        items = self.deliveries.get(self._hook_key(request), [])
        size = int(request.query.get("per_page", 30))
        start = int(request.query.get("cursor", "0") or 0)
        page = items[start : start + min(size, self.page_size)]
        resp = web.json_response(page)
        if start + len(page) < len(items):
            nxt = self._next(request, cursor=str(start + len(page)))
            resp.headers["Link"] = f'<{nxt}>; rel="next"'
        return resp

    async def redeliver(self, request: web.Request) -> web.Response:
        key = self._hook_key(request)
        did = int(request.match_info["id"])
        original = next((d for d in self.deliveries.get(key, []) if d["id"] == did), None)
        if original is None:
            return _error(404, "Not Found")
        self.add_delivery(key, original["guid"], self.redelivery_status, datetime.now(UTC),
                          redelivery=True)  # fmt: skip
        return web.json_response({}, status=202)

    def _page(self, request: web.Request, items: list[dict[str, Any]]) -> web.Response:
        size = min(int(request.query.get("per_page", 30)), self.page_size)
        page = int(request.query.get("page", "1"))
        chunk = items[(page - 1) * size : page * size]
        resp = web.json_response(chunk)
        if page * size < len(items):
            nxt = self._next(request, page=str(page + 1))
            resp.headers["Link"] = f'<{nxt}>; rel="next", <{nxt}>; rel="last"'
        return resp


def _repo(request: web.Request) -> str:
    return f"{request.match_info['o']}/{request.match_info['r']}"


def _error(status: int, message: str, errors: list[Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message,
                            "documentation_url": "https://docs.github.com/rest"}  # fmt: skip
    if errors is not None:
        body["errors"] = errors
    return web.json_response(body, status=status)


@asynccontextmanager
async def serve(fake: FakeGitHub) -> AsyncIterator[FakeGitHub]:
    runner = web.AppRunner(fake.app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()
