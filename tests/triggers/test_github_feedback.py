"""`githubStatus` and `githubComment` against the local GitHub API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventsvc import events
from eventsvc.config import load_config
from eventsvc.errors import PermanentTriggerError
from eventsvc.github.client import GitHubClient, GitHubSettings
from eventsvc.triggers import Services, TriggerContext
from eventsvc.triggers.github_comment import GitHubCommentTrigger
from eventsvc.triggers.github_status import GitHubStatusTrigger
from tests.conftest import pr_payload
from tests.github import fakegithub
from tests.github.fakegithub import FakeGitHub

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    async with fakegithub.serve(FakeGitHub()) as fake:
        yield fake


@pytest.fixture
async def services(fake: FakeGitHub) -> AsyncIterator[Services]:
    services = Services(load_config(environ={}))
    services.github = GitHubClient(
        GitHubSettings(api_url=fake.url, token=fakegithub.PAT)
    )
    yield services
    await services.close()


def pr_event(**extra: Any) -> TriggerContext:
    event = events.make_event(
        {"specversion": "1.0", "id": "d1", "type": "com.github.pull_request.opened",
         "source": "https://github.com/acme/shop", "subject": "7",
         "datacontenttype": "application/json"},
        pr_payload(**extra),
    )  # fmt: skip
    return TriggerContext("pr-environments", "report", {"pr": event})


async def test_status_from_the_pr_event(fake: FakeGitHub, services: Services) -> None:
    spec = {"state": "success", "description": "preview for #{number} is up",
            "targetUrl": "https://pr-{number}.preview.example"}  # fmt: skip
    result = await GitHubStatusTrigger(services).execute(spec, pr_event())
    [status] = fake.statuses
    assert (status["repo"], status["sha"], status["state"]) == ("acme/shop", SHA, "success")
    assert status["context"] == "eventsvc/pr-environments/report"
    assert status["description"] == "preview for #7 is up"
    assert status["target_url"] == "https://pr-7.preview.example"
    assert result.detail["sha"] == SHA


async def test_check_run(fake: FakeGitHub, services: Services) -> None:
    spec = {"state": "failure", "checkRun": True, "context": "preview",
            "description": "deploy of {data.pull_request.head.ref} failed"}  # fmt: skip
    await GitHubStatusTrigger(services).execute(spec, pr_event())
    [run] = fake.check_runs
    assert (run["name"], run["head_sha"], run["status"], run["conclusion"]) == (
        "preview", SHA, "completed", "failure")
    assert run["output"]["summary"] == "deploy of feature/checkout failed"


async def test_status_without_sha_says_what_to_set(services: Services) -> None:
    event = events.make_event({"specversion": "1.0", "id": "x", "type": "com.example.ping",
                               "source": "https://ci.example"}, {"a": 1})  # fmt: skip
    with pytest.raises(PermanentTriggerError, match=r"no 'repo'.*set repo in the spec"):
        await GitHubStatusTrigger(services).execute(
            {"state": "pending"}, TriggerContext("s", "t", {"d": event}))


async def test_sticky_comment_updated_not_duplicated(
    fake: FakeGitHub, services: Services
) -> None:
    trigger = GitHubCommentTrigger(services)
    for i in range(3):  # other people's comments push ours off the first page
        fake.comments.setdefault("acme/shop#7", []).append({"id": i, "body": f"lgtm {i}"})
    spec = {"body": "Preview: https://pr-{number}.preview.example ({data.action})"}
    first = await trigger.execute(spec, pr_event())
    assert first.detail["outcome"] == "created"
    again = await trigger.execute(spec, pr_event())
    assert again.detail["outcome"] == "unchanged"
    updated = await trigger.execute(spec, pr_event(action="synchronize"))
    assert updated.detail["outcome"] == "updated"
    ours = [c for c in fake.comments["acme/shop#7"] if "eventsvc:" in c["body"]]
    assert len(ours) == 1
    assert ours[0]["body"] == ("Preview: https://pr-7.preview.example (synchronize)\n\n"
                               "<!-- eventsvc:pr-environments/report -->\n")  # fmt: skip
    assert len(fake.calls("POST", "/repos/acme/shop/issues/7/comments")) == 1
    assert len(fake.calls("PATCH", "/repos/acme/shop/issues/comments/")) == 1
    assert any(r.query.get("page") == "2" for r in fake.calls("GET", "/repos/acme/shop/issues"))


async def test_two_triggers_keep_two_comments(fake: FakeGitHub, services: Services) -> None:
    trigger = GitHubCommentTrigger(services)
    await trigger.execute({"body": "env"}, pr_event())
    await trigger.execute({"body": "tests", "marker": "tests"}, pr_event())
    assert len(fake.comments["acme/shop#7"]) == 2


async def test_sha_placeholder_from_event(fake: FakeGitHub, services: Services) -> None:
    ctx = pr_event(action="closed")
    ctx.first.get_data()["pull_request"]["merge_commit_sha"] = "f" * 40
    spec = {"state": "pending", "sha": "{data.pull_request.merge_commit_sha}"}
    await GitHubStatusTrigger(services).execute(spec, ctx)
    assert fake.statuses[0]["sha"] == "f" * 40


def test_example_sensors_lint() -> None:
    from pathlib import Path

    from eventsvc import loader

    loaded = loader.load_paths([Path(__file__).parents[2] / "sensors" / "promotion.yaml"])
    assert loaded.problems == []
    assert {s.name for s in loaded.sensors} == {
        "promote-staging", "promote-production", "promote-branches", "promote-on-healthy"}
