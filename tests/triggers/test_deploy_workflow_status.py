"""End to end, the shipped sensors/deploy-workflow.yaml and its Watch
(sensors/argo-workflows.yaml) through a running service: a push to production submits the
release Workflow in the Kubernetes API test server; Argo Workflows moving it through its
phases -> the watch gateway announces each phase -> a commit status on the pushed commit
on the GitHub API test server."""

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
from tests.triggers.test_environment_e2e import eventually

ROOT = Path(__file__).resolve().parents[2]
AV = "argoproj.io/v1alpha1"
CONTEXT = "eventsvc/deploy/production"


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with fakegithub.serve(FakeGitHub()) as fake:
        yield fake


@pytest.fixture
async def service(
    kubeapi: FakeCluster, github: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    nats_server: EmbeddedNats, start_service: Callable[..., Awaitable[RunningService]],
) -> RunningService:  # fmt: skip
    monkeypatch.setenv("EVENTSVC_KUBECONFIG", str(kubeapi.kubeconfig))
    monkeypatch.setenv("EVENTSVC_GITHUB_API_URL", github.url)
    monkeypatch.setenv("EVENTSVC_GITHUB_TOKEN", fakegithub.PAT)
    (tmp_path / "sensors").mkdir()
    for name in ("deploy-workflow.yaml", "argo-workflows.yaml"):
        shutil.copy(ROOT / "sensors" / name, tmp_path / "sensors")
    running = await start_service(nats_url=nats_server.url)
    gateway = running.service.state.watch
    assert gateway is not None
    await eventually(gateway.ready, "the watch to be open")
    return running


def push(sha: str, ref: str = "refs/heads/production") -> dict[str, Any]:
    return {"ref": ref, "before": "0" * 40, "after": sha, "deleted": False,
            "repository": {"full_name": "acme/shop", "html_url": "https://github.com/acme/shop"}}


def statuses(github: FakeGitHub) -> list[tuple[str, str, str, str]]:
    return [(s["repo"], s["sha"], s["state"], s.get("description", ""))
            for s in github.statuses if s["context"] == CONTEXT]  # fmt: skip


def workflow_for(kubeapi: FakeCluster, sha: str) -> str | None:
    for wf in kubeapi.api.of_kind("workflows"):
        params = {p["name"]: p["value"] for p in wf["spec"]["arguments"]["parameters"]}
        if params["commit"] == sha:
            return str(wf["metadata"]["name"])
    return None


def argo(kubeapi: FakeCluster, name: str, **status: Any) -> None:
    """The workflow controller writes the Workflow's status."""
    kubeapi.api.modify(AV, "workflows", name, "argo", {"status": status})


async def test_each_phase_of_the_release_workflow_is_a_status_on_its_commit(
    kubeapi: FakeCluster, github: FakeGitHub, service: RunningService
) -> None:
    ok, bad, broken = "a" * 40, "b" * 40, "c" * 40
    async with aiohttp.ClientSession() as http:
        for sha in (ok, bad, broken):
            assert (await post_github(http, service.url, "push", push(sha))).status == 202
        await post_github(http, service.url, "push", push("d" * 40, "refs/heads/main"))
    await eventually(lambda: all(workflow_for(kubeapi, s) for s in (ok, bad, broken)),
                     "the release workflows", 60)  # fmt: skip
    names = {sha: workflow_for(kubeapi, sha) or "" for sha in (ok, bad, broken)}

    argo(kubeapi, names[ok], phase="Running", progress="0/6")
    await eventually(lambda: len(statuses(github)) == 1, "pending", 60)
    argo(kubeapi, names[ok], progress="3/6")  # node progress: no new status
    argo(kubeapi, names[ok], phase="Succeeded", progress="6/6")
    argo(kubeapi, names[bad], phase="Failed", message="child 'migrate' failed")
    argo(kubeapi, names[broken], phase="Error", message="pod deleted")
    await eventually(lambda: len(statuses(github)) == 4, "the verdicts", 60)

    found = statuses(github)
    assert found[0] == ("acme/shop", ok, "pending", f"release workflow {names[ok]} is running")
    assert sorted(found[1:]) == sorted([
        ("acme/shop", ok, "success", f"release workflow {names[ok]} succeeded"),
        ("acme/shop", bad, "failure",
         f"release workflow {names[bad]} failed: child 'migrate' failed"),
        ("acme/shop", broken, "error", f"release workflow {names[broken]} errored: pod deleted"),
    ])  # fmt: skip
    assert len(kubeapi.api.of_kind("workflows")) == 3  # main deploys nothing

    kubeapi.api.remove(AV, "workflows", names[ok], "argo")  # deleted: nothing to report
    argo(kubeapi, names[bad], phase="Running")  # retried by hand: pending again
    await eventually(lambda: len(statuses(github)) == 5, "the retry's pending", 60)
    assert statuses(github)[4][1:3] == (bad, "pending")
