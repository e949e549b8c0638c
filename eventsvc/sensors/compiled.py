"""A sensor spec compiled once for matching and running: filters, conditions, correlation
keys, and per trigger its retry strategy, rate limiter and concurrency gate."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from eventsvc import subjects
from eventsvc.config import Config
from eventsvc.events import CloudEvent
from eventsvc.sensors import conditions, correlation, delivery, filters, keys
from eventsvc.sensors.model import Dependency, SensorSpec, TriggerSpec


def _minimal(found: set[str]) -> tuple[str, ...]:
    """Subjects without those another one covers."""
    covered = {s for s in found for t in found if t != s and subjects.covers(t, s)}
    return tuple(sorted(found - covered))


def revision(spec: SensorSpec) -> str:
    """A short digest of the sensor as written: two replicas agree on it."""
    text = json.dumps(spec.raw, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CompiledTrigger:
    """A trigger with its condition, retry strategy, rate limiter and concurrency gate."""

    def __init__(self, spec: TriggerSpec, every: frozenset[str], config: Config) -> None:
        self.spec = spec
        if spec.conditions:
            self.condition, self.names = conditions.parse(spec.conditions)
        else:
            self.condition, self.names = conditions.all_of(every), every
        d = spec.delivery
        self.strategy = d.retry or delivery.default_strategy(config)
        self.limiter = delivery.RateLimiter(d.rate_limit) if d.rate_limit else None
        self.gate = delivery.KeyedGate(d.concurrency.policy) if d.concurrency else None
        self.gate_key = keys.compile_key(d.concurrency.key) if d.concurrency else None


class CompiledSensor:
    """A sensor spec with its filters, conditions and correlation keys compiled once."""

    def __init__(self, spec: SensorSpec, config: Config) -> None:
        self.spec = spec
        self.name = spec.name
        self.rev = revision(spec)
        self.deps: list[tuple[Dependency, list[filters.Check]]] = []
        self.gates: dict[str, filters.Node | None] = {}
        """Per dependency, the part of its filters that reads attributes only
        (`filters.compile_gated`): what the dispatcher decides on before decoding a body."""
        for d in spec.dependencies:
            checks, self.gates[d.name] = filters.compile_gated(d.filters)
            self.deps.append((d, checks))
        every = frozenset(d.name for d in spec.dependencies)
        self.triggers = [CompiledTrigger(t, every, config) for t in spec.triggers]
        self.correlate: dict[str, keys.KeyFn] = {
            d.name: keys.compile_key(d.correlate) for d in spec.dependencies if d.correlate
        }
        by_stream: dict[str, set[str]] = {}
        for d in spec.dependencies:
            by_stream.setdefault(subjects.stream_of(d.event_subject), set()).add(d.event_subject)
        self.streams: dict[str, tuple[str, ...]] = {
            stream: _minimal(found) for stream, found in sorted(by_stream.items())
        }
        """The subjects it reads on each stream: EVENTS, and RESULTS if it follows results."""
        self.subjects = tuple(s for found in self.streams.values() for s in found)
        # every delivery may run one attempt of one trigger; keep spares for crashes
        self.max_deliver = sum(t.strategy.steps for t in self.triggers) + config.max_deliveries + 1

    def match(
        self, subject: str, view: filters.EventView
    ) -> tuple[set[str], dict[str, list[filters.Verdict]]]:
        """Names of the dependencies the event satisfies, and every verdict by dependency."""
        matched: set[str] = set()
        verdicts: dict[str, list[filters.Verdict]] = {}
        for dep, checks in self.deps:
            if not subjects.matches(dep.event_subject, subject):
                verdicts[dep.name] = [
                    filters.Verdict(False, "eventSubject", subject, dep.event_subject)
                ]
                continue
            ok, verdicts[dep.name] = filters.evaluate(checks, view)
            if ok:
                matched.add(dep.name)
        return matched, verdicts

    def firing(self, matched: set[str]) -> list[CompiledTrigger]:
        """Triggers whose condition one event with these dependencies meets on its own."""
        return [t for t in self.triggers if t.condition(matched & t.names)]


@dataclass(frozen=True, slots=True)
class Plan:
    """One trigger to run for the delivered event, over these events by dependency."""

    trig: CompiledTrigger
    by_dep: Mapping[str, CloudEvent]
    completed: correlation.Completed | None = None
