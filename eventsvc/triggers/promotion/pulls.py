"""The pull request of a promotion branch: find it, open or update it, close it when the
target already holds its values, add labels and request reviewers."""

from __future__ import annotations

import json
from typing import Any

from eventsvc.errors import PermanentTriggerError
from eventsvc.events import CloudEvent
from eventsvc.github import ghevents
from eventsvc.github.client import GitHubApiError, GitHubClient
from eventsvc.github.yamledit import Change
from eventsvc.triggers.promotion.spec import (
    DEFAULT_BATCH_BODY,
    DEFAULT_BATCH_TITLE,
    DEFAULT_BODY,
    DEFAULT_TITLE,
    PromotionSpec,
    text_fields,
)
from eventsvc.triggers.promotion.timing import Timer


class PullRequests:
    """The pull request API calls of one run, for the promotion branch `spec.head`."""

    def __init__(
        self, spec: PromotionSpec, event: CloudEvent, client: GitHubClient | None, timer: Timer
    ) -> None:
        self.spec = spec
        self.event = event
        self.client = client
        self.timer = timer

    async def listing(self) -> list[dict[str, Any]]:
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

    async def open_or_update(
        self, changes: list[tuple[str, Change]], pushed: bool, refresh: bool
    ) -> dict[str, Any]:
        client = self._api()
        fields = text_fields(self.spec, self.event, changes)
        title_t = DEFAULT_BATCH_TITLE if self.spec.window else DEFAULT_TITLE
        body_t = DEFAULT_BATCH_BODY if self.spec.window else DEFAULT_BODY
        title = ghevents.render(str(self.spec.pull_request.title or title_t), fields, self.event)
        body = ghevents.render(str(self.spec.pull_request.body or body_t), fields, self.event)
        existing = next((p for p in await self.listing() if p.get("state") == "open"), None)
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
                existing = next(p for p in await self.listing() if p.get("state") == "open")
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

    async def close(self, number: int) -> int:
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
