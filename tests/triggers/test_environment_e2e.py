"""End to end: signed pull_request webhooks through a running service → the fake API server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventsvc.bus.embedded import EmbeddedNats
from tests.conftest import RunningService, post_github, pr_payload, write_sensor
from tests.triggers.conftest import FakeCluster

SENSOR = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: previews}
spec:
  dependencies:
    - name: pr
      eventSubject: events.github.pull_request
      filters:
        context:
          type: {prefix: com.github.pull_request.}
  triggers:
    - template:
        name: env
        conditions: pr
        environment:
          repoURL: https://github.com/acme/deploy.git
          path: apps/shop/overlays/preview
          image: ghcr.io/acme/shop
          url: https://pr-{number}.preview.example.com
          gates: {requiredLabels: [preview], baseBranches: [main]}
"""
APP = ("argoproj.io/v1alpha1", "applications", "pr-7-acme-shop", "argocd")


def pr(action: str, sha: str = "a" * 40, labels: tuple[str, ...] = ("preview",),
       label: str | None = None) -> dict[str, Any]:  # fmt: skip
    body = pr_payload(action)
    body["pull_request"]["head"]["sha"] = sha
    body["pull_request"]["labels"] = [{"name": n} for n in labels]
    if label:
        body["label"] = {"name": label}
    return body


async def eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def service(
    kubeapi: FakeCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    nats_server: EmbeddedNats,
    start_service: Callable[..., Awaitable[RunningService]],
) -> RunningService:
    monkeypatch.setenv("EVENTSVC_KUBECONFIG", str(kubeapi.kubeconfig))
    write_sensor(tmp_path / "sensors", "previews", SENSOR)
    return await start_service(nats_url=nats_server.url)


async def test_pull_request_lifecycle(kubeapi: FakeCluster, service: RunningService) -> None:
    api = kubeapi.api

    def image() -> str | None:
        app = api.get(*APP)
        return app["spec"]["source"]["kustomize"]["images"][0] if app else None

    async with aiohttp.ClientSession() as http:
        resp = await post_github(http, service.url, "pull_request", pr("opened"), delivery="d1")
        assert resp.status == 202
        await eventually(lambda: image() == "ghcr.io/acme/shop:" + "a" * 40, "application")
        assert api.get("v1", "namespaces", "pr-7-acme-shop")["metadata"]["labels"][
            "eventsvc.dev/pull-request"] == "7"

        await post_github(http, service.url, "pull_request", pr("synchronize", "b" * 40))
        await eventually(lambda: image() == "ghcr.io/acme/shop:" + "b" * 40, "new image")

        await post_github(http, service.url, "pull_request",
                          pr("unlabeled", "b" * 40, labels=(), label="preview"))  # fmt: skip
        await eventually(lambda: api.get(*APP) is None
                         and api.get("v1", "namespaces", "pr-7-acme-shop") is None, "teardown")

        await post_github(http, service.url, "pull_request",
                          pr("labeled", "b" * 40, label="preview"))  # fmt: skip
        await eventually(lambda: image() == "ghcr.io/acme/shop:" + "b" * 40, "re-created")

        await post_github(http, service.url, "pull_request", pr("closed", "b" * 40))
        await eventually(lambda: api.get(*APP) is None, "application deleted")
        await eventually(lambda: api.get("v1", "namespaces", "pr-7-acme-shop") is None,
                         "namespace deleted")  # fmt: skip

        # the same delivery again: JetStream drops it, nothing is re-created
        writes = len(api.writes())
        resp = await post_github(http, service.url, "pull_request", pr("opened"), delivery="d1")
        assert resp.status == 200
        await asyncio.sleep(0.3)  # give a wrongly accepted event time to show up
        assert len(api.writes()) == writes and api.get(*APP) is None
    deletes = [(r.method, r.path.rsplit("/", 2)[-2]) for r in api.writes() if r.method == "DELETE"]
    assert deletes == [("DELETE", "applications"), ("DELETE", "namespaces")] * 2


async def test_forbidden_is_reported_with_the_missing_rule(
    kubeapi: FakeCluster, service: RunningService
) -> None:
    kubeapi.api.forbid("patch", "applications", "argoproj.io", "argocd")
    async with aiohttp.ClientSession() as http:
        await post_github(http, service.url, "pull_request", pr("opened"))
    bus = service.service.state.bus_ref.bus
    assert bus is not None
    records: list[dict[str, Any]] = []

    async def dead_letters() -> bool:
        records[:] = [json.loads(m.data) for m in await bus.stream_messages("DLQ")]
        return bool(records)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not await dead_letters():
        assert loop.time() < deadline, "no dead letter"
        await asyncio.sleep(0.05)
    [record] = records
    assert record["reason"] == "permanent failure" and record["sensor"] == "previews"
    assert "patch applications.argoproj.io 'pr-7-acme-shop' in namespace 'argocd': 403" in (
        record["error"])
    assert ('{apiGroups: ["argoproj.io"], resources: ["applications"], verbs: ["patch"]} '
            "in a Role in namespace 'argocd'") in record["error"]
