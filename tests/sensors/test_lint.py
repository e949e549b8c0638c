"""Lint of the full rule language: filters, CEL, parameters, templates; the shipped schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eventsvc import loader
from eventsvc.sensors.schema import sensor_schema

ROOT = Path(__file__).resolve().parents[2]
HEADER = """apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: s}
spec:
"""


def lint(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "s.yaml"
    path.write_text(HEADER + body)
    return [str(p).replace(str(path), "s.yaml") for p in loader.load_paths([path]).problems]


def test_published_schema_file_is_current() -> None:
    shipped = json.loads((ROOT / "eventsvc" / "schemas" / "sensor.schema.json").read_text())
    assert shipped == sensor_schema(), "stale eventsvc/schemas/sensor.schema.json: run make schema"


def test_valid_sensor_with_every_filter_kind(tmp_path: Path) -> None:
    assert lint(tmp_path, """\
  dependencies:
    - name: pr
      eventSubject: events.github.pull_request
      filtersLogicalOperator: and
      filters:
        context:
          type: {prefix: com.github.pull_request.}
          source: https://github.com/acme/shop
          any:
            - exact: {subject: "7"}
            - not: {suffix: {subject: "8"}}
        data:
          - {path: pull_request.base.ref, value: [main]}
          - {path: pull_request.labels.*.name, regex: "^deploy"}
          - {path: number, type: number, comparator: ">", value: 3}
          - {path: pull_request.merged_at, exists: false}
        dataLogicalOperator: and
        exprs: ["!data.pull_request.draft"]
        time: {start: "08:00", stop: "20:00", timezone: Europe/Berlin}
    - name: build
  triggers:
    - template:
        name: go
        conditions: pr && build
        log: {message: "PR {{ data.number }} by {{ events.pr.data.sender.login }}"}
      parameters:
        - src: {dependencyName: pr, dataKey: pull_request.title, value: untitled}
          dest: message
          operation: append
        - src: {dependencyName: build, expr: "data.sha", value: ""}
          dest: message
""") == []


CASES = [
    ("unknown field", "      filters: {contxt: {}}\n",
     "s.yaml:7: spec.dependencies[0].filters.contxt: unknown field; did you mean 'context'?"),
    ("wrong type", "      filters: {data: {path: x}}\n",
     "s.yaml:7: spec.dependencies[0].filters.data: expected a list, got a mapping"),
    ("bad regex", "      filters: {data: [{path: x, regex: '(a'}]}\n",
     "s.yaml:7: spec.dependencies[0].filters.data[0].regex: bad regular expression '(a'"),
    ("cel syntax", "      filters: {exprs: ['data.x ==']}\n",
     "s.yaml:7: spec.dependencies[0].filters.exprs[0]: CEL syntax error at column 8"),
    ("cel unknown name", "      filters: {exprs: ['foo.x']}\n",
     "s.yaml:7: spec.dependencies[0].filters.exprs[0]: unknown name(s) foo"),
    ("value not a number", "      filters: {data: [{path: x, type: number, value: [a]}]}\n",
     "s.yaml:7: spec.dependencies[0].filters.data[0].value: 'a' is not a number"),
    ("value and exists", "      filters: {data: [{path: x, value: [a], exists: true}]}\n",
     "s.yaml:7: spec.dependencies[0].filters.data[0].path: give exactly one of value, regex"),
    ("ordering booleans",
     "      filters: {data: [{path: x, type: bool, comparator: '<', value: [true]}]}\n",
     "s.yaml:7: spec.dependencies[0].filters.data[0].comparator: '<' does not order booleans"),
    ("empty time window", "      filters: {time: {start: '10:00', stop: '10:00'}}\n",
     "s.yaml:7: spec.dependencies[0].filters.time: start and stop are both '10:00'"),
    ("bad timezone", "      filters: {time: {start: '1:00', stop: '2:00', timezone: Mars/X}}\n",
     "s.yaml:7: spec.dependencies[0].filters.time: 'Mars/X' is not an IANA timezone"),
    ("subject outside stream", "      eventSubject: foo.bar\n",
     "s.yaml:7: spec.dependencies[0].eventSubject: 'foo.bar' is in no stream a sensor reads: "
     "start it with 'events.' (stream EVENTS, e.g. 'events.github.>') or 'results.' (stream "
     "RESULTS"),
    ("bare wildcard subject", "      eventSubject: '>'\n",
     "s.yaml:7: spec.dependencies[0].eventSubject: '>' is in no stream a sensor reads"),
    ("bad attribute name", "      filters: {context: {Type: x}}\n",
     "s.yaml:7: spec.dependencies[0].filters.context: 'Type': CloudEvents attribute names"),
]


@pytest.mark.parametrize(("case", "dep_extra", "expected"), CASES, ids=[c[0] for c in CASES])
def test_dependency_problems(tmp_path: Path, case: str, dep_extra: str, expected: str) -> None:
    problems = lint(tmp_path, f"""\
  dependencies:
    - name: pr
{dep_extra}  triggers:
    - template: {{name: t, log: {{}}}}
""")
    assert any(p.startswith(expected) for p in problems), problems


TRIGGER_CASES = [
    ("duplicate trigger",
     "    - template: {name: t, log: {}}\n    - template: {name: t, log: {}}\n",
     "s.yaml:10: spec.triggers[1].template.name: duplicate trigger name 't'"),
    ("undeclared in conditions", "    - template: {name: t, conditions: pr && ci, log: {}}\n",
     "s.yaml:9: spec.triggers[0].template.conditions: dependency 'ci' is not declared"),
    ("undeclared in parameter",
     "    - template: {name: t, log: {}}\n"
     "      parameters: [{src: {dependencyName: ci, dataKey: x}, dest: message}]\n",
     "s.yaml:10: spec.triggers[0].parameters[0].src.dependencyName: dependency 'ci' is not"),
    ("parameter outside conditions",
     "    - template: {name: t, conditions: pr, log: {}}\n"
     "      parameters: [{src: {dependencyName: other, dataKey: x}, dest: message}]\n",
     "s.yaml:10: spec.triggers[0].parameters[0].src.dependencyName: dependency 'other' is not in"),
    ("parameter two sources",
     "    - template: {name: t, log: {}}\n"
     "      parameters: [{src: {dependencyName: pr, dataKey: x, expr: '1'}, dest: message}]\n",
     "s.yaml:10: spec.triggers[0].parameters[0].src.expr: give one of dataKey, contextKey, expr"),
    ("parameter bad dest",
     "    - template: {name: t, log: {}}\n"
     "      parameters: [{src: {dependencyName: pr, dataKey: x}, dest: mesage}]\n",
     "s.yaml:10: spec.triggers[0].parameters[0].dest: 'mesage' is not a field of this trigger"),
    ("parameter bad expr",
     "    - template: {name: t, log: {}}\n"
     "      parameters: [{src: {dependencyName: pr, expr: 'data.'}, dest: message}]\n",
     "s.yaml:10: spec.triggers[0].parameters[0].src.expr: CEL syntax error"),
    ("template bad expr", "    - template: {name: t, log: {message: '{{ data.x + }}'}}\n",
     "s.yaml:9: spec.triggers[0].template.log.message: CEL syntax error"),
    ("template undeclared events",
     "    - template: {name: t, log: {message: '{{ events.ci.data }}'}}\n",
     "s.yaml:9: spec.triggers[0].template.log.message: {{ events.ci.data }} reads events.ci"),
    ("concurrency key syntax, on one line",
     "    - template: {name: t, log: {}}\n      concurrency: {key: 'data.(', policy: queue}\n",
     "s.yaml:10: spec.triggers[0].concurrency.key: CEL syntax error at column 6 in 'data.('\n"),
    ("two kinds", "    - template: {name: t, log: {}, nats: {subject: x}}\n",
     "s.yaml:9: spec.triggers[0].template: exactly one trigger kind is required"),
]


@pytest.mark.parametrize(("case", "triggers", "expected"), TRIGGER_CASES,
                         ids=[c[0] for c in TRIGGER_CASES])  # fmt: skip
def test_trigger_problems(tmp_path: Path, case: str, triggers: str, expected: str) -> None:
    problems = lint(tmp_path, f"""\
  dependencies:
    - name: pr
    - name: other
  triggers:
{triggers}""")
    assert any((p + "\n").startswith(expected) for p in problems), problems


def test_every_problem_in_a_file_is_reported(tmp_path: Path) -> None:
    problems = lint(tmp_path, """\
  dependencies:
    - name: pr
      filters:
        data: [{path: x, regex: '(a'}, {path: y, type: number, value: [z]}]
        exprs: ['data.x ==']
  triggers:
    - template: {name: t, conditions: pr || ci, log: {message: '{{ data. }}'}}
""")
    assert len(problems) == 5, problems


def test_foreign_double_braces_are_left_alone(tmp_path: Path) -> None:
    assert lint(tmp_path, """\
  dependencies:
    - name: pr
  triggers:
    - template: {name: t, log: {message: "{{workflow.name}} {{inputs.parameters.x}}"}}
""") == []


@pytest.mark.parametrize("subject", ["results.x.y", "results.*.preview", "results.x.>",
                                     "events.github.>"])  # fmt: skip
def test_results_subjects_are_accepted(tmp_path: Path, subject: str) -> None:
    assert lint(tmp_path, f"""\
  dependencies:
    - {{name: done, eventSubject: '{subject}'}}
  triggers:
    - template: {{name: t, log: {{}}}}
""") == []


def test_a_trigger_following_its_own_results_is_refused(tmp_path: Path) -> None:
    problems = lint(tmp_path, """\
  dependencies:
    - {name: pr, eventSubject: events.github.pull_request}
    - {name: done, eventSubject: 'results.s.*'}
  triggers:
    - template: {name: env, conditions: pr, log: {}}
    - template: {name: report, conditions: done, log: {}}
""")
    assert problems == [
        "s.yaml:10: spec.triggers[1].template.conditions: dependency 'done' (eventSubject "
        "'results.s.*') matches this trigger's own results 'results.s.report', so every run "
        "would fire it again; narrow the eventSubject to the results it follows, e.g. "
        "'results.<sensor>.<trigger>'"
    ]


def test_context_attribute_typos_are_found_at_any_depth(tmp_path: Path) -> None:
    # a misspelt attribute is a valid extension name that no event carries: never a match
    problems = lint(tmp_path, """\
  dependencies:
    - name: pr
      filters:
        context:
          tpye: com.github.push
          any:
            - {sorce: x}
            - not: {prefix: {subjet: x}}
          myext: y
  triggers: [{template: {name: t, log: {}}}]
""")
    assert [p.split(": ", 1)[1] for p in problems] == [
        "spec.dependencies[0].filters.context.tpye: 'tpye' is not a CloudEvents attribute; "
        "did you mean 'type'?",
        "spec.dependencies[0].filters.context.any[0].sorce: 'sorce' is not a CloudEvents "
        "attribute; did you mean 'source'?",
        "spec.dependencies[0].filters.context.any[1].not.prefix.subjet: 'subjet' is not a "
        "CloudEvents attribute; did you mean 'subject'?",
    ]
