"""Argo CD's verdict on a preview environment reaches the pull request: the shipped Watch
(sensors/argocd-apps.yaml) and the pr-environment-health sensor, dry-run with `eventsvc test`
on watch events shaped as the watch gateway publishes them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eventsvc import cli, watches
from eventsvc.triggers import environment

ROOT = Path(__file__).resolve().parents[2]
SENSOR = str(ROOT / "sensors" / "pr-environments.yaml")
SUBJECT = "events.k8s.argocd-apps"
SHA = "0123456789abcdef0123456789abcdef01234567"
URL = "https://pr-7.preview.example.com"
HEALTHY = ("comment-healthy", "status-healthy")
DEGRADED = ("comment-degraded", "status-degraded")



def application(health: str, sync: str = "Synced", **status: Any) -> dict[str, Any]:
    """An Application as the environment trigger writes it, with Argo CD's status."""
    pr = environment.PullRequest(7, "acme/shop", "opened", SHA, "main", False, ("preview",),
                                 None, "2026-12-01T10:00:00Z")  # fmt: skip
    meta = environment.EnvironmentTrigger.metadata(pr, "pr-7-acme-shop", URL, {}, "argocd")
    meta |= {"uid": "u-1", "resourceVersion": "101"}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": meta,
            "spec": {"destination": {"namespace": "pr-7-acme-shop"}},
            "status": {"health": {"status": health},
                       "sync": {"status": sync, "revision": "f" * 40}, **status}}  # fmt: skip


def event(obj: dict[str, Any], before: dict[str, Any] | None, change: str = "changed"
          ) -> dict[str, Any]:  # fmt: skip
    """The CloudEvent the watch gateway publishes for `before` -> `obj`."""
    (watch,), problems = watches.load_watches([ROOT / "sensors" / "argocd-apps.yaml"])
    assert not problems
    new = watches.field_values(obj, watch.fields)
    old = watches.field_values(before, watch.fields) if before else None
    return {"specversion": "1.0", "id": "argocd-apps:u-1:101", "type": f"dev.eventsvc.k8s.{change}",
            "source": "https://kubernetes.default.svc", "subject": "argocd/pr-7-acme-shop",
            "datacontenttype": "application/json",
            "data": {"object": obj, "changes": watches.changes(old, new)}}  # fmt: skip


def dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: dict[str, Any],
            fire: tuple[str, ...], no_fire: tuple[str, ...]) -> str:  # fmt: skip
    path = tmp_path / "event.json"
    path.write_text(json.dumps(doc))
    argv = ["test", SENSOR, "--event", str(path), "--nats-subject", SUBJECT]
    argv += [a for t in fire for a in ("--expect-fire", t)]
    argv += [a for t in no_fire for a in ("--expect-no-fire", t)]
    code = cli.main(argv)
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert code == 0, out
    return out


def rendered(out: str, trigger: str) -> dict[str, Any]:
    """The kind section `eventsvc test` prints under '<trigger> (...): FIRES'."""
    start = out.index("{", out.index(f"  {trigger} ("))
    value, _ = json.JSONDecoder().raw_decode(out[start:])
    assert isinstance(value, dict)
    return value


def test_the_watch_selects_what_the_environment_trigger_labels() -> None:
    (watch,), problems = watches.load_watches([ROOT / "sensors" / "argocd-apps.yaml"])
    assert not problems
    assert (watch.group, watch.version, watch.resource, watch.namespace) == (
        "argoproj.io",
        "v1alpha1",
        "applications",
        "argocd",
    )
    assert watch.label_selector == f"{environment.LABEL_ENV}=true"
    assert set(watch.fields) == {"status.health.status", "status.sync.status",
                                 "status.sync.revision"}  # fmt: skip


def test_healthy_and_synced_says_up_with_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = event(application("Healthy"), application("Progressing"))
    out = dry_run(tmp_path, capsys, doc, HEALTHY, (*DEGRADED, "comment-url", "status"))
    comment = rendered(out, "comment-healthy")["githubComment"]
    assert (comment["repo"], comment["number"], comment["marker"]) == (
        "acme/shop",
        7,
        "pr-environments/preview",
    )  # the sticky comment of the feedback sensor
    assert f"is up at {URL}" in comment["body"] and SHA in comment["body"]
    status = rendered(out, "status-healthy")["githubStatus"]
    assert status == {"repo": "acme/shop", "sha": SHA, "state": "success",
                      "context": "eventsvc/preview", "description": "Argo CD: Healthy and Synced",
                      "targetUrl": URL}  # fmt: skip


def test_synced_while_healthy_also_says_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = event(application("Healthy"), application("Healthy", "OutOfSync"))
    dry_run(tmp_path, capsys, doc, HEALTHY, DEGRADED)


def test_healthy_but_out_of_sync_is_not_up_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = event(application("Healthy", "OutOfSync"), application("Progressing", "OutOfSync"))
    dry_run(tmp_path, capsys, doc, (), HEALTHY + DEGRADED)


def test_degraded_reports_argo_cds_health_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    message = 'Deployment "shop" exceeded its progress deadline'
    obj = application("Degraded", operationState={"message": "successfully synced"})
    obj["status"]["health"]["message"] = message
    out = dry_run(tmp_path, capsys, event(obj, application("Progressing")), DEGRADED, HEALTHY)
    comment = rendered(out, "comment-degraded")["githubComment"]
    assert (comment["repo"], comment["number"], comment["marker"]) == (
        "acme/shop",
        7,
        "pr-environments/preview",
    )
    assert "Degraded in Argo CD" in comment["body"] and f"> {message}\n" in comment["body"]
    status = rendered(out, "status-degraded")["githubStatus"]
    assert (status["sha"], status["state"], status["context"], status["targetUrl"]) == (
        SHA,
        "failure",
        "eventsvc/preview",
        URL,
    )
    assert status["description"] == f"Argo CD: Degraded: {message}"


def test_degraded_without_health_message_uses_the_operation_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = application(
        "Degraded", operationState={"phase": "Failed", "message": "one or more objects failed"}
    )
    out = dry_run(tmp_path, capsys, event(obj, application("Healthy")), DEGRADED, HEALTHY)
    body = rendered(out, "comment-degraded")["githubComment"]["body"]
    assert "> one or more objects failed\n" in body
    obj = application("Degraded")
    out = dry_run(tmp_path, capsys, event(obj, application("Healthy")), DEGRADED, HEALTHY)
    assert "no message" in rendered(out, "status-degraded")["githubStatus"]["description"]


def test_a_progressing_heartbeat_fires_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = event(application("Progressing"), application("Progressing"))
    assert doc["data"]["changes"] == {}
    dry_run(tmp_path, capsys, doc, (), HEALTHY + DEGRADED)
    # a new revision synced while still Progressing: an event, but no verdict
    before = application("Progressing")
    before["status"]["sync"]["revision"] = "e" * 40
    doc = event(application("Progressing"), before)
    assert list(doc["data"]["changes"]) == ["status.sync.revision"]
    dry_run(tmp_path, capsys, doc, (), HEALTHY + DEGRADED)


def test_a_revision_change_while_healthy_does_not_repeat_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = application("Healthy")
    before["status"]["sync"]["revision"] = "e" * 40
    dry_run(tmp_path, capsys, event(application("Healthy"), before), (), HEALTHY + DEGRADED)


def test_deleted_application_reports_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = event(application("Healthy"), application("Healthy"), change="deleted")
    doc["data"]["changes"] = {"status.health.status": {"from": "Healthy", "to": None}}
    dry_run(tmp_path, capsys, doc, (), HEALTHY + DEGRADED)


def test_another_repositorys_application_reports_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obj = application("Healthy")
    obj["metadata"]["labels"][environment.LABEL_REPO] = "acme.other"
    dry_run(tmp_path, capsys, event(obj, application("Progressing")), (), HEALTHY + DEGRADED)
