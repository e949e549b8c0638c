"""The pull-request environment flow end to end, through one running service with the
shipped sensors/pr-environments.yaml and sensors/argocd-apps.yaml: a signed `opened`
webhook -> Namespace and Application on the Kubernetes API test server -> "being
deployed" on the pull request (GitHub API test server) -> Argo CD reports the Application
Healthy and Synced -> the watch gateway announces it -> "up" and success -> `closed` ->
teardown and "removed"."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventsvc import events
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.bus.streams import RESULTS
from tests.conftest import RunningService, post_github
from tests.github import fakegithub
from tests.github.fakegithub import FakeGitHub
from tests.triggers.conftest import FakeCluster, kubeapi  # noqa: F401 - the fixture
from tests.triggers.test_environment_e2e import APP, eventually, pr

ROOT = Path(__file__).resolve().parents[1]
URL = "https://pr-7.preview.example.com"
SHA, NEXT = "a" * 40, "b" * 40


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with fakegithub.serve(FakeGitHub()) as fake:
        yield fake


@pytest.fixture
async def service(
    kubeapi: FakeCluster,  # noqa: F811
    github: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    nats_server: EmbeddedNats, start_service: Callable[..., Awaitable[RunningService]],
) -> RunningService:  # fmt: skip
    monkeypatch.setenv("EVENTSVC_KUBECONFIG", str(kubeapi.kubeconfig))
    monkeypatch.setenv("EVENTSVC_GITHUB_API_URL", github.url)
    monkeypatch.setenv("EVENTSVC_GITHUB_TOKEN", fakegithub.PAT)
    (tmp_path / "sensors").mkdir()
    for name in ("pr-environments.yaml", "argocd-apps.yaml"):
        shutil.copy(ROOT / "sensors" / name, tmp_path / "sensors")
    running = await start_service(nats_url=nats_server.url)
    gateway = running.service.state.watch
    assert gateway is not None
    await eventually(gateway.ready, "the watch to be open")
    return running


def comment(github: FakeGitHub) -> str:
    found = github.comments.get("acme/shop#7", [])
    assert len(found) <= 1, "one sticky comment, edited"
    return str(found[0]["body"]) if found else ""


def preview(github: FakeGitHub) -> list[tuple[str, str, str]]:
    return [(s["sha"], s["state"], s.get("description", ""))
            for s in github.statuses if s["context"] == "eventsvc/preview"]  # fmt: skip


async def results(service: RunningService, count: int) -> list[Any]:
    """The environment trigger's first `count` results (their `detail`), once published."""
    bus = service.service.state.bus_ref.bus
    assert bus is not None
    async with asyncio.timeout(60):
        while True:
            found = await bus.stream_messages(RESULTS, "results.pr-environments.>")
            if len(found) >= count:
                return [events.from_nats(m.headers, m.data).get_data()["detail"]  # type: ignore[index]
                        for m in found]  # fmt: skip
            await asyncio.sleep(0.05)


def argo_cd(kubeapi: FakeCluster, **status: Any) -> None:  # noqa: F811
    """Argo CD writes the Application's status."""
    kubeapi.api.modify(APP[0], APP[1], APP[2], APP[3], {"status": status})


async def test_opened_healthy_closed(
    kubeapi: FakeCluster,  # noqa: F811
    github: FakeGitHub, service: RunningService,
) -> None:  # fmt: skip
    api = kubeapi.api
    async with aiohttp.ClientSession() as http:
        assert (await post_github(http, service.url, "pull_request", pr("opened", SHA))).status \
            == 202  # fmt: skip
        await eventually(lambda: "being deployed" in comment(github), "'being deployed'", 60)
        assert api.get("v1", "namespaces", "pr-7-acme-shop") is not None
        assert api.get(*APP)["metadata"]["labels"]["eventsvc.dev/environment"] == "true"
        await eventually(lambda: preview(github) != [], "the pending status", 60)
        assert preview(github) == [(SHA, "pending", "preview environment is being deployed")]

        # Argo CD syncs and rolls out; only its verdict changes what the PR says
        argo_cd(kubeapi, health={"status": "Progressing"}, sync={"status": "OutOfSync"})
        argo_cd(kubeapi, sync={"status": "Synced", "revision": "f" * 40})
        argo_cd(kubeapi, health={"status": "Healthy"})
        await eventually(lambda: "is up at" in comment(github), "'up'", 60)
        assert f"is up at {URL}" in comment(github) and SHA in comment(github)
        await eventually(lambda: len(preview(github)) == 2, "the success status", 60)
        assert preview(github)[1] == (SHA, "success", "Argo CD: Healthy and Synced")
        argo_cd(kubeapi, reconciledAt="later")  # a heartbeat says nothing new

        # another label: the environment is re-applied at the same sha; Argo CD has nothing
        # new to say, so neither has the pull request (no "being deployed" again)
        labeled = pr("labeled", SHA, labels=("preview", "docs"), label="docs")
        await post_github(http, service.url, "pull_request", labeled)
        detail = (await results(service, 2))[1]
        assert (detail["action"], detail["headSha"], detail["previousHeadSha"]) == (
            "updated", SHA, SHA)

        # a push: deploying again, then Healthy at the new sha
        await post_github(http, service.url, "pull_request", pr("synchronize", NEXT))
        await eventually(lambda: NEXT in comment(github) and "being deployed" in comment(github),
                         "'being deployed' at the new sha", 60)  # fmt: skip
        await eventually(lambda: len(preview(github)) == 3, "pending on the new sha", 60)
        argo_cd(kubeapi, health={"status": "Progressing"})
        argo_cd(kubeapi, health={"status": "Healthy"})
        await eventually(lambda: "is up at" in comment(github), "'up' at the new sha", 60)
        assert NEXT in comment(github)
        await eventually(lambda: (NEXT, "success") in [s[:2] for s in preview(github)],
                         "success on the new sha", 60)  # fmt: skip

        await post_github(http, service.url, "pull_request", pr("closed", NEXT))
        await eventually(lambda: "was removed" in comment(github), "'removed'", 60)
    assert api.get(*APP) is None and api.get("v1", "namespaces", "pr-7-acme-shop") is None
    assert URL not in comment(github)
    states = [s[:2] for s in preview(github)]
    assert states == [(SHA, "pending"), (SHA, "success"), (NEXT, "pending"), (NEXT, "success")]
    posts = [r for r in github.requests if r.method == "POST" and r.path.endswith("/comments")]
    assert len(posts) == 1  # one comment, edited at every step
