"""`eventsvc test SENSOR --event E.json...`: a dry run with no side effects.

Events are taken in order, as if they all arrived within one correlation window,
and pair as the engine pairs them: a trigger completes when the events that passed
its dependencies' filters, with equal `correlate` keys, meet its conditions (the
events of a completed run are used up). For each
event, every filter of every dependency is shown with the value seen and the value
expected; then, per trigger, whether its conditions are met and the body it would
be given. Nothing is published and no trigger runs.

Exit codes: 0 as expected, 1 an expectation failed (or a firing trigger cannot
render, or the sensor is invalid), 2 usage (unreadable event, unknown trigger name).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from eventsvc import events, loader, subjects
from eventsvc.config import load_config
from eventsvc.errors import EventsvcError
from eventsvc.events import CloudEvent
from eventsvc.gateways import github
from eventsvc.sensors import filters, params, results
from eventsvc.sensors.compiled import CompiledSensor
from eventsvc.sensors.model import SensorSpec
from eventsvc.triggers import REGISTRY

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Input:
    event: CloudEvent
    nats_subject: str | None
    origin: str


def add_parser(sub: Any) -> None:
    p = sub.add_parser("test", help="dry-run a sensor against events (no side effects)")
    p.add_argument("sensor", metavar="SENSOR", help="sensor YAML file")
    p.add_argument("--event", action="append", required=True, metavar="FILE",
                   help="CloudEvent JSON (or a raw GitHub payload with --github-event); "
                        "repeat for several; '-' reads stdin")  # fmt: skip
    p.add_argument("--github-event", metavar="NAME",
                   help="the files that are not CloudEvents are GitHub payloads of this "
                        "X-GitHub-Event (e.g. pull_request)")  # fmt: skip
    p.add_argument("--nats-subject",
                   help="NATS subject the events arrived on (default: events.github.<event> "
                        "for GitHub, results.<sensor>.<trigger> for a trigger result, "
                        "else unchecked)")  # fmt: skip
    p.add_argument("--time", help="RFC 3339 time for events that carry none (default: now)")
    p.add_argument("--expect-fire", action="append", default=[], metavar="TRIGGER",
                   help="exit 1 unless this trigger fires; repeat for several")
    p.add_argument("--expect-no-fire", action="append", default=[], metavar="TRIGGER",
                   help="exit 1 if this trigger fires; repeat for several")
    p.add_argument("--output", "-o", choices=("text", "json"), default="text",
                   help="json: every verdict, rendered body and expectation as one document")
    p.set_defaults(func=main)


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    loaded = loader.load_paths([args.sensor])
    if loaded.problems:
        for problem in loaded.problems:
            print(problem, file=out)
        return EXIT_FAILED
    try:
        inputs = [i for path in args.event for i in read_inputs(path, args)]
        if not loaded.sensors:
            raise UsageError(f"{args.sensor}: no Sensor in this file")
        names = {t.name for s in loaded.sensors for t in s.triggers}
        unknown = sorted(set(args.expect_fire + args.expect_no_fire) - names)
        if unknown:
            raise UsageError(f"no trigger named {', '.join(map(repr, unknown))}; "
                             f"this file has: {', '.join(sorted(names))}")  # fmt: skip
    except UsageError as e:
        print(f"eventsvc test: {e}", file=sys.stderr)
        return EXIT_USAGE
    as_json = getattr(args, "output", "text") == "json"
    fired: set[str] = set()
    failed = False
    results = []
    for sensor in loaded.sensors:
        result = evaluate_sensor(sensor, inputs)
        results.append(result)
        if not as_json:
            print_sensor(result, out)
        f, bad = outcome(result)
        fired |= f
        failed |= bad
    expectations = [
        *({"trigger": n, "expected": "fires", "met": n in fired} for n in args.expect_fire),
        *({"trigger": n, "expected": "does not fire", "met": n not in fired}
          for n in args.expect_no_fire),
    ]  # fmt: skip
    failed |= not all(x["met"] for x in expectations)
    if as_json:
        json.dump({"ok": not failed, "sensors": results, "expectations": expectations}, out,
                  indent=2, default=str)  # fmt: skip
        print(file=out)
    else:
        for x in expectations:
            if not x["met"]:
                verb = "does not fire" if x["expected"] == "fires" else "fires"
                print(f"EXPECTATION FAILED: trigger {x['trigger']!r} {verb}", file=out)
    return EXIT_FAILED if failed else EXIT_OK


def read_inputs(path: str, args: argparse.Namespace) -> list[Input]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        doc = json.loads(text)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path}: cannot read JSON: {e}") from e
    docs = doc if isinstance(doc, list) else [doc]
    return [_input(d, path, args) for d in docs]


def _input(doc: Any, origin: str, args: argparse.Namespace) -> Input:
    when = args.time or events.format_time(datetime.now(UTC))
    if isinstance(doc, dict) and "specversion" in doc:
        doc = {"time": when, **doc}
        try:
            event = events.from_dict(doc)
        except events.EventDecodeError as e:
            raise UsageError(f"{origin}: {e}") from e
        gh = doc.get("githubevent")
        subject = args.nats_subject or (subjects.github(str(gh)) if gh else _result_subject(doc))
        return Input(event, subject, origin)
    if not args.github_event:
        raise UsageError(f"{origin}: not a CloudEvent (no specversion); for a raw GitHub "
                         "payload pass --github-event NAME")  # fmt: skip
    if not isinstance(doc, dict):
        raise UsageError(f"{origin}: a GitHub payload must be a JSON object")
    name = args.github_event
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"dry-run-{uuid.uuid4()}",
        "source": github.event_source(doc),
        "type": github.event_type(name, doc),
        "subject": github.event_subject(name, doc),
        "time": when,
        "datacontenttype": "application/json",
        "githubevent": name,
    }
    try:
        event = events.make_event({k: v for k, v in attributes.items() if v is not None}, doc)
    except events.EventDecodeError as e:  # e.g. --time that is not RFC 3339
        raise UsageError(f"{origin}: {e}; --time takes e.g. 2026-03-01T09:30:00Z") from e
    subject = args.nats_subject or subjects.github(name)
    return Input(event, subject, origin)


def _result_subject(doc: dict[str, Any]) -> str | None:
    """`results.<sensor>.<trigger>` for a trigger result event, which says both."""
    data = doc.get("data")
    if doc.get("type") != results.RESULT_TYPE or not isinstance(data, dict):
        return None
    sensor, trigger = data.get("sensor"), data.get("trigger")
    if not isinstance(sensor, str) or not isinstance(trigger, str):
        return None
    return results.subject(sensor, trigger)


def _show(value: Any, raw: bool = False) -> str:
    if isinstance(value, str) and (raw or value == filters.MISSING_TEXT):
        text = value
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def evaluate_sensor(sensor: SensorSpec, inputs: Sequence[Input]) -> dict[str, Any]:
    """The dry run of one sensor as data: per event, every dependency's verdict with its
    reasons; per trigger, whether it fires and the body it would send (or why it cannot
    render). What `--output json` prints and what the text output is made from."""
    compiled = CompiledSensor(sensor, load_config(environ={}))
    satisfied: dict[str, CloudEvent] = {}
    dep_keys: dict[str, str | None] = {}  # correlation key of each dependency's latest event
    partial: dict[str, dict[str, dict[str, CloudEvent]]] = {}  # trigger -> key -> dep -> event
    completed: dict[str, dict[str, CloudEvent]] = {}  # trigger -> the events of its run
    seen: list[dict[str, Any]] = []
    for n, item in enumerate(inputs, 1):
        ev = item.event
        verdicts = []
        view = filters.EventView.of(ev)
        for dep, checks in compiled.deps:
            ok, lines = explain_dependency(dep.event_subject, checks, item.nats_subject, view)
            verdicts.append({"name": dep.name, "matched": ok, "reasons": lines})
            if ok:
                satisfied[dep.name] = ev
                keyfn = compiled.correlate.get(dep.name)
                dep_keys[dep.name] = keyfn(ev) if keyfn else ""
        seen.append({"n": n, "origin": item.origin, "id": ev.get_id(), "type": ev.get_type(),
                     "source": ev.get_source(), "subject": ev.get_subject(),
                     "dependencies": verdicts})  # fmt: skip
        _pair(compiled, {d for d, e in satisfied.items() if e is ev}, ev, partial, completed)
    triggers: list[dict[str, Any]] = []
    for trig in compiled.triggers:
        spec = trig.spec
        run = completed.get(spec.name)
        entry: dict[str, Any] = {
            "name": spec.name, "kind": spec.kind, "fires": run is not None,
            "conditions": spec.conditions or " && ".join(d.name for d in sensor.dependencies),
            "dependencies": {d.name: {"satisfied": d.name in satisfied,
                                      "key": _key_note(d.name, compiled, dep_keys)}
                             for d in sensor.dependencies},
        }  # fmt: skip
        triggers.append(entry)
        if run is None:  # met only across different correlation keys, or not at all
            entry["unpairedKeys"] = bool(trig.condition(set(satisfied)))
            continue
        by_dep = {name: run[name] for name in sorted(run)}
        try:
            body = params.render(spec, by_dep)
        except EventsvcError as e:
            entry["renderError"] = str(e)
            continue
        entry["rendered"] = {spec.kind: body}
        # the kind's own account of what it would do with this body, without doing it
        entry["note"] = REGISTRY[spec.kind].explain(body, next(iter(by_dep.values()), None))
    return {"sensor": sensor.name, "file": sensor.file, "events": seen, "triggers": triggers}


def print_sensor(result: dict[str, Any], out: TextIO) -> None:
    """`evaluate_sensor`'s result as the text `eventsvc test` prints."""
    print(f"sensor {result['sensor']} ({result['file']})", file=out)
    for ev in result["events"]:
        print(f"\nevent {ev['n']} ({ev['origin']}): {ev['type']} from {ev['source']}"
              + (f", subject {ev['subject']}" if ev["subject"] else "")
              + f", id {ev['id']}", file=out)  # fmt: skip
        for dep in ev["dependencies"]:
            print(f"  dependency {dep['name']}: {'MATCHED' if dep['matched'] else 'not matched'}",
                  file=out)  # fmt: skip
            for line in dep["reasons"]:
                print(f"    {line}", file=out)
    print("\ntriggers:", file=out)
    for trig in result["triggers"]:
        states = " ".join(f"{name}={'yes' if d['satisfied'] else 'no'}{d['key']}"
                          for name, d in trig["dependencies"].items())  # fmt: skip
        cond, head = trig["conditions"], f"  {trig['name']} ({trig['kind']}):"
        if not trig["fires"]:
            print(f"{head} does not fire; conditions {cond!r} not met"
                  f"{' by events with equal correlate keys' if trig['unpairedKeys'] else ''} "
                  f"({states})", file=out)  # fmt: skip
            continue
        print(f"{head} FIRES; conditions {cond!r} met ({states})", file=out)
        if "renderError" in trig:
            print(f"    would FAIL to render: {trig['renderError']}", file=out)
            continue
        rendered = json.dumps(trig["rendered"], indent=2, default=str)
        print("\n".join("    " + line for line in rendered.splitlines()), file=out)
        if trig["note"]:
            print(f"    when it runs: {trig['note']}", file=out)
    print(file=out)


def outcome(result: dict[str, Any]) -> tuple[set[str], bool]:
    """The triggers that fire, and whether one cannot render."""
    fired = {t["name"] for t in result["triggers"] if t["fires"]}
    return fired, any("renderError" in t for t in result["triggers"])


def run_sensor(sensor: SensorSpec, inputs: Sequence[Input], out: TextIO) -> tuple[set[str], bool]:
    """Print the dry run of one sensor; the triggers that fire, and whether one cannot render."""
    result = evaluate_sensor(sensor, inputs)
    print_sensor(result, out)
    return outcome(result)


def _pair(
    compiled: CompiledSensor,
    matched: set[str],
    event: CloudEvent,
    partial: dict[str, dict[str, dict[str, CloudEvent]]],
    completed: dict[str, dict[str, CloudEvent]],
) -> None:
    """The engine's pairing of one event: a trigger it completes alone, or together with
    earlier events of the same correlation key; otherwise it waits as a partial match."""
    for trig in compiled.triggers:
        relevant = matched & trig.names
        if not relevant:
            continue
        name = trig.spec.name
        if trig.condition(relevant):
            completed[name] = {dep: event for dep in relevant}
            continue
        for dep in sorted(relevant):
            keyfn = compiled.correlate.get(dep)
            ckey = keyfn(event) if keyfn else ""
            if ckey is None:  # no key: the event cannot pair
                continue
            waiting = partial.setdefault(name, {}).setdefault(ckey, {})
            waiting[dep] = event
            if trig.condition(set(waiting)):
                completed[name] = dict(waiting)
                del partial[name][ckey]


def _key_note(dep: str, compiled: CompiledSensor, dep_keys: dict[str, str | None]) -> str:
    if dep not in compiled.correlate or dep not in dep_keys:
        return ""
    key = dep_keys[dep]
    return " (no correlate key)" if key is None else f" (key {_show(key)})"


def explain_dependency(
    pattern: str, checks: list[filters.Check], subject: str | None, view: filters.EventView
) -> tuple[bool, list[str]]:
    lines: list[str] = []
    ok = True
    if subject is None:
        lines.append(f"pass  eventSubject  not checked (no NATS subject given); "
                     f"expected {_show(pattern)}")  # fmt: skip
    else:
        subject_ok = subjects.matches(pattern, subject)
        ok = subject_ok
        lines.append(f"{'pass' if subject_ok else 'FAIL'}  eventSubject  seen {_show(subject)}  "
                     f"expected {_show(pattern)}")  # fmt: skip
    for check in checks:
        if isinstance(check, filters.Node):
            passed, verdicts = check.explain(view)
        else:
            verdict = check(view)
            passed, verdicts = verdict.passed, [verdict]
        ok = ok and passed
        for v in verdicts:
            why = f"  ({v.reason})" if v.reason else ""
            lines.append(f"{'pass' if v.passed else 'FAIL'}  {v.filter}  seen {_show(v.seen)}  "
                         f"expected {_show(v.expected, raw=True)}{why}")  # fmt: skip
    if len(lines) == 1 and not checks:
        lines.append("pass  (no filters)")
    return ok, lines
