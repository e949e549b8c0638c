"""`promotion`: bump image tags or YAML values in a deployment repository through a PR.

One run: ask the remote for the tips of the target branch and of the
deterministic branch `eventsvc/promote/<environment>/<app>`, fetch into the
repository's kept mirror only what it does not hold yet, re-apply the edits still
pending on the promotion branch plus this event's edits on top of the current
target, write one commit with git plumbing (no checkout), and push it with a
lease; a rejected push (target moved, another promotion raced) tries again.
Then the pull request for that branch is opened, or updated when one is open.

Pending edits travel in the commit message (`Eventsvc-Promotion:` trailer), so the
branch is always one commit on top of the latest target: no rebase conflicts,
and several bumps for one branch gather in one PR. A branch whose PR was closed
is not carried over.

Batching (`batch: {window: 30s}`): bumps for one environment share the branch
`eventsvc/promote/<environment>` and the pull request opens only when the window
(counted from the first bump on the branch) closes. Each run still pushes its
own edit at once, so git holds every accepted bump: nothing waits in memory or in
a side store. The run then waits until the window closes (its event stays
unacknowledged meanwhile) and opens or refreshes the PR from what the branch
holds. If the process dies mid-window, the event is redelivered, finds its edit
on the branch, and opens the PR; any other bump of the window does the same, and
the first to get there opens it (the others find it open). Bumps after the PR is
open join it at once as a new commit. We chose this over keeping pending edits in
a KV bucket: a second store would need its own at-least-once hand-off to git,
while the branch and the push lease already give us one.

When the target branch already holds the values, nothing is pushed and no PR is
opened; the result says so (`outcome: unchanged`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from eventsvc import durations, logs
from eventsvc.errors import (
    ExternalError,
    PermanentTriggerError,
    TemporaryTriggerError,
    TriggerError,
)
from eventsvc.events import CloudEvent
from eventsvc.github import ghevents, promotecommit
from eventsvc.github.client import (
    GitHubApiError,
    GitHubClient,
    check_repo,
    parse_repo,
    repo_problem,
)
from eventsvc.github.gitops import (
    Author,
    Git,
    branch_problem,
    check_branch,
    check_url,
    url_problem,
)
from eventsvc.github.mirror import Mirror, Mirrors
from eventsvc.github.promotecommit import Edit, Snapshot, plain_path
from eventsvc.github.yamledit import Change, EditError, YamlDoc
from eventsvc.templates import NAMES_MARK
from eventsvc.triggers.base import Services, TriggerContext, TriggerResult

log = logs.get("eventsvc.triggers.promotion")
_SAFE_REF = re.compile(r"[^A-Za-z0-9._/-]+")
T = TypeVar("T")

DEFAULT_MESSAGE = "Promote {{ app }} to {{ environment }}: {{ values }}"
DEFAULT_TITLE = "Promote {{ app }} to {{ environment }}: {{ values }}"
DEFAULT_BODY = (
    "Automated promotion of **{{ app }}** to **{{ environment }}**.\n\n{{ changes }}\n\n"
    "Triggered by `{{ event_type }}` from {{ event_source }} (event `{{ event_id }}`)."
)
DEFAULT_BATCH_MESSAGE = "Promote to {{ environment }}: {{ apps }}"
DEFAULT_BATCH_TITLE = "Promote to {{ environment }}: {{ apps }}"
DEFAULT_BATCH_BODY = (
    "Automated promotion to **{{ environment }}**; bumps arriving within {{ window }} of the "
    "first one are batched here.\n\n{{ changes }}"
)
NAMES = ("app", "environment", "branch", "head", "repo", "changes", "values", "apps", "window",
         "event_id", "event_type", "event_source", "event_subject")  # fmt: skip
"""What the commit message and the pull request's title and body may read (`{{ values }}`)."""
_TEXT = {"type": "string", NAMES_MARK: list(NAMES)}

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
        "imageFrom": {**_STR, "description": "dotted path in the event to an image reference "
                      "(name:tag, name@digest) or a list of them, e.g. Argo CD's "
                      "data.object.status.summary.images; the one for `name` gives newTag "
                      "and digest"},
        "copyFrom": _FROM,
    },
}
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+([.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")
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


@dataclass(slots=True)
class Clock:
    """Wall time and waiting, replaceable in tests (batch windows)."""

    now: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


@dataclass(slots=True)
class Staged:
    """What the promotion branch holds after a run pushed (or found) its commit."""

    changes: list[tuple[str, Change]]  # (app, change) for every edit on the branch
    pushed: bool
    sha: str | None  # None: the target already holds every value
    since: float  # when the first bump of this branch's batch arrived
    pulls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def open_pull(self) -> dict[str, Any] | None:
        return next((p for p in self.pulls if p.get("state") == "open"), None)


@dataclass(frozen=True, slots=True)
class PullRequestSettings:
    """`pullRequest`, parsed once: whether the promotion goes through a pull request (else
    straight to the target branch) and how that pull request looks."""

    enabled: bool = True
    title: str | None = None
    body: str | None = None
    labels: tuple[str, ...] = ()
    reviewers: tuple[str, ...] = ()
    team_reviewers: tuple[str, ...] = ()
    draft: bool = False

    @classmethod
    def of(cls, spec: Mapping[str, Any]) -> PullRequestSettings:
        raw = spec.get("pullRequest") or {}
        return cls(enabled=bool(raw.get("enabled", True)), title=raw.get("title") or None,
                   body=raw.get("body") or None, labels=tuple(raw.get("labels") or ()),
                   reviewers=tuple(raw.get("reviewers") or ()),
                   team_reviewers=tuple(raw.get("teamReviewers") or ()),
                   draft=bool(raw.get("draft", False)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class CopyFrom:
    """`copyFrom` of an edit: where the value is read (None: the same as the edit's)."""

    file: str | None = None
    branch: str | None = None
    name: str | None = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """One field an edit sets: a value written in the spec, or (`path`) the event's value
    at `<field>From`."""

    field: str
    value: Any = None
    path: str | None = None


@dataclass(frozen=True, slots=True)
class EditSpec:
    """One item of `edits`: an image (`target` is its name) or a YAML path (`set`)."""

    file: str
    kind: str  # "image" or "set"
    target: str
    sources: tuple[Source, ...] = ()
    image_from: str | None = None
    copy_from: CopyFrom | None = None

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> EditSpec:
        kind = "image" if "image" in item else "set"
        body = item[kind]
        fields = ("newTag", "digest", "newName") if kind == "image" else ("value",)
        sources = tuple(Source(f, value=body[f]) if f in body
                        else Source(f, path=str(body[f"{f}From"]))
                        for f in fields if f in body or f"{f}From" in body)  # fmt: skip
        src = body.get("copyFrom")
        copy_from = None if src is None else CopyFrom(
            *(str(src[k]) if src.get(k) else None for k in ("file", "branch", "name", "path")))
        return cls(str(item["file"]), kind, str(body["name"] if kind == "image" else body["path"]),
                   sources, str(body["imageFrom"]) if "imageFrom" in body else None,
                   copy_from)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PromotionSpec:
    """The rendered `promotion` section, parsed and checked once (`parse`)."""

    url: str  # the deployment repository, safe to hand to git
    repo: str  # owner/name on GitHub; "" when neither githubRepo nor the URL shows it
    target: str  # the target branch
    environment: str
    app: str
    window: float  # batch window in seconds; 0: no batching
    pull_request: PullRequestSettings
    head: str  # the promotion branch (the target itself without a pull request)
    author: Author
    message: str  # commit message template
    push_attempts: int
    edits: tuple[EditSpec, ...]

    @property
    def use_pr(self) -> bool:
        return self.pull_request.enabled


def parse(spec: Mapping[str, Any], *, allow_file: bool = False) -> PromotionSpec:
    """The rendered section as a PromotionSpec. Its values may come from event data: they
    are checked here, before git or the API sees them."""
    url = check_url(str(spec["repo"]), "repo", allow_file)
    if spec.get("githubRepo"):
        repo = check_repo(str(spec["githubRepo"]), "githubRepo")
    else:
        found = parse_repo(url)
        repo = "" if found is None else check_repo(
            found, "githubRepo", f" (read from repo {url!r})")  # fmt: skip
    for path, value in _branch_fields(spec):
        check_branch(str(value), _field(path))
    target = str(spec["branch"])
    env = str(spec["environment"])
    app = str(spec["app"])
    window = _window(spec)
    pr = PullRequestSettings.of(spec)
    env_part = _ref_part(env)
    default_head = (f"eventsvc/promote-batch/{env_part}" if window
                    else f"eventsvc/promote/{env_part}/{_ref_part(app)}")  # fmt: skip
    head = str(spec.get("headBranch") or default_head) if pr.enabled else target
    check_branch(head, "headBranch (default: from environment and app)")
    commit = spec.get("commit") or {}
    author = Author(**commit["author"]) if "author" in commit else Author()
    default_message = DEFAULT_BATCH_MESSAGE if window else DEFAULT_MESSAGE
    message = str(commit.get("message") or default_message)
    attempts = int(spec.get("pushAttempts", 5))
    return PromotionSpec(url, repo, target, env, app, window, pr, head, author, message,
                         attempts, tuple(EditSpec.of(item) for item in spec["edits"]))


class PromotionTrigger:
    key: ClassVar[str] = "promotion"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["repo", "branch", "environment", "app", "edits"],
        "properties": {
            "repo": {**_STR, "description": "deployment repository: https://, ssh:// or "
                     "git@host:path (file:// only with config promotion.allowFileUrls)"},
            "githubRepo": {"type": "string", "pattern": r"^[^/\s]+/[^/\s]+$",
                           "description": "owner/name, when the URL does not show it"},
            "branch": {**_STR, "description": "target branch for this environment"},
            "environment": _STR,
            "app": _STR,
            "headBranch": {**_STR, "description": "default eventsvc/promote/<env>/<app>, "
                           "with batch eventsvc/promote/<env>"},
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
                    "message": {**_TEXT, "minLength": 1},
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
                    "title": {**_TEXT, "minLength": 1}, "body": _TEXT,
                    "labels": {"type": "array", "items": _STR},
                    "reviewers": {"type": "array", "items": _STR},
                    "teamReviewers": {"type": "array", "items": _STR},
                    "draft": {"type": "boolean"},
                },
            },
            "pushAttempts": {"type": "integer", "minimum": 1, "maximum": 20},
            "batch": {
                "type": "object", "additionalProperties": False, "required": ["window"],
                "description": "bumps for one environment within the window go into one PR",
                "properties": {"window": {
                    "type": ["string", "number"],
                    "description": "from the first bump on the branch, e.g. 30s or 2m"}},
            },
        },
    }  # fmt: skip

    def __init__(self, services: Services) -> None:
        self.services = services
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.clock = Clock()

    @classmethod
    def explain(cls, spec: Mapping[str, Any], first: CloudEvent | None) -> str:
        edits = ", ".join(str(e.get("path") or e.get("file") or "?") for e in spec.get("edits", [])
                          if isinstance(e, Mapping))  # fmt: skip
        pr = PullRequestSettings.of(spec).enabled
        how = "opens or updates a promotion pull request into" if pr else "commits to"
        return (f"promotes {spec.get('app')} to {spec.get('environment')}: {how} "
                f"{spec.get('repo')} branch {spec.get('branch')} (edits: {edits or 'none'})")

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
            if "imageFrom" in body:
                clash = [f for f in ("newTag", "digest") if f in given] + (
                    ["copyFrom"] if "copyFrom" in body else [])  # fmt: skip
                if clash:
                    problems.append((("edits", i, "image", "imageFrom"),
                                     f"imageFrom sets newTag and digest; remove "
                                     f"{', '.join(clash)}"))  # fmt: skip
                    continue
                given.append("imageFrom")
            if "copyFrom" in body and given:
                message = f"copyFrom cannot be combined with {', '.join(given)}"
                problems.append((("edits", i, kinds[0], "copyFrom"), message))
            elif "copyFrom" not in body and not given:
                problems.append((("edits", i, kinds[0]), "nothing to set: give "
                                 + " or ".join(f"{f}/{f}From" for f in fields)
                                 + (", imageFrom" if kinds[0] == "image" else "")
                                 + " or copyFrom"))  # fmt: skip
            problems += [((("edits", i, kinds[0], f)), f"give {f} or {f}From, not both")
                         for f in fields if f in body and f"{f}From" in body]  # fmt: skip
        problems += _check_literals(spec)
        repo = spec.get("repo")
        if isinstance(repo, str) and "{{" not in repo and "githubRepo" not in spec:
            enabled = PullRequestSettings.of(spec).enabled
            if enabled and parse_repo(repo) is None:
                problems.append((("githubRepo",), f"repo {repo!r} does not show owner/name; "
                                 "set githubRepo for the pull request"))  # fmt: skip
        problems += _check_batch(spec)
        return problems

    async def execute(self, spec: Mapping[str, Any], ctx: TriggerContext) -> TriggerResult:
        config = self.services.config
        mirrors = self.services.mirrors
        allow_file = config.promotion_allow_file_urls
        parsed = parse(spec, allow_file=allow_file)
        run = PromotionRun(parsed, ctx, self._client_if_needed(parsed), mirrors, self.clock,
                           allow_file=allow_file)  # fmt: skip
        lock = self._locks.setdefault((parsed.url, parsed.head), asyncio.Lock())
        async with mirrors.mirror(parsed.url) as mirror:
            async with lock:
                staged = await run.stage(mirror, own=True)
                if not parsed.window or staged.sha is None or staged.open_pull is not None:
                    return await run.finish(staged)
            # batched and no PR yet: wait for the window without holding the branch lock
            closes = staged.since + parsed.window
            wait = closes - self.clock.now()
            if wait > 0:
                log.info("promotion batched; the pull request opens when the window closes",
                         branch=parsed.head, wait=round(wait, 3))  # fmt: skip
                await self.clock.sleep(wait)
            async with lock:
                staged = await run.stage(mirror, own=False)
                return await run.finish(staged, refresh=True)

    def _client_if_needed(self, spec: PromotionSpec) -> GitHubClient | None:
        https = urlsplit(spec.url).scheme == "https"
        return self.services.github if https or spec.use_pr else None


def _branch_fields(spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], Any]]:
    """(path in the spec, value) of every branch name the spec gives."""
    found: list[tuple[tuple[str | int, ...], Any]] = [
        ((key,), spec[key]) for key in ("branch", "headBranch") if key in spec
    ]
    for i, item in enumerate(spec.get("edits") or []):
        for kind in ("image", "set"):
            body = item.get(kind) if isinstance(item, Mapping) else None
            src = body.get("copyFrom") if isinstance(body, Mapping) else None
            if isinstance(src, Mapping) and "branch" in src:
                found.append((("edits", i, kind, "copyFrom", "branch"), src["branch"]))
    return found


def _field(path: tuple[str | int, ...]) -> str:
    """`edits[0].image.copyFrom.branch` for ("edits", 0, "image", ...)."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _check_literals(spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """URL, branch and repository values written in the spec (not `{{ }}`): refused at
    load time already. Rendered values are checked again by each run."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    # whether file:// is allowed is the service's setting, checked by the run
    checks: list[tuple[tuple[str | int, ...], Any, Callable[[str], str | None]]] = [
        (("repo",), spec.get("repo"), partial(url_problem, allow_file=True)),
        (("githubRepo",), spec.get("githubRepo"), repo_problem),
        *((path, value, branch_problem) for path, value in _branch_fields(spec)),
    ]
    for path, value, problem_of in checks:
        if isinstance(value, str) and "{{" not in value:
            problem = problem_of(value)
            if problem is not None:
                problems.append((path, f"{value!r} {problem}"))
    return problems


def _check_batch(spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    batch = spec.get("batch")
    if not isinstance(batch, Mapping) or "window" not in batch:
        return []
    window = batch["window"]
    if isinstance(window, str) and "{{" in window:
        return []
    try:
        durations.parse_duration(window)
    except ValueError as e:
        return [(("batch", "window"), str(e))]
    if not PullRequestSettings.of(spec).enabled:
        return [(("batch",), "batching gathers bumps into one pull request; "
                 "remove batch or enable pullRequest")]  # fmt: skip
    return []


class PromotionRun:
    """The work of one trigger run."""

    def __init__(
        self,
        spec: PromotionSpec,
        ctx: TriggerContext,
        client: GitHubClient | None,
        mirrors: Mirrors,
        clock: Clock,
        *,
        allow_file: bool = False,
    ) -> None:
        self.spec = spec
        self.ctx = ctx
        self.event: CloudEvent = ctx.first
        self.client = client
        self.clock = clock
        self.allow_file = allow_file
        self.timer = Timer()

    async def _git(self, mirror: Mirror) -> Git:
        """Git on the repository; a token only when it is https on the configured GitHub
        (a URL from event data may name any host: that host gets no credentials)."""
        spec = self.spec
        if self.client is None:
            return Git(spec.url, mirror.path, None, spec.author, allow_file=self.allow_file)
        token = await self.timer.api_call(self.client.git_token(spec.url, spec.repo or None))
        return Git(spec.url, mirror.path, token, spec.author, allow_file=self.allow_file,
                   token_hosts=self.client.settings.git_hosts())  # fmt: skip

    # ---- the branch ------------------------------------------------------------------
    async def stage(self, mirror: Mirror, own: bool) -> Staged:
        """Push this event's edits (`own`), with those pending on the branch, on top of
        the target; `own=False` only brings the pending ones up to date."""
        git = await self._git(mirror)
        remote = self._remembered(mirror, own)
        optimistic = remote is not None
        if remote is not None:
            pulls = await self._pulls() if self.spec.use_pr else []
        else:
            remote, pulls = await self._tips_and_pulls(git, mirror, own)
        raced = False
        try:
            for attempt in range(1, self.spec.push_attempts + 1):
                outcome = await self._attempt(git, mirror, pulls, raced, own, remote, optimistic)
                remote, optimistic = None, False
                if isinstance(outcome, Staged):
                    outcome.pulls = pulls
                    return outcome
                raced = raced or outcome == "raced"
                log.info("promotion raced; retrying on the new branch tip", branch=self.spec.head,
                         attempt=attempt, reason=outcome)  # fmt: skip
        finally:
            self.timer.git += git.seconds
        raise TemporaryTriggerError(
            f"push to {self.spec.head!r} was rejected {self.spec.push_attempts} times: the "
            "branch keeps moving; the event will be retried"
        )

    def _remembered(self, mirror: Mirror, own: bool) -> dict[str, str] | None:
        """The tips this process last saw, to try without asking the remote first (one
        round trip less): only a push whose leases hold on both the promotion branch
        and the target proves them right; anything else asks the remote and retries."""
        target = mirror.tips.get(self.spec.target)
        if target is None or (self.spec.head == self.spec.target and self.spec.use_pr):
            return None
        if own and self._copy_branches():
            return None
        head = mirror.tips.get(self.spec.head) if self.spec.use_pr else None
        return {self.spec.target: target} | ({self.spec.head: head} if head is not None else {})

    async def _tips_and_pulls(
        self, git: Git, mirror: Mirror, own: bool
    ) -> tuple[dict[str, str], list[dict[str, Any]]]:
        branches = [self.spec.target, self.spec.head, *(self._copy_branches() if own else [])]
        try:
            async with asyncio.TaskGroup() as group:  # two round trips at once
                listing = group.create_task(self._pulls()) if self.spec.use_pr else None
                remote = await git.ls_remote(branches)
        except* (TriggerError, ExternalError) as failed:  # the first failure, alone
            raise failed.exceptions[0] from None
        self._remember(mirror, remote)
        return remote, listing.result() if listing is not None else []

    def _remember(self, mirror: Mirror, remote: Mapping[str, str]) -> None:
        for branch in {self.spec.target, self.spec.head}:
            mirror.tips[branch] = remote.get(branch)

    async def _attempt(
        self, git: Git, mirror: Mirror, pulls: list[dict[str, Any]], raced: bool, own: bool,
        remote: dict[str, str] | None, optimistic: bool = False,
    ) -> Staged | str:  # fmt: skip
        """What the branch holds now, or "raced" (push rejected) / "stale" (the remote
        moved while we fetched, or remembered tips were wrong) to try again. `remote`:
        the branch tips, when just read or remembered (`optimistic`)."""
        sources = self._copy_branches() if own else []
        if remote is None:
            remote = await git.ls_remote([self.spec.target, self.spec.head, *sources])
            self._remember(mirror, remote)
        target = remote.get(self.spec.target)
        if target is None:
            raise PermanentTriggerError(
                f"branch {self.spec.target!r} not found in {self.spec.url}; "
                "check 'branch' in the spec"
            )
        head_sha = remote.get(self.spec.head) if self.spec.use_pr else None
        carry = head_sha is not None and (raced or self._pending(head_sha, pulls))
        tips = {b: remote[b] for b in sources if b in remote} | {self.spec.target: target}
        if carry and head_sha is not None:
            tips[self.spec.head] = head_sha
        await mirror.ensure(git, tips)
        snap = Snapshot(git)
        files = [e.file for e in self.spec.edits] if own else []
        await snap.load([*tips.values(), *snap.names(target, files), *self._copy_sources(remote)])
        if any(snap.get(sha) is None for sha in tips.values()):
            mirror.present.difference_update(tips.values())
            return "stale"
        mirror.saw(tips.values())
        head = snap.get(head_sha) if carry and head_sha is not None else None
        carried, since = promotecommit.read_trailers(head) if head is not None else ([], None)
        edits = self._resolve(snap, remote) if own else []
        mine = {e.key: e for e in edits}  # a new value replaces a pending one in place
        all_edits = [mine.pop(e.key, e) for e in carried] + list(mine.values())
        await snap.load(snap.names(target, [e.file for e in all_edits]))
        texts, changes = self._apply(snap, target, all_edits)
        since = self.clock.now() if since is None else since
        if not texts:
            return "stale" if optimistic else Staged([], False, None, since)
        message = self._commit_message(changes, all_edits, since)
        sha, tree = await mirror.commit(git, target, snap.trees(target), texts, message)
        if head is not None and head_sha is not None and promotecommit.tree_of(head) == tree:
            if optimistic:  # "nothing to push" is only believed from the remote's own word
                return "stale"
            return Staged(changes, False, head_sha, since)  # the branch holds exactly this
        hold = (self.spec.target, target) if optimistic and self.spec.use_pr else None
        expect = head_sha if self.spec.use_pr else None
        if not await git.push(sha, self.spec.head, expect, self.spec.use_pr, hold=hold):
            return "stale" if optimistic else "raced"
        mirror.tips[self.spec.head] = sha
        return Staged(changes, True, sha, since)

    def _pending(self, head_sha: str, pulls: list[dict[str, Any]]) -> bool:
        """Carry the branch's edits over unless its PR was closed (merged or not) at this tip."""
        closed = {p.get("head", {}).get("sha") for p in pulls if p.get("state") != "open"}
        return head_sha not in closed

    def _copy_specs(self) -> list[tuple[str, str]]:
        """(branch, file) read by this event's copyFrom edits."""
        out = []
        for edit in self.spec.edits:
            if edit.copy_from is not None:
                src = edit.copy_from
                out.append((src.branch or self.spec.target, src.file or edit.file))
        return out

    def _copy_branches(self) -> list[str]:
        return [b for b, _ in self._copy_specs() if b != self.spec.target]

    def _copy_sources(self, remote: Mapping[str, str]) -> list[str]:
        return [f"{remote[b]}:{f}" for b, f in self._copy_specs() if b in remote]

    def _resolve(self, snap: Snapshot, remote: Mapping[str, str]) -> list[Edit]:
        out = []
        for i, edit in enumerate(self.spec.edits):
            file = edit.file
            if not plain_path(file):
                raise PermanentTriggerError(
                    f"edits[{i}].file: {file!r} is not a plain path in the repository; "
                    "write it from the root, e.g. overlays/staging/kustomization.yaml"
                )
            kind = edit.kind
            if edit.copy_from is not None:
                values = self._copy(snap, remote, edit, edit.copy_from)
            else:
                values = tuple((s.field, self._value(s, i)) for s in edit.sources)
                if edit.image_from is not None:
                    values += self._image_ref(edit.image_from, edit.target, i)
            target = edit.target
            out.append(Edit(file, target if kind == "image" else None,
                            target if kind == "set" else None, values, self.spec.app))  # fmt: skip
        return out

    def _value(self, source: Source, index: int) -> Any:
        if source.path is None:
            return source.value
        field, path = source.field, source.path
        value = ghevents.event_value(self.event, path)
        if value is ghevents.MISSING or value is None or isinstance(value, Mapping | list):
            raise PermanentTriggerError(
                f"edits[{index}].{field}From: {path!r} is not a value in event "
                f"{self.event.get_id()} ({self.event.get_type()}); point it at a field of the "
                "event, e.g. data.release.tag_name"
            )
        return value

    def _image_ref(self, path: str, name: str, index: int) -> tuple[tuple[str, Any], ...]:
        """newTag and digest of the image reference for `name` at the event path imageFrom."""
        found = ghevents.event_value(self.event, path)
        refs = found if isinstance(found, list) else [found]
        where = f"edits[{index}].image.imageFrom: {path!r} in event {self.event.get_id()}"
        for ref in refs:
            if not isinstance(ref, str):
                continue
            parsed = split_image_ref(ref)
            if parsed is None or parsed[0] != name:
                continue
            _, tag, digest = parsed
            if (tag is not None and not _TAG.match(tag)) or (
                    digest is not None and not _DIGEST.match(digest)):  # fmt: skip
                raise PermanentTriggerError(f"{where}: {ref!r} is not a valid image reference")
            return tuple((k, v) for k, v in (("newTag", tag), ("digest", digest)) if v)
        raise PermanentTriggerError(
            f"{where}: no image reference to {name!r} with a tag or digest; point imageFrom at "
            f"a reference such as {name}:1.2.3 or a list holding one"
        )

    def _copy(
        self, snap: Snapshot, remote: Mapping[str, str], edit: EditSpec, src: CopyFrom
    ) -> tuple[tuple[str, Any], ...]:
        branch = src.branch or self.spec.target
        src_file = src.file or edit.file
        if branch not in remote:
            raise PermanentTriggerError(
                f"copyFrom: branch {branch!r} not found in {self.spec.url}; check copyFrom.branch"
            )
        text = snap.text(remote[branch], src_file)
        where = f"{src_file} on {branch!r}"
        if text is None:
            raise PermanentTriggerError(f"copyFrom: {where} does not exist; check copyFrom")
        doc = promotecommit.load_doc(text, src_file)
        if edit.kind == "image":
            name = src.name or edit.target
            entry = doc.image(name)
            if entry is None:
                raise PermanentTriggerError(f"copyFrom: {where} has no images[] entry {name!r}")
            return tuple((k, str(entry[k])) for k in ("newName", "newTag", "digest") if k in entry)
        path = src.path or edit.target
        value = doc.get(path)
        if value is None:
            raise PermanentTriggerError(f"copyFrom: {where} has no value at {path!r}")
        return (("value", value if isinstance(value, bool | int | float) else str(value)),)

    def _apply(
        self, snap: Snapshot, target: str, edits: Sequence[Edit]
    ) -> tuple[dict[str, str], list[tuple[str, Change]]]:
        """Edited file texts by path, and every change made against the target (by app)."""
        docs: dict[str, YamlDoc] = {}
        all_changes: list[tuple[str, Change]] = []
        for edit in edits:
            if edit.file not in docs:
                text = snap.text(target, edit.file)
                if text is None:
                    raise PermanentTriggerError(
                        f"{edit.file} does not exist on {self.spec.target!r} in {self.spec.url}; "
                        "check the edit's file path"
                    )
                docs[edit.file] = promotecommit.load_doc(text, edit.file)
            try:
                made = edit.apply(docs[edit.file])
            except EditError as e:
                raise PermanentTriggerError(str(e)) from e
            all_changes += [(edit.app or "-", c) for c in made]
        dumped = {name: doc.dump() for name, doc in docs.items() if doc.changes}
        return {n: t for n, t in dumped.items() if t != docs[n].text}, all_changes

    def _fields(self, changes: Sequence[tuple[str, Change]]) -> dict[str, Any]:
        spec = self.spec
        by_app = bool(spec.window) or len({app for app, _ in changes}) > 1
        lines = "\n".join(
            f"- {f'**{app}** ' if by_app else ''}`{c.file}`: `{c.field}` "
            f"{c.old or '(unset)'} → **{c.new}**"
            for app, c in changes
        )
        values: dict[str, dict[str, None]] = {}
        for app, c in changes:
            if c.new is not None:
                values.setdefault(app, {})[str(c.new)] = None
        return {
            "app": spec.app, "environment": spec.environment, "branch": spec.target,
            "head": spec.head, "repo": spec.repo or spec.url, "changes": lines or "(no changes)",
            "values": ", ".join(dict.fromkeys(v for vs in values.values() for v in vs)),
            "apps": ", ".join(f"{app} {' '.join(vs)}" for app, vs in values.items()),
            "window": durations.format_duration(spec.window) if spec.window else "",
            **ghevents.event_fields(self.event),
        }  # fmt: skip

    def _commit_message(
        self, changes: Sequence[tuple[str, Change]], edits: Sequence[Edit], since: float
    ) -> str:
        subject = ghevents.render(self.spec.message, self._fields(changes), self.event).strip()
        body = "\n".join(str(c) for _, c in changes)
        trailers = promotecommit.trailers(edits, since if self.spec.window else None)
        return f"{subject}\n\n{body}\n\n{trailers}\n"

    # ---- result and pull request -------------------------------------------------------
    async def finish(self, staged: Staged, refresh: bool = False) -> TriggerResult:
        """Open or update the pull request for what `stage` left on the branch.
        `refresh`: after a batch window (the PR is updated when it lags the branch)."""
        detail: dict[str, Any] = {
            "repo": self.spec.repo or self.spec.url, "branch": self.spec.head,
            "base": self.spec.target,
            "changes": [str(c) for _, c in staged.changes], "commit": staged.sha,
        }  # fmt: skip
        if staged.sha is None:
            detail["outcome"] = "unchanged"
            detail["message"] = (f"{self.spec.target!r} already holds the values; nothing to "
                                 "promote, no pull request")  # fmt: skip
            stale = staged.open_pull
            if stale is not None:
                detail["closedPullRequest"] = await self._close(int(stale["number"]))
        elif not self.spec.use_pr:
            detail["outcome"] = "pushed" if staged.pushed else "unchanged"
        else:
            detail.update(await self._pull_request(staged.changes, staged.pushed, refresh))
            if self.spec.window:
                closes = staged.since + self.spec.window
                detail["batch"] = {"since": round(staged.since, 3), "closes": round(closes, 3)}
        detail.update(gitSeconds=round(self.timer.git, 4), apiSeconds=round(self.timer.api, 4))
        log.info("promotion done", **{k: v for k, v in detail.items() if k != "changes"})
        return TriggerResult(detail=detail)

    async def _pulls(self) -> list[dict[str, Any]]:
        client = self._api()
        owner = self.spec.repo.split("/")[0]
        params = {"head": f"{owner}:{self.spec.head}", "state": "all"}
        return await self.timer.api_call(_collect(client.paginate(
            f"/repos/{self.spec.repo}/pulls", params=params, repo=self.spec.repo,
            limit=100)))  # fmt: skip

    def _api(self) -> GitHubClient:
        if self.client is None or not self.spec.repo:
            raise PermanentTriggerError("pull requests need the GitHub API and githubRepo")
        return self.client

    async def _pull_request(
        self, changes: list[tuple[str, Change]], pushed: bool, refresh: bool
    ) -> dict[str, Any]:
        client = self._api()
        fields = self._fields(changes)
        title_t = DEFAULT_BATCH_TITLE if self.spec.window else DEFAULT_TITLE
        body_t = DEFAULT_BATCH_BODY if self.spec.window else DEFAULT_BODY
        title = ghevents.render(str(self.spec.pull_request.title or title_t), fields, self.event)
        body = ghevents.render(str(self.spec.pull_request.body or body_t), fields, self.event)
        existing = next((p for p in await self._pulls() if p.get("state") == "open"), None)
        outcome = "updated"
        if existing is None:
            try:
                existing = await self.timer.api_call(client.call(
                    "POST", f"/repos/{self.spec.repo}/pulls", repo=self.spec.repo, json={
                        "title": title, "head": self.spec.head, "base": self.spec.target,
                        "body": body,
                        "draft": self.spec.pull_request.draft,
                        "maintainer_can_modify": True,
                    }))  # fmt: skip
                outcome = "opened"
            except GitHubApiError as e:
                if e.status != 422 or "already exists" not in json.dumps(e.body):
                    raise
                existing = next(p for p in await self._pulls() if p.get("state") == "open")
        assert existing is not None
        number = int(existing["number"])
        lags = (existing.get("title"), existing.get("body")) != (title, body)
        if outcome == "updated" and (pushed or (refresh and lags)):
            await self.timer.api_call(client.call(
                "PATCH", f"/repos/{self.spec.repo}/pulls/{number}", repo=self.spec.repo,
                json={"title": title, "body": body}))  # fmt: skip
        elif outcome == "updated":
            # after a window: another run of the batch opened it with this bump in it
            outcome = "joined" if refresh else "unchanged"
        await self._decorate(client, number, outcome == "opened")
        return {"outcome": outcome, "pullRequest": number, "url": existing.get("html_url")}

    async def _close(self, number: int) -> int:
        """Close an open promotion PR whose changes the target already holds (or that
        would now go back to what the target holds)."""
        client = self._api()
        note = (f"Closed by eventsvc: `{self.spec.target}` already holds the values of the latest "
                f"promotion event ({self.event.get_type()} `{self.event.get_id()}`).")  # fmt: skip
        await self.timer.api_call(client.call(
            "POST", f"/repos/{self.spec.repo}/issues/{number}/comments", repo=self.spec.repo,
            json={"body": note}))  # fmt: skip
        await self.timer.api_call(client.call(
            "PATCH", f"/repos/{self.spec.repo}/pulls/{number}", repo=self.spec.repo,
            json={"state": "closed"}))  # fmt: skip
        return number

    async def _decorate(self, client: GitHubClient, number: int, new: bool) -> None:
        labels = list(self.spec.pull_request.labels)
        if labels:
            await self.timer.api_call(client.call(
                "POST", f"/repos/{self.spec.repo}/issues/{number}/labels", repo=self.spec.repo,
                json={"labels": labels}))  # fmt: skip
        users = list(self.spec.pull_request.reviewers)
        teams = list(self.spec.pull_request.team_reviewers)
        if new and (users or teams):
            await self.timer.api_call(client.call(
                "POST", f"/repos/{self.spec.repo}/pulls/{number}/requested_reviewers",
                repo=self.spec.repo,
                json={"reviewers": users, "team_reviewers": teams}))  # fmt: skip


async def _collect(items: Any) -> list[dict[str, Any]]:
    return [item async for item in items]


def split_image_ref(ref: str) -> tuple[str, str | None, str | None] | None:
    """(name, tag, digest) of `name[:tag][@digest]`; None when it names neither."""
    name, _, digest = ref.partition("@")
    tag = None
    head, sep, last = name.rpartition(":")
    if sep and "/" not in last:  # a colon in the last segment: a tag, not a registry port
        name, tag = head, last
    if not name or (tag is None and not digest):
        return None
    return name, tag, digest or None


def _ref_part(text: str) -> str:
    """A branch-name component from free text."""
    return _SAFE_REF.sub("-", text).strip("-/.") or "default"


def _window(spec: Mapping[str, Any]) -> float:
    batch = spec.get("batch") or {}
    if "window" not in batch:
        return 0.0
    try:
        return durations.parse_duration(batch["window"])
    except ValueError as e:
        raise PermanentTriggerError(f"batch.window: {e}") from e



