"""`githubStatus` and `githubComment` when event data is hostile.

The repo and sha of an API path may come from the event (`repository.full_name`) or
from spec placeholders rendered with it; a value that is not `owner/name` or a sha
is refused before any request. A next-page link off the configured API stops the
sticky comment's search with an error: no token for that host, and no duplicate
comment made because the search ended early.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventsvc import events
from eventsvc.config import load_config
from eventsvc.errors import PermanentTriggerError, RefusedValueError
from eventsvc.github.client import GitHubApiError, GitHubClient, GitHubSettings
from eventsvc.triggers import Services, TriggerContext
from eventsvc.triggers.github_comment import GitHubCommentTrigger, marker
from eventsvc.triggers.github_status import GitHubStatusTrigger
from tests.conftest import pr_payload
from tests.github import fakegithub
from tests.github.fakegithub import FakeGitHub
from tests.github.hosts import Host, serve_host


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


@pytest.fixture
async def other() -> AsyncIterator[Host]:
    async with serve_host() as host:
        yield host


def pr_event(full_name: str = "acme/shop", title: str = "Add checkout") -> TriggerContext:
    payload: dict[str, Any] = pr_payload()
    payload["repository"]["full_name"] = full_name
    payload["pull_request"]["title"] = title
    event = events.make_event(
        {"specversion": "1.0", "id": "d1", "type": "com.github.pull_request.opened",
         "source": "https://github.com/acme/shop", "datacontenttype": "application/json"},
        payload,
    )  # fmt: skip
    return TriggerContext("pr", "report", {"pr": event})


@pytest.mark.parametrize("full_name", ["acme/shop/../../../user/repos", "acme/shop?x=1",
                                       "../app", "acme/..", "acme/shop#frag"])  # fmt: skip
async def test_a_repository_name_from_the_event_is_checked(
    full_name: str, fake: FakeGitHub, services: Services
) -> None:
    for trigger, spec in ((GitHubStatusTrigger(services), {"state": "success"}),
                          (GitHubCommentTrigger(services), {"body": "hi"})):  # fmt: skip
        with pytest.raises(RefusedValueError) as info:
            await trigger.execute(spec, pr_event(full_name))
        assert str(info.value).startswith(
            f"repo: {full_name!r} (from event d1, repository.full_name) is not owner/name")
        assert "Give owner/name, e.g. acme/deploy" in str(info.value)
    assert fake.requests == []


async def test_placeholders_rendered_from_the_event_are_checked(
    fake: FakeGitHub, services: Services
) -> None:
    ctx = pr_event(title="../../../../user/repos")
    status = GitHubStatusTrigger(services)
    with pytest.raises(PermanentTriggerError, match=r"^sha: '../../../../user/repos' is not a "
                                                    r"commit sha"):  # fmt: skip
        await status.execute({"state": "success", "sha": "{data.pull_request.title}"}, ctx)
    with pytest.raises(RefusedValueError, match=r"^repo: 'acme/../../../../user/repos' "):
        await status.execute({"state": "success", "repo": "acme/{data.pull_request.title}"}, ctx)
    assert fake.requests == []
    await status.execute({"state": "success"}, pr_event())  # honest values still work
    assert [s["repo"] for s in fake.statuses] == ["acme/shop"]


async def test_the_sticky_comment_search_stops_at_a_link_to_another_host(
    fake: FakeGitHub, services: Services, other: Host
) -> None:
    existing = [{"id": i, "body": f"someone else {i}"} for i in range(4)]
    fake.comments["acme/shop#7"] = list(existing)
    fake.link_base = other.url
    with pytest.raises(GitHubApiError, match="outside the configured GitHub API"):
        await GitHubCommentTrigger(services).execute({"body": "preview is up"}, pr_event())
    assert other.seen == []
    assert fake.comments["acme/shop#7"] == existing  # no second sticky comment made
    fake.link_base = None
    result = await GitHubCommentTrigger(services).execute({"body": "preview is up"}, pr_event())
    assert result.detail["outcome"] == "created"
    assert marker("pr/report") in fake.comments["acme/shop#7"][-1]["body"]
