"""Dependency filters, compiled once at load into small objects over an event.

Four groups, cheapest first: `context` (CloudEvents attributes and extensions, with
the Subscriptions-API dialects exact/prefix/suffix/all/any/not), `data` (paths into
the event data), `time` (a daily window in an IANA timezone) and `exprs` (CEL,
evaluated only when the cheaper groups let the event through). Groups combine with
the dependency's `filtersLogicalOperator`; data items and exprs with their own
`dataLogicalOperator` / `exprLogicalOperator`.

Every node has a fast `test(view) -> bool` for the engine and an
`explain(view) -> (passed, [Verdict])` that says, leaf by leaf, what was seen and
what was expected, for `eventsvc test`. `compile_dependency` returns the problems
the schema cannot see (bad regexes, impossible settings) instead of raising, so
lint reports them all; `compile_filters` raises on the first.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsvc import cel, events, logs, paths
from eventsvc.events import CloudEvent


def _json(value: Any) -> str:
    return json.dumps(value, default=str)

log = logs.get("eventsvc.sensors.filters")
_MISSING: Any = paths.MISSING
MISSING_TEXT = "(missing)"
DIALECTS = ("exact", "prefix", "suffix", "all", "any", "not")
Problem = tuple[tuple[str | int, ...], str]


@dataclass(frozen=True, slots=True)
class EventView:
    """An event as filters see it: str attributes (extensions included) and decoded data."""

    attributes: Mapping[str, str]
    data: Any
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, event: CloudEvent) -> EventView:
        attrs = {}
        for k, v in event.get_attributes().items():
            if v is None:
                continue
            attrs[k] = events.format_time(v) if k == "time" and not isinstance(v, str) else str(v)
        return cls(attrs, event.get_data())

    def activation(self) -> dict[str, Any]:
        """CEL variables `data` and `event` (attributes plus `data`), converted lazily, once."""
        act = self.cache.get("cel")
        if act is None:
            act = {
                "data": cel.to_cel(self.data),
                "event": cel.to_cel({**self.attributes, "data": self.data}),
            }
            self.cache["cel"] = act
        return act


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a filter passed or failed: what was seen, what was expected."""

    passed: bool
    filter: str
    seen: Any = None
    expected: Any = None
    reason: str = ""


Check = Callable[[EventView], Verdict]


class FilterError(ValueError):
    """A filter that cannot work as written; `field` is the key at fault inside its item."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Node:
    """A compiled filter: `test` for matching, `explain` for the dry run."""

    name = "filter"

    def test(self, view: EventView) -> bool:
        raise NotImplementedError

    def explain(self, view: EventView) -> tuple[bool, list[Verdict]]:
        raise NotImplementedError

    def __call__(self, view: EventView) -> Verdict:
        """The `Check` form: one verdict for the whole node."""
        passed, verdicts = self.explain(view)
        failed = next((v for v in verdicts if not v.passed), None)
        if passed or failed is None:
            return Verdict(passed, self.name, expected=f"{len(verdicts)} filter(s)")
        return failed


class Always(Node):
    name = "(no filters)"

    def test(self, view: EventView) -> bool:
        return True

    def explain(self, view: EventView) -> tuple[bool, list[Verdict]]:
        return True, []


class Group(Node):
    """`and` / `or` over nodes; `test` stops at the first decisive one."""

    def __init__(self, nodes: Sequence[Node], any_of: bool, name: str = "") -> None:
        self.nodes = tuple(nodes)
        self.any_of = any_of
        self.name = name or ("any" if any_of else "all")
        tests = tuple(n.test for n in self.nodes)
        if any_of:
            self.test = lambda view: any(t(view) for t in tests)  # type: ignore[method-assign]
        else:
            self.test = lambda view: all(t(view) for t in tests)  # type: ignore[method-assign]

    def explain(self, view: EventView) -> tuple[bool, list[Verdict]]:
        out: list[Verdict] = []
        results = []
        for node in self.nodes:
            ok, verdicts = node.explain(view)
            results.append(ok)
            out.extend(verdicts)
        return (any(results) if self.any_of else all(results)), out


class Not(Node):
    def __init__(self, inner: Node, name: str) -> None:
        self.inner = inner
        self.name = name

    def test(self, view: EventView) -> bool:
        return not self.inner.test(view)

    def explain(self, view: EventView) -> tuple[bool, list[Verdict]]:
        ok, verdicts = self.inner.explain(view)
        return not ok, [
            Verdict(not ok, self.name, [v.seen for v in verdicts], "none of: " + "; ".join(
                f"{v.filter} {v.expected}" for v in verdicts
            ))
        ]


# -- context ------------------------------------------------------------------------------


class AttrMatch(Node):
    """One attribute against an exact value, a prefix or a suffix (missing never matches)."""

    def __init__(self, attr: str, op: str, value: str) -> None:
        self.attr, self.op, self.value = attr, op, value
        self.name = f"context.{attr}"
        if op == "exact":
            self.test = lambda view: view.attributes.get(attr) == value  # type: ignore[method-assign]
        elif op == "prefix":
            self.test = lambda view: view.attributes.get(attr, "").startswith(value) and (  # type: ignore[method-assign]
                attr in view.attributes
            )
        else:
            self.test = lambda view: view.attributes.get(attr, "").endswith(value) and (  # type: ignore[method-assign]
                attr in view.attributes
            )

    def explain(self, view: EventView) -> tuple[bool, list[Verdict]]:
        ok = self.test(view)
        seen = view.attributes.get(self.attr, MISSING_TEXT)
        expected = _json(self.value) if self.op == "exact" else f"{self.op} {_json(self.value)}"
        return ok, [Verdict(ok, self.name, seen, expected)]


def compile_context(spec: Mapping[str, Any], path: tuple[str | int, ...] = ()) -> Node:
    """A context filter: dialect keys (Subscriptions API) and attribute shorthands, all ANDed."""
    nodes: list[Node] = []
    for key, rule in spec.items():
        if key in ("exact", "prefix", "suffix"):
            nodes.extend(AttrMatch(attr, key, str(v)) for attr, v in rule.items())
        elif key in ("all", "any"):
            subs = [compile_context(s, (*path, key, i)) for i, s in enumerate(rule)]
            nodes.append(Group(subs, any_of=key == "any", name=f"context.{key}"))
        elif key == "not":
            nodes.append(Not(compile_context(rule, (*path, key)), "context.not"))
        elif isinstance(rule, str):
            nodes.append(AttrMatch(key, "exact", rule))
        else:
            nodes.extend(AttrMatch(key, op, str(rule[op])) for op in ("exact", "prefix", "suffix")
                         if op in rule)  # fmt: skip
    return nodes[0] if len(nodes) == 1 else Group(nodes, any_of=False, name="context")


# -- data -----------------------------------------------------------------------------------

_WILD = "*"


def split_path(path: str) -> list[str]:
    """`a.b\\.c.0.*` -> ['a', 'b.c', '0', '*']; raises ValueError on an empty segment."""
    parts = [p.replace("\0", ".") for p in path.replace("\\.", "\0").split(".")]
    if any(p == "" for p in parts):
        raise ValueError(f"path {path!r} has an empty segment; write e.g. 'pull_request.head.ref'")
    return parts


_step = paths.step


def resolve(data: Any, parts: Sequence[str]) -> list[Any]:
    """Every value at `parts` (a `*` fans out over list items or mapping values)."""
    nodes = [data]
    for part in parts:
        nxt: list[Any] = []
        for node in nodes:
            if part == _WILD:
                if isinstance(node, list):
                    nxt.extend(node)
                elif isinstance(node, Mapping):
                    nxt.extend(node.values())
            else:
                value = _step(node, part)
                if value is not _MISSING:
                    nxt.append(value)
        nodes = nxt
        if not nodes:
            break
    return nodes


def lookup(data: Any, path: str) -> Any:
    """Value at dotted `path` (`a.b.0.c`, no wildcard) in `data`, or `_MISSING`."""
    node = data
    for part in split_path(path):
        node = _step(node, part)
        if node is _MISSING:
            return _MISSING
    return node


def is_missing(value: Any) -> bool:
    return value is _MISSING


def _as_string(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if isinstance(v, int | float):
        return str(v)
    if v is None:
        return "null"
    return None


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _as_bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return None


COERCE: dict[str, Callable[[Any], Any]] = {
    "string": _as_string,
    "number": _as_number,
    "bool": _as_bool,
}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _infer_type(values: list[Any]) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "bool"
    if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return "number"
    return "string"


def _check_data_item(item: Mapping[str, Any]) -> None:
    given = [k for k in ("value", "regex", "exists") if k in item]
    if len(given) != 1:
        found = " and ".join(given) if given else "none"
        raise FilterError("path", f"give exactly one of value, regex or exists; found {found}")
    comparator = item.get("comparator", "=")
    if "comparator" in item and "value" not in item:
        raise FilterError("comparator", "a comparator needs 'value'; remove it or add a value")
    if "exists" in item and "type" in item:
        raise FilterError("type", "type has no effect with exists; remove it")
    if "regex" in item and item.get("type", "string") != "string":
        raise FilterError("type", f"a regex matches text; type {item['type']!r} cannot be "
                                  "used with it, remove type or use value")  # fmt: skip
    if comparator not in ("=", "!=") and item.get("type") == "bool":
        raise FilterError("comparator", f"{comparator!r} does not order booleans; "
                                        "use '=' or '!='")  # fmt: skip
    values = item.get("value")
    if isinstance(values, list) and not values:
        raise FilterError("value", "empty list: nothing could match; give at least one value")


class DataMatch(Node):
    """One `data` item: path, then exists, value (any of, with a comparator) or regex."""

    def __init__(self, item: Mapping[str, Any]) -> None:
        self.path = item["path"]
        try:
            self.parts = split_path(self.path)
        except ValueError as e:
            raise FilterError("path", str(e)) from e
        self.name = f"data.{self.path}"
        _check_data_item(item)
        self.exists: bool | None = item.get("exists")
        raw = item.get("value")
        values = raw if isinstance(raw, list) else ([] if raw is None else [raw])
        regexes = item.get("regex")
        patterns = regexes if isinstance(regexes, list) else [regexes] if regexes else []
        try:
            self.regexes = [re.compile(r) for r in patterns]
        except re.error as e:
            raise FilterError("regex", f"bad regular expression {e.pattern!r}: {e}") from e
        self.type = item.get("type") or ("string" if self.regexes else _infer_type(values))
        self.comparator = item.get("comparator", "=")
        coerce = COERCE[self.type]
        self.coerce = coerce
        self.values = [coerce(v) for v in values]
        if any(v is None for v in self.values):
            bad = next(v for v, c in zip(values, self.values, strict=True) if c is None)
            raise FilterError("value", f"{bad!r} is not a {self.type}; "
                              "quote it, or set type to match the values")  # fmt: skip
        self.expected = self._describe()
        self._value_set = frozenset(self.values) if self.comparator in ("=", "!=") else None
        self.test = self._test_one if _WILD not in self.parts else self._test_many  # type: ignore[method-assign]

    def _describe(self) -> str:
        if self.exists is not None:
            return "exists" if self.exists else "absent"
        if self.regexes:
            return "matches " + " or ".join(repr(r.pattern) for r in self.regexes)
        shown = [v if self.type != "number" or not float(v).is_integer() else int(v)
                 for v in self.values]  # fmt: skip
        # JSON, like the values seen: `true`, not Python's `True`
        if self.comparator == "=":
            return f"one of {_json(shown)}" if len(shown) > 1 else _json(shown[0])
        if self.comparator == "!=":
            return f"none of {_json(shown)}"
        return f"{self.comparator} " + " or ".join(map(_json, shown))

    def _value_ok(self, seen: Any) -> bool:
        if isinstance(seen, Mapping | list):
            return False
        if self.regexes:
            text = _as_string(seen)
            return text is not None and any(r.search(text) for r in self.regexes)
        got = self.coerce(seen)
        if got is None:
            return False
        if self._value_set is not None:
            return bool((got in self._value_set) == (self.comparator == "="))
        op = _COMPARE[self.comparator]
        try:
            return any(op(got, v) for v in self.values)
        except TypeError:
            return False

    def _test_one(self, view: EventView) -> bool:
        node = view.data
        for part in self.parts:
            node = _step(node, part)
            if node is _MISSING:
                return self.exists is False
        if self.exists is not None:
            return self.exists
        return self._value_ok(node)

    def _test_many(self, view: EventView) -> bool:
        found = resolve(view.data, self.parts)
        if self.exists is not None:
            return bool(found) == self.exists
        return any(self._value_ok(v) for v in found)

    def explain(self, view: EventView) -> tuple[bool, list[Verdict]]:
        ok = self.test(view)
        found = resolve(view.data, self.parts)
        seen: Any = MISSING_TEXT if not found else found if _WILD in self.parts else found[0]
        return ok, [Verdict(ok, self.name, seen, self.expected)]


# -- time -----------------------------------------------------------------------------------


def parse_clock(text: str) -> dt.time:
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a time of day; write 'HH:MM' or 'HH:MM:SS' (24h)")
    return dt.time(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))


class TimeWindow(Node):
    """The event's `time` (or now, when it has none) inside a daily window, local to `timezone`.

    `stop` before `start` spans midnight (22:00-06:00); `start` is included, `stop` is not.
    """

    name = "time"

    def __init__(self, spec: Mapping[str, Any], now: Callable[[], dt.datetime] | None = None):
        self.start = parse_clock(spec["start"])
        self.stop = parse_clock(spec["stop"])
        if self.start == self.stop:
            raise ValueError(f"start and stop are both {spec['start']!r}: the window is empty")
        tz_name = spec.get("timezone", "UTC")
        try:
            self.tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"{tz_name!r} is not an IANA timezone; write e.g. 'Europe/Berlin' "
                             "or 'UTC'") from e  # fmt: skip
        self.now = now or (lambda: dt.datetime.now(dt.UTC))
        self.expected = f"{spec['start']}-{spec['stop']} {tz_name}"

    def local_time(self, view: EventView) -> dt.time:
        stamp = view.attributes.get("time")
        when = self.now()
        if stamp:
            try:
                when = dt.datetime.fromisoformat(stamp)
            except ValueError:
                pass
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.astimezone(self.tz).time().replace(microsecond=0)

    def test(self, view: EventView) -> bool:
        t = self.local_time(view)
        if self.start < self.stop:
            return self.start <= t < self.stop
        return t >= self.start or t < self.stop

    def explain(self, view: EventView) -> tuple[bool, list[Verdict]]:
        ok = self.test(view)
        return ok, [Verdict(ok, self.name, self.local_time(view).isoformat(), self.expected)]


# -- exprs ----------------------------------------------------------------------------------


class Expr(Node):
    """A CEL expression that must be `true`; an error or a non-bool result is no match."""

    def __init__(self, text: str, index: int) -> None:
        self.program = cel.Program(text)
        self.name = f"exprs[{index}]"
        unknown = self.program.names - {"data", "event"}
        if unknown:
            raise ValueError(f"unknown name(s) {', '.join(sorted(unknown))} in {text!r}; "
                             "a filter expression can read 'data' and 'event'")  # fmt: skip

    def _run(self, view: EventView) -> tuple[bool, Any, str]:
        try:
            value = self.program.evaluate(view.activation())
        except cel.CelEvalError as e:
            log.debug("CEL filter failed, counts as no match",
                      expr=self.program.text, reason=str(e))  # fmt: skip
            return False, None, str(e)
        if not isinstance(value, bool):
            return False, value, f"returned {value!r}, not a bool"
        return value, value, ""

    def test(self, view: EventView) -> bool:
        return bool(self._run(view)[0])

    def explain(self, view: EventView) -> tuple[bool, list[Verdict]]:
        ok, seen, reason = self._run(view)
        return ok, [Verdict(ok, self.name, seen, f"{self.program.text} == true", reason)]


# -- a dependency's filters -----------------------------------------------------------------


@dataclass(slots=True)
class Compiled:
    """A dependency's filters: the root node, the context node (for the index)."""

    root: Node
    context: Node | None
    all_of: bool


def compile_dependency(
    filters: Mapping[str, Any], operator: str = "and"
) -> tuple[Compiled | None, list[Problem]]:
    """The compiled filters, or every problem found (path inside `filters`, message)."""
    problems: list[Problem] = []
    groups: list[Node] = []
    context = None
    if filters.get("context"):
        context = compile_context(filters["context"])
        groups.append(context)
    items: list[Node] = []
    for i, item in enumerate(filters.get("data") or []):
        try:
            items.append(DataMatch(item))
        except FilterError as e:
            problems.append((("data", i, e.field), str(e)))
    if items:
        any_data = filters.get("dataLogicalOperator", "and") == "or"
        groups.append(Group(items, any_of=any_data, name="data") if len(items) > 1 else items[0])
    if filters.get("time"):
        try:
            groups.append(TimeWindow(filters["time"]))
        except ValueError as e:
            problems.append((("time",), str(e)))
    exprs: list[Node] = []
    for i, text in enumerate(filters.get("exprs") or []):
        try:
            exprs.append(Expr(text, i))
        except ValueError as e:
            problems.append((("exprs", i), str(e)))
    if exprs:
        any_expr = filters.get("exprLogicalOperator", "and") == "or"
        groups.append(Group(exprs, any_of=any_expr, name="exprs") if len(exprs) > 1 else exprs[0])
    if problems:
        return None, problems
    all_of = operator != "or"
    if not groups:
        return Compiled(Always(), None, True), []
    root = groups[0] if len(groups) == 1 else Group(groups, any_of=not all_of, name="filters")
    return Compiled(root, context, all_of or len(groups) == 1), []


def compile_filters(filters: Mapping[str, Any]) -> list[Check]:
    """The engine's form: one check for the whole `filters` section.

    The dependency's `filtersLogicalOperator` arrives folded into the mapping
    (see `spec.Dependency`).
    """
    return compile_gated(filters)[0]


def compile_gated(filters: Mapping[str, Any]) -> tuple[list[Check], Node | None]:
    """`compile_filters`, plus the gate: the part of the filters that reads attributes only
    (the `context` group) and that every matching event must pass, or None when there is
    none (no context filters, or `filtersLogicalOperator: or` over several groups). An event
    the gate rejects is rejected by the whole filters, so a binary-mode message can be
    judged on its headers before its body is decoded."""
    compiled, problems = compile_dependency(filters, filters.get("filtersLogicalOperator", "and"))
    if compiled is None:
        raise ValueError("; ".join(f"{'.'.join(map(str, p))}: {m}" for p, m in problems))
    return [compiled.root], compiled.context if compiled.all_of else None


def evaluate(checks: list[Check], ev: EventView) -> tuple[bool, list[Verdict]]:
    """All checks must pass; stops at the first failure (the verdicts say where)."""
    verdicts: list[Verdict] = []
    for check in checks:
        if isinstance(check, Node):
            ok = check.test(ev)
            verdicts.append(Verdict(ok, check.name) if ok else check(ev))
        else:
            verdicts.append(check(ev))
        if not verdicts[-1].passed:
            return False, verdicts
    return True, verdicts
