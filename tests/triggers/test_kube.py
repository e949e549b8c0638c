"""Cluster access against the fake API server, through the real kubernetes client."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from eventsvc import kube
from eventsvc.config import Config
from eventsvc.errors import ConfigError, ExternalError, RetryableExternalError
from eventsvc.triggers import Services
from tests.triggers.conftest import FakeCluster
from tests.triggers.kubeapi import write_kubeconfig


async def test_discovery_and_crud(kubeapi: FakeCluster, kube_services: Services) -> None:
    cluster = await kube_services.cluster()
    cm = await cluster.resource("v1", "ConfigMap")
    assert (cm.plural, cm.namespaced, cm.path("x", "y")) == (
        "configmaps", True, "/api/v1/namespaces/x/configmaps/y")
    app = await cluster.resource("argoproj.io/v1alpha1", "Application")
    assert app.path("argocd") == "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications"
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "default", "labels": {"x": "1"}},
            "data": {"k": "v"}}
    created = await cluster.create(cm, body)
    assert created["metadata"]["resourceVersion"]
    assert await cluster.get_or_none(cm, "missing", "default") is None
    assert [o["metadata"]["name"] for o in await cluster.list(cm, "default", "x=1")] == ["a"]
    await cluster.patch(cm, "a", {"data": {"k": "w"}}, "merge", "default")
    await cluster.patch(cm, "a", [{"op": "add", "path": "/data/j", "value": "z"}], "json",
                        "default")
    await cluster.apply(cm, {**body, "data": {"k": "applied"}})
    assert kubeapi.api.get("v1", "configmaps", "a", "default")["data"] == {"k": "applied",
                                                                          "j": "z"}
    assert await cluster.delete(cm, "a", "default") is True
    assert await cluster.delete(cm, "a", "default") is False
    sent = [(r.method, r.path, r.content_type) for r in kubeapi.api.writes()]
    assert sent == [
        ("POST", "/api/v1/namespaces/default/configmaps", "application/json"),
        ("PATCH", "/api/v1/namespaces/default/configmaps/a", "application/merge-patch+json"),
        ("PATCH", "/api/v1/namespaces/default/configmaps/a", "application/json-patch+json"),
        ("PATCH", "/api/v1/namespaces/default/configmaps/a", "application/apply-patch+yaml"),
        ("DELETE", "/api/v1/namespaces/default/configmaps/a", "application/json"),
        ("DELETE", "/api/v1/namespaces/default/configmaps/a", "application/json"),
    ]
    apply = kubeapi.api.writes()[3]
    assert apply.query == {"fieldManager": "eventsvc", "force": "true"}
    discovery = ("/api/v1", "/apis/argoproj.io/v1alpha1")
    assert [r.path for r in kubeapi.api.requests if r.path in discovery] == list(discovery)
    assert kubeapi.api.requests[1].query == {}


async def test_list_follows_continue_tokens(kubeapi: FakeCluster, kube_services: Services) -> None:
    for i in range(5):
        kubeapi.api.seed({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": f"c{i}", "namespace": "default"}})
    kubeapi.api.page_size = 2
    cluster = await kube_services.cluster()
    cm = await cluster.resource("v1", "ConfigMap")
    assert len(await cluster.list(cm, "default")) == 5
    assert [r.query.get("continue") for r in kubeapi.api.sent("GET", "/configmaps")] == [
        None, "2", "4"]


async def test_forbidden_names_the_missing_rule(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    kubeapi.api.forbid("create", "applications", "argoproj.io", "argocd")
    cluster = await kube_services.cluster()
    app = await cluster.resource("argoproj.io/v1alpha1", "Application")
    with pytest.raises(ExternalError) as err:
        await cluster.create(app, {"metadata": {"name": "a", "namespace": "argocd"}})
    assert not err.value.retryable
    message = str(err.value)
    assert "create applications.argoproj.io 'a' in namespace 'argocd': 403" in message
    assert ('{apiGroups: ["argoproj.io"], resources: ["applications"], verbs: ["create"]} '
            "in a Role in namespace 'argocd'") in message


async def test_unknown_kind_and_group_are_permanent(kube_services: Services) -> None:
    cluster = await kube_services.cluster()
    with pytest.raises(ExternalError, match="not served by the cluster") as err:
        await cluster.resource("example.com/v1", "Thing")
    assert not err.value.retryable
    with pytest.raises(ExternalError, match="kind 'Pod' is not served") as err:
        await cluster.resource("apps/v1", "Pod")
    assert not err.value.retryable


async def test_server_errors_are_temporary_and_422_permanent(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    cluster = await kube_services.cluster()
    cm = await cluster.resource("v1", "ConfigMap")
    kubeapi.api.fail("POST", "/configmaps", 503)
    with pytest.raises(RetryableExternalError, match="503"):
        await cluster.create(cm, {"metadata": {"name": "a", "namespace": "default"}})
    with pytest.raises(ExternalError, match=r"rejected by the API server: .*Invalid") as err:
        await cluster.create(cm, {"metadata": {"name": "Bad_Name", "namespace": "default"}})
    assert not err.value.retryable


async def test_update_retries_a_conflict_with_a_fresh_resource_version(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    kubeapi.api.seed({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "a", "namespace": "default"}, "data": {}})
    cluster = await kube_services.cluster()
    cm = await cluster.resource("v1", "ConfigMap")
    kubeapi.api.fail("PUT", "/configmaps/a", 409)

    def change(obj: dict[str, object]) -> None:
        obj["data"] = {"k": "v"}

    await cluster.update(cm, "a", change, "default")
    puts = kubeapi.api.sent("PUT")
    assert len(puts) == 2 and len(kubeapi.api.sent("GET", "/configmaps/a")) == 2
    assert kubeapi.api.get("v1", "configmaps", "a", "default")["data"] == {"k": "v"}


async def test_unreachable_server_is_temporary(
    tmp_path: Path, config_factory: Callable[..., Config]
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kubeconfig = write_kubeconfig(tmp_path / "down", f"http://127.0.0.1:{port}")
    config = dataclasses.replace(config_factory(),
                                 sections={"kubernetes": {"kubeconfig": str(kubeconfig)}})
    services = Services(config)
    try:
        cluster = await services.cluster()
        cluster.api.configuration.retries = False
        with pytest.raises(RetryableExternalError, match="unreachable"):
            await cluster.resource("v1", "ConfigMap")
    finally:
        await services.close()


async def test_bad_kubeconfig_is_a_permanent_error_naming_the_setting(
    tmp_path: Path, config_factory: Callable[..., Config]
) -> None:
    config = dataclasses.replace(
        config_factory(), sections={"kubernetes": {"kubeconfig": str(tmp_path / "nope")}})
    services = Services(config)
    try:
        with pytest.raises(ConfigError, match="EVENTSVC_KUBECONFIG"):
            await services.cluster()
    finally:
        await services.close()


def test_env_overrides_the_config_section(config_factory: Callable[..., Config]) -> None:
    config = dataclasses.replace(config_factory(),
                                 sections={"kubernetes": {"kubeconfig": "a", "context": "b"}})
    env = {"EVENTSVC_KUBECONFIG": "/k", "EVENTSVC_KUBE_CONTEXT": "c"}
    assert kube.settings(config, env) == {"kubeconfig": "/k", "context": "c"}
    assert kube.settings(config, {}) == {"kubeconfig": "a", "context": "b"}


def test_label_values_are_valid() -> None:
    assert kube.label_value("abc") == "abc"
    v = kube.label_value("4242:" + "d" * 80)
    assert len(v) <= 63 and v[0].isalnum() and v[-1].isalnum()
    assert kube.label_value("4242:" + "d" * 80) == v
    assert kube.label_value("-x-") == "x"


def test_missing_kubeconfig_is_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes.config import kube_config

    from eventsvc.errors import ConfigError

    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "none"))
    with pytest.raises(ConfigError) as default:
        kube._load_configuration({})
    assert "(the default kubeconfig, $KUBECONFIG or ~/.kube/config) cannot be set up" in str(
        default.value
    )
    assert "None" not in str(default.value) and ".." not in str(default.value)
    with pytest.raises(ConfigError, match=r"\(kubeconfig '/nowhere/config'\) cannot be set up"):
        kube._load_configuration({"kubeconfig": "/nowhere/config"})
