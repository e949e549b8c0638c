"""The `promotion` section, parsed once: `parse` reads and checks the rendered section
into a frozen PromotionSpec that the run uses instead of the raw mapping; and the names
the commit message and the pull request's texts may read."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventsvc import durations
from eventsvc.errors import PermanentTriggerError
from eventsvc.events import CloudEvent
from eventsvc.github import ghevents
from eventsvc.github.client import check_repo, parse_repo
from eventsvc.github.gitops import Author, check_branch, check_url
from eventsvc.github.yamledit import Change

_SAFE_REF = re.compile(r"[^A-Za-z0-9._/-]+")

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
    for path, value in branch_fields(spec):
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


def branch_fields(spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], Any]]:
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


def text_fields(
    spec: PromotionSpec, event: CloudEvent, changes: Sequence[tuple[str, Change]]
) -> dict[str, Any]:
    """What the commit message and the pull request's texts read (`NAMES`)."""
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
        **ghevents.event_fields(event),
    }  # fmt: skip


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
