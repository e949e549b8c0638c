"""The `argoWorkflow` trigger: submitted Workflow bodies, lifecycle patches, waiting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from eventsvc import loader
from eventsvc.errors import PermanentTriggerError
from eventsvc.triggers import Services
from eventsvc.triggers.argo_workflow import ArgoWorkflowTrigger, workflow_name
from tests.triggers.conftest import FakeCluster, make_ctx
from tests.triggers.kubeapi import Recorded

PUSH = {"ref": "refs/heads/production", "after": "c0ffee" * 6 + "beef",
        "repository": {"full_name": "acme/shop"}}  # fmt: skip
EXAMPLES = Path(__file__).resolve().parents[2] / "sensors"
RELEASE: dict[str, Any] = {
    "namespace": "argo",
    "workflowTemplateRef": {"name": "release"},
    "arguments": {"parameters": [
        {"name": "commit", "valueFrom": {"path": "data.after"}},
        {"name": "repository", "valueFrom": {"path": "data.repository.full_name"}},
        {"name": "environment", "value": "production"},
    ]},
}  # fmt: skip


async def test_submit_from_template_sends_a_deterministic_workflow(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    ctx = make_ctx(PUSH, event_id="4242:d1", sensor="deploy", trigger="release")
    result = await ArgoWorkflowTrigger(kube_services).execute(RELEASE, ctx)
    name = workflow_name("release", "deploy", "release", "4242:d1")
    assert result.detail == {"operation": "submit", "namespace": "argo", "name": name,
                             "submitted": True, "uid": result.detail["uid"]}  # fmt: skip
    [post] = kubeapi.api.writes()
    assert (post.method, post.path) == ("POST", "/apis/argoproj.io/v1alpha1/namespaces/argo/workflows")
    assert post.body == {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": name, "namespace": "argo",
                     "labels": {"eventsvc.dev/sensor": "deploy", "eventsvc.dev/trigger": "release",
                                "eventsvc.dev/event-id": "4242-d1"},
                     "annotations": {"eventsvc.dev/event-id": "4242:d1"}},
        "spec": {"workflowTemplateRef": {"name": "release"},
                 "arguments": {"parameters": [
                     {"name": "commit", "value": PUSH["after"]},
                     {"name": "repository", "value": "acme/shop"},
                     {"name": "environment", "value": "production"}]}},
    }  # fmt: skip


async def test_a_refired_event_does_not_submit_twice(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    trigger = ArgoWorkflowTrigger(kube_services)
    ctx = make_ctx(PUSH, event_id="4242:d1")
    first = await trigger.execute(RELEASE, ctx)
    again = await trigger.execute(RELEASE, ctx)
    assert (first.detail["submitted"], again.detail["submitted"]) == (True, False)
    assert first.detail["name"] == again.detail["name"]
    assert len(kubeapi.api.of_kind("workflows")) == 1
    other = await trigger.execute(RELEASE, make_ctx(PUSH, event_id="4242:d2"))
    assert other.detail["name"] != first.detail["name"]


async def test_inline_workflow_and_cluster_template(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    trigger = ArgoWorkflowTrigger(kube_services)
    inline = {"namespace": "argo", "workflow": {
        "metadata": {"generateName": "hello-"},
        "spec": {"entrypoint": "main", "arguments": {"parameters": [{"name": "a", "value": "1"}]},
                 "templates": [{"name": "main", "container": {"image": "alpine"}}]}},
        "arguments": {"parameters": [{"name": "b", "value": 2}]}}  # fmt: skip
    result = await trigger.execute(inline, make_ctx(PUSH))
    assert result.detail["name"].startswith("hello-")
    body = kubeapi.api.writes()[0].body
    assert "generateName" not in body["metadata"]
    assert body["spec"]["arguments"]["parameters"] == [{"name": "a", "value": "1"},
                                                       {"name": "b", "value": "2"}]  # fmt: skip
    cluster_ref = {"namespace": "argo", "clusterWorkflowTemplateRef": {"name": "ci"}}
    await trigger.execute(cluster_ref, make_ctx(PUSH))
    assert kubeapi.api.writes()[1].body["spec"]["workflowTemplateRef"] == {
        "name": "ci", "clusterScope": True}


async def test_missing_event_field_is_permanent(kube_services: Services) -> None:
    spec = {"workflowTemplateRef": {"name": "release"},
            "arguments": {"parameters": [{"name": "c", "valueFrom": {"path": "data.nope"}}]}}
    with pytest.raises(PermanentTriggerError, match=r"'data\.nope' is not in event"):
        await ArgoWorkflowTrigger(kube_services).execute(spec, make_ctx(PUSH))


@pytest.mark.parametrize(("operation", "patch"), [
    ("suspend", {"spec": {"suspend": True}}),
    ("resume", {"spec": {"suspend": None}}),
    ("terminate", {"spec": {"shutdown": "Terminate"}}),
    ("stop", {"spec": {"shutdown": "Stop"}}),
])  # fmt: skip
async def test_lifecycle_operations_patch_the_workflow(
    kubeapi: FakeCluster, kube_services: Services, operation: str, patch: dict[str, Any]
) -> None:
    kubeapi.api.seed({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                      "metadata": {"name": "release-1", "namespace": "argo"},
                      "spec": {"suspend": True}})  # fmt: skip
    spec = {"operation": operation, "name": "release-1", "namespace": "argo"}
    result = await ArgoWorkflowTrigger(kube_services).execute(spec, make_ctx())
    assert result.detail == {"operation": operation, "namespace": "argo", "name": "release-1"}
    [sent] = kubeapi.api.writes()
    assert (sent.method, sent.path, sent.content_type, sent.body) == (
        "PATCH", "/apis/argoproj.io/v1alpha1/namespaces/argo/workflows/release-1",
        "application/merge-patch+json", patch)


async def test_wait_puts_the_phase_in_the_result(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    spec = {**RELEASE, "wait": {"timeout": "20s", "interval": "0.02s"}}

    phase = "Succeeded"

    def controller(request: Recorded, status: int) -> None:  # runs the workflow at once
        if request.method == "POST" and status == 201:
            for wf in kubeapi.api.of_kind("workflows"):
                wf.setdefault("status", {"phase": phase, "message": "boom"})

    kubeapi.api.listeners.append(controller)
    result = await ArgoWorkflowTrigger(kube_services).execute(spec, make_ctx(PUSH))
    assert result.detail["phase"] == "Succeeded"
    phase = "Failed"
    with pytest.raises(PermanentTriggerError, match="ended Failed: boom"):
        await ArgoWorkflowTrigger(kube_services).execute(spec, make_ctx(PUSH, event_id="x2"))


def test_check() -> None:
    assert ArgoWorkflowTrigger.check({"operation": "stop"}) == [
        (("name",), "operation 'stop' needs the workflow's name")]
    assert ArgoWorkflowTrigger.check({}) == [
        ((), "submit needs exactly one of workflow, workflowTemplateRef, "
             "clusterWorkflowTemplateRef; found none")]
    assert len(workflow_name("x" * 80, "s", "t", "e")) <= 63


async def test_example_deploy_workflow_sensor_submits_release(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    loaded = loader.load_paths([EXAMPLES / "deploy-workflow.yaml"])
    assert not loaded.problems
    [trigger] = loaded.sensors[0].triggers
    await ArgoWorkflowTrigger(kube_services).execute(trigger.spec, make_ctx(PUSH))
    [post] = kubeapi.api.writes()
    assert post.body["spec"]["workflowTemplateRef"] == {"name": "release"}
    assert post.body["spec"]["arguments"]["parameters"][0] == {"name": "commit",
                                                               "value": PUSH["after"]}
