"""Fixtures for the Kubernetes triggers: a fake API server and a kubeconfig pointing at it."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from eventsvc import events
from eventsvc.config import Config
from eventsvc.triggers import Services, TriggerContext
from tests.triggers.kubeapi import KubeApi, build_app, write_kubeconfig


@dataclasses.dataclass
class FakeCluster:
    api: KubeApi
    kubeconfig: Path


@pytest.fixture
async def kubeapi(tmp_path: Path) -> AsyncIterator[FakeCluster]:
    """A running fake API server with the `default` namespace, and its kubeconfig."""
    api = KubeApi()
    runner = web.AppRunner(build_app(api), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    api.url = f"http://127.0.0.1:{port}"
    for ns in ("default", "argocd", "argo"):
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    try:
        yield FakeCluster(api, write_kubeconfig(tmp_path / "kubeconfig", api.url))
    finally:
        await runner.cleanup()


@pytest.fixture
async def kube_services(
    kubeapi: FakeCluster, config_factory: Callable[..., Config]
) -> AsyncIterator[Services]:
    """Services whose config section `kubernetes` points at the fake API server."""
    config = config_factory()
    sections: dict[str, Any] = {"kubernetes": {"kubeconfig": str(kubeapi.kubeconfig),
                                               "context": "fake"}}  # fmt: skip
    services = Services(dataclasses.replace(config, sections=sections))
    try:
        yield services
    finally:
        await services.close()


def make_ctx(data: Any = None, event_id: str = "d-1", sensor: str = "s", trigger: str = "t",
             type_: str = "com.github.pull_request.opened") -> TriggerContext:  # fmt: skip
    event = events.make_event(
        {"specversion": "1.0", "id": event_id, "source": "https://github.com/acme/shop",
         "type": type_, "time": "2024-05-01T10:00:00Z", "datacontenttype": "application/json"},
        data if data is not None else {},
    )  # fmt: skip
    return TriggerContext(sensor, trigger, {"dep": event})
