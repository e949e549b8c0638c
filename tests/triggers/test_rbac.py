"""The shipped RBAC rules cover every call the triggers make (as the fake server saw them)."""

from __future__ import annotations

from pathlib import Path

import yaml

from eventsvc.triggers import Services, rbac
from eventsvc.triggers.argo_workflow import ArgoWorkflowTrigger
from eventsvc.triggers.environment import EnvironmentTrigger
from tests.triggers.conftest import FakeCluster, make_ctx
from tests.triggers.kubeapi import Recorded
from tests.triggers.test_environment import SPEC, pr_event


def _target(r: Recorded) -> tuple[str, str, str | None]:
    """(group, resource, namespace) of a recorded resource request."""
    parts = r.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    return group, rest[0], namespace


def uncovered(kind: str, requests: list[Recorded]) -> list[str]:
    missing = []
    for r in requests:
        if r.path in ("/api", "/apis", "/api/v1") or (r.path.count("/") == 3 and r.path.startswith(
                "/apis/")):  # fmt: skip
            continue  # discovery: the default system:discovery role
        group, resource, ns = _target(r)
        verb = "list" if r.method == "GET" and r.path.endswith(resource) else r.verb
        verbs = [verb, "create"] if r.content_type == "application/apply-patch+yaml" else [verb]
        for v in verbs:
            if not any(rule.allows(v, group, resource, ns) for rule in rbac.RULES[kind]):
                missing.append(f"{v} {group}/{resource} in {ns}")
    return missing


async def test_environment_rules_cover_every_call(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    trigger = EnvironmentTrigger(kube_services)
    spec = {**SPEC, "resourceQuota": {"hard": {"pods": "5"}}, "limitRange": {"limits": []}}
    await trigger.execute(spec, make_ctx(pr_event("opened")))
    app = kubeapi.api.get("argoproj.io/v1alpha1", "applications", "pr-7-acme-shop", "argocd")
    app["metadata"]["finalizers"] = []  # so teardown also updates
    await trigger.execute(spec, make_ctx(pr_event("closed")))
    old = pr_event("opened", number=8)
    old["pull_request"]["updated_at"] = "2000-01-01T00:00:00Z"
    await trigger.execute(spec, make_ctx(old))
    await trigger.execute({"mode": "sweep", "ttl": "1h"}, make_ctx())
    verbs = {r.method for r in kubeapi.api.requests}
    assert verbs == {"GET", "PATCH", "PUT", "DELETE"}
    assert uncovered("environment", kubeapi.api.requests) == []


async def test_argo_rules_cover_every_call(kubeapi: FakeCluster, kube_services: Services) -> None:
    trigger = ArgoWorkflowTrigger(kube_services)
    spec = {"namespace": "argo", "workflowTemplateRef": {"name": "release"},
            "wait": {"timeout": "20s", "interval": "0.01s"}}  # fmt: skip

    def finish(request: Recorded, status: int) -> None:
        for wf in kubeapi.api.of_kind("workflows"):
            wf["status"] = {"phase": "Succeeded"}

    kubeapi.api.listeners.append(finish)
    result = await trigger.execute(spec, make_ctx())
    await trigger.execute(spec, make_ctx())  # 409 → get
    await trigger.execute({"operation": "stop", "namespace": "argo",
                           "name": result.detail["name"]}, make_ctx())  # fmt: skip
    assert uncovered("argoWorkflow", kubeapi.api.requests) == []


def test_a_missing_rule_is_noticed() -> None:
    request = Recorded("DELETE", "/apis/argoproj.io/v1alpha1/namespaces/argo/workflows/x", {},
                       "application/json", None)  # fmt: skip
    assert uncovered("argoWorkflow", [request]) == ["delete argoproj.io/workflows in argo"]


def test_manifests_bind_cluster_and_argocd_rules() -> None:
    docs = rbac.manifests()
    assert [d["kind"] for d in docs] == ["ClusterRole", "ClusterRoleBinding", "Role",
                                         "RoleBinding"]  # fmt: skip
    assert docs[2]["metadata"] == {"name": "eventsvc-triggers", "namespace": "argocd"}
    assert docs[2]["rules"] == [{"apiGroups": ["argoproj.io"], "resources": ["applications"],
                                 "verbs": ["get", "list", "create", "patch", "update",
                                           "delete"]}]  # fmt: skip
    assert rbac.k8s_rule("batch", "jobs", ["create", "policy"]).verbs == ("create", "get", "list")


def test_readme_shows_the_shipped_rules() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("### RBAC", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    shown = [d for d in yaml.safe_load_all(block)]
    shipped = [d for d in rbac.manifests() if d["kind"] in ("ClusterRole", "Role")]
    assert shown == shipped
