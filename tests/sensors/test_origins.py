"""Lint warns when a sensor acting on the cluster or GitHub takes events whose claimed
origin (GitHub, cron, the cluster) anyone could forge on the subject it reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eventsvc import loader

REPO = Path(__file__).resolve().parents[2]

SENSOR = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: s}}
spec:
  dependencies:
    - name: push
{subject}      filters:
        context: {context}
  triggers:
    - template:
        name: t
{trigger}
"""
COMMENT = "        githubComment: {repo: acme/shop, number: 1, body: hi}"
LOG = "        log: {message: hi}"


def lint(tmp_path: Path, context: str, subject: str = "", trigger: str = COMMENT) -> loader.Loaded:
    path = tmp_path / "s.yaml"
    line = f"      eventSubject: {subject}\n" if subject else ""
    path.write_text(SENSOR.format(subject=line, context=context, trigger=trigger))
    return loader.load_paths([path])


@pytest.mark.parametrize(("context", "subject", "root"), [
    ("{type: com.github.push}", "", "events.github."),
    ("{type: {prefix: com.github.pull_request.}}", "events.>", "events.github."),
    ("{source: https://github.com/acme/shop}", "events.ci.>", "events.github."),
    ("{all: [{type: {exact: dev.eventsvc.schedule.tick}}]}", "events.*.nightly", "events.cron."),
])  # fmt: skip
def test_a_claimed_origin_on_a_wider_subject_is_warned(
    tmp_path: Path, context: str, subject: str, root: str
) -> None:
    loaded = lint(tmp_path, context, subject)
    assert loaded.problems == [] and [s.name for s in loaded.sensors] == ["s"]  # still loads
    [warning] = loaded.warnings
    assert warning.severity == "warning"
    assert warning.field.startswith("spec.dependencies[0]")
    assert f"set eventSubject under {root}" in warning.message
    assert str(warning).startswith(f"{tmp_path / 's.yaml'}:")


@pytest.mark.parametrize(("context", "subject", "trigger"), [
    ("{type: com.github.push}", "events.github.push", COMMENT),  # the gateway's own subtree
    ("{type: com.github.push}", "events.github.>", COMMENT),
    ("{type: com.github.push}", "", LOG),  # logging a forged event harms nobody
    ("{type: com.acme.image.built}", "events.>", COMMENT),  # claims no origin of ours
    ("{any: [{type: com.github.push}, {type: com.acme.x}]}", "", COMMENT),  # not required
])  # fmt: skip
def test_no_warning_where_the_subject_matches_the_origin_or_nothing_acts(
    tmp_path: Path, context: str, subject: str, trigger: str
) -> None:
    assert lint(tmp_path, context, subject, trigger).warnings == []


def test_the_shipped_sensors_read_their_origins_subjects() -> None:
    loaded = loader.load_paths([REPO / "sensors"])
    assert loaded.problems == [] and loaded.warnings == []


def test_lint_prints_the_warning_and_exits_0(tmp_path: Path) -> None:
    lint(tmp_path, "{type: com.github.push}")
    result = subprocess.run([sys.executable, "-m", "eventsvc", "lint", str(tmp_path / "s.yaml")],
                            capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{tmp_path / 's.yaml'}:6: spec.dependencies[0]: warning: " in result.stdout
    assert "1 warning(s)" in result.stderr
