"""Every filter kind and operator, table-driven: (filters, event) -> matched?"""

from __future__ import annotations

from typing import Any

import pytest

from eventsvc.sensors import filters
from eventsvc.sensors.filters import EventView

ATTRS = {
    "id": "d-1",
    "type": "com.github.pull_request.opened",
    "source": "https://github.com/acme/shop",
    "subject": "7",
    "time": "2024-05-06T10:30:00Z",  # 12:30 in Berlin (CEST)
    "githubevent": "pull_request",
}
DATA = {
    "action": "opened",
    "number": 7,
    "pull_request": {
        "draft": False,
        "title": "feat: checkout",
        "base": {"ref": "main"},
        "head": {"sha": "abc123"},
        "labels": [{"name": "deploy"}, {"name": "team-a"}],
        "additions": 120,
        "merged_at": None,
    },
}
VIEW = EventView(ATTRS, DATA)


def matches(spec: dict[str, Any], operator: str = "and", view: EventView = VIEW) -> bool:
    compiled, problems = filters.compile_dependency(spec, operator)
    assert compiled is not None, problems
    fast = compiled.root.test(view)
    explained, _ = compiled.root.explain(view)
    assert fast == explained, "test() and explain() disagree"
    return fast


CONTEXT = [
    ({"type": "com.github.pull_request.opened"}, True),
    ({"type": "com.github.pull_request.closed"}, False),
    ({"type": {"exact": "com.github.pull_request.opened"}}, True),
    ({"type": {"prefix": "com.github.pull_request."}}, True),
    ({"type": {"prefix": "com.github.push"}}, False),
    ({"type": {"suffix": ".opened"}}, True),
    ({"type": {"suffix": ".closed"}}, False),
    ({"type": {"prefix": "com.github.", "suffix": ".opened"}}, True),
    ({"githubevent": "pull_request"}, True),  # extension attribute
    ({"missing": {"prefix": ""}}, False),  # a missing attribute never matches
    ({"exact": {"type": "com.github.pull_request.opened", "subject": "7"}}, True),
    ({"exact": {"subject": "8"}}, False),
    ({"prefix": {"source": "https://github.com/acme/"}}, True),
    ({"suffix": {"source": "/shop"}}, True),
    ({"suffix": {"source": "/cart"}}, False),
    ({"any": [{"exact": {"subject": "8"}}, {"exact": {"subject": "7"}}]}, True),
    ({"any": [{"exact": {"subject": "8"}}, {"exact": {"subject": "9"}}]}, False),
    ({"all": [{"prefix": {"type": "com.github."}}, {"exact": {"subject": "7"}}]}, True),
    ({"all": [{"prefix": {"type": "com.github."}}, {"exact": {"subject": "9"}}]}, False),
    ({"not": {"exact": {"subject": "7"}}}, False),
    ({"not": {"exact": {"subject": "8"}}}, True),
    ({"not": {"exact": {"missing": "x"}}}, True),
    ({"type": {"prefix": "com.github."}, "not": {"suffix": {"type": ".closed"}}}, True),
]


@pytest.mark.parametrize(("context", "expected"), CONTEXT)
def test_context(context: dict[str, Any], expected: bool) -> None:
    assert matches({"context": context}) is expected


DATA_CASES = [
    ({"path": "action", "value": ["opened", "reopened"]}, True),
    ({"path": "action", "value": "closed"}, False),
    ({"path": "pull_request.base.ref", "value": ["main"]}, True),
    ({"path": "pull_request.labels.0.name", "value": ["deploy"]}, True),
    ({"path": "pull_request.labels.-1.name", "value": ["team-a"]}, True),
    ({"path": "pull_request.labels.5.name", "value": ["deploy"]}, False),
    ({"path": "pull_request.labels.*.name", "value": ["team-a"]}, True),
    ({"path": "pull_request.labels.*.name", "value": ["team-b"]}, False),
    ({"path": "pull_request.nope", "value": ["x"]}, False),
    ({"path": "pull_request.draft", "value": [False]}, True),
    ({"path": "pull_request.draft", "value": ["false"]}, True),  # text compares as JSON text
    ({"path": "pull_request.draft", "type": "bool", "value": ["false"]}, True),
    ({"path": "pull_request.draft", "type": "bool", "value": [True]}, False),
    ({"path": "number", "value": [7]}, True),
    ({"path": "number", "value": ["7"]}, True),
    ({"path": "number", "type": "string", "value": ["7"]}, True),
    ({"path": "number", "type": "number", "value": ["7.0"]}, True),
    ({"path": "number", "comparator": "=", "value": [7]}, True),
    ({"path": "number", "comparator": "!=", "value": [7]}, False),
    ({"path": "number", "comparator": "!=", "value": [8, 9]}, True),
    ({"path": "number", "comparator": "<", "value": 8}, True),
    ({"path": "number", "comparator": "<", "value": 7}, False),
    ({"path": "number", "comparator": "<=", "value": 7}, True),
    ({"path": "number", "comparator": ">", "value": 6}, True),
    ({"path": "number", "comparator": ">", "value": 7}, False),
    ({"path": "number", "comparator": ">=", "value": 7}, True),
    ({"path": "pull_request.additions", "type": "number", "comparator": ">=", "value": 100}, True),
    ({"path": "pull_request.title", "comparator": ">", "value": "a"}, True),  # text order
    ({"path": "pull_request.title", "type": "number", "comparator": ">", "value": 1}, False),
    ({"path": "pull_request.title", "regex": "^feat(\\(.*\\))?:"}, True),
    ({"path": "pull_request.title", "regex": ["^fix:", "checkout$"]}, True),
    ({"path": "pull_request.title", "regex": "^fix:"}, False),
    ({"path": "pull_request.labels.*.name", "regex": "^team-"}, True),
    ({"path": "number", "regex": "^7$"}, True),
    ({"path": "pull_request.base", "value": ["main"]}, False),  # a mapping is not a scalar
    ({"path": "pull_request.merged_at", "exists": True}, True),  # null is present
    ({"path": "pull_request.closed_at", "exists": False}, True),
    ({"path": "pull_request.closed_at", "exists": True}, False),
    ({"path": "pull_request.labels.*.color", "exists": False}, True),
]


@pytest.mark.parametrize(("item", "expected"), DATA_CASES)
def test_data(item: dict[str, Any], expected: bool) -> None:
    assert matches({"data": [item]}) is expected


def test_data_dotted_key_escape() -> None:
    view = EventView(ATTRS, {"labels": {"app.kubernetes.io/name": "shop"}})
    item = {"path": "labels.app\\.kubernetes\\.io/name", "value": "shop"}
    assert matches({"data": [item]}, view=view)


LOGIC = [
    # (dataLogicalOperator, items' outcomes) -> matched
    ("and", [True, True], True),
    ("and", [True, False], False),
    ("or", [True, False], True),
    ("or", [False, False], False),
]
_YES = {"path": "action", "value": "opened"}
_NO = {"path": "action", "value": "closed"}


@pytest.mark.parametrize(("op", "items", "expected"), LOGIC)
def test_data_logical_operator(op: str, items: list[bool], expected: bool) -> None:
    spec = {"data": [_YES if i else _NO for i in items], "dataLogicalOperator": op}
    assert matches(spec) is expected


@pytest.mark.parametrize(("op", "items", "expected"), LOGIC)
def test_expr_logical_operator(op: str, items: list[bool], expected: bool) -> None:
    spec = {"exprs": ["true" if i else "false" for i in items], "exprLogicalOperator": op}
    assert matches(spec) is expected


@pytest.mark.parametrize(
    ("op", "context_ok", "data_ok", "expected"),
    [
        ("and", True, True, True),
        ("and", True, False, False),
        ("or", False, True, True),
        ("or", False, False, False),
    ],
)
def test_filters_logical_operator(op: str, context_ok: bool, data_ok: bool, expected: bool) -> None:
    spec = {"context": {"subject": "7" if context_ok else "8"}, "data": [_YES if data_ok else _NO]}
    assert matches(spec, op) is expected


EXPRS = [
    ("!data.pull_request.draft", True),
    ("data.pull_request.draft", False),
    ("data.number > 5 && data.action == 'opened'", True),
    ("event.type.startsWith('com.github.pull_request.')", True),
    ("event.subject == '8'", False),
    ("data.pull_request.labels.exists(l, l.name == 'deploy')", True),
    ("size(data.pull_request.labels) == 3", False),
    ("has(data.pull_request.closed_at)", False),
    ("data.pull_request.head.sha.matches('^[0-9a-f]+$')", True),
    ("data.nope.deeper == 1", False),  # evaluation error: no match, not an exception
    ("data.number", False),  # not a bool
    ("1 / 0 == 1", False),
]


@pytest.mark.parametrize(("expr", "expected"), EXPRS)
def test_exprs(expr: str, expected: bool) -> None:
    assert matches({"exprs": [expr]}) is expected


def test_expr_error_is_explained() -> None:
    compiled, _ = filters.compile_dependency({"exprs": ["data.nope.deeper == 1"]})
    assert compiled is not None
    ok, verdicts = compiled.root.explain(VIEW)
    assert not ok
    assert "nope" in verdicts[0].reason


TIME = [
    ({"start": "09:00", "stop": "17:00", "timezone": "Europe/Berlin"}, True),  # 12:30 local
    ({"start": "09:00", "stop": "12:00", "timezone": "Europe/Berlin"}, False),
    ({"start": "09:00", "stop": "10:00"}, False),  # UTC by default: 10:30
    ({"start": "10:30", "stop": "11:00"}, True),  # start included
    ({"start": "10:00", "stop": "10:30"}, False),  # stop excluded
    ({"start": "22:00", "stop": "11:00"}, True),  # spans midnight
    ({"start": "22:00", "stop": "06:00"}, False),
    ({"start": "06:00", "stop": "10:00", "timezone": "America/New_York"}, True),  # 06:30 EDT
]


@pytest.mark.parametrize(("window", "expected"), TIME)
def test_time(window: dict[str, str], expected: bool) -> None:
    assert matches({"time": window}) is expected


def test_explain_says_what_was_seen_and_expected() -> None:
    spec = {"context": {"type": {"prefix": "com.github.push"}},
            "data": [{"path": "pull_request.base.ref", "value": ["release"]}]}  # fmt: skip
    compiled, _ = filters.compile_dependency(spec)
    assert compiled is not None
    ok, verdicts = compiled.root.explain(VIEW)
    assert not ok
    assert [(v.filter, v.passed, v.seen, v.expected) for v in verdicts] == [
        ("context.type", False, "com.github.pull_request.opened", 'prefix "com.github.push"'),
        ("data.pull_request.base.ref", False, "main", '"release"'),
    ]


def test_engine_form_is_one_check() -> None:
    checks = filters.compile_filters({"data": [_YES], "filtersLogicalOperator": "or"})
    assert filters.evaluate(checks, VIEW)[0]
    checks = filters.compile_filters({"data": [_NO]})
    ok, verdicts = filters.evaluate(checks, VIEW)
    assert not ok and verdicts[-1].filter == "data.action"
