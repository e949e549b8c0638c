"""The sensor engine: durable pull consumers per sensor, filters, conditions, triggers.

A sensor reads EVENTS through one durable consumer, and RESULTS through a second one when
a dependency follows trigger results (`eventSubject: results.<sensor>.<trigger>`); both
feed the same matching and delivery.

Delivery contract: an event is acknowledged only after its triggers finished —
success, or a permanent failure / exhausted retries recorded in the DLQ stream.
A temporary failure is retried by delayed redelivery (`nak(delay)`), per trigger
(`retryStrategy`), so a retrying event never blocks the others. The run ledger in
KV (`delivery.Ledger`) makes a redelivered event skip what already finished.
Conditions over several events are completed in `correlation`; every run publishes
a result (`results`). `Engine.apply` reconciles the runners with a new set of specs.

Every sensor whose subjects take an event gets its own copy, so the cost of an event grows
with the sensors sharing its subject. The fast path keeps that copy cheap: a binary-mode
message is first judged on its `ce-*` headers (eventSubject and `context` filters,
`SensorRunner._ignored`) and, when no dependency can match, acknowledged without its body
being decoded. Everything else takes the full path (`_handle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from eventsvc import events, logs, metrics
from eventsvc.bus import Bus, Delivery, PullConsumer
from eventsvc.bus.streams import EVENTS, RESULTS
from eventsvc.config import Config
from eventsvc.errors import (
    BusError,
    BusUnavailableError,
    EventsvcError,
    TemporaryTriggerError,
)
from eventsvc.events import CloudEvent
from eventsvc.sensors import conditions, correlation, delivery, filters, keys, params, results
from eventsvc.sensors.delivery import Outcome, RunState
from eventsvc.sensors.spec import Dependency, SensorSpec, TriggerSpec, stream_of
from eventsvc.sensors.spec import subject_matches as subject_matches  # re-exported
from eventsvc.triggers import REGISTRY, Services, TriggerContext, TriggerKind, TriggerResult

log = logs.get("eventsvc.sensors")
STREAMS = (EVENTS, RESULTS)  # the streams a sensor's consumers read; see spec.stream_of
FIRED_BUCKET = delivery.LEDGER_BUCKET


def _covers(wide: str, narrow: str) -> bool:
    """Every subject `narrow` matches, `wide` matches too."""
    pw, pn = wide.split("."), narrow.split(".")
    for i, tok in enumerate(pw):
        if tok == ">":
            return len(pn) > i
        if i >= len(pn) or pn[i] == ">" or (tok != "*" and tok != pn[i]):
            return False
    return len(pw) == len(pn)


def _filter_subjects(subjects: set[str]) -> tuple[str, ...]:
    """A consumer's filter subjects: without those another one covers (NATS refuses overlaps)."""
    return tuple(sorted(s for s in subjects if not any(t != s and _covers(t, s) for t in subjects)))


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
        self.deps: list[tuple[Dependency, list[filters.Check]]] = []
        self.gates: list[tuple[str, filters.Node | None]] = []
        """Per dependency, its eventSubject and the filters that read attributes only
        (`filters.compile_gated`): what a binary-mode message's headers can decide."""
        for d in spec.dependencies:
            checks, gate = filters.compile_gated(d.filters)
            self.deps.append((d, checks))
            self.gates.append((d.event_subject, gate))
        every = frozenset(d.name for d in spec.dependencies)
        self.triggers = [CompiledTrigger(t, every, config) for t in spec.triggers]
        self.correlate: dict[str, keys.KeyFn] = {
            d.name: keys.compile_key(d.correlate) for d in spec.dependencies if d.correlate
        }
        by_stream: dict[str, set[str]] = {}
        for d in spec.dependencies:
            by_stream.setdefault(stream_of(d.event_subject), set()).add(d.event_subject)
        self.streams: dict[str, tuple[str, ...]] = {
            stream: _filter_subjects(subjects) for stream, subjects in sorted(by_stream.items())
        }
        """The subjects its consumer on each stream reads: EVENTS, and RESULTS if it follows
        trigger results."""
        self.subjects = tuple(s for subjects in self.streams.values() for s in subjects)
        # every delivery may run one attempt of one trigger; keep spares for crashes
        self.max_deliver = sum(t.strategy.steps for t in self.triggers) + config.max_deliveries + 1

    def match(
        self, subject: str, view: filters.EventView
    ) -> tuple[set[str], dict[str, list[filters.Verdict]]]:
        """Names of the dependencies the event satisfies, and every verdict by dependency."""
        matched: set[str] = set()
        verdicts: dict[str, list[filters.Verdict]] = {}
        for dep, checks in self.deps:
            if not subject_matches(dep.event_subject, subject):
                verdicts[dep.name] = [
                    filters.Verdict(False, "eventSubject", subject, dep.event_subject)
                ]
                continue
            ok, verdicts[dep.name] = filters.evaluate(checks, view)
            if ok:
                matched.add(dep.name)
        return matched, verdicts

    def may_match(self, subject: str, view: filters.EventView) -> bool:
        """False when no dependency can match an event with these attributes, whatever its
        data: the subject or the context filters rule every one out."""
        for pattern, gate in self.gates:
            if subject_matches(pattern, subject) and (gate is None or gate.test(view)):
                return True
        return False

    def firing(self, matched: set[str]) -> list[CompiledTrigger]:
        """Triggers whose condition one event with these dependencies meets on its own."""
        return [t for t in self.triggers if t.condition(matched & t.names)]


@dataclass(frozen=True, slots=True)
class Plan:
    """One trigger to run for the delivered event, over these events by dependency."""

    trig: CompiledTrigger
    by_dep: Mapping[str, CloudEvent]
    completed: correlation.Completed | None = None


class TriggerPool:
    """One instance per trigger kind, made on first use."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._kinds: dict[str, TriggerKind] = {}

    def get(self, key: str) -> TriggerKind:
        if key not in self._kinds:
            self._kinds[key] = REGISTRY[key](self.services)
        return self._kinds[key]


class SensorRunner:
    """Reads one sensor's durable consumer on each stream it follows (EVENTS, RESULTS) and runs
    its triggers, up to `concurrency` at once per stream; matching and delivery are shared."""

    def __init__(
        self,
        sensor: CompiledSensor,
        bus: Bus,
        pool: TriggerPool,
        config: Config,
        ledger: delivery.Ledger,
        partials: correlation.PartialStore,
        coordinator: delivery.Coordinator | None = None,
    ) -> None:
        self.sensor = sensor
        self.bus = bus
        self.pool = pool
        self.config = config
        self.ledger = ledger
        self.partials = partials
        self.coordinator = coordinator
        self.consumers: dict[str, PullConsumer] = {}  # by stream
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.log = log.bind(sensor=sensor.name)

    @property
    def durable(self) -> str:
        return f"sensor-{self.sensor.name}"

    async def open(self) -> None:
        """Create or update its consumers, and delete one on a stream it no longer reads."""
        for stream in STREAMS:
            if stream not in self.sensor.streams:
                await self.bus.delete_consumer(stream, self.durable)
        for stream, subjects in self.sensor.streams.items():
            self.consumers[stream] = await self.bus.pull_consumer(
                stream,
                self.durable,
                subjects,
                ack_wait=self.config.ack_wait,
                max_deliver=self.sensor.max_deliver,
                max_ack_pending=max(1000, self.config.sensor_concurrency * 4),
            )

    async def run(self) -> None:
        assert self.consumers
        if len(self.consumers) == 1:
            [consumer] = self.consumers.values()
            await self._pump(consumer)
            return
        async with asyncio.TaskGroup() as group:
            for stream, consumer in self.consumers.items():
                group.create_task(self._pump(consumer), name=f"{self.durable}-{stream}")

    async def _pump(self, consumer: PullConsumer) -> None:
        mine: set[asyncio.Task[None]] = set()
        while not self._stopping.is_set():
            free = self.config.sensor_concurrency - len(mine)
            if free <= 0:
                await asyncio.wait(set(mine), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                batch = await consumer.fetch(free, timeout=1.0)
            except BusUnavailableError as e:
                self.log.warning("bus unavailable, fetch paused", error=str(e))
                await self._sleep(1.0)
                continue
            for msg in batch:
                if await self._ignored(msg):
                    continue
                task = asyncio.create_task(self._handle(msg), name=f"{self.durable}-msg")
                self._inflight.add(task)
                mine.add(task)
                task.add_done_callback(mine.discard)
                task.add_done_callback(self._done)

    async def _ignored(self, msg: Delivery) -> bool:
        """The fast path: judge a binary-mode message on its `ce-*` headers, and when no
        dependency can match it, acknowledge it without decoding its body (no task, no
        waiting for the ack's confirmation: a lost ack only redelivers an event that is
        ignored again). False sends it down the full path (`_handle`): structured mode, a
        possible match, or headers that are not a valid CloudEvent (dead-lettered there)."""
        attributes = events.binary_attributes(msg.headers)
        if attributes is None:
            return False
        try:
            event = events.make_event(attributes, None)
        except events.EventDecodeError:
            return False
        if self.sensor.may_match(msg.subject, filters.EventView.of(event)):
            return False
        self.log.debug("event filtered out", event_id=event.get_id(), type=event.get_type())
        try:
            await msg.ack_nowait()
        except BusError as e:  # redelivered after ack wait, and ignored again
            self.log.debug("ack of an ignored event failed", seq=msg.stream_seq, error=str(e))
        return True

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("event handler crashed", error=repr(task.exception()))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def stop(self, deadline: float) -> None:
        """Stop fetching; let in-flight runs finish until `deadline` (loop time), then
        cancel the rest."""
        self._stopping.set()
        pending = set(self._inflight)
        if pending:
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            _, still = await asyncio.wait(pending, timeout=timeout)
            for task in still:
                task.cancel()
            if still:
                self.log.warning("cancelled unfinished trigger runs; they will be redelivered",
                                 count=len(still))  # fmt: skip
                await asyncio.gather(*still, return_exceptions=True)
        for consumer in self.consumers.values():
            await consumer.close()

    async def _handle(self, msg: Delivery) -> None:
        try:
            event = events.from_nats(msg.headers, msg.data)
        except events.EventDecodeError as e:
            self.log.warning("not a CloudEvent, sent to DLQ", subject=msg.subject,
                             seq=msg.stream_seq, error=str(e))  # fmt: skip
            if await self._dead_letter(msg, None, "decode", str(e)):
                await msg.ack()
            return
        elog = self.log.bind(event_id=event.get_id())
        matched, _ = self.sensor.match(msg.subject, filters.EventView.of(event))
        if not matched:
            elog.debug("event filtered out", type=event.get_type())
            await msg.ack()
            return
        if results.depth_of(event) >= results.MAX_DEPTH:
            elog.error("result of a chain of results too deep; not firing (a loop of sensors "
                       "following each other's results?)", depth=results.depth_of(event),
                       limit=results.MAX_DEPTH, source=event.get_source())  # fmt: skip
            await msg.ack()
            return
        metrics.EVENTS_MATCHED.labels(self.sensor.name).inc()
        # keeps the event ours while we work on it: no redelivery to another replica
        heartbeat = asyncio.create_task(self._heartbeat(msg), name="ack-heartbeat")
        try:
            try:
                plans = await self._plan(event, matched, elog)
            except BusError as e:
                elog.warning("partial match store unavailable; event will be redelivered",
                             error=str(e))  # fmt: skip
                await self._nak(msg, self.config.redelivery_delay, elog)
                return
            if not plans:
                await msg.ack()
                return
            dues = [await self._run(plan, msg, elog) for plan in plans]
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await self._settle(msg, dues, elog)

    async def _plan(
        self, event: CloudEvent, matched: set[str], elog: FilteringBoundLogger
    ) -> list[Plan]:
        """What to run now: triggers this event completes alone, or completes together with
        events kept as partial matches; the rest of what it matched is stored as partial."""
        plans: list[Plan] = []
        for trig in self.sensor.triggers:
            relevant = matched & trig.names
            if not relevant:
                continue
            if trig.condition(relevant):
                plans.append(Plan(trig, {n: event for n in sorted(relevant)}))
                continue
            name = trig.spec.name
            used = delivery.consumed_key(self.sensor.name, name, event.get_id())
            if await self.ledger.marked(used):
                elog.info("event already used by a completed run", trigger=name)
                continue
            groups: dict[str, dict[str, CloudEvent]] = {}
            for dep in sorted(relevant):
                keyfn = self.sensor.correlate.get(dep)
                ckey = keyfn(event) if keyfn else ""
                if ckey is None:
                    elog.debug("event has no correlation key", trigger=name, dependency=dep)
                    continue
                groups.setdefault(ckey, {})[dep] = event
            for ckey, deps in groups.items():
                corr = self.sensor.spec.correlation
                done = await self.partials.merge(
                    self.sensor.name, name, ckey, deps, trig.condition,
                    corr.window, corr.conditions_reset,
                )  # fmt: skip
                if done is not None:
                    plans.append(Plan(trig, done.events, done))
        return plans

    async def _heartbeat(self, msg: Delivery) -> None:
        """`in_progress` three times per ack wait, so one late or lost beat does not let
        the event be redelivered (to another replica) while it is still being worked on."""
        while True:
            await asyncio.sleep(max(0.05, self.config.ack_wait / 3))
            try:
                await msg.in_progress()
            except BusError as e:
                self.log.warning("in-progress heartbeat failed; the event may be redelivered",
                                 seq=msg.stream_seq, error=str(e))  # fmt: skip

    async def _run(self, plan: Plan, msg: Delivery, elog: FilteringBoundLogger) -> float | None:
        """One attempt of one trigger, if due. None when the run is final, else the epoch
        time its next attempt is due."""
        trig, name = plan.trig, plan.trig.spec.name
        ids = [e.get_id() for e in plan.by_dep.values()]
        key = delivery.run_key(self.sensor.name, name, ids)
        state = await self.ledger.get(key)
        if state is not None and state.final:
            elog.info("trigger already finished for these events; not running again",
                      trigger=name, outcome=state.outcome)  # fmt: skip
            await self._result(name, plan.by_dep, Outcome.DUPLICATE, state.attempts, 0.0)
            await self._consume(plan)
            return None
        last = msg.num_delivered >= self.sensor.max_deliver
        if state is not None and state.not_before > time.time() and not last:
            return state.not_before
        attempt = state.attempts + 1 if state is not None else 1
        gkey = ""
        lease: delivery.Lease | None = None
        scope = f"{self.sensor.name}.{name}"
        if trig.gate is not None and trig.gate_key is not None:
            gkey = keys.first_key(trig.gate_key, plan.by_dep) or ""
            if self.coordinator is not None:
                lease = await self.coordinator.acquire(trig.gate, scope, gkey, msg.stream_seq)
                held = lease is not None
            else:
                held = await trig.gate.acquire(gkey, msg.stream_seq)
            if not held:
                elog.info("superseded by a newer event", trigger=name, key=gkey)
                await self.ledger.put(key, RunState(Outcome.SUPERSEDED, attempt - 1))
                await self._result(name, plan.by_dep, Outcome.SUPERSEDED, attempt - 1, 0.0,
                                   detail={"concurrencyKey": gkey})  # fmt: skip
                await self._consume(plan)
                return None
        try:
            if trig.limiter is not None:
                rate = trig.spec.delivery.rate_limit
                if self.coordinator is not None and rate is not None:
                    await self.coordinator.rate(scope, rate, trig.limiter)
                else:
                    await trig.limiter.acquire()
            result, error, took = await self._fire(trig, plan.by_dep, attempt)
        finally:
            if lease is not None and self.coordinator is not None:
                await self.coordinator.release(lease)
            elif trig.gate is not None:
                trig.gate.release(gkey)
        if error is None:
            done = Outcome.SKIPPED if result and result.outcome == "skipped" else Outcome.SUCCESS
            await self.ledger.put(key, RunState(done, attempt))
            detail = result.detail if result is not None else {}
            await self._result(name, plan.by_dep, done, attempt, took, detail=detail)
            await self._consume(plan)
            return None
        temporary = isinstance(error, TemporaryTriggerError)
        if temporary and attempt < trig.strategy.steps and not last:
            delay = delivery.backoff(trig.strategy, attempt)
            if isinstance(error, TemporaryTriggerError) and error.delay:
                delay = max(delay, error.delay)
            due = time.time() + delay
            await self.ledger.put(key, RunState(Outcome.RETRY, attempt, due, str(error)))
            await self._result(name, plan.by_dep, Outcome.RETRY, attempt, took, error=str(error))
            return due
        reason = "retries exhausted" if temporary else "permanent failure"
        elog.error("trigger failed for good; sent to DLQ", trigger=name, reason=reason,
                   attempts=attempt, error=str(error))  # fmt: skip
        if not await self._dead_letter(msg, plan.by_dep, reason, str(error), name, attempt):
            return time.time() + self.config.redelivery_delay
        await self._result(name, plan.by_dep, Outcome.FAILED, attempt, took,
                           error=f"{reason}: {error}")  # fmt: skip
        await self._fire_dlq(trig, plan.by_dep, error, attempt)
        await self.ledger.put(key, RunState(Outcome.FAILED, attempt, error=str(error)))
        await self._consume(plan)
        return None

    async def _fire(
        self, trig: CompiledTrigger, by_dep: Mapping[str, CloudEvent], attempt: int
    ) -> tuple[TriggerResult | None, EventsvcError | None, float]:
        """Execute the trigger once: (result, error, seconds)."""
        spec = trig.spec
        event_ids = ",".join(sorted({e.get_id() for e in by_dep.values()}))
        ctx = TriggerContext(self.sensor.name, spec.name, by_dep, attempt=attempt)
        started = time.perf_counter()
        try:
            section = params.render(spec, by_dep)
            result: TriggerResult = await self.pool.get(spec.kind).execute(section, ctx)
        except EventsvcError as e:
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

    async def _fire_dlq(
        self,
        trig: CompiledTrigger,
        by_dep: Mapping[str, CloudEvent],
        error: EventsvcError,
        attempts: int,
    ) -> None:
        """Run the trigger's `dlqTrigger` once (no retries); its outcome is a result."""
        dlq = trig.spec.delivery.dlq
        if dlq is None:
            return
        ctx = TriggerContext(self.sensor.name, dlq.name, by_dep, attempt=attempts)
        started = time.perf_counter()
        try:
            result = await self.pool.get(dlq.kind).execute(dlq.spec, ctx)
        except Exception as e:  # the event still goes to the DLQ stream
            self.log.error("dlqTrigger failed", trigger=trig.spec.name, dlq_trigger=dlq.name,
                           error=f"{type(e).__name__}: {e}")  # fmt: skip
            await self._result(dlq.name, by_dep, Outcome.FAILED, 1, time.perf_counter() - started,
                               error=str(e), dlq=True)  # fmt: skip
            return
        detail = {"for": trig.spec.name, "error": str(error), **result.detail}
        await self._result(dlq.name, by_dep, Outcome.SUCCESS, 1, time.perf_counter() - started,
                           detail=detail, dlq=True)  # fmt: skip

    async def _consume(self, plan: Plan) -> None:
        if plan.completed is not None:
            await self.partials.consume(self.sensor.name, plan.trig.spec.name, plan.completed)

    async def _result(
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
    ) -> None:
        ids = [e.get_id() for e in by_dep.values()]
        depth = 1 + max((results.depth_of(e) for e in by_dep.values()), default=0)
        run = results.RunResult(self.sensor.name, trigger, ids, outcome.value, attempt, took,
                                error, dict(detail or {}), dlq, results.cause(by_dep),
                                depth)  # fmt: skip
        await results.publish(self.bus, run)

    def _record(self, trigger: str, outcome: str, started: float) -> None:
        metrics.TRIGGER_RUNS.labels(self.sensor.name, trigger, outcome).inc()
        metrics.TRIGGER_SECONDS.labels(self.sensor.name, trigger).observe(
            time.perf_counter() - started
        )

    async def _settle(
        self, msg: Delivery, dues: list[float | None], elog: FilteringBoundLogger
    ) -> None:
        pending = [d for d in dues if d is not None]
        if not pending:
            await msg.ack()
            return
        delay = max(0.05, min(pending) - time.time())
        elog.info("event will be redelivered", attempt=msg.num_delivered, delay=round(delay, 3))
        await self._nak(msg, delay, elog)

    async def _nak(self, msg: Delivery, delay: float, elog: FilteringBoundLogger) -> None:
        try:
            await msg.nak(delay=delay)
        except BusError as e:  # redelivered after ack_wait anyway
            elog.warning("nak failed; redelivery after ack wait", error=str(e))

    async def _dead_letter(
        self,
        msg: Delivery,
        by_dep: Mapping[str, CloudEvent] | None,
        reason: str,
        error: str,
        trigger: str | None = None,
        attempts: int | None = None,
    ) -> bool:
        """Store a DLQ record (the events, the error, the attempts); False when it failed."""
        record = {
            "sensor": self.sensor.name,
            "trigger": trigger,
            "reason": reason,
            "error": error,
            "attempts": attempts if attempts is not None else msg.num_delivered,
            "deliveries": msg.num_delivered,
            "subject": msg.subject,
            "streamSequence": msg.stream_seq,
            "event": _delivered(msg, by_dep),
            "events": {d: events.to_dict(e) for d, e in (by_dep or {}).items()},
            "raw": None if by_dep is not None else msg.data.decode(errors="replace"),
        }
        body = json.dumps(record, default=str).encode()
        ids = sorted({e.get_id() for e in (by_dep or {}).values()})
        msg_id = (
            delivery.run_key(self.sensor.name, trigger or "-", ids)
            if by_dep
            else f"{self.sensor.name}:{msg.stream_seq}"
        )
        try:
            await self.bus.publish(f"dlq.{self.sensor.name}", body, msg_id=msg_id)
        except BusError as e:
            self.log.error("DLQ publish failed; leaving the event for redelivery", error=str(e))
            return False
        return True


def _delivered(msg: Delivery, by_dep: Mapping[str, CloudEvent] | None) -> object:
    """The delivered event as a dict (it may be one of `by_dep`), or None when undecodable."""
    if by_dep is None:
        return None
    try:
        return events.to_dict(events.from_nats(msg.headers, msg.data))
    except events.EventDecodeError:
        return None


class Engine:
    """Every sensor's runner; `apply` reconciles them with a new set of specs."""

    def __init__(self, bus: Bus, services: Services, config: Config) -> None:
        self.bus = bus
        self.config = config
        self.pool = TriggerPool(services)
        self.runners: dict[str, SensorRunner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ledger: delivery.Ledger | None = None
        self._partials: correlation.PartialStore | None = None
        self._coordinator: delivery.Coordinator | None = None
        self._lock = asyncio.Lock()
        self.loaded = False

    async def start(self, sensors: list[SensorSpec]) -> None:
        ledger_kv = await self.bus.kv(FIRED_BUCKET, ttl=delivery.LEDGER_TTL)
        self._ledger = delivery.Ledger(ledger_kv)
        partial_kv = await self.bus.kv(correlation.PARTIAL_BUCKET, ttl=delivery.LEDGER_TTL)
        self._partials = correlation.PartialStore(partial_kv, self._ledger)
        self._coordinator = delivery.Coordinator(
            await self.bus.kv(delivery.LEASE_BUCKET, ttl=delivery.LEASE_TTL),
            await self.bus.kv(delivery.SHARED_BUCKET, ttl=delivery.SHARED_TTL),
            replica=uuid.uuid4().hex[:12],
            lease_ttl=delivery.LEASE_TTL,
        )
        await self.apply(sensors)
        self.loaded = True
        log.info("sensors running", sensors=sorted(self.runners))

    async def apply(self, sensors: list[SensorSpec]) -> None:
        """Start new sensors, restart changed ones, stop removed ones and delete their
        durable consumers. Unchanged sensors keep running untouched."""
        async with self._lock:
            wanted = {s.name: s for s in sensors}
            for name in [n for n in self.runners if n not in wanted]:
                await self._stop_one(name)
                for stream in STREAMS:
                    await self.bus.delete_consumer(stream, f"sensor-{name}")
                log.info("sensor removed", sensor=name)
            for name, spec in wanted.items():
                current = self.runners.get(name)
                if current is not None and current.sensor.spec.raw == spec.raw:
                    continue
                if current is not None:
                    await self._stop_one(name)
                await self._start_one(spec)
                log.info("sensor changed" if current else "sensor started", sensor=name,
                         file=spec.file)  # fmt: skip

    async def _start_one(self, spec: SensorSpec) -> None:
        assert self._ledger is not None and self._partials is not None
        compiled = CompiledSensor(spec, self.config)
        runner = SensorRunner(compiled, self.bus, self.pool, self.config, self._ledger,
                              self._partials, self._coordinator)  # fmt: skip
        await runner.open()
        self.runners[spec.name] = runner
        self._tasks[spec.name] = asyncio.create_task(runner.run(), name=f"sensor-{spec.name}")

    async def _stop_one(self, name: str) -> None:
        runner = self.runners.pop(name)
        task = self._tasks.pop(name)
        await runner.stop(asyncio.get_running_loop().time() + self.config.drain_timeout)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def stop(self, deadline: float) -> None:
        await asyncio.gather(*(r.stop(deadline) for r in self.runners.values()))
        for task in self._tasks.values():
            task.cancel()
        outcomes = await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self.runners.clear()
        self._tasks.clear()
        for r in outcomes:
            if isinstance(r, Exception):
                raise r

    def failed(self) -> BaseException | None:
        for task in self._tasks.values():
            if task.done() and not task.cancelled() and task.exception():
                return task.exception()
        return None
