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
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, ClassVar
from urllib.parse import urlsplit

from eventsvc import durations, logs
from eventsvc.events import CloudEvent
from eventsvc.github.client import GitHubClient, parse_repo, repo_problem
from eventsvc.github.gitops import branch_problem, url_problem
from eventsvc.templates import NAMES_MARK
from eventsvc.triggers.base import Services, TriggerContext, TriggerResult
from eventsvc.triggers.promotion.edits import split_image_ref
from eventsvc.triggers.promotion.run import PromotionRun
from eventsvc.triggers.promotion.spec import (
    NAMES,
    PromotionSpec,
    PullRequestSettings,
    branch_fields,
    parse,
)
from eventsvc.triggers.promotion.timing import Clock

__all__ = ["NAMES", "Clock", "PromotionSpec", "PromotionTrigger", "PullRequestSettings",
           "parse", "split_image_ref"]  # fmt: skip

log = logs.get("eventsvc.triggers.promotion")
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


def _check_literals(spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """URL, branch and repository values written in the spec (not `{{ }}`): refused at
    load time already. Rendered values are checked again by each run."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    # whether file:// is allowed is the service's setting, checked by the run
    checks: list[tuple[tuple[str | int, ...], Any, Callable[[str], str | None]]] = [
        (("repo",), spec.get("repo"), partial(url_problem, allow_file=True)),
        (("githubRepo",), spec.get("githubRepo"), repo_problem),
        *((path, value, branch_problem) for path, value in branch_fields(spec)),
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
