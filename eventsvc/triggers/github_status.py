"""`githubStatus`: report a state on a commit, as a commit status or a check run.

Repository and sha come from the spec, or from the GitHub event (`repository`,
`pull_request.head.sha`, `after`, `check_suite.head_sha`, ...). Text fields are
templates (`{{ data.pull_request.title }}`) that may also read this trigger's names:
repo, sha, number, sensor, trigger, event_id, event_type, event_source, event_subject
(`{{ number }}`). The old `{number}`, `{data.dotted.path}` still render, for one release.

Event data is written by strangers: a repo that is not `owner/name` or a sha that
is not hex is refused before it becomes part of an API path (`acme/x/../../..`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from eventsvc.errors import PermanentTriggerError
from eventsvc.events import CloudEvent
from eventsvc.github import ghevents
from eventsvc.github.client import check_repo
from eventsvc.templates import NAMES_MARK
from eventsvc.triggers.base import Services, TriggerContext, TriggerResult

# check-run conclusion for each commit-status state
_CONCLUSION = {"success": "success", "failure": "failure", "error": "failure"}
_REPO = {"type": "string", "pattern": r"^[^/\s]+/[^/\s]+$|\{"}
_SHA = re.compile(r"[0-9a-fA-F]{7,64}")
NAMES = ("repo", "sha", "number", "sensor", "trigger", "event_id", "event_type", "event_source",
         "event_subject")  # fmt: skip
"""What `context`, `description` and `targetUrl` (and a comment's body) may read."""
TEXT = {"type": "string", NAMES_MARK: list(NAMES)}
EVENT_ONLY: dict[str, Any] = {NAMES_MARK: []}  # rendered again for the old `{data.a.b}` only
DEFAULT_CONTEXT = "eventsvc/{{ sensor }}/{{ trigger }}"


def feedback_target(spec: Mapping[str, Any], ctx: TriggerContext) -> dict[str, Any]:
    """repo, sha, number (each possibly None) from the spec, else from the first event."""
    event = ctx.first

    def given(key: str) -> str:
        return ghevents.render(str(spec.get(key) or ""), {}, event).strip()

    number = given("number")
    if number and not (number.isascii() and number.isdigit()):
        raise PermanentTriggerError(f"number {number!r} is not a PR or issue number")
    repo, sha = given("repo"), given("sha")
    if repo:
        check_repo(repo, "repo")
    elif repo := ghevents.repo_of(event) or "":
        check_repo(repo, "repo", f" (from event {event.get_id()}, repository.full_name)")
    if sha and not _SHA.fullmatch(sha):
        shown = repr(sha if len(sha) <= 100 else sha[:100] + "...")
        raise PermanentTriggerError(f"sha: {shown} is not a commit sha (7 to 64 hex digits); "
                                    "refused. Point sha at one, e.g. "
                                    "{{ data.pull_request.head.sha }}")  # fmt: skip
    return {
        "repo": repo or None,
        "sha": sha or ghevents.sha_of(event),
        "number": int(number) if number else ghevents.pr_number_of(event),
        "sensor": ctx.sensor,
        "trigger": ctx.trigger,
        **ghevents.event_fields(event),
    }


def target_of(spec: Mapping[str, Any], first: CloudEvent | None, what: str) -> str:
    """`owner/name@sha` or `owner/name#number` as far as the spec and the event tell."""
    repo = spec.get("repo") or (ghevents.repo_of(first) if first is not None else None)
    if what == "sha":
        sha = spec.get("sha") or (ghevents.sha_of(first) if first is not None else None)
        return f"{repo or '<repo from the event>'}@{sha or '<sha from the event>'}"
    number = spec.get("number") or (ghevents.pr_number_of(first) if first is not None else None)
    return f"{repo or '<repo from the event>'}#{number or '<number from the event>'}"


def where(
    spec: Mapping[str, Any], ctx: TriggerContext, key: str
) -> tuple[dict[str, Any], str, Any]:
    """The names for the texts (`feedback_target`), the repo, and `key` ("sha" or "number"),
    both required."""
    fields = feedback_target(spec, ctx)
    return fields, need(fields, "repo", ctx), need(fields, key, ctx)


def need(fields: Mapping[str, Any], key: str, ctx: TriggerContext) -> Any:
    if fields.get(key) in (None, ""):
        raise PermanentTriggerError(
            f"no {key!r}: not in the trigger spec and event {ctx.first.get_id()} "
            f"({ctx.first.get_type()}) does not carry one; set {key} in the spec"
        )
    return fields[key]


@dataclass(frozen=True, slots=True)
class StatusSpec:
    """The rendered `githubStatus` section, parsed once (`parse`): where the state goes and
    its texts, rendered with this trigger's names."""

    repo: str
    sha: str
    state: str
    context: str
    description: str
    target_url: str
    check_run: bool

    @classmethod
    def parse(cls, spec: Mapping[str, Any], ctx: TriggerContext) -> StatusSpec:
        fields, repo, sha = where(spec, ctx, "sha")
        state = str(spec["state"])
        name = ghevents.render(str(spec.get("context") or DEFAULT_CONTEXT), fields)
        text = ghevents.render(str(spec.get("description", "")), fields, ctx.first)
        url = ghevents.render(str(spec.get("targetUrl", "")), fields, ctx.first)
        return cls(repo, sha, state, name, text, url, bool(spec.get("checkRun")))


class GitHubStatusTrigger:
    key: ClassVar[str] = "githubStatus"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["state"],
        "properties": {
            "repo": {**_REPO, **EVENT_ONLY, "description": "owner/name (default: from the event)"},
            "sha": {"type": "string", **EVENT_ONLY,
                    "description": "commit (default: from the event)"},
            "state": {"enum": ["pending", "success", "failure", "error"]},
            "context": {**TEXT, "minLength": 1,
                        "description": "status name (default eventsvc/<sensor>/<trigger>)"},
            "description": TEXT,
            "targetUrl": TEXT,
            "checkRun": {"type": "boolean",
                         "description": "a check run instead of a status (GitHub App only)"},
        },
    }  # fmt: skip

    def __init__(self, services: Services) -> None:
        self.services = services

    @classmethod
    def explain(cls, spec: Mapping[str, Any], first: CloudEvent | None) -> str:
        return f"sets commit status {spec.get('state')!r} on {target_of(spec, first, 'sha')}"

    @classmethod
    def check(cls, spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        url = spec.get("targetUrl")
        if isinstance(url, str) and url and not url.startswith(("http://", "https://", "{")):
            return [(("targetUrl",), f"{url!r} is not an http(s) URL")]
        return []

    async def execute(self, spec: Mapping[str, Any], ctx: TriggerContext) -> TriggerResult:
        parsed = StatusSpec.parse(spec, ctx)
        repo, sha, state = parsed.repo, parsed.sha, parsed.state
        name, text, url = parsed.context, parsed.description, parsed.target_url
        client = self.services.github
        if parsed.check_run:
            body: dict[str, Any] = {
                "name": name, "head_sha": sha,
                "status": "in_progress" if state == "pending" else "completed",
                "output": {"title": text or state, "summary": text or state},
            }  # fmt: skip
            if state != "pending":
                body["conclusion"] = _CONCLUSION[state]
            if url:
                body["details_url"] = url
            made = await client.call("POST", f"/repos/{repo}/check-runs", json=body, repo=repo)
            return TriggerResult(detail={"repo": repo, "sha": sha, "checkRun": made.get("id"),
                                         "state": state})  # fmt: skip
        status: dict[str, Any] = {"state": state, "context": name}
        if text:
            status["description"] = text[:140]  # GitHub's limit
        if url:
            status["target_url"] = url
        await client.call("POST", f"/repos/{repo}/statuses/{sha}", json=status, repo=repo)
        return TriggerResult(detail={"repo": repo, "sha": sha, "state": state, "context": name})
