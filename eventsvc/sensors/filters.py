"""Dependency filters, compiled once at load into plain callables over an event.

An event is seen here as `EventView`: its attributes (str-valued, extensions
included) and its decoded data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eventsvc import events
from eventsvc.events import CloudEvent

_MISSING = object()


@dataclass(frozen=True, slots=True)
class EventView:
    attributes: Mapping[str, str]
    data: Any

    @classmethod
    def of(cls, event: CloudEvent) -> EventView:
        attrs = {}
        for k, v in event.get_attributes().items():
            if v is None:
                continue
            attrs[k] = events.format_time(v) if k == "time" and not isinstance(v, str) else str(v)
        return cls(attrs, event.get_data())


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a filter passed or failed: what was seen, what was expected."""

    passed: bool
    filter: str
    seen: Any = None
    expected: Any = None


Check = Callable[[EventView], Verdict]


def lookup(data: Any, path: str) -> Any:
    """Value at dotted `path` (`a.b.0.c`) in `data`, or `_MISSING`."""
    node = data
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.lstrip("-").isdigit():
            idx = int(part)
            node = node[idx] if -len(node) <= idx < len(node) else _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def _string_match(attr: str, rule: Any) -> Check:
    if isinstance(rule, str):
        rule = {"exact": rule}
    exact, prefix, suffix = rule.get("exact"), rule.get("prefix"), rule.get("suffix")
    tests: list[Callable[[str], bool]] = []
    if exact is not None:
        tests.append(lambda v: v == exact)
    if prefix is not None:
        tests.append(lambda v: v.startswith(prefix))
    if suffix is not None:
        tests.append(lambda v: v.endswith(suffix))
    name = f"context.{attr}"

    def check(ev: EventView) -> Verdict:
        value = ev.attributes.get(attr)
        ok = value is not None and all(t(value) for t in tests)
        return Verdict(ok, name, value, rule)

    return check


def _normalize(value: Any) -> Any:
    # event data is JSON: compare numbers as numbers, everything else as text
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return float(value)
    return str(value)


def _data_match(path: str, values: Any) -> Check:
    wanted = values if isinstance(values, list) else [values]
    normalized = {_normalize(v) for v in wanted}
    name = f"data.{path}"

    def check(ev: EventView) -> Verdict:
        seen = lookup(ev.data, path)
        if seen is _MISSING:
            return Verdict(False, name, "(missing)", wanted)
        ok = not isinstance(seen, dict | list) and _normalize(seen) in normalized
        return Verdict(ok, name, seen, wanted)

    return check


def compile_filters(filters: Mapping[str, Any]) -> list[Check]:
    checks = [_string_match(attr, rule) for attr, rule in filters.get("context", {}).items()]
    checks += [_data_match(item["path"], item["value"]) for item in filters.get("data", [])]
    return checks


def evaluate(checks: list[Check], ev: EventView) -> tuple[bool, list[Verdict]]:
    """All checks must pass; stops at the first failure (the verdicts say where)."""
    verdicts: list[Verdict] = []
    for check in checks:
        v = check(ev)
        verdicts.append(v)
        if not v.passed:
            return False, verdicts
    return True, verdicts
