"""`eventsvc test`: explanations, rendered bodies, and exit codes for CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventsvc import cli
from tests.conftest import pr_payload

ROOT = Path(__file__).resolve().parents[1]
SENSOR = str(ROOT / "sensors" / "pr-main.yaml")



def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["test", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def write(tmp_path: Path, name: str, doc: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_passing_github_payload(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = write(tmp_path, "pr.json", pr_payload(number=12))
    code, out = run(capsys, SENSOR, "--event", event, "--github-event", "pull_request",
                    "--expect-fire", "log-pr")  # fmt: skip
    assert code == 0, out
    assert "dependency pr: MATCHED" in out
    assert "pass  data.pull_request.base.ref  seen \"main\"  expected \"main\"" in out
    assert "log-pr (log): FIRES" in out
    assert '"message": "pull request #12 to main: Add checkout, by dev"' in out


def test_failing_event_says_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = write(tmp_path, "pr.json", pr_payload(base="develop"))
    code, out = run(capsys, SENSOR, "--event", event, "--github-event", "pull_request",
                    "--expect-fire", "log-pr")  # fmt: skip
    assert code == 1
    assert "FAIL  data.pull_request.base.ref  seen \"develop\"  expected \"main\"" in out
    assert "log-pr (log): does not fire; conditions 'pr' not met (pr=no)" in out
    assert "EXPECTATION FAILED: trigger 'log-pr' does not fire" in out
    code, _ = run(capsys, SENSOR, "--event", event, "--github-event", "pull_request",
                  "--expect-no-fire", "log-pr")  # fmt: skip
    assert code == 0


def test_expect_no_fire_violated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = write(tmp_path, "pr.json", pr_payload())
    code, out = run(capsys, SENSOR, "--event", event, "--github-event", "pull_request",
                    "--expect-no-fire", "log-pr")  # fmt: skip
    assert code == 1
    assert "EXPECTATION FAILED: trigger 'log-pr' fires" in out


MULTI = """apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: deploy}
spec:
  dependencies:
    - name: built
      filters:
        context: {type: com.example.image.built}
        exprs: ["data.ok == true"]
    - name: labelled
      filters:
        context: {type: com.github.pull_request.labeled}
        data: [{path: label.name, value: deploy}]
  triggers:
    - template:
        name: deploy
        conditions: built && labelled
        log:
          message: "deploy {{ events.built.data.tag }} for PR {{ events.labelled.data.number }}"
    - template:
        name: fail
        conditions: built
        log: {message: "{{ data.nope }}"}
"""


def test_cloudevents_across_dependencies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sensor = tmp_path / "deploy.yaml"
    sensor.write_text(MULTI)
    built = write(tmp_path, "built.json", {
        "specversion": "1.0", "id": "b1", "source": "https://ci", "type": "com.example.image.built",
        "data": {"ok": True, "tag": "abc"}})  # fmt: skip
    label = write(tmp_path, "label.json", {
        "specversion": "1.0", "id": "l1", "source": "https://github.com/acme/shop",
        "type": "com.github.pull_request.labeled",
        "data": {"number": 7, "label": {"name": "deploy"}}})  # fmt: skip
    code, out = run(capsys, str(sensor), "--event", built, "--expect-no-fire", "deploy")
    assert code == 1  # `fail` fires and cannot render: reported, exit 1
    assert "would FAIL to render: template.log.message: {{ data.nope }} failed on event b1" in out
    code, out = run(capsys, str(sensor), "--event", built, "--event", label,
                    "--expect-fire", "deploy")  # fmt: skip
    assert '"message": "deploy abc for PR 7"' in out
    assert "pass  eventSubject  not checked" in out


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = write(tmp_path, "pr.json", pr_payload())
    code, out = run(capsys, SENSOR, "--event", event)
    assert code == 2 and "--github-event" in out
    code, out = run(capsys, SENSOR, "--event", event, "--github-event", "pull_request",
                    "--expect-fire", "nope")  # fmt: skip
    assert code == 2 and "no trigger named 'nope'" in out
    code, out = run(capsys, SENSOR, "--event", str(tmp_path / "missing.json"))
    assert code == 2


def test_invalid_sensor_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sensor = tmp_path / "bad.yaml"
    sensor.write_text(MULTI.replace("conditions: built && labelled", "conditions: built && x"))
    event = write(tmp_path, "pr.json", pr_payload())
    code, out = run(capsys, str(sensor), "--event", event, "--github-event", "pull_request")
    assert code == 1 and "dependency 'x' is not declared" in out


def _env_result(action: str) -> dict[str, object]:
    detail = {"action": action, "url": "https://pr-7.preview.example.com", "reason": "closed",
              "repository": "acme/shop", "pullRequest": 7, "namespace": "pr-7-acme-shop",
              "headSha": "0123456789abcdef0123456789abcdef01234567"}  # fmt: skip
    return {"specversion": "1.0", "id": f"r-{action}", "type": "dev.eventsvc.trigger.result",
            "source": "eventsvc/sensors/pr-environments", "subject": "preview-environment",
            "data": {"sensor": "pr-environments", "trigger": "preview-environment",
                     "outcome": "success", "detail": detail}}  # fmt: skip


def test_pr_environment_feedback_on_a_sample_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sensor = str(ROOT / "sensors" / "pr-environments.yaml")
    created = write(tmp_path, "created.json", _env_result("created"))
    code, out = run(capsys, sensor, "--event", created, "--expect-fire", "comment-url",
                    "--expect-fire", "status", "--expect-no-fire", "comment-removed")  # fmt: skip
    assert code == 0, out
    assert ('pass  eventSubject  seen "results.pr-environments.preview-environment"  expected '
            '"results.pr-environments.preview-environment"') in out  # from the result's data
    assert '"targetUrl": "https://pr-7.preview.example.com"' in out
    assert '"number": 7,' in out
    deleted = write(tmp_path, "deleted.json", _env_result("deleted"))
    code, out = run(capsys, sensor, "--event", deleted, "--expect-fire", "comment-removed",
                    "--expect-no-fire", "comment-url", "--expect-no-fire", "status")  # fmt: skip
    assert code == 0, out
    assert "was removed\\n(closed)." in out


def test_correlated_events_pair_only_on_equal_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # as in the engine: a build for one commit and an approval of another do not pair
    sensor = str(ROOT / "sensors" / "ship-approved-image.yaml")
    label = pr_payload(number=8, action="labeled", label={"name": "deploy"})
    label["pull_request"]["head"]["sha"] = "abc"
    approved = write(tmp_path, "label.json", label)

    def built(sha: str) -> str:
        return write(tmp_path, f"built-{sha}.json", {
            "specversion": "1.0", "id": f"b-{sha}", "source": "https://ci",
            "type": "com.example.image.built", "data": {"sha": sha}})  # fmt: skip

    code, out = run(capsys, sensor, "--event", built("def"), "--event", approved,
                    "--github-event", "pull_request", "--expect-no-fire", "deploy")  # fmt: skip
    assert code == 0, out
    assert ("deploy (log): does not fire; conditions 'built && approved' not met by events "
            "with equal correlate keys (built=yes (key \"def\") approved=yes (key \"abc\"))"
            ) in out  # fmt: skip
    code, out = run(capsys, sensor, "--event", built("abc"), "--event", approved,
                    "--github-event", "pull_request", "--expect-fire", "deploy")  # fmt: skip
    assert code == 0, out


def test_bad_time_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = write(tmp_path, "pr.json", pr_payload())
    code, out = run(capsys, SENSOR, "--event", event, "--github-event", "pull_request",
                    "--time", "yesterday")  # fmt: skip
    assert code == 2
    assert "time 'yesterday' is not RFC 3339; --time takes e.g. 2026-03-01T09:30:00Z" in out


def test_environment_gates_are_shown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the trigger runs either way; the note says a draft PR's run would skip
    sensor = str(ROOT / "sensors" / "pr-environments.yaml")
    draft = pr_payload(action="labeled", label={"name": "preview"})
    draft["pull_request"].update(draft=True, labels=[{"name": "preview"}])
    code, out = run(capsys, sensor, "--event", write(tmp_path, "d.json", draft),
                    "--github-event", "pull_request", "--expect-fire", "preview-environment")
    assert code == 0, out
    assert "when it runs: skips the environment of PR #7 (draft pull request)" in out
    draft["pull_request"]["draft"] = False
    code, out = run(capsys, sensor, "--event", write(tmp_path, "r.json", draft),
                    "--github-event", "pull_request")  # fmt: skip
    assert "when it runs: creates or updates the environment of PR #7 (labeled)" in out


def test_output_json_holds_every_verdict_rendered_body_and_expectation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write(tmp_path, "pr.json", pr_payload(number=12))
    other = write(tmp_path, "dev.json", pr_payload(number=13, base="develop"))
    code, out = run(capsys, SENSOR, "--event", good, "--event", other, "--github-event",
                    "pull_request", "--expect-fire", "log-pr", "-o", "json")  # fmt: skip
    assert code == 0, out
    doc = json.loads(out)
    assert doc["ok"] is True
    assert doc["expectations"] == [{"trigger": "log-pr", "expected": "fires", "met": True}]
    [sensor] = doc["sensors"]
    first, second = sensor["events"]
    assert first["dependencies"][0]["matched"] is True
    assert second["dependencies"][0]["matched"] is False
    assert any("FAIL  data.pull_request.base.ref" in r for r in second["dependencies"][0]["reasons"])
    [trigger] = sensor["triggers"]
    assert trigger["fires"] and trigger["name"] == "log-pr" and "log" in trigger["rendered"]

    code, out = run(capsys, SENSOR, "--event", other, "--github-event", "pull_request",
                    "--expect-fire", "log-pr", "--output", "json")  # fmt: skip
    assert code == 1
    doc = json.loads(out)  # nothing but the document on stdout, even when it fails
    assert doc["ok"] is False and doc["expectations"][0]["met"] is False


@pytest.mark.parametrize("kind, section, said", [
    ("http", {"url": "https://hooks.example/x", "method": "PUT"}, "PUT https://hooks.example/x"),
    ("nats", {"subject": "events.ci.done"}, "publishes the event on events.ci.done"),
    ("log", {"message": "hi"}, "writes the message"),
    ("k8s", {"operation": "apply", "source": {"resource": {"apiVersion": "v1",
     "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}}}},
     "applies v1 ConfigMap 'c' in namespace ns"),
    ("argoWorkflow", {"namespace": "argo", "workflowTemplateRef": {"name": "deploy"},
                      "arguments": {"parameters": [{"name": "sha", "value": "abc"}]}},
     "submits a Workflow from template 'deploy' in namespace argo with parameters sha"),
    ("githubStatus", {"state": "success", "repo": "acme/shop", "sha": "abc1234"},
     "sets commit status 'success' on acme/shop@abc1234"),
    ("githubComment", {"body": "hi", "repo": "acme/shop", "number": "7"},
     "comment on acme/shop#7"),
    ("promotion", {"repo": "https://github.com/acme/deploy.git", "branch": "main",
                   "environment": "production", "app": "shop",
                   "edits": [{"file": "apps/shop/values.yaml"}]},
     "promotes shop to production: opens or updates a promotion pull request into "
     "https://github.com/acme/deploy.git branch main"),
    ("environment", {"mode": "sweep"}, "removes the environments"),
])  # fmt: skip
def test_every_kind_says_what_it_would_do(kind: str, section: dict, said: str) -> None:
    from eventsvc.triggers import REGISTRY

    assert said in (REGISTRY[kind].explain(section, None) or "")


def test_the_dry_run_prints_the_kinds_account(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = write(tmp_path, "pr.json", pr_payload(number=12))
    code, out = run(capsys, SENSOR, "--event", event, "--github-event", "pull_request")
    assert code == 0, out
    assert "when it runs: writes the message to the service's log" in out
