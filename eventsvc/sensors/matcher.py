"""The index over every loaded sensor: one event in, the dependencies it satisfies out, at
a cost that follows the relevant sensors only.

Each dependency is filed under one of the constraints its subject and filters require
of every event: its `eventSubject` when it names one subject, or the literal part before
a wildcard as a prefix; an exact attribute value (`type`, `source`, `subject`, an
extension, or an `any` of exact values) or an attribute prefix (`type: {prefix:
com.github.}`). Of its constraints, the one shared with the fewest other dependencies
is chosen. An event then looks up its own subject and attribute values (one dict probe
per exact attribute, one per distinct prefix length) and evaluates only the dependencies
found there. A sensor with a thousand neighbours about other repositories or other
event types costs the event nothing.

`candidates` reads attributes only; `gated` applies the `context` filters, still on
attributes, so an event's body is decoded only when some dependency may match it;
`match` runs the whole filters (data, CEL) of what is left. The dispatcher routes every
event with it; `bench/match.py` measures it alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from eventsvc import subjects
from eventsvc.sensors import filters
from eventsvc.sensors.compiled import CompiledSensor, CompiledTrigger

SUBJECT = "$subject"  # the index's name for the NATS subject, beside attribute names
Key = tuple[str, str, str]  # (attribute, "exact" | "prefix", value)


@dataclass(frozen=True, slots=True)
class Entry:
    sensor: int
    dependency: str
    event_subject: str
    node: filters.Node
    gate: filters.Node | None  # the attribute-only part every match passes


def _subject_key(pattern: str) -> list[list[Key]]:
    """The subject as an index option, unless it is a whole stream (`events.>`): every event
    there would find it, which is no index at all."""
    text, exact = subjects.literal_prefix(pattern)
    if not exact and text.count(".") < 2:
        return []
    return [[(SUBJECT, "exact" if exact else "prefix", text)]]


def _required(node: filters.Node) -> list[list[Key]]:
    """Options for indexing: each a list of keys of which an event must hit one."""
    if isinstance(node, filters.AttrMatch) and node.op in ("exact", "prefix"):
        return [[(node.attr, node.op, node.value)]]
    if isinstance(node, filters.Group) and not node.any_of:
        return [opt for child in node.nodes for opt in _required(child)]
    if isinstance(node, filters.Group) and node.nodes:
        leaves = [n for n in node.nodes if isinstance(n, filters.AttrMatch)]
        attrs = {n.attr for n in leaves}
        if len(leaves) == len(node.nodes) and len(attrs) == 1 and all(
            n.op == "exact" for n in leaves
        ):
            return [[(n.attr, "exact", n.value) for n in leaves]]
    return []


class Matcher:
    """Many compiled sensors, one lookup per event."""

    def __init__(self, sensors: Iterable[CompiledSensor]) -> None:
        self.sensors = list(sensors)
        found: list[tuple[Entry, list[list[Key]]]] = []
        for i, sensor in enumerate(self.sensors):
            for dep, checks in sensor.deps:
                node = _root(checks)
                entry = Entry(i, dep.name, dep.event_subject, node, sensor.gates[dep.name])
                found.append((entry, _subject_key(dep.event_subject) + _required(node)))
        self.streams = frozenset(subjects.stream_of(e.event_subject) for e, _ in found)
        """The streams some dependency reads: events of the others concern no sensor."""
        counts = Counter(key for _, options in found for opt in options for key in opt)
        self.exact: dict[str, dict[str, list[Entry]]] = {}
        self.prefix: dict[str, dict[str, list[Entry]]] = {}
        self.prefix_lengths: dict[str, list[int]] = {}
        self.unindexed: list[Entry] = []
        for entry, options in found:
            if not options:
                self.unindexed.append(entry)
                continue
            # fewest neighbours first; exact before prefix when tied
            best = min(options, key=lambda o: (sum(counts[k] for k in o), o[0][1] != "exact"))
            for attr, op, value in best:
                table = self.exact if op == "exact" else self.prefix
                table.setdefault(attr, {}).setdefault(value, []).append(entry)
        for attr, by_prefix in self.prefix.items():
            self.prefix_lengths[attr] = sorted({len(p) for p in by_prefix})
        self._subjects: dict[tuple[str, str], bool] = {}

    def candidates(self, subject: str | None, view: filters.EventView) -> list[Entry]:
        """The dependencies this event could satisfy, by the index."""
        attrs = view.attributes
        out: list[Entry] = list(self.unindexed)
        for attr, by_value in self.exact.items():
            value = subject if attr == SUBJECT else attrs.get(attr)
            if value is not None:
                out.extend(by_value.get(value, ()))
        for attr, by_prefix in self.prefix.items():
            value = subject if attr == SUBJECT else attrs.get(attr)
            if value is None:
                continue
            for length in self.prefix_lengths[attr]:
                if length > len(value):
                    break
                out.extend(by_prefix.get(value[:length], ()))
        return out

    def _subject_ok(self, pattern: str, subject: str | None) -> bool:
        if subject is None or pattern == "events.>":
            return True
        key = (pattern, subject)
        ok = self._subjects.get(key)
        if ok is None:
            if len(self._subjects) > 65536:  # subjects are chosen by publishers: bounded
                self._subjects.clear()
            ok = self._subjects[key] = subjects.matches(pattern, subject)
        return ok

    def gated(self, subject: str | None, view: filters.EventView) -> list[Entry]:
        """Candidates whose subject and `context` filters pass: decided on attributes only."""
        return [
            e for e in self.candidates(subject, view)
            if self._subject_ok(e.event_subject, subject) and (e.gate is None or e.gate.test(view))
        ]  # fmt: skip

    def match(
        self, subject: str | None, view: filters.EventView, entries: Iterable[Entry] | None = None
    ) -> dict[int, set[str]]:
        """Sensor index -> names of the dependencies the event satisfies (matches only).
        `entries`: the result of `gated` for the same event, to skip looking again."""
        hits: dict[int, set[str]] = {}
        for entry in self.gated(subject, view) if entries is None else entries:
            if entry.node.test(view):
                hits.setdefault(entry.sensor, set()).add(entry.dependency)
        return hits

    def firing(
        self, subject: str | None, view: filters.EventView
    ) -> list[tuple[CompiledSensor, set[str], list[CompiledTrigger]]]:
        """Every sensor with a trigger whose conditions this event alone meets."""
        out = []
        for index, matched in self.match(subject, view).items():
            sensor = self.sensors[index]
            triggers = sensor.firing(matched)
            if triggers:
                out.append((sensor, matched, triggers))
        return out


def _root(checks: list[filters.Check]) -> filters.Node:
    nodes = [c for c in checks if isinstance(c, filters.Node)]
    if len(nodes) == len(checks) == 1:
        return nodes[0]
    return _Checks(checks)


class _Checks(filters.Node):
    """Checks that are not nodes (none today): evaluated as they are, never indexed."""

    name = "checks"

    def __init__(self, checks: list[filters.Check]) -> None:
        self.checks = checks

    def test(self, view: filters.EventView) -> bool:
        return filters.evaluate(self.checks, view)[0]

    def explain(self, view: filters.EventView) -> tuple[bool, list[filters.Verdict]]:
        return filters.evaluate(self.checks, view)
