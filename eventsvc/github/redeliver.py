"""Ask GitHub to redeliver webhook deliveries that failed: GitHub itself never retries.

Lists a hook's recent deliveries (a repository hook, or the GitHub App's hook),
picks those that failed (HTTP status >= 400, or 0 for a timeout or refused
connection) within the window and whose GUID has not succeeded since (a later
redelivery), and posts one redelivery attempt each. The gateway recognises a
redelivered event by its delivery id, so a redelivery of something that did
arrive is stored once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from eventsvc.github.client import GitHubApiError, GitHubClient, GitHubRetryableError


@dataclass(frozen=True, slots=True)
class Hook:
    repo: str | None = None  # None: the GitHub App's webhook
    hook_id: int | None = None

    @property
    def path(self) -> str:
        if self.repo is None:
            return "/app/hook/deliveries"
        return f"/repos/{self.repo}/hooks/{self.hook_id}/deliveries"

    @property
    def auth(self) -> str:
        return "app" if self.repo is None else "installation"

    def __str__(self) -> str:
        return "app hook" if self.repo is None else f"{self.repo} hook {self.hook_id}"


@dataclass(slots=True)
class Summary:
    failed: int = 0
    redelivered: int = 0
    errors: int = 0
    skipped: int = 0  # failed, but the same GUID succeeded later
    lines: list[str] = field(default_factory=list)


def delivered_at(item: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(item["delivered_at"]).replace("Z", "+00:00"))


def is_failure(item: Mapping[str, Any]) -> bool:
    code = item.get("status_code")
    return not isinstance(code, int) or code == 0 or code >= 400


def pick(items: list[Mapping[str, Any]], since: datetime) -> tuple[list[Mapping[str, Any]], int]:
    """(deliveries to redeliver, how many failed GUIDs already succeeded later).

    One per GUID: its latest failed attempt in the window, unless an attempt of the
    same GUID after it succeeded (or a redelivery of it is already on its way).
    """
    by_guid: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        by_guid.setdefault(str(item.get("guid")), []).append(item)
    chosen, skipped = [], 0
    for attempts in by_guid.values():
        attempts.sort(key=delivered_at)
        failed = [a for a in attempts if is_failure(a) and delivered_at(a) >= since]
        if not failed:
            continue
        last = failed[-1]
        if any(not is_failure(a) for a in attempts if delivered_at(a) >= delivered_at(last)):
            skipped += 1
            continue
        if last is not attempts[-1]:
            skipped += 1  # a newer attempt exists (e.g. still pending): leave it
            continue
        chosen.append(last)
    chosen.sort(key=delivered_at)
    return chosen, skipped


async def list_deliveries(
    client: GitHubClient, hook: Hook, since: datetime
) -> list[Mapping[str, Any]]:
    """Deliveries newer than `since` (GitHub lists newest first, `cursor` paginated)."""
    out: list[Mapping[str, Any]] = []
    async for item in client.paginate(hook.path, repo=hook.repo, auth=hook.auth):
        if delivered_at(item) < since:
            break
        out.append(item)
    return out


async def hooks_of(client: GitHubClient, repo: str) -> list[Hook]:
    return [Hook(repo, int(h["id"])) async for h in client.paginate(f"/repos/{repo}/hooks",
                                                                    repo=repo)]  # fmt: skip


async def redeliver(
    client: GitHubClient,
    hooks: list[Hook],
    since: datetime,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> Summary:
    summary = Summary()
    for hook in hooks:
        items = await list_deliveries(client, hook, since)
        chosen, skipped = pick(items, since)
        summary.skipped += skipped
        summary.failed += len(chosen) + skipped
        for i, item in enumerate(chosen, 1):
            what = (f"[{i}/{len(chosen)}] {hook}: delivery {item['id']} {item.get('event')}"
                    f"{'.' + str(item['action']) if item.get('action') else ''} "
                    f"guid {item.get('guid')} at {item.get('delivered_at')} "
                    f"(status {item.get('status_code')})")  # fmt: skip
            if dry_run:
                echo(f"would redeliver {what}")
                continue
            try:
                await client.call("POST", f"{hook.path}/{item['id']}/attempts", repo=hook.repo,
                                  auth=hook.auth)  # fmt: skip
            except (GitHubApiError, GitHubRetryableError) as e:
                summary.errors += 1
                echo(f"FAILED   {what}: {e}")
                continue
            summary.redelivered += 1
            echo(f"redelivered {what}")
    return summary


def since_from(seconds: float, now: datetime | None = None) -> datetime:
    return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
