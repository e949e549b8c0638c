"""`promotion`: bump image tags or YAML values in a deployment repository through a PR.

One run: shallow-fetch the target branch (and the promotion branch when it
exists), re-apply the edits still pending on the promotion branch plus this
event's edits on top of the current target, commit once, and push the
deterministic branch `eventsvc/promote/<environment>/<app>` with a lease; a
rejected push (target moved, another promotion raced) fetches and tries again.
Then the pull request for that branch is opened, or updated when one is open.

Pending edits travel in the commit message (`Eventsvc-Promotion:` trailer), so the
branch is always one commit on top of the latest target: no rebase conflicts,
and several bumps for one branch gather in one PR (share a `headBranch` between
apps to batch per environment). A branch whose PR was closed is not carried over.

When the target branch already holds the values, nothing is pushed and no PR is
opened; the result says so (`outcome: unchanged`).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from eventsvc import logs
from eventsvc.errors import PermanentTriggerError, TemporaryTriggerError
from eventsvc.events import CloudEvent
from eventsvc.github import ghevents
from eventsvc.github.client import GitHubApiError, GitHubClient, client_for, parse_repo
from eventsvc.github.gitops import Author, Git, write_files
from eventsvc.github.yamledit import Change, EditError, YamlDoc
from eventsvc.triggers.base import Services, TriggerContext, TriggerResult

log = logs.get("eventsvc.triggers.promotion")
TRAILER = "Eventsvc-Promotion:"
_SAFE_REF = re.compile(r"[^A-Za-z0-9._/-]+")
T = TypeVar("T")

DEFAULT_MESSAGE = "Promote {app} to {environment}: {values}"
DEFAULT_TITLE = "Promote {app} to {environment}: {values}"
DEFAULT_BODY = (
    "Automated promotion of **{app}** to **{environment}**.\n\n{changes}\n\n"
    "Triggered by `{event_type}` from {event_source} (event `{event_id}`)."
)

_FROM = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "file": {"type": "string", "minLength": 1,
                 "description": "file to copy from (default: the edited file)"},
        "branch": {"type": "string", "minLength": 1,
                   "description": "branch to read it on (default: the target branch)"},
        "name": {"type": "string", "description": "image name there (default: the same)"},
        "path": {"type": "string", "description": "YAML path there (default: the same)"},
    },
}  # fmt: skip
_STR = {"type": "string", "minLength": 1}
_IMAGE_FIELDS = ("newTag", "digest", "newName")
_FROM_HINT = "dotted path in the event, e.g. data.release.tag_name"
_IMAGE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": _STR,
        **{k: {"type": ["string", "number"]} for k in _IMAGE_FIELDS},
        **{f"{k}From": {**_STR, "description": _FROM_HINT} for k in _IMAGE_FIELDS},
        "copyFrom": _FROM,
    },
}
_SET = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path"],
    "properties": {
        "path": _STR,
        "value": {"type": ["string", "number", "boolean"]},
        "valueFrom": _STR,
        "copyFrom": _FROM,
    },
}


@dataclass(frozen=True, slots=True)
class Edit:
    """One resolved edit: literal values only (what the trailer stores)."""

    file: str
    image: str | None = None  # Kustomize image name, or
    path: str | None = None  # a YAML path
    values: tuple[tuple[str, Any], ...] = ()  # (newTag|digest|newName|value, literal)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.file, "image" if self.image else "set", self.image or self.path or "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file}
        out.update({"image": self.image} if self.image else {"path": self.path})
        out.update(dict(self.values))
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Edit:
        values = tuple((k, v) for k, v in doc.items() if k not in ("file", "image", "path"))
        return cls(str(doc["file"]), doc.get("image"), doc.get("path"), values)

    def apply(self, doc: YamlDoc) -> list[Change]:
        vals = dict(self.values)
        if self.image:
            return doc.set_image(self.image, new_tag=_opt(vals.get("newTag")),
                                 digest=_opt(vals.get("digest")),
                                 new_name=_opt(vals.get("newName")))  # fmt: skip
        assert self.path is not None
        return doc.set_path(self.path, vals["value"])


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(slots=True)
class Timer:
    git: float = 0.0
    api: float = 0.0

    async def api_call(self, awaitable: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.api += time.perf_counter() - started


class PromotionTrigger:
    key: ClassVar[str] = "promotion"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["repo", "branch", "environment", "app", "edits"],
        "properties": {
            "repo": {**_STR, "description": "deployment repository (https, ssh or file URL)"},
            "githubRepo": {"type": "string", "pattern": r"^[^/\s]+/[^/\s]+$",
                           "description": "owner/name, when the URL does not show it"},
            "branch": {**_STR, "description": "target branch for this environment"},
            "environment": _STR,
            "app": _STR,
            "headBranch": {**_STR, "description": "default eventsvc/promote/<env>/<app>"},
            "edits": {
                "type": "array", "minItems": 1,
                "items": {
                    "type": "object", "additionalProperties": False, "required": ["file"],
                    "properties": {"file": _STR, "image": _IMAGE, "set": _SET},
                },
            },
            "commit": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "message": _STR,
                    "author": {"type": "object", "additionalProperties": False,
                               "required": ["name", "email"],
                               "properties": {"name": _STR, "email": _STR}},
                },
            },
            "pullRequest": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "enabled": {"type": "boolean",
                                "description": "false: push straight to the target branch"},
                    "title": _STR, "body": {"type": "string"},
                    "labels": {"type": "array", "items": _STR},
                    "reviewers": {"type": "array", "items": _STR},
                    "teamReviewers": {"type": "array", "items": _STR},
                    "draft": {"type": "boolean"},
                },
            },
            "pushAttempts": {"type": "integer", "minimum": 1, "maximum": 20},
        },
    }  # fmt: skip

    def __init__(self, services: Services) -> None:
        self.services = services
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @classmethod
    def check(cls, spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for i, edit in enumerate(spec.get("edits") or []):
            if not isinstance(edit, Mapping):
                continue
            kinds = [k for k in ("image", "set") if k in edit]
            if len(kinds) != 1:
                problems.append((("edits", i), "give exactly one of 'image' (Kustomize images[]) "
                                 "or 'set' (a YAML path)"))  # fmt: skip
                continue
            body = edit[kinds[0]]
            if not isinstance(body, Mapping):
                continue
            fields = ("newTag", "digest", "newName") if kinds[0] == "image" else ("value",)
            given = [f for f in fields if f in body or f"{f}From" in body]
            if "copyFrom" in body and given:
                message = f"copyFrom cannot be combined with {', '.join(given)}"
                problems.append((("edits", i, kinds[0], "copyFrom"), message))
            elif "copyFrom" not in body and not given:
                problems.append((("edits", i, kinds[0]), "nothing to set: give "
                                 + " or ".join(f"{f}/{f}From" for f in fields)
                                 + " or copyFrom"))  # fmt: skip
            problems += [((("edits", i, kinds[0], f)), f"give {f} or {f}From, not both")
                         for f in fields if f in body and f"{f}From" in body]  # fmt: skip
        repo = spec.get("repo")
        if isinstance(repo, str) and "{{" not in repo and "githubRepo" not in spec:
            enabled = (spec.get("pullRequest") or {}).get("enabled", True)
            if enabled and parse_repo(repo) is None:
                problems.append((("githubRepo",), f"repo {repo!r} does not show owner/name; "
                                 "set githubRepo for the pull request"))  # fmt: skip
        return problems

    async def execute(self, spec: Mapping[str, Any], ctx: TriggerContext) -> TriggerResult:
        run = PromotionRun(spec, ctx, self._client_if_needed(spec))
        async with self._locks.setdefault((run.url, run.head), asyncio.Lock()):
            return await run.execute()

    def _client_if_needed(self, spec: Mapping[str, Any]) -> GitHubClient | None:
        https = urlsplit(str(spec["repo"])).scheme in ("http", "https")
        pr = (spec.get("pullRequest") or {}).get("enabled", True)
        return client_for(self.services) if https or pr else None


class PromotionRun:
    """The work of one trigger run."""

    def __init__(
        self, spec: Mapping[str, Any], ctx: TriggerContext, client: GitHubClient | None
    ) -> None:
        self.spec = spec
        self.ctx = ctx
        self.event: CloudEvent = ctx.first
        self.client = client
        self.url = str(spec["repo"])
        self.repo = str(spec.get("githubRepo") or parse_repo(self.url) or "")
        self.target = str(spec["branch"])
        self.env = str(spec["environment"])
        self.app = str(spec["app"])
        pr = spec.get("pullRequest") or {}
        self.pr: Mapping[str, Any] = pr
        self.use_pr = bool(pr.get("enabled", True))
        default_head = f"eventsvc/promote/{_ref_part(self.env)}/{_ref_part(self.app)}"
        self.head = str(spec.get("headBranch") or default_head) if self.use_pr else self.target
        commit = spec.get("commit") or {}
        self.author = Author(**commit["author"]) if "author" in commit else Author()
        self.message = str(commit.get("message") or DEFAULT_MESSAGE)
        self.attempts = int(spec.get("pushAttempts", 5))
        self.timer = Timer()

    async def execute(self) -> TriggerResult:
        workdir = Path(tempfile.mkdtemp(prefix="eventsvc-promote-"))
        token = None
        if self.client is not None and urlsplit(self.url).scheme in ("http", "https"):
            token = await self.timer.api_call(self.client.token_for(self.repo or None))
        git = Git(self.url, workdir, token, self.author)
        try:
            return await self._execute(git)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _execute(self, git: Git) -> TriggerResult:
        await git.init()
        pulls = await self._pulls() if self.use_pr else []
        raced = False
        for attempt in range(1, self.attempts + 1):
            outcome = await self._attempt(git, pulls, raced)
            if outcome is not None:
                changes, pushed, sha = outcome
                break
            raced = True
            log.info("promotion raced; retrying on the new branch tip", branch=self.head,
                     attempt=attempt)  # fmt: skip
        else:
            raise TemporaryTriggerError(
                f"push to {self.head!r} was rejected {self.attempts} times: the branch keeps "
                "moving; the event will be retried"
            )
        self.timer.git = git.seconds
        detail: dict[str, Any] = {
            "repo": self.repo or self.url, "branch": self.head, "base": self.target,
            "changes": [str(c) for c in changes], "commit": sha,
        }  # fmt: skip
        if sha is None:
            detail["outcome"] = "unchanged"
            detail["message"] = (f"{self.target!r} already holds the values; nothing to promote, "
                                 "no pull request")  # fmt: skip
            stale = next((p for p in pulls if p.get("state") == "open"), None)
            if stale is not None:
                detail["closedPullRequest"] = await self._close(int(stale["number"]))
        elif not self.use_pr:
            detail["outcome"] = "pushed" if pushed else "unchanged"
        else:
            detail.update(await self._pull_request(changes, pushed))
        detail.update(gitSeconds=round(self.timer.git, 4), apiSeconds=round(self.timer.api, 4))
        log.info("promotion done", **{k: v for k, v in detail.items() if k != "changes"})
        return TriggerResult(detail=detail)

    async def _attempt(
        self, git: Git, pulls: list[dict[str, Any]], raced: bool
    ) -> tuple[list[Change], bool, str | None] | None:
        """(changes, pushed, head sha) or None when the push lost a race."""
        remote = await git.ls_remote([self.target, self.head])
        if self.target not in remote:
            raise PermanentTriggerError(
                f"branch {self.target!r} not found in {self.url}; check 'branch' in the spec"
            )
        head_sha = remote.get(self.head) if self.use_pr else None
        carry = head_sha is not None and (raced or self._pending(head_sha, pulls))
        await git.fetch([self.target, self.head] if carry else [self.target])
        carried = await self._carried(git) if carry else []
        await git.checkout(f"origin/{self.target}")
        edits = await self._resolve(git)
        keys = {e.key for e in edits}
        all_edits = [e for e in carried if e.key not in keys] + edits
        files, changes = await self._apply(git, all_edits)
        write_files(git.workdir, files)
        if not await git.commit_all(sorted(files), self._commit_message(changes, all_edits)):
            return [], False, None
        if head_sha is not None and carry and (
            await git.tree("HEAD") == await git.tree(f"origin/{self.head}")
        ):
            return changes, False, head_sha  # the branch already holds exactly this
        if self.use_pr:
            pushed = await git.push(self.head, head_sha, force=True)
        else:
            pushed = await git.push(self.head, None, force=False)
        return (changes, True, await git.head()) if pushed else None

    def _pending(self, head_sha: str, pulls: list[dict[str, Any]]) -> bool:
        """Carry the branch's edits over unless its PR was closed (merged or not) at this tip."""
        closed = {p.get("head", {}).get("sha") for p in pulls if p.get("state") != "open"}
        return head_sha not in closed

    async def _carried(self, git: Git) -> list[Edit]:
        message = await git.message(f"origin/{self.head}")
        for line in reversed(message.splitlines()):
            if line.startswith(TRAILER):
                try:
                    docs = json.loads(line[len(TRAILER) :])
                    return [Edit.from_json(d) for d in docs]
                except (ValueError, KeyError, TypeError):
                    log.warning("unreadable promotion trailer ignored", branch=self.head)
        return []

    async def _resolve(self, git: Git) -> list[Edit]:
        out = []
        for i, item in enumerate(self.spec["edits"]):
            file = str(item["file"])
            kind = "image" if "image" in item else "set"
            body = item[kind]
            fields = ("newTag", "digest", "newName") if kind == "image" else ("value",)
            if "copyFrom" in body:
                values = await self._copy(git, file, kind, body)
            else:
                values = tuple((f, self._value(body, f, i)) for f in fields
                               if f in body or f"{f}From" in body)  # fmt: skip
            target = str(body["name"] if kind == "image" else body["path"])
            out.append(Edit(file, target if kind == "image" else None,
                            target if kind == "set" else None, values))  # fmt: skip
        return out

    def _value(self, body: Mapping[str, Any], field: str, index: int) -> Any:
        if field in body:
            return body[field]
        path = str(body[f"{field}From"])
        value = ghevents.event_value(self.event, path)
        if value is ghevents.MISSING or value is None or isinstance(value, Mapping | list):
            raise PermanentTriggerError(
                f"edits[{index}].{field}From: {path!r} is not a value in event "
                f"{self.event.get_id()} ({self.event.get_type()}); point it at a field of the "
                "event, e.g. data.release.tag_name"
            )
        return value

    async def _copy(
        self, git: Git, file: str, kind: str, body: Mapping[str, Any]
    ) -> tuple[tuple[str, Any], ...]:
        src = body["copyFrom"]
        branch = str(src.get("branch") or self.target)
        src_file = str(src.get("file") or file)
        if branch != self.target:
            await git.fetch([branch])
        text = await git.show(f"origin/{branch}", src_file)
        where = f"{src_file} on {branch!r}"
        if text is None:
            raise PermanentTriggerError(f"copyFrom: {where} does not exist; check copyFrom")
        doc = YamlDoc(text, src_file)
        if kind == "image":
            name = str(src.get("name") or body["name"])
            entry = doc.image(name)
            if entry is None:
                raise PermanentTriggerError(f"copyFrom: {where} has no images[] entry {name!r}")
            return tuple((k, str(entry[k])) for k in ("newName", "newTag", "digest") if k in entry)
        path = str(src.get("path") or body["path"])
        value = doc.get(path)
        if value is None:
            raise PermanentTriggerError(f"copyFrom: {where} has no value at {path!r}")
        return (("value", value if isinstance(value, bool | int | float) else str(value)),)

    async def _apply(
        self, git: Git, edits: Sequence[Edit]
    ) -> tuple[dict[str, str], list[Change]]:
        """Edited file texts by path, and every change made against the target."""
        docs: dict[str, YamlDoc] = {}
        all_changes: list[Change] = []
        for edit in edits:
            if edit.file not in docs:
                path = git.workdir / edit.file
                if not path.is_file():
                    raise PermanentTriggerError(
                        f"{edit.file} does not exist on {self.target!r} in {self.url}; "
                        "check the edit's file path"
                    )
                docs[edit.file] = YamlDoc(await asyncio.to_thread(path.read_text), edit.file)
            try:
                made = edit.apply(docs[edit.file])
            except EditError as e:
                raise PermanentTriggerError(str(e)) from e
            all_changes += made
        files = {name: doc.dump() for name, doc in docs.items() if doc.changes}
        return files, all_changes

    def _fields(self, changes: Sequence[Change]) -> dict[str, Any]:
        lines = "\n".join(f"- `{c.file}`: `{c.field}` {c.old or '(unset)'} → **{c.new}**"
                          for c in changes)  # fmt: skip
        return {
            "app": self.app, "environment": self.env, "branch": self.target, "head": self.head,
            "repo": self.repo or self.url, "changes": lines or "(no changes)",
            "values": ", ".join(dict.fromkeys(str(c.new) for c in changes if c.new is not None)),
            **ghevents.event_fields(self.event),
        }  # fmt: skip

    def _commit_message(self, changes: Sequence[Change], edits: Sequence[Edit]) -> str:
        subject = ghevents.render(self.message, self._fields(changes), self.event).strip()
        body = "\n".join(str(c) for c in changes)
        trailer = TRAILER + " " + json.dumps([e.to_json() for e in edits], separators=(",", ":"))
        return f"{subject}\n\n{body}\n\n{trailer}\n"

    # ---- pull request ------------------------------------------------------------------
    async def _pulls(self) -> list[dict[str, Any]]:
        client = self._api()
        owner = self.repo.split("/")[0]
        params = {"head": f"{owner}:{self.head}", "state": "all"}
        return await self.timer.api_call(_collect(client.paginate(
            f"/repos/{self.repo}/pulls", params=params, repo=self.repo, limit=100)))  # fmt: skip

    def _api(self) -> GitHubClient:
        if self.client is None or not self.repo:
            raise PermanentTriggerError("pull requests need the GitHub API and githubRepo")
        return self.client

    async def _pull_request(self, changes: list[Change], pushed: bool) -> dict[str, Any]:
        client = self._api()
        fields = self._fields(changes)
        title = ghevents.render(str(self.pr.get("title") or DEFAULT_TITLE), fields, self.event)
        body = ghevents.render(str(self.pr.get("body") or DEFAULT_BODY), fields, self.event)
        existing = next((p for p in await self._pulls() if p.get("state") == "open"), None)
        outcome = "updated"
        if existing is None:
            try:
                existing = await self.timer.api_call(client.call(
                    "POST", f"/repos/{self.repo}/pulls", repo=self.repo, json={
                        "title": title, "head": self.head, "base": self.target, "body": body,
                        "draft": bool(self.pr.get("draft", False)),
                        "maintainer_can_modify": True,
                    }))  # fmt: skip
                outcome = "opened"
            except GitHubApiError as e:
                if e.status != 422 or "already exists" not in json.dumps(e.body):
                    raise
                existing = next(p for p in await self._pulls() if p.get("state") == "open")
        assert existing is not None
        number = int(existing["number"])
        if outcome == "updated" and pushed:
            await self.timer.api_call(client.call(
                "PATCH", f"/repos/{self.repo}/pulls/{number}", repo=self.repo,
                json={"title": title, "body": body}))  # fmt: skip
        elif outcome == "updated":
            outcome = "unchanged"
        await self._decorate(client, number, outcome == "opened")
        return {"outcome": outcome, "pullRequest": number, "url": existing.get("html_url")}

    async def _close(self, number: int) -> int:
        """Close an open promotion PR whose changes the target already holds (or that
        would now go back to what the target holds)."""
        client = self._api()
        note = (f"Closed by eventsvc: `{self.target}` already holds the values of the latest "
                f"promotion event ({self.event.get_type()} `{self.event.get_id()}`).")  # fmt: skip
        await self.timer.api_call(client.call(
            "POST", f"/repos/{self.repo}/issues/{number}/comments", repo=self.repo,
            json={"body": note}))  # fmt: skip
        await self.timer.api_call(client.call(
            "PATCH", f"/repos/{self.repo}/pulls/{number}", repo=self.repo,
            json={"state": "closed"}))  # fmt: skip
        return number

    async def _decorate(self, client: GitHubClient, number: int, new: bool) -> None:
        labels = list(self.pr.get("labels") or [])
        if labels:
            await self.timer.api_call(client.call(
                "POST", f"/repos/{self.repo}/issues/{number}/labels", repo=self.repo,
                json={"labels": labels}))  # fmt: skip
        users = list(self.pr.get("reviewers") or [])
        teams = list(self.pr.get("teamReviewers") or [])
        if new and (users or teams):
            await self.timer.api_call(client.call(
                "POST", f"/repos/{self.repo}/pulls/{number}/requested_reviewers", repo=self.repo,
                json={"reviewers": users, "team_reviewers": teams}))  # fmt: skip


async def _collect(items: Any) -> list[dict[str, Any]]:
    return [item async for item in items]


def _ref_part(text: str) -> str:
    """A branch-name component from free text."""
    return _SAFE_REF.sub("-", text).strip("-/.") or "default"
