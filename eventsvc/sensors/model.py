"""Sensor specs: parse, validate (schema + meaning), and keep the lines for messages."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cronsim import CronSim, CronSimError

from eventsvc import subjects, yamldoc
from eventsvc.durations import parse_duration
from eventsvc.errors import SpecProblem
from eventsvc.sensors import conditions, filters, keys, origins, params, schema
from eventsvc.triggers import REGISTRY

_SCHEMA = schema.sensor_schema()
FieldPath = yamldoc.FieldPath


@dataclass(frozen=True, slots=True)
class Dependency:
    name: str
    event_subject: str
    filters: Mapping[str, Any]
    """The `filters` section, with the dependency's `filtersLogicalOperator` folded in."""
    correlate: str | None = None  # key expression; events pair only on equal keys


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    name: str
    kind: str
    spec: Mapping[str, Any]  # the kind's own section, e.g. template.http
    conditions: str | None
    template: Mapping[str, Any]  # the whole template, as written
    raw: Mapping[str, Any]  # the whole trigger item, as written
    delivery: Delivery = field(default_factory=lambda: Delivery())
    plan: params.Plan | None = field(default=None, compare=False, repr=False)
    """Parameters and `{{ }}` leaves, compiled once (see `params.render`)."""


@dataclass(frozen=True, slots=True)
class SensorSpec:
    name: str
    file: str
    dependencies: tuple[Dependency, ...]
    triggers: tuple[TriggerSpec, ...]
    raw: Mapping[str, Any]
    correlation: Correlation = field(default_factory=lambda: Correlation())

    def dependency(self, name: str) -> Dependency:
        return next(d for d in self.dependencies if d.name == name)


def parse_sensor(doc: yamldoc.Document) -> tuple[SensorSpec | None, list[SpecProblem]]:
    problems = yamldoc.validate_schema(doc, _SCHEMA)
    problems += _check_meaning(doc)
    problems += _check_delivery(doc)
    if problems:
        return None, sorted(set(problems), key=lambda p: (p.line, p.field))
    warnings = origins.check(doc) + origins.destinations(doc) + params.old_spelling(doc)
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
        trigs.append(TriggerSpec(tpl["name"], kind, tpl[kind], tpl.get("conditions"), tpl, item,
                                 delivery=parse_delivery(item), plan=plan))  # fmt: skip
    correlation = parse_correlation(spec.get("correlation", {}))
    return SensorSpec(value["metadata"]["name"], doc.file, deps, tuple(trigs), value,
                      correlation=correlation), warnings  # fmt: skip


def _dependency(raw: Mapping[str, Any]) -> Dependency:
    flt = dict(raw.get("filters") or {})
    if "filtersLogicalOperator" in raw:
        flt["filtersLogicalOperator"] = raw["filtersLogicalOperator"]
    return Dependency(raw["name"], raw.get("eventSubject", "events.>"), flt,
                      correlate=raw.get("correlate"))  # fmt: skip


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


def _check_meaning(doc: yamldoc.Document) -> list[SpecProblem]:
    """What the schema cannot say: duplicates, undeclared names, one kind per trigger,
    filters that cannot work, CEL that does not parse.

    Runs on documents that may also fail the schema, so it skips what is malformed.
    """
    spec = doc.value.get("spec") if isinstance(doc.value, dict) else None
    if not isinstance(spec, dict):
        return []
    out: list[SpecProblem] = []
    dep_names: set[str] = set()
    dep_subjects: dict[str, str] = {}
    for i, dep in enumerate(_items(spec, "dependencies")):
        if not isinstance(dep, dict) or not isinstance(dep.get("name"), str):
            continue
        base: FieldPath = ("spec", "dependencies", i)
        if dep["name"] in dep_names:
            out.append(doc.problem((*base, "name"), f"duplicate dependency name {dep['name']!r}"))
        dep_names.add(dep["name"])
        if isinstance(dep.get("eventSubject"), str):
            dep_subjects[dep["name"]] = dep["eventSubject"]
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
        if isinstance(name, str):
            out.extend(_check_own_results(doc, base, name, tpl, declared, dep_subjects))
    return sorted(out, key=lambda p: (p.line, p.field))


def _check_own_results(
    doc: yamldoc.Document,
    base: FieldPath,
    trigger: str,
    tpl: Mapping[str, Any],
    declared: frozenset[str],
    dep_subjects: Mapping[str, str],
) -> list[SpecProblem]:
    """A trigger that fires on its own results would fire forever."""
    meta = doc.value.get("metadata") if isinstance(doc.value, dict) else None
    sensor = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(sensor, str):
        return []
    own = subjects.result(sensor, trigger)
    where = (*base, "template", "conditions" if "conditions" in tpl else "name")
    loops = [d for d in sorted(_available(tpl, declared))
             if d in dep_subjects and subjects.matches(dep_subjects[d], own)]  # fmt: skip
    fix = "narrow the eventSubject to the results it follows, e.g. 'results.<sensor>.<trigger>'"
    return [
        doc.problem(where, f"dependency {dep!r} (eventSubject {dep_subjects[dep]!r}) matches this "
                    f"trigger's own results {own!r}, so every run would fire it again; {fix}")
        for dep in loops
    ]


def _check_dependency(
    doc: yamldoc.Document, base: FieldPath, dep: Mapping[str, Any]
) -> list[SpecProblem]:
    out: list[SpecProblem] = []
    subject = dep.get("eventSubject")
    if isinstance(subject, str):
        problem = _subject_problem(subject)
        if problem:
            out.append(doc.problem((*base, "eventSubject"), problem))
    flt = dep.get("filters")
    if isinstance(flt, dict):
        for group in ("context", "data", "time", "exprs"):  # one malformed group hides no other
            if group not in flt:
                continue
            try:
                _, found = filters.compile_dependency({group: flt[group]})
            except (TypeError, KeyError, AttributeError, ValueError):  # the schema says why
                found = []
            out.extend(doc.problem((*base, "filters", *p), m) for p, m in found)
        if isinstance(flt.get("context"), dict):
            out += _attribute_typos(doc, (*base, "filters", "context"), flt["context"])
    return out


CE_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype",
                 "dataschema", "githubdelivery", "githubhookid", "githubevent")  # fmt: skip
_DIALECTS = {"exact", "prefix", "suffix", "all", "any", "not"}


def _attribute_typos(doc: yamldoc.Document, path: FieldPath, ctx: Any) -> list[SpecProblem]:
    """A context key close to a known attribute (`tpye`) is a typo: as an extension name it
    would be valid, and would never match an event from eventsvc's gateways."""
    out: list[SpecProblem] = []
    if isinstance(ctx, list):
        for i, item in enumerate(ctx):
            out += _attribute_typos(doc, (*path, i), item)
        return out
    if not isinstance(ctx, dict):
        return out
    for key, value in ctx.items():
        if key in _DIALECTS:
            out += _attribute_typos(doc, (*path, key), value)
            continue
        if not isinstance(key, str) or not key.isalnum() or not key.islower():
            continue  # the schema reports a malformed name
        close = difflib.get_close_matches(key, CE_ATTRIBUTES, n=1, cutoff=0.75)
        if key not in CE_ATTRIBUTES and close:
            out.append(doc.problem((*path, key), f"{key!r} is not a CloudEvents attribute; "
                                   f"did you mean {close[0]!r}?"))  # fmt: skip
    return out


def _subject_problem(subject: str) -> str | None:
    tokens = subject.split(".")
    if any(t == "" or " " in t for t in tokens):
        return f"{subject!r} is not a NATS subject: tokens are separated by single dots"
    if ">" in tokens[:-1] or any(t != ">" and ">" in t for t in tokens):
        return f"{subject!r}: '>' may only be a whole last token, as in 'events.github.>'"
    if any(t != "*" and "*" in t for t in tokens):
        return f"{subject!r}: '*' must be a whole token, as in 'events.*.push'"
    if tokens[0] not in subjects.ROOTS or len(tokens) < 2:
        return (f"{subject!r} is in no stream a sensor reads: start it with 'events.' "
                "(stream EVENTS, e.g. 'events.github.>') or 'results.' (stream RESULTS, "
                "trigger results, e.g. 'results.<sensor>.<trigger>')")  # fmt: skip
    return None


def _check_trigger(
    doc: yamldoc.Document,
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
    doc: yamldoc.Document, path: yamldoc.FieldPath, text: str, declared: set[str]
) -> list[SpecProblem]:
    try:
        _, names = conditions.parse(text)
    except conditions.ConditionSyntaxError as e:
        return [doc.problem(path, f"{text!r}: {e}")]
    return [
        doc.problem(path, f"dependency {name!r} is not declared in spec.dependencies")
        for name in sorted(names - declared)
    ]


# --- delivery: retries, rate limits, dead letters, concurrency, correlation ---

MAX_WINDOW = 7 * 86400.0  # partial matches are kept at most this long (the KV bucket's TTL)
_UNIT_SECONDS = {"Second": 1.0, "Minute": 60.0, "Hour": 3600.0}


@dataclass(frozen=True, slots=True)
class RetryStrategy:
    """Attempts in all (`steps`), and the delay before attempt n+1: duration * factor**(n-1),
    plus up to `jitter` of it, never more than `max_duration` (0: no cap)."""

    steps: int
    duration: float
    factor: float = 2.0
    jitter: float = 0.0
    max_duration: float = 0.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests_per_unit: int
    unit_seconds: float = 1.0


class ConcurrencyPolicy(StrEnum):
    QUEUE = "queue"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class Concurrency:
    key: str
    policy: ConcurrencyPolicy = ConcurrencyPolicy.QUEUE


@dataclass(frozen=True, slots=True)
class Delivery:
    """How a trigger's runs are delivered; None means the service defaults."""

    retry: RetryStrategy | None = None
    rate_limit: RateLimit | None = None
    dlq: TriggerSpec | None = None
    concurrency: Concurrency | None = None


@dataclass(frozen=True, slots=True)
class Correlation:
    window: float = 86400.0
    conditions_reset: tuple[str, ...] = ()


def parse_delivery(item: Mapping[str, Any]) -> Delivery:
    retry = rate = dlq = conc = None
    if (r := item.get("retryStrategy")) is not None:
        retry = RetryStrategy(
            steps=int(r.get("steps", 3)),
            duration=parse_duration(r.get("duration", "1s")),
            factor=float(r.get("factor", 2.0)),
            jitter=float(r.get("jitter", 0.0)),
            max_duration=parse_duration(r.get("maxDuration", 0)),
        )
    if (rl := item.get("rateLimit")) is not None:
        rate = RateLimit(int(rl["requestsPerUnit"]), _UNIT_SECONDS[rl.get("unit", "Second")])
    if (d := item.get("dlqTrigger")) is not None:
        tpl = d["template"]
        kind = next(k for k in tpl if k in REGISTRY)
        dlq = TriggerSpec(tpl["name"], kind, tpl[kind], None, tpl, d)
    if (c := item.get("concurrency")) is not None:
        conc = Concurrency(c["key"], ConcurrencyPolicy(c.get("policy", "queue")))
    return Delivery(retry, rate, dlq, conc)


def parse_correlation(raw: Mapping[str, Any]) -> Correlation:
    return Correlation(
        window=parse_duration(raw.get("window", "24h")),
        conditions_reset=tuple(raw.get("conditionsReset", ())),
    )


def _check_delivery(doc: yamldoc.Document) -> list[SpecProblem]:
    """Durations, impossible numbers, key expressions and the DLQ trigger's kind."""
    spec = doc.value.get("spec") if isinstance(doc.value, dict) else None
    if not isinstance(spec, dict):
        return []
    out: list[SpecProblem] = []
    for i, dep in enumerate(_list_at(spec, "dependencies")):
        if isinstance(dep, dict) and isinstance(dep.get("correlate"), str):
            out += _check_key(doc, ("spec", "dependencies", i, "correlate"), dep["correlate"])
    corr = spec.get("correlation")
    if isinstance(corr, dict) and "window" in corr:
        path: yamldoc.FieldPath = ("spec", "correlation", "window")
        out += _check_duration(doc, path, corr["window"], positive=True, most=MAX_WINDOW)
    resets = corr.get("conditionsReset") if isinstance(corr, dict) else None
    for i, expr in enumerate(resets if isinstance(resets, list) else []):
        if isinstance(expr, str) and not valid_schedule(expr):
            message = (f"{expr!r} is not a 5-field cron schedule (minute hour day month "
                       "weekday), e.g. '0 23 * * *'")  # fmt: skip
            out.append(doc.problem(("spec", "correlation", "conditionsReset", i), message))
    declared = frozenset(d["name"] for d in _list_at(spec, "dependencies")
                         if isinstance(d, dict) and isinstance(d.get("name"), str))  # fmt: skip
    for i, item in enumerate(_list_at(spec, "triggers")):
        if isinstance(item, dict):
            out += _check_trigger_delivery(doc, ("spec", "triggers", i), item, declared)
    return out


def valid_schedule(expr: str) -> bool:
    if len(expr.split()) != 5:
        return False
    try:
        CronSim(expr, datetime.now(UTC))
    except CronSimError:
        return False
    return True


def _list_at(spec: Mapping[str, Any], key: str) -> list[Any]:
    value = spec.get(key)
    return value if isinstance(value, list) else []


def _check_trigger_delivery(
    doc: yamldoc.Document,
    base: yamldoc.FieldPath,
    item: Mapping[str, Any],
    declared: frozenset[str],
) -> list[SpecProblem]:
    out: list[SpecProblem] = []
    retry = item.get("retryStrategy")
    if isinstance(retry, dict):
        rp: yamldoc.FieldPath = (*base, "retryStrategy")
        steps = retry.get("steps")
        if isinstance(steps, int) and steps < 1:
            message = f"{steps} is impossible; steps counts every attempt, so use 1 or more"
            out.append(doc.problem((*rp, "steps"), message))
        durations = {}
        for key in ("duration", "maxDuration"):
            if key in retry:
                found = _check_duration(doc, (*rp, key), retry[key])
                out += found
                if not found:
                    durations[key] = parse_duration(retry[key])
        factor = retry.get("factor")
        if isinstance(factor, int | float) and factor < 1:
            out.append(doc.problem((*rp, "factor"), f"{factor} would shrink the delay; use 1 "
                                                    "(constant) or more"))  # fmt: skip
        jitter = retry.get("jitter")
        if isinstance(jitter, int | float) and not 0 <= jitter <= 1:
            out.append(doc.problem((*rp, "jitter"), f"{jitter} is outside 0..1 (a fraction "
                                                    "of the delay)"))  # fmt: skip
        cap = durations.get("maxDuration", 0.0)
        if cap and cap < durations.get("duration", 0.0):
            out.append(doc.problem((*rp, "maxDuration"), f"{retry['maxDuration']!r} is shorter "
                                   f"than duration {retry['duration']!r}; raise it or drop it"))
    rate = item.get("rateLimit")
    if isinstance(rate, dict):
        n = rate.get("requestsPerUnit")
        if isinstance(n, int) and n < 1:
            out.append(doc.problem((*base, "rateLimit", "requestsPerUnit"),
                                   f"{n} would never fire; use 1 or more"))  # fmt: skip
    conc = item.get("concurrency")
    if isinstance(conc, dict) and isinstance(conc.get("key"), str):
        out += _check_key(doc, (*base, "concurrency", "key"), conc["key"])
    dlq = item.get("dlqTrigger")
    tpl = dlq.get("template") if isinstance(dlq, dict) else None
    if isinstance(dlq, dict) and isinstance(tpl, dict):  # checked as any trigger is
        out += _check_trigger(doc, (*base, "dlqTrigger"), dlq, tpl, declared)
    return out


def _check_duration(
    doc: yamldoc.Document,
    path: yamldoc.FieldPath,
    value: Any,
    *,
    positive: bool = False,
    most: float | None = None,
) -> list[SpecProblem]:
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError) as e:
        return [doc.problem(path, str(e))]
    if positive and seconds <= 0:
        return [doc.problem(path, f"{value!r} must be longer than 0")]
    if most is not None and seconds > most:
        return [doc.problem(path, f"{value!r} is longer than the {most / 86400:g}d limit")]
    return []


def _check_key(doc: yamldoc.Document, path: yamldoc.FieldPath, text: str) -> list[SpecProblem]:
    try:
        keys.compile_key(text)
    except keys.KeyExpressionError as e:
        return [doc.problem(path, str(e))]
    return []
