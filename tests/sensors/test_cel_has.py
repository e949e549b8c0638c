"""`has()` on event data: the guard our error messages recommend works, in filters and templates."""

from __future__ import annotations

from typing import Any

import pytest

from eventsvc import cel, events
from eventsvc.errors import PermanentTriggerError
from eventsvc.sensors import filters, params
from eventsvc.sensors.filters import EventView
from tests.sensors.test_params import trigger

DATA: dict[str, Any] = {"x": "here", "zero": 0, "none": None, "a": {"b": 2, "c": {}}}

EXPRS = [
    ("has(data.x)", True),
    ("has(data.nope)", False),
    ("has(data.zero)", True),  # present, though falsy
    ("has(data.none)", True),  # present, though null
    ("has(data.a.b)", True),
    ("has(data.a.nope)", False),
    ("has(data.nope.b)", False),  # the parent is missing too
    ("has(data.a.c.d)", False),
    ("!has(data.nope)", True),
    ("!has(data.x)", False),
    ("has(data.x) && data.x == 'here'", True),
    ("has(data.nope) && data.nope == 'here'", False),
    ("has(data.nope) || true", True),
    ("(has(data.x) ? data.x : '') == 'here'", True),
    ("(has(data.nope) ? data.nope : '') == ''", True),
    ("(has(data.a.b) ? data.a.b : 0) == 2", True),
    ("(has(data.nope.b) ? data.nope.b : 0) == 0", True),
]


@pytest.mark.parametrize(("expr", "expected"), EXPRS)
def test_has_in_cel(expr: str, expected: bool) -> None:
    assert cel.Program(expr).evaluate({"data": cel.to_cel(DATA)}) is expected


@pytest.mark.parametrize(("expr", "expected"), EXPRS)
def test_has_in_filter_exprs(expr: str, expected: bool) -> None:
    compiled, problems = filters.compile_dependency({"exprs": [expr]})
    assert compiled is not None, problems
    view = EventView({"id": "1", "type": "t", "source": "s"}, DATA)
    assert compiled.root.test(view) is expected
    ok, verdicts = compiled.root.explain(view)
    assert ok is expected
    assert all(not v.reason for v in verdicts)  # no evaluation error, a plain true/false


def _event(data: dict[str, Any]) -> events.CloudEvent:
    return events.make_event({"specversion": "1.0", "id": "d-1", "type": "t",
                              "source": "https://s"}, data)  # fmt: skip


def test_has_guard_in_templates() -> None:
    t = trigger("""{url: "https://x", headers: {
          a: "{{ has(data.x) ? data.x : '' }}",
          b: "x={{ has(data.a.b) ? data.a.b : 0 }}",
          c: "{{ has(data.a.b) }}",
          d: "{{ !has(data.x) }}"}}""")
    present = {"x": "here", "a": {"b": 2}}
    assert params_headers(t, present) == {"a": "here", "b": "x=2", "c": True, "d": False}
    assert params_headers(t, {}) == {"a": "", "b": "x=0", "c": False, "d": True}
    assert params_headers(t, {"a": {}}) == {"a": "", "b": "x=0", "c": False, "d": True}


def params_headers(t: Any, data: dict[str, Any]) -> Any:
    return params.render(t, {"pr": _event(data)})["headers"]


def test_the_error_suggests_the_guard_for_that_key_and_the_guard_works() -> None:
    t = trigger('{url: "https://x", headers: {a: "{{ data.a.nope }}"}}')
    with pytest.raises(PermanentTriggerError) as raised:
        params_headers(t, {"a": {}})
    guard = "has(data.a.nope) ? data.a.nope : ''"
    assert str(raised.value).endswith(f"fix the expression or guard it, e.g. {guard}")
    guarded = trigger('{url: "https://x", headers: {a: "{{ ' + guard + ' }}"}}')
    assert params_headers(guarded, {"a": {}}) == {"a": ""}
    assert params_headers(guarded, {"a": {"nope": "yes"}}) == {"a": "yes"}
    other = trigger('{url: "https://x", headers: {a: "{{ data.n + 1 }}"}}')
    with pytest.raises(PermanentTriggerError, match=r"e\.g\. has\(data\.x\) \? data\.x : ''$"):
        params_headers(other, {})
