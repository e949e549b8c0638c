"""A plain `eventsvc run` on a machine without Kubernetes access (a laptop running the
example sensors, which include Watch files) starts, with the Watches idle and a warning
naming the setting; asked for by name (`--components ...,watch`), it refuses to start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.errors import ConfigError

WATCH = """apiVersion: eventsvc.dev/v1alpha1
kind: Watch
metadata: {name: apps}
spec: {group: argoproj.io, version: v1alpha1, resource: applications, namespace: argocd,
       fields: [status.health.status]}
"""


@pytest.fixture
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("EVENTSVC_KUBECONFIG", raising=False)
    sensors = tmp_path / "sensors"
    sensors.mkdir()
    (sensors / "apps.yaml").write_text(WATCH)
    return {"sensors_dir": str(sensors)}


async def test_the_default_components_start_with_the_watches_idle(
    start_service: Any, nats_server: EmbeddedNats, no_cluster: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    svc = await start_service(nats_url=nats_server.url, **no_cluster)
    watch = svc.service.state.watch
    assert watch is not None and watch.idle_reason is not None
    assert "kubernetes.kubeconfig" in watch.idle_reason
    assert svc.service.state.readiness(svc.service.config)["bus_connected"]
    assert "watches idle: no Kubernetes access" in capsys.readouterr().out


async def test_the_watch_component_asked_for_by_name_needs_the_cluster(
    start_service: Any, nats_server: EmbeddedNats, no_cluster: dict[str, Any],
) -> None:
    with pytest.raises(ConfigError, match="Kubernetes access"):
        await start_service(nats_url=nats_server.url, components=("sensors", "watch"),
                            **no_cluster)  # fmt: skip
