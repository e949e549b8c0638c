"""End to end, the shipped sensors/pr-environments.yaml: a signed pull_request webhook →
Namespace + Application in the fake Kubernetes API → the trigger's result → a sticky
comment with the URL and a commit status on the fake GitHub; closed → comment updated."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventsvc.bus.embedded import EmbeddedNats
from tests.conftest import RunningService, post_github
from tests.github import fakegithub
from tests.github.fakegithub import FakeGitHub
from tests.triggers.conftest import FakeCluster
from tests.triggers.test_environment_e2e import APP, eventually, pr

ROOT = Path(__file__).resolve().parents[2]
URL = "https://pr-7.preview.example.com"


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with fakegithub.serve(FakeGitHub()) as fake:
        yield fake


@pytest.fixture
async def service(
    kubeapi: FakeCluster,
    github: FakeGitHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nats_server: EmbeddedNats,
    start_service: Callable[..., Awaitable[RunningService]],
) -> RunningService:
    monkeypatch.setenv("EVENTSVC_KUBECONFIG", str(kubeapi.kubeconfig))
    monkeypatch.setenv("EVENTSVC_GITHUB_API_URL", github.url)
    monkeypatch.setenv("EVENTSVC_GITHUB_TOKEN", fakegithub.PAT)
    (tmp_path / "sensors").mkdir()
    shutil.copy(ROOT / "sensors" / "pr-environments.yaml", tmp_path / "sensors")
    return await start_service(nats_url=nats_server.url)


def comments(github: FakeGitHub) -> list[dict[str, Any]]:
    return github.comments.get("acme/shop#7", [])


def preview_statuses(github: FakeGitHub) -> list[tuple[str, str, str, str]]:
    return [(s["repo"], s["sha"], s["state"], s.get("target_url", ""))
            for s in github.statuses if s["context"] == "eventsvc/preview"]  # fmt: skip


async def test_preview_url_is_reported_on_the_pull_request(
    kubeapi: FakeCluster, github: FakeGitHub, service: RunningService
) -> None:
    api = kubeapi.api
    async with aiohttp.ClientSession() as http:
        resp = await post_github(http, service.url, "pull_request", pr("opened", "a" * 40))
        assert resp.status == 202
        await eventually(lambda: api.get(*APP) is not None, "application")
        assert api.get("v1", "namespaces", "pr-7-acme-shop") is not None
        await eventually(lambda: len(comments(github)) == 1, "the preview comment")
        await eventually(lambda: len(preview_statuses(github)) == 1, "the commit status")
        [comment] = comments(github)
        assert URL in comment["body"] and "a" * 40 in comment["body"]
        assert preview_statuses(github) == [("acme/shop", "a" * 40, "pending", URL)]

        await post_github(http, service.url, "pull_request", pr("synchronize", "b" * 40))
        await eventually(lambda: len(preview_statuses(github)) == 2, "the status on the new sha")
        await eventually(lambda: "b" * 40 in comments(github)[0]["body"], "the comment updated")
        assert preview_statuses(github)[1] == ("acme/shop", "b" * 40, "pending", URL)
        assert [c["id"] for c in comments(github)] == [comment["id"]]  # edited, not added

        await post_github(http, service.url, "pull_request", pr("closed", "b" * 40))
        await eventually(lambda: "was removed" in comments(github)[0]["body"],
                         "the comment saying the environment was removed")  # fmt: skip
    assert api.get(*APP) is None and api.get("v1", "namespaces", "pr-7-acme-shop") is None
    assert [c["id"] for c in comments(github)] == [comment["id"]]
    assert URL not in comments(github)[0]["body"]
    assert len(preview_statuses(github)) == 2  # a teardown sets no status
    posts = [r for r in github.requests if r.method == "POST" and r.path.endswith("/comments")]
    assert len(posts) == 1
