"""Sensor files: every mistake reported as file:line: field: message."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventsvc import loader
from eventsvc.triggers import REGISTRY

REPO = Path(__file__).resolve().parents[2]

BAD = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata:
  name: Bad_Name
spec:
  dependencies:
    - name: pr
      filter:
        context: {type: {prefx: a}}
    - name: pr
      filters:
        context: {source: 5}
        data: [{path: a}]
  triggers:
    - template:
        name: t1
        conditions: "pr && build"
        http: {urll: x, method: FOO}
    - template:
        name: t1
        log: {}
        nats: {subject: "a b"}
    - template:
        name: t3
        http: {url: "ftp://x"}
"""


def test_every_mistake_in_a_file_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    lines = [str(p).removeprefix(str(tmp_path) + "/") for p in loader.load_paths([path]).problems]
    assert lines == [
        "bad.yaml:4: metadata.name: 'Bad_Name': use lowercase letters, digits and '-', "
        "starting and ending alphanumeric (RFC 1123)",
        "bad.yaml:8: spec.dependencies[0].filter: unknown field; did you mean 'filters'?",
        "bad.yaml:10: spec.dependencies[1].name: duplicate dependency name 'pr'",
        "bad.yaml:12: spec.dependencies[1].filters.context.source: expected a string or a mapping, "
        "got an integer",
        "bad.yaml:13: spec.dependencies[1].filters.data[0].path: give exactly one of value, "
        "regex or exists; found none",
        "bad.yaml:17: spec.triggers[0].template.conditions: dependency 'build' is not declared "
        "in spec.dependencies",
        "bad.yaml:18: spec.triggers[0].template.http.method: 'FOO' is not one of: POST, PUT, PATCH, "
        "GET, DELETE",
        "bad.yaml:18: spec.triggers[0].template.http.url: required",
        "bad.yaml:18: spec.triggers[0].template.http.urll: unknown field; did you mean 'url'?",
        "bad.yaml:19: spec.triggers[1].template: exactly one trigger kind is required "
        "(" + ", ".join(REGISTRY) + "); found log, nats",
        "bad.yaml:20: spec.triggers[1].template.name: duplicate trigger name 't1'",
        "bad.yaml:22: spec.triggers[1].template.nats.subject: 'a b': a NATS subject has no "
        "spaces or wildcards",
        "bad.yaml:25: spec.triggers[2].template.http.url: 'ftp://x' is not an http(s) URL",
    ]


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("apiVersion: v1\nkind: Sensor\nmetadata: {name: x\n")
    [problem] = loader.load_paths([path]).problems
    assert problem.line == 4 and problem.field == "(yaml)"


def test_unknown_kind_and_same_name_twice(tmp_path: Path) -> None:
    ok = (REPO / "sensors" / "pr-main.yaml").read_text()
    (tmp_path / "a.yaml").write_text(ok)
    (tmp_path / "b.yaml").write_text(ok + "---\napiVersion: eventsvc.dev/v1alpha1\nkind: Sensr\n")
    problems = [p.message for p in loader.load_paths([tmp_path]).problems]
    assert any("'Sensr' is not a known kind" in m for m in problems)
    assert any("Sensor 'pr-main' is already declared in" in m for m in problems)


def test_every_example_in_sensors_dir_is_valid() -> None:
    loaded = loader.load_paths([REPO / "sensors"])
    assert loaded.files, "sensors/ holds no examples"
    assert loaded.problems == []
    assert loaded.sensors


def test_impossible_unquoted_date_is_a_problem_of_its_field(tmp_path: Path) -> None:
    # the date is reported on its own field, and the rest of the file is still checked
    path = tmp_path / "d.yaml"
    path.write_text("apiVersion: eventsvc.dev/v1alpha1\nkind: Schedule\nmetadata: {name: x}\n"
                    "spec:\n  schedule: '@daily'\n  exclusionDates: [2026-13-01, 2026-02-30]\n"
                    "  timezone: Europe/Berln\n")  # fmt: skip
    problems = loader.load_paths([path]).problems
    assert [(p.line, p.field) for p in problems] == [
        (6, "spec.exclusionDates[0]"), (6, "spec.exclusionDates[1]"), (7, "spec.timezone"),
    ]  # fmt: skip
    assert "'2026-13-01' is not a date (month must be in 1..12)" in problems[0].message
    assert "'2026-02-30' is not a date (day is out of range for month)" in problems[1].message


def test_a_key_given_twice_is_a_problem(tmp_path: Path) -> None:
    # YAML keeps the last of two equal keys: the first filter list would vanish silently
    path = tmp_path / "dup.yaml"
    path.write_text("apiVersion: eventsvc.dev/v1alpha1\nkind: Sensor\nmetadata: {name: x}\n"
                    "spec:\n  dependencies:\n    - name: pr\n      filters:\n"
                    "        data: [{path: action, value: [opened]}]\n"
                    "        data: [{path: number, value: [1]}]\n"
                    "  triggers: [{template: {name: t, log: {message: hi}}}]\n")  # fmt: skip
    [problem] = loader.load_paths([path]).problems
    assert str(problem) == (
        f"{path}:9: spec.dependencies[0].filters.data: given twice (lines 8 and 9); "
        "YAML would keep only the last: merge them into one"
    )


HEAD = ("apiVersion: eventsvc.dev/v1alpha1\nkind: Sensor\nmetadata: {name: x}\n"
        "spec:\n  dependencies: [{name: pr}]\n  triggers:\n    - template:\n        name: t\n"
        "        log:\n")  # fmt: skip


@pytest.mark.parametrize(("tail", "expected"), [
    ("          message: {{ data.number }}\n",
     ":10: spec.triggers[0].template.log.message: expected a string, got a mapping; quote a "
     "value that starts with {{, e.g. \"{{ data.number }}\""),
    ("          message: {{ data.number }} opened\n",
     ":10: (yaml): expected <block end>, but found '<scalar>'; quote a value that holds {{ }}"),
    ("          message: pull request: opened\n",
     ":10: (yaml): mapping values are not allowed here; quote a value that contains ': '"),
    ("          message: \"opened\n",
     ":10: (yaml): found unexpected end of stream (while scanning a quoted scalar started on "
     "line 10); close the quote that starts on this line"),
    ("\t  message: opened\n",
     ":10: (yaml): found character '\\t' that cannot start any token; indent with spaces"),
])  # fmt: skip
def test_yaml_mistakes_name_the_fix(tmp_path: Path, tail: str, expected: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + tail)
    [problem] = loader.load_paths([path]).problems
    assert str(problem).startswith(f"{path}{expected}"), problem
