"""A sensor's worker: reads the events handed off to it (`work.<sensor>`, one durable
consumer per sensor shared by every replica) and runs its triggers, up to
`sensors.concurrency` events at once.

Only events the dispatcher matched arrive here, so a sensor's backlog is its own: a slow
or failing sensor delays nobody else. An event is acknowledged only after its triggers
finished (success, skipped, superseded, or given up and dead-lettered); a trigger that
will be retried makes the event come back by delayed redelivery (`nak(delay)`), never by
holding it. While triggers run, `in_progress` keeps the event from being redelivered to
another replica. Conditions over several events are completed through the partial-match
store (`correlation`) before anything runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from structlog.typing import FilteringBoundLogger

from eventsvc import events, logs, metrics, subjects
from eventsvc.bus import START_ALL, ConsumerSpec, Delivery, PullConsumer
from eventsvc.bus.streams import MAX_SENSORS
from eventsvc.errors import BusError, BusUnavailableError, ClaimGoneError
from eventsvc.events import CloudEvent
from eventsvc.sensors import deadletter, delivery, filters, handoff
from eventsvc.sensors.compiled import CompiledSensor, Plan
from eventsvc.sensors.runs import Delivered, Runs, Stores
from eventsvc.subjects import WORK

log = logs.get("eventsvc.sensors")
FETCH_WAIT = 30.0  # a long poll: an idle sensor costs the server one request per wait


def durable(sensor: str) -> str:
    return f"work-{subjects.token(sensor)}"


class SensorWorker:
    def __init__(self, sensor: CompiledSensor, stores: Stores) -> None:
        self.sensor = sensor
        self.stores = stores
        self.runs = Runs(sensor, stores)
        self.consumer: PullConsumer | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self.handled = 0  # events this replica finished for the sensor
        self._pending = metrics.SENSOR_PENDING.labels(sensor.name)
        self.log = log.bind(sensor=sensor.name)

    @property
    def durable(self) -> str:
        return durable(self.sensor.name)

    async def open(self) -> None:
        config = self.stores.config
        try:
            self.consumer = await self.stores.bus.pull_consumer(ConsumerSpec(
                WORK, self.durable, (subjects.work(self.sensor.name),),
                ack_wait=config.ack_wait, max_deliver=self.sensor.max_deliver,
                max_ack_pending=max(1000, config.sensor_concurrency * 4), start=START_ALL,
            ))  # fmt: skip
        except BusError as e:
            if "maximum consumers" not in str(e):
                raise
            raise BusError(
                f"sensor {self.sensor.name}: NATS refused its consumer ({e}); every sensor has "
                f"one on stream WORK, which allows {MAX_SENSORS}: raise max_consumers of the "
                "NATS account (deploy/nats/nats-server.conf) or run fewer sensors"
            ) from e

    async def run(self) -> None:
        assert self.consumer is not None
        consumer, limit = self.consumer, self.stores.config.sensor_concurrency
        while not self._stopping.is_set():
            free = limit - len(self._inflight)
            if free <= 0:
                await asyncio.wait(set(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                batch = await consumer.fetch(free, timeout=FETCH_WAIT)
            except BusUnavailableError as e:
                self.log.warning("bus unavailable, fetch paused", error=str(e))
                await self._sleep(1.0)
                continue
            except BusError as e:
                self.log.error("fetch failed", error=str(e))
                await self._sleep(1.0)
                continue
            for msg in batch:
                task = asyncio.create_task(self.handle(msg), name=f"{self.durable}-msg")
                self._inflight.add(task)
                task.add_done_callback(self._done)
            waiting = batch[-1].num_pending if batch else 0
            self._pending.set(waiting + len(self._inflight))

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not self._inflight:
            self._pending.set(0)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("event handler crashed", error=repr(task.exception()))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def stop(self, deadline: float) -> None:
        """Stop fetching; let in-flight runs finish until `deadline` (loop time), then
        cancel the rest (they are redelivered)."""
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

    async def handle(self, msg: Delivery) -> None:
        """Run the triggers for one handed-off event; whatever goes wrong with this one
        message is dead-lettered with its reason, and the worker goes on."""
        try:
            await self._handle(msg)
        except Exception as e:
            self.log.exception("event could not be handled; sent to the DLQ",
                               seq=msg.stream_seq)  # fmt: skip
            letter = deadletter.Letter(self.sensor.name, "error", f"{type(e).__name__}: {e}",
                                       msg.subject, msg.stream_seq, msg.num_delivered,
                                       raw=msg.data)  # fmt: skip
            if await deadletter.send(self.stores.bus, letter):
                await self._ack(msg)

    async def _handle(self, msg: Delivery) -> None:
        hand = handoff.parse(self.sensor.name, msg.headers)
        if hand is None:  # not from a dispatcher: someone published on work.> by hand
            self.log.warning("message on the work subject without a hand-off; dropped",
                             subject=msg.subject)  # fmt: skip
            await self._ack(msg)
            return
        event = await self._event(msg, hand)
        if event is None:
            return
        elog = self.log.bind(event_id=event.get_id())
        if hand.rev == self.sensor.rev:
            matched = set(hand.deps)
        else:  # matched by another version of this sensor: judge it by this one
            matched, _ = self.sensor.match(hand.subject, filters.EventView.of(event))
        if not matched:
            elog.debug("event filtered out by this version of the sensor", type=event.get_type())
            await self._ack(msg)
            return
        got = Delivered(hand.subject, hand.seq, msg.num_delivered, event)
        # keeps the event ours while we work on it: no redelivery to another replica
        heartbeat = _Heartbeat(msg, max(0.05, self.stores.config.ack_wait / 3), self.log)
        try:
            try:
                plans = await self._plan(event, matched, elog)
            except BusError as e:
                elog.warning("partial match store unavailable; event will be redelivered",
                             error=str(e))  # fmt: skip
                await self._nak(msg, self.stores.config.redelivery_delay, elog)
                return
            dues = [await self.runs.attempt(plan, got, elog) for plan in plans]
        finally:
            await heartbeat.stop()
        await self._settle(msg, dues, elog)

    async def _event(self, msg: Delivery, hand: handoff.HandOff) -> CloudEvent | None:
        """The handed-off event, read from its stream when it came by reference; None when
        it cannot be had (dead-lettered, or left for redelivery)."""
        headers, body = msg.headers, msg.data
        if hand.ref:
            try:
                stored = await self.stores.bus.get_message(hand.stream, hand.seq)
            except BusError as e:
                self.log.warning("event not readable; will be redelivered", seq=hand.seq,
                                 error=str(e))  # fmt: skip
                await self._nak(msg, self.stores.config.redelivery_delay, self.log)
                return None
            if stored is None:
                self.log.error("event handed off by reference is gone from its stream "
                               "(stream limits?); not run", stream=hand.stream, seq=hand.seq)
                await self._ack(msg)
                return None
            headers, body = stored
        try:
            body = await self.stores.bus.body_of(headers, body)
            return events.from_nats(headers, body)
        except (events.EventDecodeError, ClaimGoneError) as e:
            error: Exception = e
        except BusError as e:  # stored apart, unreadable now: later
            self.log.warning("event body unreadable; will be redelivered", seq=hand.seq,
                             error=str(e))  # fmt: skip
            await self._nak(msg, self.stores.config.redelivery_delay, self.log)
            return None
        self.log.warning("not a CloudEvent, sent to DLQ", subject=hand.subject, seq=hand.seq,
                         error=str(error))  # fmt: skip
        letter = deadletter.Letter(self.sensor.name, "decode", str(error), hand.subject,
                                   hand.seq, msg.num_delivered, raw=body)  # fmt: skip
        if await deadletter.send(self.stores.bus, letter):
            await self._ack(msg)
        return None

    async def _plan(
        self, event: CloudEvent, matched: set[str], elog: FilteringBoundLogger
    ) -> list[Plan]:
        """What to run now: triggers this event completes alone, or completes together with
        events kept as partial matches; the rest of what it matched is stored as partial."""
        plans: list[Plan] = []
        sensor, stores = self.sensor, self.stores
        for trig in sensor.triggers:
            relevant = matched & trig.names
            if not relevant:
                continue
            if trig.condition(relevant):
                plans.append(Plan(trig, {n: event for n in sorted(relevant)}))
                continue
            name = trig.spec.name
            used = delivery.consumed_key(sensor.name, name, event.get_id())
            if await stores.ledger.marked(used):
                elog.info("event already used by a completed run", trigger=name)
                continue
            groups: dict[str, dict[str, CloudEvent]] = {}
            for dep in sorted(relevant):
                keyfn = sensor.correlate.get(dep)
                ckey = keyfn(event) if keyfn else ""
                if ckey is None:
                    elog.debug("event has no correlation key", trigger=name, dependency=dep)
                    continue
                groups.setdefault(ckey, {})[dep] = event
            corr = sensor.spec.correlation
            for ckey, deps in groups.items():
                done = await stores.partials.merge(
                    sensor.name, name, ckey, deps, trig.condition,
                    corr.window, corr.conditions_reset,
                )  # fmt: skip
                if done is not None:
                    plans.append(Plan(trig, done.events, done))
        return plans

    async def _settle(
        self, msg: Delivery, dues: list[float | None], elog: FilteringBoundLogger
    ) -> None:
        pending = [d for d in dues if d is not None]
        if not pending:
            await self._ack(msg)
            self.handled += 1
            return
        delay = max(0.05, min(pending) - time.time())
        elog.info("event will be redelivered", attempt=msg.num_delivered, delay=round(delay, 3))
        await self._nak(msg, delay, elog)

    async def _ack(self, msg: Delivery) -> None:
        """Acknowledge without waiting for the server's confirmation: should the ack be lost,
        the event comes back after the ack wait and the run ledger recognises it."""
        try:
            await msg.ack_nowait()
        except BusError as e:  # redelivered after ack wait; the run ledger knows it ran
            self.log.warning("ack failed; the event will come back and be recognised",
                             seq=msg.stream_seq, error=str(e))  # fmt: skip

    async def _nak(self, msg: Delivery, delay: float, elog: FilteringBoundLogger) -> None:
        try:
            await msg.nak(delay=delay)
        except BusError as e:  # redelivered after ack_wait anyway
            elog.warning("nak failed; redelivery after ack wait", error=str(e))


class _Heartbeat:
    """`in_progress` three times per ack wait while an event is worked on, so one late or
    lost beat does not let it be redelivered (to another replica) meanwhile. A bare timer
    until the first beat is due: the many runs that finish sooner cost no task."""

    def __init__(self, msg: Delivery, every: float, log: FilteringBoundLogger) -> None:
        self.msg, self.every, self.log = msg, every, log
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(every, self._due)

    def _due(self) -> None:
        self._task = asyncio.create_task(self._beat(), name="ack-heartbeat")

    async def _beat(self) -> None:
        while True:
            try:
                await self.msg.in_progress()
            except BusError as e:
                self.log.warning("in-progress heartbeat failed; the event may be redelivered",
                                 seq=self.msg.stream_seq, error=str(e))  # fmt: skip
            await asyncio.sleep(self.every)

    async def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
