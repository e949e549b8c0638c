"""CEL's strings extension functions (cel-go `ext.Strings` names): as methods and as
functions, over event data, with errors that name the function instead of a crash."""

from __future__ import annotations

from typing import Any

import pytest

from eventsvc import cel

DATA = {"title": "  Fix: Ünïcode & ASCII  ", "ref": "refs/heads/feature/x", "n": 3,
        "parts": ["a", "b", "c"]}  # fmt: skip


def run(text: str) -> Any:
    return cel.Program(text).evaluate({"data": cel.to_cel(DATA)})


@pytest.mark.parametrize("text, expected", [
    ("data.title.trim()", "Fix: Ünïcode & ASCII"),
    ("data.title.trim().lowerAscii()", "fix: Ünïcode & ascii"),  # ASCII letters only
    ("upperAscii(data.title.trim())", "FIX: ÜNïCODE & ASCII"),
    ("data.ref.substring(11)", "feature/x"),
    ("data.ref.substring(0, 4)", "refs"),
    ("data.ref.replace('/', '-')", "refs-heads-feature-x"),
    ("data.ref.replace('/', '-', 1)", "refs-heads/feature/x"),
    ("data.ref.split('/')", ["refs", "heads", "feature", "x"]),
    ("data.parts.join('-')", "a-b-c"),
    ("data.parts.join()", "abc"),
    ("data.ref.split('/').join('.')", "refs.heads.feature.x"),
    ("has(data.nope) ? data.nope.trim() : 'none'", "none"),
])  # fmt: skip
def test_string_functions(text: str, expected: Any) -> None:
    assert run(text) == expected


@pytest.mark.parametrize("text, message", [
    ("data.ref.substring(5, 999)", "out of range"),
    ("data.ref.substring(5, 2)", "out of range"),
    ("data.n.lowerAscii()", "lowerAscii: expected a string"),
    ("data.ref.split('')", "separator is empty"),
    ("data.ref.substring(-1)", "negative"),
])  # fmt: skip
def test_a_bad_call_is_an_evaluation_error_naming_it(text: str, message: str) -> None:
    with pytest.raises(cel.CelEvalError, match=message):
        run(text)


def test_templates_can_use_them() -> None:
    from eventsvc import events, yamldoc
    from eventsvc.sensors import params
    from eventsvc.sensors.model import SensorSpec, parse_sensor

    text = """apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: s}
spec:
  dependencies: [{name: e}]
  triggers:
    - template:
        name: t
        log: {message: "branch {{ data.ref.substring(11).upperAscii() }}"}
"""
    docs, _ = yamldoc.parse_documents(text, "s.yaml")
    spec, problems = parse_sensor(docs[0])
    assert isinstance(spec, SensorSpec), problems
    event = events.make_event({"specversion": "1.0", "id": "1", "type": "t", "source": "s"},
                              {"ref": "refs/heads/feature/x"})  # fmt: skip
    assert params.render(spec.triggers[0], {"e": event}) == {"message": "branch FEATURE/X"}
