"""The `environment` trigger: PR events → Namespace + Argo CD Application, gates, teardown, sweep."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventsvc.errors import PermanentTriggerError
from eventsvc.triggers import Services
from eventsvc.triggers.environment import (
    FINALIZER,
    EnvironmentTrigger,
    PullRequest,
    decide,
    environment_name,
    expired,
)
from tests.conftest import pr_payload
from tests.triggers.conftest import FakeCluster, make_ctx

SHA = "0123456789abcdef0123456789abcdef01234567"
SPEC: dict[str, Any] = {
    "repoURL": "https://github.com/acme/deploy.git",
    "path": "apps/shop/overlays/preview",
    "targetRevision": "main",
    "image": "ghcr.io/acme/shop",
    "url": "https://pr-{number}.preview.example.com",
    "gates": {"requiredLabels": ["preview"], "baseBranches": ["main"]},
}
APP_PATH = "/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/pr-7-acme-shop"


def pr_event(action: str, labels: tuple[str, ...] = ("preview",), sha: str = SHA,
             label: str | None = None, **kw: Any) -> dict[str, Any]:  # fmt: skip
    body = pr_payload(action, **kw)
    body["pull_request"]["labels"] = [{"name": n} for n in labels]
    body["pull_request"]["head"]["sha"] = sha
    body["pull_request"]["updated_at"] = "2024-05-01T10:00:00Z"
    if label:
        body["label"] = {"name": label}
    return body


async def run(services: Services, body: dict[str, Any], spec: dict[str, Any] | None = None,
              event_id: str = "d-1") -> Any:  # fmt: skip
    ctx = make_ctx(body, event_id=event_id, sensor="previews", trigger="env")
    return await EnvironmentTrigger(services).execute(spec or SPEC, ctx)


async def test_opened_applies_namespace_and_application(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    result = await run(kube_services, pr_event("opened"))
    assert result.detail == {
        "namespace": "pr-7-acme-shop", "application": "pr-7-acme-shop", "pullRequest": 7,
        "repository": "acme/shop", "headSha": SHA, "reason": "opened", "action": "created",
        "url": "https://pr-7.preview.example.com", "image": f"ghcr.io/acme/shop:{SHA}",
    }  # fmt: skip
    ns_apply, app_apply = kubeapi.api.writes()
    assert (ns_apply.method, ns_apply.path, ns_apply.content_type, ns_apply.query) == (
        "PATCH", "/api/v1/namespaces/pr-7-acme-shop", "application/apply-patch+yaml",
        {"fieldManager": "eventsvc", "force": "true"})
    labels = {"eventsvc.dev/sensor": "previews", "eventsvc.dev/trigger": "env",
              "eventsvc.dev/event-id": "d-1", "eventsvc.dev/environment": "true",
              "eventsvc.dev/repository": "acme.shop", "eventsvc.dev/pull-request": "7"}
    annotations = {"eventsvc.dev/repository": "acme/shop",
                   "eventsvc.dev/pr-updated-at": "2024-05-01T10:00:00Z",
                   "eventsvc.dev/head-sha": SHA,
                   "eventsvc.dev/url": "https://pr-7.preview.example.com"}  # fmt: skip
    assert ns_apply.body == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "pr-7-acme-shop", "labels": labels, "annotations": annotations}}
    assert (app_apply.path, app_apply.content_type) == (APP_PATH, "application/apply-patch+yaml")
    assert app_apply.body == {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "pr-7-acme-shop", "namespace": "argocd", "labels": labels,
                     "annotations": annotations, "finalizers": [FINALIZER]},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://github.com/acme/deploy.git",
                       "path": "apps/shop/overlays/preview", "targetRevision": "main",
                       "kustomize": {"images": [f"ghcr.io/acme/shop:{SHA}"]}},
            "destination": {"server": "https://kubernetes.default.svc",
                            "namespace": "pr-7-acme-shop"},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
        },
    }  # fmt: skip


async def test_refired_event_creates_nothing_twice_and_synchronize_updates_the_image(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    first_run = await run(kube_services, pr_event("opened"))
    again_run = await run(kube_services, pr_event("opened"))
    assert (first_run.detail["action"], again_run.detail["action"]) == ("created", "updated")
    assert len(kubeapi.api.of_kind("applications")) == 1
    assert [n["metadata"]["name"] for n in kubeapi.api.of_kind("namespaces")] == [
        "argo", "argocd", "default", "pr-7-acme-shop"]
    assert not kubeapi.api.sent("POST")  # server-side apply only: converges, never duplicates
    first, again = kubeapi.api.sent("PATCH", "/applications/")
    assert first.body == again.body
    await run(kube_services, pr_event("synchronize", sha="f" * 40), event_id="d-2")
    app = kubeapi.api.get("argoproj.io/v1alpha1", "applications", "pr-7-acme-shop", "argocd")
    assert app["spec"]["source"]["kustomize"]["images"] == ["ghcr.io/acme/shop:" + "f" * 40]


async def test_helm_value_and_quota_templates(kubeapi: FakeCluster, kube_services: Services):
    spec = {**SPEC, "helm": {"imageTagParameter": "image.tag",
                             "imageRepositoryParameter": "image.repository"},
            "resourceQuota": {"hard": {"requests.cpu": "2", "pods": "20"}},
            "limitRange": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}}
    await run(kube_services, pr_event("opened"), spec)
    paths = [r.path for r in kubeapi.api.writes()]
    assert paths == ["/api/v1/namespaces/pr-7-acme-shop",
                     "/api/v1/namespaces/pr-7-acme-shop/resourcequotas/environment",
                     "/api/v1/namespaces/pr-7-acme-shop/limitranges/environment", APP_PATH]
    quota = kubeapi.api.writes()[1].body
    assert quota["spec"] == {"hard": {"requests.cpu": "2", "pods": "20"}}
    source = kubeapi.api.writes()[3].body["spec"]["source"]
    assert source["helm"] == {"parameters": [
        {"name": "image.repository", "value": "ghcr.io/acme/shop"},
        {"name": "image.tag", "value": SHA}]}
    assert "kustomize" not in source


async def test_closed_deletes_application_then_namespace(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    await run(kube_services, pr_event("opened"))
    kubeapi.api.requests.clear()
    result = await run(kube_services, pr_event("closed"), event_id="d-9")
    assert result.detail["action"] == "deleted"
    assert result.detail["deleted"] == {"application": True, "namespace": True}
    assert [(r.method, r.path, r.query) for r in kubeapi.api.writes()] == [
        ("DELETE", APP_PATH, {"propagationPolicy": "Foreground"}),
        ("DELETE", "/api/v1/namespaces/pr-7-acme-shop", {"propagationPolicy": "Background"}),
    ]
    deleted_app = next(o for o in kubeapi.api.deleted if o["kind"] == "Application")
    assert deleted_app["metadata"]["finalizers"] == [FINALIZER]
    again = await run(kube_services, pr_event("closed"), event_id="d-9")
    assert again.detail["deleted"] == {"application": False, "namespace": False}


async def test_teardown_adds_a_missing_finalizer_and_retries_a_conflict(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    await run(kube_services, pr_event("opened"))
    app = kubeapi.api.get("argoproj.io/v1alpha1", "applications", "pr-7-acme-shop", "argocd")
    app["metadata"]["finalizers"] = []
    kubeapi.api.fail("PUT", "/applications/", 409)
    await run(kube_services, pr_event("unlabeled", labels=(), label="preview"), event_id="d-3")
    puts = kubeapi.api.sent("PUT")
    assert len(puts) == 2 and puts[1].body["metadata"]["finalizers"] == [FINALIZER]
    assert not kubeapi.api.of_kind("applications")


async def test_refuses_to_delete_a_namespace_it_did_not_create(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    kubeapi.api.seed({"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": "pr-7-acme-shop"}})
    with pytest.raises(PermanentTriggerError, match="refusing to delete"):
        await run(kube_services, pr_event("closed"))


@pytest.mark.parametrize(("body", "verdict"), [
    (pr_event("opened", labels=()), ("skip", "required label(s) missing: preview")),
    (pr_event("opened", base="release"), ("skip", "base branch 'release' is not one of main")),
    (pr_event("opened", labels=("preview", "no-preview")),
     ("skip", "excluded label(s) present: no-preview")),
    (pr_event("labeled", label="no-preview"), ("teardown", "excluded label 'no-preview' added")),
    (pr_event("unlabeled", labels=(), label="preview"),
     ("teardown", "required label 'preview' removed")),
    (pr_event("unlabeled", label="bug"), ("skip", "action 'unlabeled' does not change the "
                                                  "environment")),
    (pr_event("labeled", label="preview"), ("ensure", "labeled")),
    (pr_event("ready_for_review"), ("ensure", "ready_for_review")),
    (pr_event("closed"), ("teardown", "pull request closed")),
    (pr_event("edited"), ("skip", "action 'edited' does not change the environment")),
])  # fmt: skip
def test_gates(body: dict[str, Any], verdict: tuple[str, str]) -> None:
    gates = {"requiredLabels": ["preview"], "excludedLabels": ["no-preview"],
             "baseBranches": ["main"]}
    assert decide(PullRequest.of(body, {}, ""), gates) == verdict


def test_drafts_are_skipped_unless_allowed() -> None:
    body = pr_event("opened")
    body["pull_request"]["draft"] = True
    pr = PullRequest.of(body, {}, "")
    assert decide(pr, {}) == ("skip", "draft pull request")
    assert decide(pr, {"skipDrafts": False}) == ("ensure", "opened")


async def test_skipped_event_sends_nothing(kubeapi: FakeCluster, kube_services: Services):
    result = await run(kube_services, pr_event("opened", labels=()))
    assert result.outcome == "skipped" and result.detail["action"] == "skipped"
    assert not kubeapi.api.writes()


async def test_skip_needs_no_cluster(config_factory: Any) -> None:
    """A gated-out PR is skipped before any Kubernetes set-up: no kubeconfig needed."""
    services = Services(config_factory())
    result = await run(services, pr_event("opened", labels=()))
    assert result.outcome == "skipped"
    await services.close()


async def test_explicit_pull_request_fields_win(kubeapi: FakeCluster, kube_services: Services):
    spec = {**SPEC, "gates": {}, "pullRequest": {"number": "12", "headSha": "abc",
                                                  "repository": "acme/shop", "action": "opened"}}
    result = await run(kube_services, {}, spec)
    assert result.detail["namespace"] == "pr-12-acme-shop"
    assert result.detail["image"] == "ghcr.io/acme/shop:abc"


async def test_not_a_pull_request_event_is_permanent(kube_services: Services) -> None:
    with pytest.raises(PermanentTriggerError, match="not a pull_request webhook"):
        await run(kube_services, {"ref": "refs/heads/main"})


async def test_sweep_deletes_only_stale_environments(
    kubeapi: FakeCluster, kube_services: Services
) -> None:
    old = pr_event("opened")
    old["pull_request"]["updated_at"] = "2000-01-01T00:00:00Z"
    await run(kube_services, old)
    fresh = copy.deepcopy(pr_event("opened", number=8))
    fresh["pull_request"]["updated_at"] = datetime.now(UTC).isoformat()
    await run(kube_services, fresh)
    kubeapi.api.requests.clear()
    result = await EnvironmentTrigger(kube_services).execute(
        {"mode": "sweep", "ttl": "72h"}, make_ctx(type_="dev.eventsvc.cron.tick"))
    assert result.detail == {"action": "sweep", "deleted": ["pr-7-acme-shop"], "kept": 1,
                             "ttl": "72h"}  # fmt: skip
    assert [r.query for r in kubeapi.api.sent("GET") if r.path.endswith(("/applications",
                                                                          "/namespaces"))] == [
        {"labelSelector": "eventsvc.dev/environment=true"}] * 2
    assert [a["metadata"]["name"] for a in kubeapi.api.of_kind("applications")] == [
        "pr-8-acme-shop"]


def test_names_are_rfc1123_and_stable() -> None:
    assert environment_name(7, "acme/shop") == "pr-7-acme-shop"
    assert environment_name(7, "Acme_Corp/Shop.Web") == "pr-7-acme-corp-shop-web"
    long = environment_name(12345, "a-very-long-organisation-name/an-even-longer-repository-name")
    assert len(long) <= 63 and long == environment_name(
        12345, "a-very-long-organisation-name/an-even-longer-repository-name")
    assert long.startswith("pr-12345-a-very-long") and long[-7] == "-"


def test_expired() -> None:
    now = datetime(2024, 5, 10, tzinfo=UTC)
    assert expired("2024-05-01T00:00:00Z", now, timedelta(days=3))
    assert not expired("2024-05-09T00:00:00Z", now, timedelta(days=3))
    assert not expired(None, now, timedelta(days=3))
    assert not expired("garbage", now, timedelta(days=3))


def test_check() -> None:
    assert EnvironmentTrigger.check({"mode": "sweep"}) == [
        (("ttl",), "required when mode is sweep, e.g. ttl: 72h")]
    problems = EnvironmentTrigger.check({**SPEC, "url": "https://{pr}.example.com"})
    assert problems[0][0] == ("url",) and "unknown placeholder(s) pr" in problems[0][1]
