"""The sensor engine: one durable pull consumer per sensor, filters, conditions, triggers.

Delivery contract: an event is acknowledged only after its triggers finished —
success, or a permanent failure / exhausted retries recorded in the DLQ stream.
A temporary failure is retried by redelivery with a growing delay, so a retrying
event never blocks the others. A trigger that already fired for an event (kept in
KV) is not fired again when the event comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from structlog.typing import FilteringBoundLogger

from eventsvc import events, logs, metrics
from eventsvc.bus import Bus, Delivery, KeyValueStore, PullConsumer
from eventsvc.bus.streams import EVENTS
from eventsvc.config import Config
from eventsvc.errors import (
    BusError,
    BusUnavailableError,
    EventsvcError,
    TemporaryTriggerError,
)
from eventsvc.events import CloudEvent
from eventsvc.sensors import conditions, filters, params
from eventsvc.sensors.spec import Dependency, SensorSpec, TriggerSpec
from eventsvc.triggers import REGISTRY, Services, TriggerContext, TriggerKind, TriggerResult

log = logs.get("eventsvc.sensors")
FIRED_BUCKET = "eventsvc-fired"


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard match: `*` one token, `>` the rest."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, tok in enumerate(pat):
        if tok == ">":
            return len(sub) > i
        if i >= len(sub) or (tok != "*" and tok != sub[i]):
            return False
    return len(pat) == len(sub)


@dataclass(frozen=True, slots=True)
class CompiledTrigger:
    spec: TriggerSpec
    condition: conditions.Condition


class CompiledSensor:
    """A sensor spec with its filters and conditions compiled once."""

    def __init__(self, spec: SensorSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.deps: list[tuple[Dependency, list[filters.Check]]] = [
            (d, filters.compile_filters(d.filters)) for d in spec.dependencies
        ]
        every = conditions.all_of({d.name for d in spec.dependencies})
        self.triggers = [
            CompiledTrigger(t, conditions.parse(t.conditions)[0] if t.conditions else every)
            for t in spec.triggers
        ]
        subjects = {d.event_subject for d in spec.dependencies}
        self.subjects: tuple[str, ...] = ("events.>",) if "events.>" in subjects else tuple(
            sorted(subjects)
        )

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

    def firing(self, matched: set[str]) -> list[CompiledTrigger]:
        return [t for t in self.triggers if t.condition(matched)]


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
    """Reads one sensor's durable consumer and runs its triggers, up to `concurrency` at once."""

    def __init__(
        self,
        sensor: CompiledSensor,
        bus: Bus,
        pool: TriggerPool,
        config: Config,
        fired: KeyValueStore,
    ) -> None:
        self.sensor = sensor
        self.bus = bus
        self.pool = pool
        self.config = config
        self.fired = fired
        self.consumer: PullConsumer | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.log = log.bind(sensor=sensor.name)

    @property
    def durable(self) -> str:
        return f"sensor-{self.sensor.name}"

    async def open(self) -> None:
        self.consumer = await self.bus.pull_consumer(
            EVENTS,
            self.durable,
            self.sensor.subjects,
            ack_wait=self.config.ack_wait,
            max_deliver=self.config.max_deliveries + 1,  # one spare: the DLQ hand-off
            max_ack_pending=max(1000, self.config.sensor_concurrency * 4),
        )

    async def run(self) -> None:
        assert self.consumer is not None
        while not self._stopping.is_set():
            free = self.config.sensor_concurrency - len(self._inflight)
            if free <= 0:
                await asyncio.wait(set(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                batch = await self.consumer.fetch(free, timeout=1.0)
            except BusUnavailableError as e:
                self.log.warning("bus unavailable, fetch paused", error=str(e))
                await self._sleep(1.0)
                continue
            for delivery in batch:
                task = asyncio.create_task(self._handle(delivery), name=f"{self.durable}-msg")
                self._inflight.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("event handler crashed", error=repr(task.exception()))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def stop(self, deadline: float) -> None:
        """Stop fetching; let runs finish until `deadline` (loop time); cancel the rest."""
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
        if self.consumer is not None:
            await self.consumer.close()

    async def _handle(self, delivery: Delivery) -> None:
        try:
            event = events.from_nats(delivery.headers, delivery.data)
        except events.EventDecodeError as e:
            self.log.warning("not a CloudEvent, sent to DLQ", subject=delivery.subject,
                             seq=delivery.stream_seq, error=str(e))  # fmt: skip
            await self._dead_letter(delivery, None, "decode", str(e))
            return
        elog = self.log.bind(event_id=event.get_id())
        view = filters.EventView.of(event)
        matched, _ = self.sensor.match(delivery.subject, view)
        firing = self.sensor.firing(matched)
        if not firing:
            elog.debug("event filtered out", type=event.get_type(), matched=sorted(matched))
            await delivery.ack()
            return
        metrics.EVENTS_MATCHED.labels(self.sensor.name).inc()
        by_dep = {name: event for name in sorted(matched)}
        heartbeat = asyncio.create_task(self._heartbeat(delivery), name="ack-heartbeat")
        try:
            outcomes = [await self._fire(t, by_dep, delivery) for t in firing]
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        await self._settle(delivery, event, outcomes, elog)

    async def _heartbeat(self, delivery: Delivery) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.config.ack_wait / 2))
            with contextlib.suppress(BusError):
                await delivery.in_progress()

    async def _fire(
        self, trig: CompiledTrigger, by_dep: Mapping[str, CloudEvent], delivery: Delivery
    ) -> EventsvcError | None:
        spec = trig.spec
        event_ids = ",".join(sorted({e.get_id() for e in by_dep.values()}))
        key = _fired_key(self.sensor.name, spec.name, event_ids)
        if delivery.num_delivered > 1 and await self._already_fired(key):
            self.log.info("trigger already fired for this event; not firing again",
                          trigger=spec.name, event_id=event_ids)  # fmt: skip
            return None
        ctx = TriggerContext(self.sensor.name, spec.name, by_dep, attempt=delivery.num_delivered)
        started = time.perf_counter()
        try:
            section = params.render(spec, by_dep)
            result: TriggerResult = await self.pool.get(spec.kind).execute(section, ctx)
        except EventsvcError as e:
            outcome = "retry" if isinstance(e, TemporaryTriggerError) else "failed"
            self._record(spec.name, outcome, started)
            self.log.warning("trigger failed", trigger=spec.name, event_id=event_ids,
                             attempt=ctx.attempt, error=str(e))  # fmt: skip
            return e
        except Exception as e:  # a bug in a kind must not lose the event: retry, then DLQ
            self._record(spec.name, "error", started)
            self.log.exception("trigger crashed", trigger=spec.name, event_id=event_ids)
            return TemporaryTriggerError(f"{type(e).__name__}: {e}")
        self._record(spec.name, "success", started)
        self.log.info("trigger fired", trigger=spec.name, event_id=event_ids, **result.detail)
        with contextlib.suppress(BusError):
            await self.fired.put(key, b"1")
        return None

    async def _already_fired(self, key: str) -> bool:
        try:
            return await self.fired.get(key) is not None
        except BusError:
            return False

    def _record(self, trigger: str, outcome: str, started: float) -> None:
        metrics.TRIGGER_RUNS.labels(self.sensor.name, trigger, outcome).inc()
        metrics.TRIGGER_SECONDS.labels(self.sensor.name, trigger).observe(
            time.perf_counter() - started
        )

    async def _settle(
        self,
        delivery: Delivery,
        event: CloudEvent,
        outcomes: list[EventsvcError | None],
        elog: FilteringBoundLogger,
    ) -> None:
        errors = [e for e in outcomes if e is not None]
        if not errors:
            await delivery.ack()
            return
        attempt = delivery.num_delivered
        retryable = all(isinstance(e, TemporaryTriggerError) for e in errors)
        if retryable and attempt < self.config.max_deliveries:
            delays = [e.delay for e in errors if isinstance(e, TemporaryTriggerError) and e.delay]
            delay = max(delays, default=self.config.redelivery_delay * 2 ** (attempt - 1))
            elog.info("event will be redelivered", attempt=attempt, delay=delay)
            await delivery.nak(delay=delay)
            return
        reason = "retries exhausted" if retryable else "permanent failure"
        elog.error("event sent to DLQ", reason=reason, attempts=attempt)
        await self._dead_letter(delivery, event, reason, "; ".join(map(str, errors)))

    async def _dead_letter(
        self, delivery: Delivery, event: CloudEvent | None, reason: str, error: str
    ) -> None:
        record = {
            "sensor": self.sensor.name,
            "reason": reason,
            "error": error,
            "attempts": delivery.num_delivered,
            "subject": delivery.subject,
            "streamSequence": delivery.stream_seq,
            "event": events.to_dict(event) if event is not None else None,
            "raw": None if event is not None else delivery.data.decode(errors="replace"),
        }
        body = json.dumps(record, default=str).encode()
        msg_id = f"{self.sensor.name}:{delivery.stream_seq}"
        try:
            await self.bus.publish(f"dlq.{self.sensor.name}", body, msg_id=msg_id)
        except BusError as e:
            self.log.error("DLQ publish failed; leaving the event for redelivery", error=str(e))
            return
        await delivery.ack()


def _fired_key(sensor: str, trigger: str, event_ids: str) -> str:
    import hashlib

    digest = hashlib.sha256(f"{sensor}\0{trigger}\0{event_ids}".encode()).hexdigest()[:32]
    return f"{sensor}.{trigger}.{digest}"


class Engine:
    """Every sensor's runner; replaced as a whole when the sensors change."""

    def __init__(self, bus: Bus, services: Services, config: Config) -> None:
        self.bus = bus
        self.config = config
        self.pool = TriggerPool(services)
        self.runners: dict[str, SensorRunner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._fired: KeyValueStore | None = None
        self.loaded = False

    async def start(self, sensors: list[SensorSpec]) -> None:
        self._fired = await self.bus.kv(FIRED_BUCKET, ttl=7 * 86400)
        for spec in sensors:
            await self._start_one(spec)
        self.loaded = True
        log.info("sensors running", sensors=sorted(self.runners))

    async def _start_one(self, spec: SensorSpec) -> None:
        assert self._fired is not None
        runner = SensorRunner(CompiledSensor(spec), self.bus, self.pool, self.config, self._fired)
        await runner.open()
        self.runners[spec.name] = runner
        self._tasks[spec.name] = asyncio.create_task(runner.run(), name=f"sensor-{spec.name}")

    async def stop(self, deadline: float) -> None:
        await asyncio.gather(*(r.stop(deadline) for r in self.runners.values()))
        for task in self._tasks.values():
            task.cancel()
        results = await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self.runners.clear()
        self._tasks.clear()
        for r in results:
            if isinstance(r, Exception):
                raise r

    def failed(self) -> BaseException | None:
        for task in self._tasks.values():
            if task.done() and not task.cancelled() and task.exception():
                return task.exception()
        return None
