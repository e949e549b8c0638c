"""One promotion run: this event's edits, with those still pending on the promotion
branch, in one commit on top of the target branch, pushed with a lease and tried again
when the push is rejected; then the pull request, and the result."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsvc import logs
from eventsvc.errors import (
    ExternalError,
    PermanentTriggerError,
    TemporaryTriggerError,
    TriggerError,
)
from eventsvc.events import CloudEvent
from eventsvc.github import ghevents, promotecommit
from eventsvc.github.client import GitHubClient
from eventsvc.github.gitops import Git
from eventsvc.github.mirror import Mirror, Mirrors
from eventsvc.github.promotecommit import Edit, Snapshot
from eventsvc.github.yamledit import Change
from eventsvc.triggers.base import TriggerContext, TriggerResult
from eventsvc.triggers.promotion.edits import Edits
from eventsvc.triggers.promotion.pulls import PullRequests
from eventsvc.triggers.promotion.spec import PromotionSpec, text_fields
from eventsvc.triggers.promotion.timing import Clock, Timer

log = logs.get("eventsvc.triggers.promotion")


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
        self.edits = Edits(spec, self.event)
        self.pull_requests = PullRequests(spec, self.event, client, self.timer)

    async def _git(self, mirror: Mirror) -> Git:
        """Git on the repository; a token only when it is https on the configured GitHub
        (a URL from event data may name any host: that host gets no credentials)."""
        spec = self.spec
        if self.client is None:
            return Git(spec.url, mirror.path, None, spec.author, allow_file=self.allow_file)
        token = await self.timer.api_call(self.client.git_token(spec.url, spec.repo or None))
        return Git(spec.url, mirror.path, token, spec.author, allow_file=self.allow_file,
                   token_hosts=self.client.settings.git_hosts())  # fmt: skip

    async def stage(self, mirror: Mirror, own: bool) -> Staged:
        """Push this event's edits (`own`), with those pending on the branch, on top of
        the target; `own=False` only brings the pending ones up to date."""
        git = await self._git(mirror)
        remote = self._remembered(mirror, own)
        optimistic = remote is not None
        if remote is not None:
            pulls = await self.pull_requests.listing() if self.spec.use_pr else []
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
        if own and self.edits.copy_branches():
            return None
        head = mirror.tips.get(self.spec.head) if self.spec.use_pr else None
        return {self.spec.target: target} | ({self.spec.head: head} if head is not None else {})

    async def _tips_and_pulls(
        self, git: Git, mirror: Mirror, own: bool
    ) -> tuple[dict[str, str], list[dict[str, Any]]]:
        branches = [self.spec.target, self.spec.head, *(self.edits.copy_branches() if own else [])]
        try:
            async with asyncio.TaskGroup() as group:  # two round trips at once
                prs = self.pull_requests
                listing = group.create_task(prs.listing()) if self.spec.use_pr else None
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
        sources = self.edits.copy_branches() if own else []
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
        sources_read = self.edits.copy_sources(remote)
        await snap.load([*tips.values(), *snap.names(target, files), *sources_read])
        if any(snap.get(sha) is None for sha in tips.values()):
            mirror.present.difference_update(tips.values())
            return "stale"
        mirror.saw(tips.values())
        head = snap.get(head_sha) if carry and head_sha is not None else None
        carried, since = promotecommit.read_trailers(head) if head is not None else ([], None)
        edits = self.edits.resolve(snap, remote) if own else []
        mine = {e.key: e for e in edits}  # a new value replaces a pending one in place
        all_edits = [mine.pop(e.key, e) for e in carried] + list(mine.values())
        await snap.load(snap.names(target, [e.file for e in all_edits]))
        texts, changes = self.edits.apply(snap, target, all_edits)
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

    def _commit_message(
        self, changes: Sequence[tuple[str, Change]], edits: Sequence[Edit], since: float
    ) -> str:
        fields = text_fields(self.spec, self.event, changes)
        subject = ghevents.render(self.spec.message, fields, self.event).strip()
        body = "\n".join(str(c) for _, c in changes)
        trailers = promotecommit.trailers(edits, since if self.spec.window else None)
        return f"{subject}\n\n{body}\n\n{trailers}\n"

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
                detail["closedPullRequest"] = await self.pull_requests.close(int(stale["number"]))
        elif not self.spec.use_pr:
            detail["outcome"] = "pushed" if staged.pushed else "unchanged"
        else:
            pulled = await self.pull_requests.open_or_update(staged.changes, staged.pushed, refresh)
            detail.update(pulled)
            if self.spec.window:
                closes = staged.since + self.spec.window
                detail["batch"] = {"since": round(staged.since, 3), "closes": round(closes, 3)}
        detail.update(gitSeconds=round(self.timer.git, 4), apiSeconds=round(self.timer.api, 4))
        log.info("promotion done", **{k: v for k, v in detail.items() if k != "changes"})
        return TriggerResult(detail=detail)
