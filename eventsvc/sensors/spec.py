"""Sensor specs: parse, validate (schema + meaning), and keep the lines for messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eventsvc import specfile
from eventsvc.errors import SpecProblem
from eventsvc.sensors import conditions, filters, params, schema
from eventsvc.triggers import REGISTRY

_SCHEMA = schema.sensor_schema()
FieldPath = specfile.FieldPath


@dataclass(frozen=True, slots=True)
class Dependency:
    name: str
    event_subject: str
    filters: Mapping[str, Any]
    """The `filters` section, with the dependency's `filtersLogicalOperator` folded in."""


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    name: str
    kind: str
    spec: Mapping[str, Any]  # the kind's own section, e.g. template.http
    conditions: str | None
    template: Mapping[str, Any]  # the whole template, as written
    raw: Mapping[str, Any]  # the whole trigger item, as written
    plan: params.Plan | None = field(default=None, compare=False, repr=False)
    """Parameters and `{{ }}` leaves, compiled once (see `params.render`)."""


@dataclass(frozen=True, slots=True)
class SensorSpec:
    name: str
    file: str
    dependencies: tuple[Dependency, ...]
    triggers: tuple[TriggerSpec, ...]
    raw: Mapping[str, Any]

    def dependency(self, name: str) -> Dependency:
        return next(d for d in self.dependencies if d.name == name)


def parse_sensor(doc: specfile.Document) -> tuple[SensorSpec | None, list[SpecProblem]]:
    problems = specfile.validate_schema(doc, _SCHEMA)
    problems += _check_meaning(doc)
    if problems:
        return None, sorted(set(problems), key=lambda p: (p.line, p.field))
    value = doc.value
    spec = value["spec"]
    deps = tuple(_dependency(d) for d in spec["dependencies"])
    declared = frozenset(d.name for d in deps)
    trigs = []
    for item in spec["triggers"]:
        tpl = item["template"]
        kind = next(k for k in tpl if k in REGISTRY)
        plan, _ = params.compile_plan(item, kind, declared, _available(tpl, declared),
                                      REGISTRY[kind].schema)  # fmt: skip
        trigs.append(
            TriggerSpec(tpl["name"], kind, tpl[kind], tpl.get("conditions"), tpl, item, plan)
        )
    return SensorSpec(value["metadata"]["name"], doc.file, deps, tuple(trigs), value), []


def _dependency(raw: Mapping[str, Any]) -> Dependency:
    flt = dict(raw.get("filters") or {})
    if "filtersLogicalOperator" in raw:
        flt["filtersLogicalOperator"] = raw["filtersLogicalOperator"]
    return Dependency(raw["name"], raw.get("eventSubject", "events.>"), flt)


def _available(tpl: Mapping[str, Any], declared: frozenset[str]) -> frozenset[str]:
    """Dependencies whose events can be in a firing of this trigger."""
    if isinstance(tpl.get("conditions"), str):
        try:
            return conditions.parse(tpl["conditions"])[1]
        except conditions.ConditionSyntaxError:
            return declared
    return declared


def _items(value: Any, key: str) -> list[Any]:
    found = value.get(key) if isinstance(value, dict) else None
    return found if isinstance(found, list) else []


def _check_meaning(doc: specfile.Document) -> list[SpecProblem]:
    """What the schema cannot say: duplicates, undeclared names, one kind per trigger,
    filters that cannot work, CEL that does not parse.

    Runs on documents that may also fail the schema, so it skips what is malformed.
    """
    spec = doc.value.get("spec") if isinstance(doc.value, dict) else None
    if not isinstance(spec, dict):
        return []
    out: list[SpecProblem] = []
    dep_names: set[str] = set()
    for i, dep in enumerate(_items(spec, "dependencies")):
        if not isinstance(dep, dict) or not isinstance(dep.get("name"), str):
            continue
        base: FieldPath = ("spec", "dependencies", i)
        if dep["name"] in dep_names:
            out.append(doc.problem((*base, "name"), f"duplicate dependency name {dep['name']!r}"))
        dep_names.add(dep["name"])
        out.extend(_check_dependency(doc, base, dep))
    declared = frozenset(dep_names)
    trig_names: set[str] = set()
    for i, item in enumerate(_items(spec, "triggers")):
        base = ("spec", "triggers", i)
        tpl = item.get("template") if isinstance(item, dict) else None
        if not isinstance(tpl, dict):
            continue
        name = tpl.get("name")
        if isinstance(name, str) and name in trig_names:
            out.append(doc.problem((*base, "template", "name"),
                                   f"duplicate trigger name {name!r}"))  # fmt: skip
        if isinstance(name, str):
            trig_names.add(name)
        out.extend(_check_trigger(doc, base, item, tpl, declared))
    return sorted(out, key=lambda p: (p.line, p.field))


def _check_dependency(
    doc: specfile.Document, base: FieldPath, dep: Mapping[str, Any]
) -> list[SpecProblem]:
    out: list[SpecProblem] = []
    subject = dep.get("eventSubject")
    if isinstance(subject, str):
        problem = _subject_problem(subject)
        if problem:
            out.append(doc.problem((*base, "eventSubject"), problem))
    flt = dep.get("filters")
    if isinstance(flt, dict):
        try:
            _, found = filters.compile_dependency(flt)
        except (TypeError, KeyError, AttributeError):  # malformed: the schema says why
            found = []
        out.extend(doc.problem((*base, "filters", *p), m) for p, m in found)
    return out


def _subject_problem(subject: str) -> str | None:
    tokens = subject.split(".")
    if any(t == "" or " " in t for t in tokens):
        return f"{subject!r} is not a NATS subject: tokens are separated by single dots"
    if ">" in tokens[:-1] or any(t != ">" and ">" in t for t in tokens):
        return f"{subject!r}: '>' may only be a whole last token, as in 'events.github.>'"
    if any(t != "*" and "*" in t for t in tokens):
        return f"{subject!r}: '*' must be a whole token, as in 'events.*.push'"
    if tokens[0] not in ("events", "*", ">"):
        return (f"{subject!r} is outside the EVENTS stream, which holds 'events.>'; "
                "this dependency would never see an event")  # fmt: skip
    return None


def _check_trigger(
    doc: specfile.Document,
    base: FieldPath,
    item: Mapping[str, Any],
    tpl: Mapping[str, Any],
    declared: frozenset[str],
) -> list[SpecProblem]:
    out: list[SpecProblem] = []
    kinds = [k for k in tpl if k in REGISTRY]
    if len(kinds) != 1:
        found = ", ".join(kinds) if kinds else "none"
        out.append(doc.problem((*base, "template"), f"exactly one trigger kind is required "
                                                    f"({', '.join(REGISTRY)}); "
                                                    f"found {found}"))  # fmt: skip
    for kind in kinds:
        if not isinstance(tpl[kind], dict):
            continue
        for sub, message in REGISTRY[kind].check(tpl[kind]):
            out.append(doc.problem((*base, "template", kind, *sub), message))
    if isinstance(tpl.get("conditions"), str):
        out.extend(_check_conditions(doc, (*base, "template", "conditions"), tpl["conditions"],
                                     set(declared)))  # fmt: skip
    if len(kinds) == 1 and isinstance(tpl[kinds[0]], dict):
        kind = kinds[0]
        try:
            _, plan_problems = params.compile_plan(item, kind, declared,
                                                   _available(tpl, declared),
                                                   REGISTRY[kind].schema)  # fmt: skip
        except (TypeError, KeyError, AttributeError):  # malformed: the schema says why
            plan_problems = []
        out.extend(doc.problem((*base, *p), m) for p, m in plan_problems)
    return out


def _check_conditions(
    doc: specfile.Document, path: specfile.FieldPath, text: str, declared: set[str]
) -> list[SpecProblem]:
    try:
        _, names = conditions.parse(text)
    except conditions.ConditionSyntaxError as e:
        return [doc.problem(path, f"{text!r}: {e}")]
    return [
        doc.problem(path, f"dependency {name!r} is not declared in spec.dependencies")
        for name in sorted(names - declared)
    ]
