"""`promotion` with `batch.window`: bumps for one environment gather in one PR.

The trigger's clock is replaced: `now` is a number the test moves, and `sleep`
(the wait for the window to close) runs whatever the test wants to happen meanwhile.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from eventsvc.triggers.promotion import Clock, PromotionTrigger
from tests.github.deployrepo import git, show
from tests.github.fakegithub import FakeGitHub
from tests.triggers.test_promotion import (
    REPO,
    STAGING_FILE,
    ctx,
    deploy,
    fake,
    make_trigger,
    release,
    spec,
)

__all__ = ["deploy", "fake", "make_trigger"]  # fixtures shared with test_promotion
BRANCH = "eventsvc/promote-batch/staging"


class FakeClock:
    """Time stands still unless a sleep moves it; `during_sleep` runs inside the wait."""

    def __init__(self) -> None:
        self.t = 1_000_000.0
        self.waits: list[float] = []
        self.during_sleep: list[Callable[[], Awaitable[Any]]] = []

    def clock(self) -> Clock:
        return Clock(now=lambda: self.t, sleep=self.sleep)

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.during_sleep:
            await self.during_sleep.pop(0)()
        self.t += seconds


def batched(url: str, app: str, tag: str) -> dict[str, Any]:
    edit = {"file": STAGING_FILE, "image": {"name": f"ghcr.io/acme/{app}", "newTag": tag}}
    return spec(url, app=app, edits=[edit], batch={"window": "30s"})


async def test_bumps_within_the_window_make_one_pr(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger]
) -> None:
    bare, url = deploy
    clock = FakeClock()
    first, second = make_trigger(), make_trigger()  # two replicas
    first.clock = second.clock = clock.clock()
    seen_during_window: list[int] = []

    async def worker_bump_arrives() -> None:
        seen_during_window.append(len(fake.pulls.get(REPO, [])))
        clock.t += 10  # 10 s into the window
        result = await second.execute(batched(url, "worker", "2.1.0"), ctx(release("x", "w")))
        assert result.detail["outcome"] == "opened"  # it waited for the rest of the window
        clock.t -= 10

    clock.during_sleep.append(worker_bump_arrives)
    result = await first.execute(batched(url, "shop", "1.5.0"), ctx(release("x", "s")))
    assert seen_during_window == [0]  # no PR while the window was open
    assert clock.waits == [30.0, 20.0]
    assert result.detail["outcome"] == "joined"
    [pull] = fake.pulls[REPO]
    assert pull["head"]["ref"] == BRANCH
    assert pull["title"] == "Promote to staging: shop 1.5.0, worker 2.1.0"
    assert "**shop** `overlays/staging/kustomization.yaml`" in pull["body"]
    assert "**worker** `overlays/staging/kustomization.yaml`" in pull["body"]
    text = show(bare, BRANCH, STAGING_FILE)
    assert 'newTag: "1.5.0"' in text and "newTag: 2.1.0" in text
    assert git(bare, "rev-list", "--count", f"main..{BRANCH}").strip() == "1"

    # after the window: the next bump joins the open PR at once, as a new commit
    before = git(bare, "rev-parse", BRANCH)
    clock.t += 120
    late = await first.execute(batched(url, "shop", "1.6.0"), ctx(release("x", "s2")))
    assert late.detail["outcome"] == "updated"
    assert late.detail["pullRequest"] == pull["number"]
    assert clock.waits == [30.0, 20.0]  # no new wait
    assert git(bare, "rev-parse", BRANCH) != before
    assert len(fake.pulls[REPO]) == 1
    assert "shop 1.6.0, worker 2.1.0" in fake.pulls[REPO][0]["title"]
    text = show(bare, BRANCH, STAGING_FILE)
    assert 'newTag: "1.6.0"' in text and "newTag: 2.1.0" in text


async def test_a_bump_is_not_lost_when_the_process_dies_mid_window(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger]
) -> None:
    bare, url = deploy
    clock = FakeClock()
    trigger = make_trigger()
    trigger.clock = clock.clock()

    async def process_dies() -> None:
        raise SystemExit("killed")

    clock.during_sleep.append(process_dies)
    with pytest.raises(SystemExit):
        await trigger.execute(batched(url, "shop", "1.5.0"), ctx(release("x", "s")))
    assert 'newTag: "1.5.0"' in show(bare, BRANCH, STAGING_FILE)  # already in git
    assert fake.pulls.get(REPO, []) == []

    clock.t += 60  # the event comes back after the ack wait, on a fresh replica
    again = make_trigger()
    again.clock = clock.clock()
    result = await again.execute(batched(url, "shop", "1.5.0"), ctx(release("x", "s")))
    assert result.detail["outcome"] == "opened"
    assert clock.waits == [30.0]  # the window was over: no second wait
    [pull] = fake.pulls[REPO]
    assert "**shop**" in pull["body"] and "1.5.0" in pull["title"]


async def test_unchanged_bump_in_batch_opens_nothing(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger]
) -> None:
    _, url = deploy
    clock = FakeClock()
    trigger = make_trigger()
    trigger.clock = clock.clock()
    result = await trigger.execute(batched(url, "shop", "1.4.0"), ctx(release("x")))
    assert result.detail["outcome"] == "unchanged"
    assert clock.waits == []
    assert fake.requests and fake.calls("POST", f"/repos/{REPO}/pulls") == []


def test_check_reports_batch_mistakes() -> None:
    base = {"repo": "file:///x", "githubRepo": "a/b", "edits": []}
    problems = PromotionTrigger.check({**base, "batch": {"window": "soon"}})
    assert [(p, m[:20]) for p, m in problems] == [(("batch", "window"), "'soon' is not a dura")]
    problems = PromotionTrigger.check({**base, "batch": {"window": "30s"},
                                       "pullRequest": {"enabled": False}})  # fmt: skip
    assert problems and "enable pullRequest" in problems[0][1]
