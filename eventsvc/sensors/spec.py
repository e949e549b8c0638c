"""Sensor specs: parse, validate (schema + meaning), and keep the lines for messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eventsvc import specfile
from eventsvc.errors import SpecProblem
from eventsvc.sensors import conditions, schema
from eventsvc.triggers import REGISTRY

_SCHEMA = schema.sensor_schema()


@dataclass(frozen=True, slots=True)
class Dependency:
    name: str
    event_subject: str
    filters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    name: str
    kind: str
    spec: Mapping[str, Any]  # the kind's own section, e.g. template.http
    conditions: str | None
    template: Mapping[str, Any]  # the whole template, as written
    raw: Mapping[str, Any]  # the whole trigger item, as written


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
    deps = tuple(
        Dependency(d["name"], d.get("eventSubject", "events.>"), d.get("filters", {}))
        for d in spec["dependencies"]
    )
    trigs = []
    for item in spec["triggers"]:
        tpl = item["template"]
        kind = next(k for k in tpl if k in REGISTRY)
        trigs.append(TriggerSpec(tpl["name"], kind, tpl[kind], tpl.get("conditions"), tpl, item))
    return SensorSpec(value["metadata"]["name"], doc.file, deps, tuple(trigs), value), []


def _check_meaning(doc: specfile.Document) -> list[SpecProblem]:
    """What the schema cannot say: duplicates, undeclared names, one kind per trigger.

    Runs on documents that may also fail the schema, so it skips what is malformed.
    """
    spec = doc.value.get("spec") if isinstance(doc.value, dict) else None
    if not isinstance(spec, dict):
        return []
    out: list[SpecProblem] = []
    dep_names: set[str] = set()
    deps: list[Any] = spec.get("dependencies") or []
    deps = deps if isinstance(deps, list) else []
    for i, dep in enumerate(deps):
        if not isinstance(dep, dict) or not isinstance(dep.get("name"), str):
            continue
        if dep["name"] in dep_names:
            out.append(doc.problem(("spec", "dependencies", i, "name"),
                                   f"duplicate dependency name {dep['name']!r}"))  # fmt: skip
        dep_names.add(dep["name"])
    trig_names: set[str] = set()
    trigs: list[Any] = spec.get("triggers") or []
    trigs = trigs if isinstance(trigs, list) else []
    for i, item in enumerate(trigs):
        base: specfile.FieldPath = ("spec", "triggers", i, "template")
        tpl = item.get("template") if isinstance(item, dict) else None
        if not isinstance(tpl, dict):
            continue
        if tpl.get("name") in trig_names:
            out.append(doc.problem((*base, "name"), f"duplicate trigger name {tpl['name']!r}"))
        trig_names.add(str(tpl.get("name")))
        kinds = [k for k in tpl if k in REGISTRY]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            out.append(doc.problem(base, f"exactly one trigger kind is required "
                                         f"({', '.join(REGISTRY)}); found {found}"))  # fmt: skip
        for kind in kinds:
            if not isinstance(tpl[kind], dict):
                continue
            for sub, message in REGISTRY[kind].check(tpl[kind]):
                out.append(doc.problem((*base, kind, *sub), message))
        if isinstance(tpl.get("conditions"), str):
            out.extend(_check_conditions(doc, (*base, "conditions"), tpl["conditions"], dep_names))
    return sorted(out, key=lambda p: (p.line, p.field))


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
