"""One attempt of one trigger over one set of events, and everything it leaves behind.

`Runs.attempt` consults the run ledger (a run that already finished is not repeated: its
result says `duplicate`), takes the trigger's concurrency lease and rate-limit slot
(shared by every replica through `delivery.Coordinator`), renders the trigger's section
with its parameters, executes the kind, and records the outcome: the ledger, a result on
`results.<sensor>.<trigger>`, and for a run that failed for good a dead letter and the
`dlqTrigger`. It returns when the next attempt is due, or None when the run is final; the
worker turns that into an ack or a delayed redelivery.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from eventsvc import logs, metrics
from eventsvc.bus import Bus
from eventsvc.config import Config
from eventsvc.errors import BusError, EventsvcError, TemporaryTriggerError, as_trigger_error
from eventsvc.events import CloudEvent
from eventsvc.sensors import correlation, deadletter, delivery, keys, params, results
from eventsvc.sensors.compiled import CompiledSensor, CompiledTrigger, Plan
from eventsvc.sensors.delivery import Outcome, RunState
from eventsvc.triggers import REGISTRY, Services, TriggerContext, TriggerKind, TriggerResult

log = logs.get("eventsvc.sensors")


class TriggerPool:
    """One instance per trigger kind, made on first use."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._kinds: dict[str, TriggerKind] = {}

    def get(self, key: str) -> TriggerKind:
        if key not in self._kinds:
            self._kinds[key] = REGISTRY[key](self.services)
        return self._kinds[key]


@dataclass(frozen=True, slots=True)
class Stores:
    """What every sensor's runs share: the bus, the trigger kinds and the KV-backed state."""

    bus: Bus
    config: Config
    pool: TriggerPool
    ledger: delivery.Ledger
    partials: correlation.PartialStore
    coordinator: delivery.Coordinator


@dataclass(frozen=True, slots=True)
class Delivered:
    """The delivery a run belongs to: where its event is stored and how often it came."""

    subject: str
    seq: int  # the event's sequence in EVENTS or RESULTS: orders `replace` concurrency
    num_delivered: int
    event: CloudEvent


class Runs:
    """Trigger runs for one sensor."""

    def __init__(self, sensor: CompiledSensor, stores: Stores) -> None:
        self.sensor = sensor
        self.stores = stores
        self.log = log.bind(sensor=sensor.name)

    async def attempt(
        self, plan: Plan, got: Delivered, elog: FilteringBoundLogger
    ) -> float | None:
        """One attempt of one trigger, if due. None when the run is final, else the epoch
        time its next attempt is due."""
        trig, name, stores = plan.trig, plan.trig.spec.name, self.stores
        key = delivery.run_key(self.sensor.name, name, [e.get_id() for e in plan.by_dep.values()])
        try:
            state = await stores.ledger.get(key)
        except BusError as e:  # not knowing whether it ran, it does not run: it waits
            elog.warning("run ledger unreadable; the event will come back", trigger=name,
                         error=str(e))  # fmt: skip
            return self._again()
        if state is not None and state.final:
            elog.info("trigger already finished for these events; not running again",
                      trigger=name, outcome=state.outcome)  # fmt: skip
            # the final result again, under its own id: a no-op unless a crash lost it
            if not await self.result(name, plan.by_dep, Outcome(state.outcome), state.attempts,
                                     0.0, error=state.error, key=key):  # fmt: skip
                return self._again()
            await self.result(name, plan.by_dep, Outcome.DUPLICATE, state.attempts, 0.0)
            await self.consume(plan)
            return None
        last = got.num_delivered >= self.sensor.max_deliver
        if state is not None and state.not_before > time.time() and not last:
            return state.not_before
        attempt = state.attempts + 1 if state is not None else 1
        lease: delivery.Lease | None = None
        if trig.gate is not None and trig.gate_key is not None:
            gkey = keys.first_key(trig.gate_key, plan.by_dep) or ""
            lease = await stores.coordinator.acquire(trig.gate, self._scope(name), gkey, got.seq)
            if lease is None:
                elog.info("superseded by a newer event", trigger=name, key=gkey)
                await stores.ledger.put(key, RunState(Outcome.SUPERSEDED, attempt - 1))
                published = await self.result(name, plan.by_dep, Outcome.SUPERSEDED,
                                              attempt - 1, 0.0, detail={"concurrencyKey": gkey},
                                              key=key)  # fmt: skip
                await self.consume(plan)
                return None if published else self._again()
        try:
            rate = trig.spec.delivery.rate_limit
            if trig.limiter is not None and rate is not None:
                await stores.coordinator.rate(self._scope(name), rate, trig.limiter)
            result, error, took = await self.fire(trig, plan.by_dep, attempt, key)
        finally:
            if lease is not None:
                await stores.coordinator.release(lease)
        if error is None:
            done = Outcome.SKIPPED if result and result.outcome == "skipped" else Outcome.SUCCESS
            await stores.ledger.put(key, RunState(done, attempt))
            detail = result.detail if result is not None else {}
            if not await self.result(name, plan.by_dep, done, attempt, took, detail=detail,
                                     key=key):  # fmt: skip
                return self._again()  # the redelivery publishes it
            await self.consume(plan)
            return None
        return await self._failed(plan, got, key, attempt, error, took, last, elog)

    async def _failed(
        self,
        plan: Plan,
        got: Delivered,
        key: str,
        attempt: int,
        error: EventsvcError,
        took: float,
        last: bool,
        elog: FilteringBoundLogger,
    ) -> float | None:
        """A failed attempt: schedule the next one, or give up (DLQ, dlqTrigger)."""
        trig, name, stores = plan.trig, plan.trig.spec.name, self.stores
        temporary = isinstance(error, TemporaryTriggerError)
        if temporary and attempt < trig.strategy.steps and not last:
            delay = delivery.backoff(trig.strategy, attempt)
            if isinstance(error, TemporaryTriggerError) and error.delay:
                delay = max(delay, error.delay)
            due = time.time() + delay
            await stores.ledger.put(key, RunState(Outcome.RETRY, attempt, due, str(error)))
            await self.result(name, plan.by_dep, Outcome.RETRY, attempt, took, error=str(error))
            return due
        reason = "retries exhausted" if temporary else "permanent failure"
        elog.error("trigger failed for good; sent to DLQ", trigger=name, reason=reason,
                   attempts=attempt, error=str(error))  # fmt: skip
        letter = deadletter.Letter(self.sensor.name, reason, str(error), got.subject, got.seq,
                                   got.num_delivered, trigger=name, attempts=attempt,
                                   by_dep=plan.by_dep, event=got.event)  # fmt: skip
        if not await deadletter.send(stores.bus, letter):
            return self._again()
        published = await self.result(name, plan.by_dep, Outcome.FAILED, attempt, took,
                                      error=f"{reason}: {error}", key=key)  # fmt: skip
        await self.fire_dlq(trig, plan.by_dep, error, attempt, key)
        await stores.ledger.put(key, RunState(Outcome.FAILED, attempt, error=str(error)))
        await self.consume(plan)
        return None if published else self._again()

    def _again(self) -> float:
        """When an event left for redelivery is due again."""
        return time.time() + self.stores.config.redelivery_delay

    def _scope(self, trigger: str) -> str:
        return f"{self.sensor.name}.{trigger}"

    async def fire(
        self, trig: CompiledTrigger, by_dep: Mapping[str, CloudEvent], attempt: int, key: str
    ) -> tuple[TriggerResult | None, EventsvcError | None, float]:
        """Execute the trigger once: (result, error, seconds)."""
        spec = trig.spec
        event_ids = ",".join(sorted({e.get_id() for e in by_dep.values()}))
        ctx = TriggerContext(self.sensor.name, spec.name, by_dep, attempt=attempt, run_key=key)
        started = time.perf_counter()
        try:
            section = params.render(spec, by_dep)
            result: TriggerResult = await self.stores.pool.get(spec.kind).execute(section, ctx)
        except EventsvcError as raised:
            e = as_trigger_error(raised)  # GitHub, git, Kubernetes: retryable or not
            outcome = "retry" if isinstance(e, TemporaryTriggerError) else "failed"
            self._record(spec.name, outcome, started)
            self.log.warning("trigger failed", trigger=spec.name, event_id=event_ids,
                             attempt=ctx.attempt, error=str(e))  # fmt: skip
            return None, e, time.perf_counter() - started
        except Exception as e:  # a bug in a kind must not lose the event: retry, then DLQ
            self._record(spec.name, "error", started)
            self.log.exception("trigger crashed", trigger=spec.name, event_id=event_ids)
            return None, TemporaryTriggerError(f"{type(e).__name__}: {e}"), 0.0
        self._record(spec.name, result.outcome, started)
        message = "trigger skipped" if result.outcome == "skipped" else "trigger fired"
        self.log.info(message, trigger=spec.name, event_id=event_ids, **result.detail)
        return result, None, time.perf_counter() - started

    async def fire_dlq(
        self,
        trig: CompiledTrigger,
        by_dep: Mapping[str, CloudEvent],
        error: EventsvcError,
        attempts: int,
        key: str,
    ) -> None:
        """Run the trigger's `dlqTrigger` once (no retries); its outcome is a result."""
        dlq = trig.spec.delivery.dlq
        if dlq is None:
            return
        ctx = TriggerContext(self.sensor.name, dlq.name, by_dep, attempt=attempts,
                             run_key=f"{key}.dlq")  # fmt: skip
        started = time.perf_counter()
        try:
            section = params.render(dlq, by_dep)
            result = await self.stores.pool.get(dlq.kind).execute(section, ctx)
        except Exception as e:  # the event still goes to the DLQ stream
            self.log.error("dlqTrigger failed", trigger=trig.spec.name, dlq_trigger=dlq.name,
                           error=f"{type(e).__name__}: {e}")  # fmt: skip
            await self.result(dlq.name, by_dep, Outcome.FAILED, 1, time.perf_counter() - started,
                              error=str(e), dlq=True)  # fmt: skip
            return
        detail = {"for": trig.spec.name, "error": str(error), **result.detail}
        await self.result(dlq.name, by_dep, Outcome.SUCCESS, 1, time.perf_counter() - started,
                          detail=detail, dlq=True)  # fmt: skip

    async def consume(self, plan: Plan) -> None:
        if plan.completed is not None:
            await self.stores.partials.consume(self.sensor.name, plan.trig.spec.name,
                                               plan.completed)  # fmt: skip

    async def result(
        self,
        trigger: str,
        by_dep: Mapping[str, CloudEvent],
        outcome: Outcome,
        attempt: int,
        took: float,
        *,
        error: str = "",
        detail: Mapping[str, object] | None = None,
        dlq: bool = False,
        key: str = "",
    ) -> bool:
        """Publish a run's result; `key` (the run's ledger key) marks its final outcome.
        False when it could not be stored (after retries)."""
        ids = [e.get_id() for e in by_dep.values()]
        depth = 1 + max((results.depth_of(e) for e in by_dep.values()), default=0)
        run = results.RunResult(self.sensor.name, trigger, ids, outcome.value, attempt, took,
                                error, dict(detail or {}), dlq, results.cause(by_dep),
                                depth, event_id=key)  # fmt: skip
        return await results.publish(self.stores.bus, run)

    def _record(self, trigger: str, outcome: str, started: float) -> None:
        metrics.TRIGGER_RUNS.labels(self.sensor.name, trigger, outcome).inc()
        metrics.TRIGGER_SECONDS.labels(self.sensor.name, trigger).observe(
            time.perf_counter() - started
        )
