"""The `k8s` trigger against the fake API server: exactly what is sent, and idempotency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eventsvc.errors import PermanentTriggerError
from eventsvc.triggers import Services
from eventsvc.triggers.k8s import K8sTrigger
from tests.triggers.conftest import FakeCluster, make_ctx
from tests.triggers.kubeapi import Recorded

CM: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "deploy-note", "namespace": "default"},
                      "data": {"note": "hello"}}  # fmt: skip
LABELS = {"eventsvc.dev/sensor": "s", "eventsvc.dev/trigger": "t", "eventsvc.dev/event-id": "d-1"}


async def test_create_sends_the_labelled_object(kubeapi: FakeCluster, kube_services: Services):
    result = await K8sTrigger(kube_services).execute({"source": {"resource": CM}}, make_ctx())
    assert result.detail["created"] is True and result.detail["name"] == "deploy-note"
    [post] = kubeapi.api.writes()
    assert (post.method, post.path, post.content_type) == (
        "POST", "/api/v1/namespaces/default/configmaps", "application/json")
    assert post.body == {
        "apiVersion": "v1", "kind": "ConfigMap", "data": {"note": "hello"},
        "metadata": {"name": "deploy-note", "namespace": "default", "labels": LABELS,
                     "annotations": {"eventsvc.dev/event-id": "d-1"}},
    }


async def test_create_again_for_the_same_event_is_success(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    trigger = K8sTrigger(kube_services)
    await trigger.execute({"source": {"resource": CM}}, make_ctx())
    again = await trigger.execute({"source": {"resource": CM}}, make_ctx())
    assert again.detail["created"] is False
    assert len(kubeapi.api.of_kind("configmaps")) == 1
    with pytest.raises(PermanentTriggerError, match="not created for this event"):
        await trigger.execute({"source": {"resource": CM}}, make_ctx(event_id="d-2"))


async def test_generate_name_is_looked_up_by_event_labels(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"generateName": "migrate-", "namespace": "default"},
           "spec": {"template": {"spec": {"containers": [{"name": "m", "image": "x"}]}}}}
    trigger = K8sTrigger(kube_services)
    first = await trigger.execute({"source": {"resource": job}}, make_ctx(event_id="4242:abc"))
    second = await trigger.execute({"source": {"resource": job}}, make_ctx(event_id="4242:abc"))
    assert first.detail["name"] == second.detail["name"]
    assert (first.detail["created"], second.detail["created"]) == (True, False)
    assert len(kubeapi.api.sent("POST")) == 1
    lookups = kubeapi.api.sent("GET", "/jobs")
    assert lookups[0].query == {"labelSelector": "eventsvc.dev/event-id=4242-abc,"
                                "eventsvc.dev/sensor=s,eventsvc.dev/trigger=t"}


async def test_apply_is_server_side_with_field_manager(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    spec = {"operation": "apply", "source": {"resource": CM}}
    await K8sTrigger(kube_services).execute(spec, make_ctx())
    [patch] = kubeapi.api.writes()
    assert (patch.method, patch.content_type, patch.query) == (
        "PATCH", "application/apply-patch+yaml", {"fieldManager": "eventsvc", "force": "true"})
    assert patch.body["metadata"]["labels"] == LABELS


@pytest.mark.parametrize(("strategy", "patch", "content_type"), [
    ("merge", None, "application/merge-patch+json"),
    ("strategic", {"data": {"note": "s"}}, "application/strategic-merge-patch+json"),
    ("json", [{"op": "replace", "path": "/data/note", "value": "j"}],
     "application/json-patch+json"),
])  # fmt: skip
async def test_patch_strategies(
    kubeapi: FakeCluster, kube_services: Services, strategy: str, patch: Any, content_type: str
) -> None:
    kubeapi.api.seed(CM)
    target = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "deploy-note", "namespace": "default"},
              "data": {"note": "merged"}}  # fmt: skip
    spec: dict[str, Any] = {"operation": "patch", "patchStrategy": strategy,
                            "source": {"resource": target}}  # fmt: skip
    if patch is not None:
        spec["patch"] = patch
    await K8sTrigger(kube_services).execute(spec, make_ctx())
    [sent] = kubeapi.api.writes()
    assert (sent.method, sent.content_type) == ("PATCH", content_type)
    assert sent.body == (patch if patch is not None else {
        "metadata": {"name": "deploy-note", "namespace": "default"}, "data": {"note": "merged"}})


async def test_delete_from_a_file_is_idempotent(
    kubeapi: FakeCluster, kube_services: Services, tmp_path: Path
) -> None:
    kubeapi.api.seed(CM)
    path = tmp_path / "cm.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deploy-note}\n")
    spec = {"operation": "delete", "source": {"file": str(path)}}
    trigger = K8sTrigger(kube_services)
    assert (await trigger.execute(spec, make_ctx())).detail["deleted"] is True
    assert (await trigger.execute(spec, make_ctx())).detail["deleted"] is False
    queries = [r.query for r in kubeapi.api.sent("DELETE")]
    assert queries == [{"propagationPolicy": "Background"}] * 2


async def test_policy_waits_for_a_condition(kubeapi: FakeCluster, kube_services: Services) -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": 1}}
    spec = {"operation": "apply", "source": {"resource": dep},
            "policy": {"condition": {"type": "Available"}, "timeout": "20s",
                       "interval": "0.02s"}}  # fmt: skip

    polls = 0

    def controller(request: Recorded, status: int) -> None:  # available on the third look
        nonlocal polls
        if request.method == "GET" and request.path.endswith("/deployments/web"):
            polls += 1
            if polls == 2:
                obj = kubeapi.api.get("apps/v1", "deployments", "web", "default")
                obj["status"] = {"conditions": [{"type": "Available", "status": "True"}]}

    kubeapi.api.listeners.append(controller)
    result = await K8sTrigger(kube_services).execute(spec, make_ctx())
    assert result.detail["policy"] == "held" and polls == 3


async def test_policy_timeout_reports_the_last_status(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    spec = {"operation": "apply", "source": {"resource": CM},
            "policy": {"labels": {"ready": "yes"}, "timeout": "0.05s", "interval": "0.01s"}}
    with pytest.raises(PermanentTriggerError, match=r"did not hold within 0.05s; last seen: "
                       r"\{'labels': \{'eventsvc.dev/sensor'"):  # fmt: skip
        await K8sTrigger(kube_services).execute(spec, make_ctx())


def test_check_finds_meaning_problems() -> None:
    assert K8sTrigger.check({"operation": "delete", "source": {"resource": {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "x-"}}}}) == [
        (("source", "resource", "metadata", "name"),
         "operation 'delete' needs metadata.name; generateName only works with create")]
    assert K8sTrigger.check({"patchStrategy": "json", "operation": "patch",
                             "source": {"resource": CM}}) == [
        (("patch",), "patchStrategy json needs `patch`: a list of operations")]
