"""`eventsvc convert argo-events PATH... -o DIR`: Argo Events Sensors and EventSources in,
eventsvc Sensors and Schedules out, plus the setup the EventSources need, as text.

EventSources are read first, whatever the order of the files, so that a dependency's
`eventSourceName`/`eventName` resolves to the subject and context its events will
have in eventsvc (see `sources`); without them, Argo's context convention is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventsvc import loader, yamldoc
from eventsvc.convert import filters, sources, triggers, yamlout
from eventsvc.convert.report import Finding, Output
from eventsvc.errors import SpecProblem

API_GROUP = "argoproj.io/"
KINDS = ("Sensor", "EventSource")
_SENSOR_NOTES = {
    "template": "the sensor pod template: eventsvc runs sensors in its own process; give its "
                "Deployment the service account and settings",
    "eventBusName": "eventsvc reads JetStream stream EVENTS; there is one bus",
    "replicas": "every eventsvc replica serves every sensor (active-active)",
    "revisionHistoryLimit": "no Deployment per sensor",
    "errorOnFailedRound": "trigger failures are results (eventsvc results) and dead letters",
    "loggingFields": "eventsvc logs carry sensor=, trigger= and event_id=",
}  # fmt: skip


_MALFORMED = (TypeError, AttributeError, KeyError, ValueError, IndexError)


def _malformed(e: Exception) -> str:
    return (f"the manifest is malformed where the converter did not expect it "
            f"({type(e).__name__}: {str(e)[:120]}); nothing was written for it; fix it "
            "(kubectl apply --dry-run=server checks it) and convert again")


def is_argo(value: Any) -> bool:
    return (isinstance(value, Mapping) and str(value.get("apiVersion", "")).startswith(API_GROUP)
            and value.get("kind") in KINDS)  # fmt: skip


@dataclass(slots=True)
class Result:
    files: dict[str, str] = field(default_factory=dict)  # output name -> YAML text
    findings: list[Finding] = field(default_factory=list)
    problems: list[SpecProblem] = field(default_factory=list)  # unreadable input
    instructions: list[str] = field(default_factory=list)
    manifests: int = 0


def convert_paths(paths: Sequence[str | Path]) -> Result:
    result = Result()
    docs: list[yamldoc.Document] = []
    for path in yamldoc.spec_files(paths):
        if not path.exists():
            result.problems.append(SpecProblem(str(path), 1, "(file)", "no such file"))
            continue
        found, problems = yamldoc.read_documents(path)
        result.problems += problems
        docs += [d for d in found if is_argo(d.value)]
    result.manifests = len(docs)
    found_sources = sources.Sources()
    for doc in (d for d in docs if d.value["kind"] == "EventSource"):
        out = Output(doc)
        first = len(found_sources.schedules)
        try:
            sources.convert_event_source(doc, out, found_sources)
        except _MALFORMED as e:
            out.not_converted((), (), _malformed(e))
        result.findings += out.findings
        found_sources.instructions += [f"  not converted: {f.field}: {f.why}"
                                       for f in out.findings]  # no file holds a comment
        _write_schedules(doc, found_sources.schedules[first:], result)
    result.instructions = found_sources.instructions
    for doc in (d for d in docs if d.value["kind"] == "Sensor"):
        out = Output(doc)
        try:
            value = convert_sensor(doc, out, found_sources)
        except _MALFORMED as e:
            out.not_converted((), (), _malformed(e))
            result.findings += out.findings
            continue
        result.findings += out.findings
        name = value["metadata"]["name"]
        out.comments.setdefault((), []).insert(0, f"Converted from {doc.file} (Argo Events) "
                                               "by eventsvc convert argo-events.")  # fmt: skip
        result.files[_unique(f"{name}.yaml", result.files)] = yamlout.dump(value, out.comments)
    return result


def _unique(name: str, taken: Mapping[str, str]) -> str:
    n, stem = 2, name.removesuffix(".yaml")
    while name in taken:
        name, n = f"{stem}-{n}.yaml", n + 1
    return name


def _write_schedules(doc: yamldoc.Document,
                     schedules: Sequence[tuple[dict[str, Any], dict[Any, list[str]]]],
                     result: Result) -> None:  # fmt: skip
    texts = []
    for body, comments in schedules:
        head = [f"Converted from {doc.file} (Argo Events calendar) by eventsvc convert "
                "argo-events; ticks arrive on events.cron." + body["metadata"]["name"]]
        texts.append(yamlout.dump(body, {**comments, (): head + comments.get((), [])}))
    if texts:
        name = sources.rfc1123(str(doc.value.get("metadata", {}).get("name", "calendar")))
        result.files[_unique(f"{name}-schedules.yaml", result.files)] = "---\n".join(texts)


def convert_sensor(doc: yamldoc.Document, out: Output, found: sources.Sources) -> dict[str, Any]:
    value = doc.value
    spec = value.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise TypeError("spec must be a mapping")
    meta = value.get("metadata") if isinstance(value.get("metadata"), Mapping) else {}
    name = str(meta.get("name", "sensor"))
    new_name = sources.rfc1123(name)
    sensor: dict[str, Any] = {"apiVersion": yamldoc.API_VERSION, "kind": "Sensor",
                              "metadata": {"name": new_name}}  # fmt: skip
    if new_name != name:
        out.note(("metadata", "name"), f"renamed from {name!r} (RFC 1123)")
    for key in ("labels", "annotations"):
        if isinstance(meta.get(key), Mapping) and meta[key]:
            sensor["metadata"][key] = {str(k): str(v) for k, v in meta[key].items()}
    if meta.get("namespace"):
        out.note(("metadata",), f"namespace {meta['namespace']!r} not needed: sensors are "
                 "files eventsvc loads, not objects in a namespace")  # fmt: skip
    new_spec: dict[str, Any] = {"dependencies": [], "triggers": []}
    for key in spec:
        if key in _SENSOR_NOTES:
            out.note(("spec",), f"spec.{key} not needed: {_SENSOR_NOTES[key]}")
        elif key not in ("dependencies", "triggers"):
            out.not_converted(("spec", key), ("spec",), f"{key!r} is not known to the converter")
    for key in ("dependencies", "triggers"):
        if not spec.get(key):
            out.not_converted(("spec", key), ("spec", key), "a Sensor needs at least one; "
                              "Argo refuses it too")  # fmt: skip
    deps: dict[str, sources.SourceEvent] = {}
    for i, dep in enumerate(_list_of(spec, "dependencies", out)):
        converted = _dependency(dep, i, out, found, deps)
        if converted is not None:
            new_spec["dependencies"].append(converted)
    scope_resets: list[tuple[Any, Any]] = []
    for i, item in enumerate(_list_of(spec, "triggers", out)):
        src = ("spec", "triggers", i)
        dst = ("spec", "triggers", len(new_spec["triggers"]))
        scope = triggers.Scope(deps, _available(item, deps))
        converted = None
        if isinstance(item, Mapping):
            converted = triggers.convert_trigger(item, src, dst, out, scope)
        else:
            out.not_converted(src, dst, "a trigger must be a mapping with a template")
        scope_resets += scope.resets
        if converted is not None:
            new_spec["triggers"].append(converted)
        else:  # what was said about it goes before the next trigger
            _collapse(out, dst)
    resets = _resets(scope_resets, len(spec.get("triggers") or []), out)
    if resets:
        new_spec["correlation"] = {"conditionsReset": resets}
    sensor["spec"] = new_spec
    return sensor


def _list_of(spec: Mapping[str, Any], key: str, out: Output) -> list[Any]:
    value = spec.get(key)
    if value is None or isinstance(value, list):
        return value or []
    out.not_converted(("spec", key), ("spec", key), f"{key} must be a list")
    return []


def _collapse(out: Output, at: tuple[str | int, ...]) -> None:
    for path in [p for p in out.comments if p[: len(at)] == at and len(p) > len(at)]:
        out.comments.setdefault(at, []).extend(out.comments.pop(path))


def _available(item: Any, deps: Mapping[str, Any]) -> frozenset[str]:
    tpl = item.get("template") if isinstance(item, Mapping) else None
    cond = tpl.get("conditions") if isinstance(tpl, Mapping) else None
    if isinstance(cond, str):
        return frozenset(d for d in deps if d in cond.replace("(", " ").replace(")", " ")
                         .replace("&&", " ").replace("||", " ").replace("!", " ").split())
    return frozenset(deps)


def _dependency(dep: Any, i: int, out: Output, found: sources.Sources,
                deps: dict[str, sources.SourceEvent]) -> dict[str, Any] | None:  # fmt: skip
    src = ("spec", "dependencies", i)
    dst = ("spec", "dependencies", len(deps))
    if not isinstance(dep, Mapping) or not isinstance(dep.get("name"), str):
        out.not_converted(src, ("spec", "dependencies"), "a dependency needs a name")
        return None
    if not dep.get("eventSourceName") or not dep.get("eventName"):
        out.not_converted(src, ("spec", "dependencies"), "eventSourceName and eventName are "
                          "required")  # fmt: skip
        return None
    se = found.find(str(dep["eventSourceName"]), str(dep["eventName"]))
    deps[dep["name"]] = se
    new: dict[str, Any] = {"name": dep["name"], "eventSubject": se.subject}
    if not se.type:
        out.note((*dst, "eventSubject"), f"EventSource {se.source!r} was not given: events "
                 f"are expected with source {se.source!r} and subject {se.event!r}, as Argo "
                 "sets them; convert the EventSource too for a narrower subject")  # fmt: skip
    for key in dep:
        if key == "transform":
            out.not_converted((*src, key), dst, "event transforms (jq, Lua) are not "
                              "converted; read the fields you need in the filters and "
                              "parameters")  # fmt: skip
        elif key not in ("name", "eventSourceName", "eventName", "filters",
                         "filtersLogicalOperator"):  # fmt: skip
            out.not_converted((*src, key), dst, f"{key!r} is not known to the converter")
    flt = dep.get("filters") or {}
    operator = str(dep.get("filtersLogicalOperator") or "and")
    converted = filters.convert(flt if isinstance(flt, Mapping) else {}, operator, se,
                                (*src, "filters"), (*dst, "filters"), out)  # fmt: skip
    if converted:
        new["filters"] = converted
    return new


def _resets(found: list[tuple[Any, Any]], triggers_count: int, out: Output) -> list[str]:
    crons: list[str] = []
    for src, resets in found:
        for j, reset in enumerate(resets if isinstance(resets, list) else []):
            by_time = reset.get("byTime") if isinstance(reset, Mapping) else None
            if not isinstance(by_time, Mapping) or not by_time.get("cron"):
                out.not_converted((*src, j), ("spec", "correlation"), "only byTime resets "
                                  "convert")  # fmt: skip
                continue
            tz = str(by_time.get("timezone") or "UTC")
            if tz not in ("UTC", "Etc/UTC", "Z"):
                out.not_converted((*src, j, "byTime", "timezone"), ("spec", "correlation"),
                                  f"eventsvc's conditionsReset schedules are UTC; rewrite "
                                  f"{by_time['cron']!r} ({tz}) in UTC")  # fmt: skip
                continue
            if str(by_time["cron"]) not in crons:
                crons.append(str(by_time["cron"]))
    if crons and (len(found) < triggers_count):
        out.note(("spec", "correlation"), "conditionsReset applies to every trigger of the "
                 "sensor in eventsvc, not to one")  # fmt: skip
    return crons


def lint_outputs(directory: Path, names: Sequence[str]) -> list[SpecProblem]:
    """What `eventsvc lint` says about the files written (a converter bug if anything)."""
    loaded = loader.load_paths([directory / n for n in names])
    return loaded.problems
