"""`githubComment`: one sticky comment on a pull request (or issue), kept up to date.

The comment carries a hidden marker `<!-- eventsvc:<sensor>/<trigger> -->`; a run
finds the comment by that marker and edits it, or creates it the first time, so
a PR gets one comment per trigger however often the trigger fires. The body
reads the same names as `githubStatus` texts (`{{ number }}`, `{{ sensor }}`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from eventsvc.events import CloudEvent
from eventsvc.github import ghevents
from eventsvc.github.client import GitHubClient
from eventsvc.triggers.base import Services, TriggerContext, TriggerResult
from eventsvc.triggers.github_status import EVENT_ONLY, TEXT, target_of, where

_REPO = {"type": "string", "pattern": r"^[^/\s]+/[^/\s]+$|\{"}


def marker(name: str) -> str:
    return f"<!-- eventsvc:{name} -->"


@dataclass(frozen=True, slots=True)
class CommentSpec:
    """The rendered `githubComment` section, parsed once (`parse`): where the comment goes,
    its marker and its body, rendered with this trigger's names and ending in the marker."""

    repo: str
    number: int
    marker: str
    body: str

    @classmethod
    def parse(cls, spec: Mapping[str, Any], ctx: TriggerContext) -> CommentSpec:
        fields, repo, number = where(spec, ctx, "number")
        tag = marker(str(spec.get("marker") or f"{ctx.sensor}/{ctx.trigger}"))
        body = ghevents.render(str(spec["body"]), fields, ctx.first).rstrip() + f"\n\n{tag}\n"
        return cls(repo, number, tag, body)


class GitHubCommentTrigger:
    key: ClassVar[str] = "githubComment"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["body"],
        "properties": {
            "repo": {**_REPO, **EVENT_ONLY, "description": "owner/name (default: from the event)"},
            "number": {"type": ["integer", "string"], **EVENT_ONLY,
                       "description": "PR or issue number (default: from the event)"},
            "body": {**TEXT, "minLength": 1, "description": "Markdown"},
            "marker": {"type": "string", "pattern": r"^[A-Za-z0-9_./\-]+$",
                       "description": "sticky key (default <sensor>/<trigger>)"},
        },
    }  # fmt: skip

    def __init__(self, services: Services) -> None:
        self.services = services
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def explain(cls, spec: Mapping[str, Any], first: CloudEvent | None) -> str:
        return (f"creates or updates its one comment on {target_of(spec, first, 'number')} "
                "(found again by its marker)")  # fmt: skip

    @classmethod
    def check(cls, spec: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
        return []

    async def execute(self, spec: Mapping[str, Any], ctx: TriggerContext) -> TriggerResult:
        parsed = CommentSpec.parse(spec, ctx)
        repo, number, tag, body = parsed.repo, parsed.number, parsed.marker, parsed.body
        client = self.services.github
        # one replica never races itself into two comments; see the docs for many replicas
        async with self._locks.setdefault(f"{repo}#{number}#{tag}", asyncio.Lock()):
            existing = await self._find(client, repo, int(number), tag)
            if existing is None:
                made = await client.call("POST", f"/repos/{repo}/issues/{number}/comments",
                                         json={"body": body}, repo=repo)  # fmt: skip
                detail = {"repo": repo, "number": number, "comment": made.get("id")}
                return TriggerResult(detail={**detail, "outcome": "created"})
            if existing.get("body") == body:
                outcome = "unchanged"
            else:
                await client.call("PATCH", f"/repos/{repo}/issues/comments/{existing['id']}",
                                  json={"body": body}, repo=repo)  # fmt: skip
                outcome = "updated"
        return TriggerResult(detail={"repo": repo, "number": number, "comment": existing["id"],
                                     "outcome": outcome})  # fmt: skip

    async def _find(
        self, client: GitHubClient, repo: str, number: int, tag: str
    ) -> Mapping[str, Any] | None:
        async for comment in client.paginate(f"/repos/{repo}/issues/{number}/comments",
                                             repo=repo):  # fmt: skip
            if isinstance(comment, Mapping) and tag in str(comment.get("body") or ""):
                return comment
        return None
