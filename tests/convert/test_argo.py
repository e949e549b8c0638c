"""`eventsvc convert argo-events`: converted Argo Events examples lint clean, and the dry run
of the converted sensor fires on the payloads the Argo sensor fires on, with the same values."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from eventsvc import cli, loader

ARGO = Path(__file__).parent / "argo"
SHA = "6113728f27ae82c7b1a177c8d03f9e96e2a96d5a"


def convert(capsys: pytest.CaptureFixture[str], out: Path, *paths: Path) -> tuple[int, str, str]:
    rc = cli.main(["convert", "argo-events", *map(str, paths), "-o", str(out)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def lint_clean(out: Path) -> None:
    loaded = loader.load_paths([out])
    assert loaded.problems == [] and loaded.warnings == []
    assert loaded.files


def dry_run(capsys: pytest.CaptureFixture[str], tmp: Path, sensor: Path, event: Any,
            *extra: str) -> tuple[int, str]:  # fmt: skip
    path = tmp / f"event-{len(list(tmp.glob('event-*')))}.json"
    path.write_text(json.dumps(event))
    rc = cli.main(["test", str(sensor), "--event", str(path), *extra])
    return rc, capsys.readouterr().out


def webhook_event(data: dict[str, Any], time: str = "2026-12-01T10:00:00Z") -> dict[str, Any]:
    """What POST /events makes of the webhook, with Argo's context (see the instructions)."""
    return {"specversion": "1.0", "id": "e1", "type": "webhook", "source": "webhook",
            "subject": "example", "time": time, "datacontenttype": "application/json",
            "data": data}  # fmt: skip


# -- webhook: data, expr, context and time filters; a k8s trigger with parameters -------------

GOOD = {"message": "well hello there", "value": 75, "ok": True, "a": "b", "c": 10}


def test_webhook_sensor_converts_and_lints_clean(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:  # fmt: skip
    rc, out, err = convert(capsys, tmp_path / "out", ARGO / "webhook.yaml")
    assert rc == 0, err
    assert err.strip().endswith("0 not converted")
    lint_clean(tmp_path / "out")
    assert "ce-type: webhook, ce-source: webhook, ce-subject: example" in out


@pytest.mark.parametrize(("data", "time", "fires"), [
    (GOOD, "2026-12-01T10:00:00Z", True),
    ({**GOOD, "value": 50}, "2026-12-01T10:00:00Z", False),  # comparator '>'
    ({**GOOD, "message": "goodbye"}, "2026-12-01T10:00:00Z", False),  # regex
    ({**GOOD, "ok": False}, "2026-12-01T10:00:00Z", False),  # bool
    ({**GOOD, "a": "x"}, "2026-12-01T10:00:00Z", False),  # expr: neither side of ||
    ({**GOOD, "a": "x", "c": 10.0}, "2026-12-01T10:00:00Z", False),  # numbers are numbers
    ({**GOOD, "a": "x", "c": 11}, "2026-12-01T10:00:00Z", True),
    (GOOD, "2026-12-01T21:00:00Z", False),  # outside 08:00-20:00 UTC
    ({k: v for k, v in GOOD.items() if k != "value"}, "2026-12-01T10:00:00Z", False),  # missing
])  # fmt: skip
def test_webhook_sensor_fires_where_argo_fires(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path, data: dict[str, Any], time: str,
                                               fires: bool) -> None:  # fmt: skip
    rc, _, err = convert(capsys, tmp_path / "out", ARGO / "webhook.yaml")
    assert rc == 0, err
    expect = "--expect-fire" if fires else "--expect-no-fire"
    rc, text = dry_run(capsys, tmp_path, tmp_path / "out" / "webhook-filters.yaml",
                       webhook_event(data, time), "--nats-subject", "events.http.webhook",
                       expect, "pod-trigger")  # fmt: skip
    assert rc == 0, text


def test_webhook_sensor_renders_the_values_argo_would(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:  # fmt: skip
    convert(capsys, tmp_path / "out", ARGO / "webhook.yaml")
    rc, text = dry_run(capsys, tmp_path, tmp_path / "out" / "webhook-filters.yaml",
                       webhook_event(GOOD), "--nats-subject", "events.http.webhook")
    assert rc == 0, text
    assert '"well hello there"' in text  # dataKey body.message -> spec.containers.0.args.0
    assert '"source": "webhook"' in text  # contextKey source -> metadata.labels.source
    assert '"team": "platform"' in text  # dataKey with a missing key: the default value


@pytest.mark.parametrize(("data", "fires"), [
    ({"env": "prod", "priority": 1}, True),
    ({"env": "dev", "priority": 7}, True),
    ({"env": "production", "priority": 1}, False),  # ^prod$
    ({"env": "dev", "priority": 4}, False),
])  # fmt: skip
def test_data_logical_operator_or(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                  data: dict[str, Any], fires: bool) -> None:  # fmt: skip
    convert(capsys, tmp_path / "out", ARGO / "webhook.yaml")
    rc, text = dry_run(capsys, tmp_path, tmp_path / "out" / "webhook-or.yaml",
                       webhook_event(data), "--nats-subject", "events.http.webhook",
                       "--expect-fire" if fires else "--expect-no-fire", "page")  # fmt: skip
    assert rc == 0, text


# -- GitHub: an event source with secret references; an argoWorkflow trigger ------------------


def push(**over: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "ref": "refs/heads/main", "after": SHA,
        "repository": {"full_name": "acme/shop", "html_url": "https://github.com/acme/shop",
                       "size": 20},
        "sender": {"login": "acme-bot"}, "pusher": {"name": "ada"},
        "head_commit": {"message": "fix the cart"},
    }  # fmt: skip
    payload.update(over)
    return payload


def test_github_event_source_prints_its_settings(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:  # fmt: skip
    rc, out, err = convert(capsys, tmp_path / "out", ARGO / "github.yaml")
    assert rc == 0, err
    lint_clean(tmp_path / "out")
    assert "acme/shop at https://<eventsvc host>/webhooks/github" in out
    assert "github.allowedEvents: [push, pull_request]" in out
    assert "key 'secret' of Secret 'github-access'" in out
    assert "EVENTSVC_GITHUB_WEBHOOK_SECRET_FILE" in out
    assert "EVENTSVC_GITHUB_TOKEN" in out
    text = (tmp_path / "out" / "github-release.yaml").read_text()
    assert "eventSubject: events.github.*" in text
    assert "source: https://github.com/acme/shop" in text


@pytest.mark.parametrize(("event", "payload", "fires"), [
    ("push", push(), True),
    ("push", push(ref="refs/heads/dev"), False),
    ("push", push(sender={"login": "mallory"}), False),  # expr: sender =~ '^acme-'
    ("push", push(repository={"full_name": "acme/shop", "html_url":
                               "https://github.com/acme/shop", "size": 5}), False),
    ("push", push(head_commit={"message": "docs [skip ci]"}), False),  # comparator '!='
    ("push", push(repository={"full_name": "acme/other", "html_url":
                               "https://github.com/acme/other", "size": 20}), False),
    ("pull_request", push(), False),  # header X-Github-Event: push
])  # fmt: skip
def test_github_sensor_fires_where_argo_fires(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path, event: str,
                                              payload: dict[str, Any], fires: bool) -> None:  # fmt: skip
    convert(capsys, tmp_path / "out", ARGO / "github.yaml")
    rc, text = dry_run(capsys, tmp_path, tmp_path / "out" / "github-release.yaml", payload,
                       "--github-event", event,
                       "--expect-fire" if fires else "--expect-no-fire", "release-workflow")
    assert rc == 0, text


def test_github_sensor_renders_the_workflow_parameters(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:  # fmt: skip
    convert(capsys, tmp_path / "out", ARGO / "github.yaml")
    rc, text = dry_run(capsys, tmp_path, tmp_path / "out" / "github-release.yaml", push(),
                       "--github-event", "push")
    assert rc == 0, text
    body = json.loads(text[text.index("{"): text.rindex("}") + 1])
    params = body["argoWorkflow"]["workflow"]["spec"]["arguments"]["parameters"]
    assert [p["value"] for p in params] == [SHA, "ada", f"release {SHA} of acme/shop"]


# -- calendar: Schedules; a k8s delete with a parameter; conditionsReset -----------------------


def test_calendar_event_source_becomes_schedules(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:  # fmt: skip
    rc, _, err = convert(capsys, tmp_path / "out", ARGO / "calendar.yaml")
    assert rc == 0, err
    lint_clean(tmp_path / "out")
    loaded = loader.load_paths([tmp_path / "out"])
    by_name = {s.name: s for s in loaded.by_kind["Schedule"]}
    nightly = by_name["calendar-nightly"]
    assert (nightly.expression, nightly.timezone) == ("30 2 * * *", "Europe/Berlin")
    assert [str(d) for d in nightly.exclusion_dates] == ["2026-12-24"]
    assert nightly.data == {"purpose": "cleanup"}
    assert by_name["calendar-every-ten"].expression == "@every 10m"
    sensor = loaded.sensors[0]
    assert sensor.correlation.conditions_reset == ("59 23 * * *",)


def test_calendar_sensor_fires_on_its_tick(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:  # fmt: skip
    convert(capsys, tmp_path / "out", ARGO / "calendar.yaml")
    tick = {"specversion": "1.0", "id": "calendar-nightly:1", "type": "dev.eventsvc.schedule.tick",
            "source": "eventsvc://schedules/calendar-nightly", "subject": "calendar-nightly",
            "time": "2026-12-01T01:30:00Z",
            "data": {"scheduledTime": "2026-12-01T01:30:00Z", "firedTime": "2026-12-01T01:30:01Z",
                     "data": {"purpose": "cleanup"}}}  # fmt: skip
    rc, text = dry_run(capsys, tmp_path, tmp_path / "out" / "calendar-cleanup.yaml", tick,
                       "--nats-subject", "events.cron.calendar-nightly",
                       "--expect-fire", "cleanup")  # fmt: skip
    assert rc == 0, text
    assert '"scheduled": "2026-12-01T01:30:00Z"' in text  # Argo's eventTime


# -- what does not convert ----------------------------------------------------------------------

UNSUPPORTED = [
    (12, "spec.dependencies[0].filters.script", "Lua script filters"),
    (20, "spec.triggers[0].template.k8s.source.s3", "S3 trigger sources"),
    (26, "spec.triggers[1].template.awsLambda", "no AWS Lambda trigger"),
    (34, "spec.triggers[2].template.http.secureHeaders[0]", "no secret references"),
    (39, "spec.triggers[2].template.http.payload", "builds no custom body"),
    (45, "spec.triggers[2].template.http.parameters[0]", "'title'"),
    (51, "spec.triggers[3].template.futureField", "no eventsvc counterpart"),
    (54, "spec.triggers[3].template.k8s.futureK8sField", "no eventsvc counterpart"),
]


def test_unsupported_features_are_commented_reported_and_exit_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, _, err = convert(capsys, tmp_path / "out", ARGO / "unsupported.yaml")
    assert rc == 1
    text = (tmp_path / "out" / "unsupported.yaml").read_text()
    source = str(ARGO / "unsupported.yaml")
    for line, field, why in UNSUPPORTED:
        assert re.search(rf"^{re.escape(source)}:{line}: {re.escape(field)}: .*{re.escape(why)}",
                         err, re.M), (field, err)  # fmt: skip
        assert f"# eventsvc: not converted: {field}: " in text
    assert f"{len(UNSUPPORTED)} not converted" in err
    lint_clean(tmp_path / "out")  # what did convert still lints clean


def test_no_argo_manifest_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:  # fmt: skip
    rc, _, err = convert(capsys, tmp_path / "out", ARGO.parents[2] / "sensors")
    assert rc == 2
    assert "no Argo Events Sensor or EventSource" in err


# -- lint ---------------------------------------------------------------------------------------


def test_lint_refuses_an_argo_manifest_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["lint", str(ARGO / "calendar.yaml")])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert len(out) == 2  # the EventSource and the Sensor, one line each
    assert all("an Argo Events" in line and "eventsvc convert argo-events" in line
               for line in out)  # fmt: skip


def test_argo_exprs_shape_prints_no_parser_dump(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:  # fmt: skip
    sensor = tmp_path / "s.yaml"
    sensor.write_text(
        "apiVersion: eventsvc.dev/v1alpha1\nkind: Sensor\nmetadata: {name: s}\nspec:\n"
        "  dependencies:\n    - name: d\n      filters:\n        exprs:\n"
        "          - expr: a == 'b'\n            fields: [{name: a, path: body.a}]\n"
        "  triggers:\n    - template: {name: t, log: {}}\n"
    )
    rc = cli.main(["lint", str(sensor)])
    captured = capsys.readouterr()
    assert rc == 1
    assert "STATE STACK" not in captured.out + captured.err
    assert "{expr, fields}" in captured.out
    assert len(captured.out) < 1000


# -- NATS: templates, trigger-level parameters, patch, terminate, dlqTrigger, `or` -------------


def nats_event(data: dict[str, Any]) -> dict[str, Any]:
    return {"specversion": "1.0", "id": "b1", "type": "nats", "source": "nats",
            "subject": "builds", "datacontenttype": "application/json", "data": data}  # fmt: skip


@pytest.mark.parametrize(("data", "fires"), [
    ({"id": 42, "status": "failed", "retries": 0}, True),
    ({"id": 42, "status": "ok", "retries": 3}, True),  # filtersLogicalOperator: or
    ({"id": 42, "status": "ok", "retries": 1}, False),
    ({"id": 42, "status": "failed-ish", "retries": 1}, False),
])  # fmt: skip
def test_nats_sensor_fires_where_argo_fires(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                            data: dict[str, Any], fires: bool) -> None:  # fmt: skip
    rc, out, err = convert(capsys, tmp_path / "out", ARGO / "nats.yaml")
    assert rc == 0, err
    assert "--nats-subject events.nats.nats.builds" in out
    lint_clean(tmp_path / "out")
    event = nats_event({**data, "tags": [], "workflow": "w"})
    rc, text = dry_run(capsys, tmp_path, tmp_path / "out" / "builds.yaml", event,
                       "--nats-subject", "events.nats.nats.builds",
                       "--expect-fire" if fires else "--expect-no-fire", "mark-build")
    assert rc == 0, text


def test_templates_render_as_argo_renders_them(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:  # fmt: skip
    convert(capsys, tmp_path / "out", ARGO / "nats.yaml")
    event = nats_event({"id": 42, "status": "failed", "retries": 0, "tags": ["a", "b"],
                        "workflow": "build-42"})  # fmt: skip
    rc, text = dry_run(capsys, tmp_path, tmp_path / "out" / "builds.yaml", event,
                       "--nats-subject", "events.nats.nats.builds")
    assert rc == 0, text
    assert '"status": "failed"' in text  # "{{ .Input.body.status }}" -> src.expr
    assert '"summary": "build 42 is failed"' in text  # text and a sprig default, in place
    assert '"source": "nats/builds"' in text  # contextTemplate
    assert '"tags": "tags=[\\"a\\",\\"b\\"]"' in text  # toJson inside text: compact JSON
    assert '"namespace": "ci"' in text  # trigger-level parameter, missing key: its default
    assert '"name": "build-42"' in text  # terminate: the Workflow's name from the event


def test_malformed_manifests_are_findings_not_tracebacks(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:  # fmt: skip
    rc, _, err = convert(capsys, tmp_path / "out", ARGO / "malformed.yaml")
    assert rc == 1
    assert "Traceback" not in err
    assert "spec.dependencies[0].filters.data: data must be a list" in err
    assert "'x ==' is not a complete expression" in err
    assert "nothing was written for it" in err  # spec: [1, 2]
    assert "spec.github: github must map event names to their settings" in err


def test_exprs_translate_to_cel() -> None:
    from eventsvc.convert import celmap

    fields = {"a": "data.a", "b": "data.b"}
    assert celmap.expr_to_cel("a in ('x', 'y') && b !~ '^t'", fields) == (
        'data.a in ["x", "y"] && !string(data.b).matches("^t")')
    assert celmap.expr_to_cel("a != nil || 2 < b", fields) == (
        "data.a != null || 2.0 < double(data.b)")
    with pytest.raises(celmap.NotConvertible, match="neither a field"):
        celmap.expr_to_cel("c == 1", fields)


ONE_GROUP_OR = """\
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: one-group}
spec:
  dependencies:
    - name: dep
      eventSourceName: webhook
      eventName: example
      filtersLogicalOperator: or
      filters:
        dataLogicalOperator: or
        data:
          - {path: header.X-GitHub-Event, type: string, value: [push]}
          - {path: body.force, type: bool, value: ["true"]}
  triggers:
    - template: {name: go, conditions: dep, log: {}}
"""


@pytest.mark.parametrize(("source", "attrs", "data", "fires"), [
    ("webhook", {"githubevent": "push"}, {"force": False}, True),
    ("webhook", {}, {"force": True}, True),
    ("webhook", {}, {"force": False}, False),
    ("elsewhere", {"githubevent": "push"}, {"force": True}, False),  # the selection stays ANDed
])  # fmt: skip
def test_or_never_loosens_the_dependency_selection(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str, attrs: dict[str, str],
    data: dict[str, Any], fires: bool,
) -> None:  # fmt: skip
    (tmp_path / "argo.yaml").write_text(ONE_GROUP_OR)
    rc, _, err = convert(capsys, tmp_path / "out", tmp_path / "argo.yaml")
    assert rc == 0, err
    lint_clean(tmp_path / "out")
    event = {**webhook_event(data), "source": source, **attrs}
    rc, text = dry_run(capsys, tmp_path, tmp_path / "out" / "one-group.yaml", event,
                       "--nats-subject", "events.http.webhook",
                       "--expect-fire" if fires else "--expect-no-fire", "go")  # fmt: skip
    assert rc == 0, text


@pytest.mark.parametrize("template, expected", [
    ("{{ .Input.body.ref | trimPrefix \"refs/heads/\" | upper }}", "FEATURE/X-1"),
    ("{{ .Input.body.name | lower }}", "shop api"),
    ("{{ .Input.body.pad | trim }}", "x"),
    ("{{ .Input.body.file | trimSuffix \".yaml\" }}", "values"),
    ("{{ .Input.body.path | replace \"/\" \"-\" }}", "refs-heads-feature-x-1"),
    ("{{ .Input.body.sha | substr 0 7 }}", "0123456"),
    ("{{ substr 5 99 .Input.body.sha }}", "56789"),
    ("{{ substr -3 4 .Input.body.sha }}", "0123"),
    ("{{ .Input.body.sha | trunc 4 }}", "0123"),
    ("{{ .Input.body.sha | trunc -2 }}", "89"),
    ("{{ .Input.body.sha | trunc 40 }}", "0123456789"),
    ("{{ .Input.body.path | splitList \"/\" | join \".\" }}", "refs.heads.feature.x-1"),
])  # fmt: skip
def test_sprig_string_functions_render_as_sprig_does(template: str, expected: str) -> None:
    """The expected values are what Go's text/template with sprig prints for these."""
    from eventsvc import cel
    from eventsvc.convert import celmap

    data = {"ref": "refs/heads/Feature/X-1", "path": "refs/heads/feature/x-1",
            "name": "Shop API", "pad": "  x \n", "file": "values.yaml", "sha": "0123456789"}
    [piece] = celmap.template_pieces(
        template, lambda word: "data." + word.removeprefix(".Input.body."))
    assert isinstance(piece, tuple)
    assert cel.Program(piece[0]).evaluate({"data": cel.to_cel(data)}) == expected
