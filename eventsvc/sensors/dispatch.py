"""The dispatcher: every event is read once, routed by the index, and handed off durably to
each sensor it matches.

One durable consumer per stream (`dispatch` on EVENTS and on RESULTS), shared by every
replica: NATS hands each event to one of them. The event's attributes are decoded once
(from the `ce-*` headers in binary mode, the body untouched), looked up in the index
(`matcher.Matcher`), and only when some dependency's subject and `context` filters pass is
the body decoded and the data filters and CEL of those dependencies run. For each sensor
matched, a copy goes to `work.<sensor>` (`handoff`); the event is acknowledged only when
every copy is stored, and a copy repeated after a lost ack is dropped by JetStream's
duplicate window. Cost per event: O(1) + O(matching sensors).

`ensure_consumers` creates the dispatch consumers; the runtime calls it before any gateway
may accept an event, so an event that got a 2xx is dispatched whatever starts first. On
an upgrade from per-sensor consumers (`sensor-<name>`) it starts where the slowest of them
had acknowledged, records how far each one got, and removes them: an event one of them had
acknowledged is not handed to that sensor again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass, field

from eventsvc import events, logs, metrics
from eventsvc.bus import (
    START_ALL,
    START_NEW,
    Bus,
    ConsumerSpec,
    Delivery,
    PullConsumer,
    StartAt,
    claims,
)
from eventsvc.config import Config
from eventsvc.errors import BusError, BusUnavailableError, ClaimGoneError
from eventsvc.events import CloudEvent
from eventsvc.sensors import deadletter, filters, handoff, results
from eventsvc.sensors.compiled import CompiledSensor
from eventsvc.sensors.matcher import Entry, Matcher
from eventsvc.subjects import EVENTS, RESULTS

log = logs.get("eventsvc.sensors.dispatch")
DURABLE = "dispatch"
STREAMS = (EVENTS, RESULTS)
MAX_ACK_WAIT = 30.0  # a dispatcher that died holding events: another replica has them after this
BATCH = 256
FETCH_WAIT = 2.0
MAX_ACK_PENDING = 4 * BATCH
MAX_STORES = 512  # hand-offs and dead letters in flight at once: a fan-out to hundreds of
# sensors must not flood the connection (publishes then time out all together)
LEGACY_PREFIX = "sensor-"  # per-sensor consumers of earlier versions
FLOOR_BUCKET = "eventsvc-dispatch"  # how far each legacy consumer had acknowledged


def consumer(stream: str, config: Config, start: StartAt = START_NEW) -> ConsumerSpec:
    """The dispatch consumer of `stream`: every subject, never given up on."""
    return ConsumerSpec(stream, DURABLE, (">",), ack_wait=min(config.ack_wait, MAX_ACK_WAIT),
                        max_deliver=-1, max_ack_pending=MAX_ACK_PENDING, start=start)  # fmt: skip


async def ensure_consumers(bus: Bus, config: Config) -> None:
    """Create the dispatch consumer of each stream, or update one that exists."""
    for stream in STREAMS:
        start: StartAt = START_NEW
        if not await bus.consumer_exists(stream, DURABLE):
            start = await _start_of(bus, stream)
        created = await bus.ensure_consumer(consumer(stream, config, start))
        if created:
            log.info("dispatch consumer created", stream=stream, start=start)
        await _retire_legacy(bus, stream)


async def _start_of(bus: Bus, stream: str) -> StartAt:
    """Where a new dispatch consumer starts: after what legacy consumers acknowledged (and
    their floors recorded), at the start of an empty stream, or else at new events."""
    legacy = [c for c in await bus.consumer_states(stream) if c.name.startswith(LEGACY_PREFIX)]
    if legacy:
        floors = await bus.kv(FLOOR_BUCKET)
        for c in legacy:
            await floors.put(f"{stream}.{c.name[len(LEGACY_PREFIX):]}", str(c.ack_floor).encode())
        start = min(c.ack_floor for c in legacy) + 1
        log.info("upgrading from per-sensor consumers", stream=stream, consumers=len(legacy),
                 start_seq=start)  # fmt: skip
        return start
    state = await bus.stream_state(stream)
    return START_ALL if state.messages == 0 else START_NEW


async def _retire_legacy(bus: Bus, stream: str) -> None:
    for c in await bus.consumer_states(stream):
        if c.name.startswith(LEGACY_PREFIX):
            await bus.delete_consumer(stream, c.name)
            log.info("per-sensor consumer of an earlier version removed", stream=stream,
                     consumer=c.name)  # fmt: skip


async def load_floors(bus: Bus) -> dict[tuple[str, str], int]:
    """(stream, sensor) → the last sequence its legacy consumer acknowledged."""
    kv = await bus.kv(FLOOR_BUCKET)
    out: dict[tuple[str, str], int] = {}
    for key in await kv.keys():
        entry = await kv.get(key)
        stream, _, sensor = key.partition(".")
        if entry is not None and entry[0].isdigit():
            out[(stream, sensor)] = int(entry[0])
    return out


@dataclass(slots=True)
class Routing:
    """One version of the index. Batches hold the version they started with, so a reload
    never splits an event between two versions."""

    matcher: Matcher
    users: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


@dataclass(frozen=True, slots=True)
class _Send:
    """One store to make before the event may be acknowledged."""

    event: int  # index in the batch
    op: Awaitable[bool]


class Dispatcher:
    def __init__(self, bus: Bus, config: Config) -> None:
        self.bus = bus
        self.config = config
        self.routing = Routing(Matcher([]))
        self.floors: dict[tuple[str, str], int] = {}
        self._consumers: dict[str, PullConsumer] = {}
        self._stopping = asyncio.Event()
        self.handled = 0  # events this replica routed
        self._window = asyncio.Semaphore(MAX_STORES)
        self._pending = {s: metrics.DISPATCH_PENDING.labels(s) for s in STREAMS}
        self._dispatched = {s: metrics.EVENTS_DISPATCHED.labels(s) for s in STREAMS}

    async def open(self) -> None:
        await ensure_consumers(self.bus, self.config)  # made (or updated) here: bound below
        self.floors = await load_floors(self.bus)
        for stream in STREAMS:
            self._consumers[stream] = await self.bus.bind_consumer(stream, DURABLE)

    async def route(self, sensors: Iterable[CompiledSensor]) -> None:
        """Route by these sensors from now on; returns once no batch uses the old index."""
        old, self.routing = self.routing, Routing(Matcher(sensors))
        await old.idle.wait()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for stream, consumer in self._consumers.items():
                group.create_task(self._pump(stream, consumer), name=f"dispatch-{stream}")

    async def stop(self, deadline: float) -> None:
        """Stop fetching; the batch in hand finishes (before `deadline`, or is redelivered)."""
        self._stopping.set()
        with contextlib.suppress(TimeoutError):
            timeout = max(0.0, deadline - asyncio.get_running_loop().time())
            await asyncio.wait_for(self.routing.idle.wait(), timeout)
        for consumer in self._consumers.values():
            await consumer.close()

    async def _pump(self, stream: str, consumer: PullConsumer) -> None:
        while not self._stopping.is_set():
            try:
                batch = await consumer.fetch(BATCH, timeout=FETCH_WAIT)
            except BusUnavailableError as e:
                log.warning("bus unavailable, dispatch paused", stream=stream, error=str(e))
                await self._sleep(1.0)
                continue
            except BusError as e:
                log.error("dispatch fetch failed", stream=stream, error=str(e))
                await self._sleep(1.0)
                continue
            self._pending[stream].set(batch[-1].num_pending if batch else 0)
            if batch:
                await self.dispatch(stream, batch)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def dispatch(self, stream: str, batch: list[Delivery]) -> None:
        """Hand off every event of `batch`, then acknowledge each one whose hand-offs were
        all stored; the others come back after a delay."""
        routing = self.routing
        routing.users += 1
        routing.idle.clear()
        try:
            sends: list[_Send] = []
            later: set[int] = set()
            for i, msg in enumerate(batch):
                try:
                    ops = await self._route(stream, msg, routing.matcher)
                    sends += [_Send(i, op) for op in ops]
                except BusError as e:  # its body, stored apart, cannot be read now
                    log.warning("event body unreadable; the event will be dispatched again",
                                stream=stream, seq=msg.stream_seq, error=str(e))  # fmt: skip
                    later.add(i)
                except Exception as e:  # a bug must not stop the dispatch of every event
                    log.exception("event could not be routed; sent to the DLQ",
                                  stream=stream, seq=msg.stream_seq)  # fmt: skip
                    sends.append(_Send(i, self._letter(msg, deadletter.DISPATCH, "dispatch", e)))
            stored = await asyncio.gather(*(s.op for s in sends), return_exceptions=True)
            failed = {s.event for s, ok in zip(sends, stored, strict=True) if ok is not True}
            failed |= later
            errors = [e for e in stored if isinstance(e, BaseException)]
            if errors:  # one line per batch, not one per hand-off
                log.warning("hand-offs failed; their events will be dispatched again",
                            failed=len(errors), events=len(failed), stream=stream,
                            error=f"{type(errors[0]).__name__}: {errors[0]}")  # fmt: skip
            for i, msg in enumerate(batch):
                await self._settle(msg, i not in failed)
            self._dispatched[stream].inc(len(batch))
            self.handled += len(batch)
        finally:
            routing.users -= 1
            if not routing.users:
                routing.idle.set()

    async def _settle(self, msg: Delivery, ok: bool) -> None:
        try:
            if ok:  # a lost ack redelivers the event; its hand-offs are then duplicates
                await msg.ack_nowait()
            else:
                await msg.nak(delay=self.config.redelivery_delay)
        except BusError as e:
            log.warning("dispatch ack failed; the event will be dispatched again",
                        seq=msg.stream_seq, error=str(e))  # fmt: skip

    async def _route(
        self, stream: str, msg: Delivery, matcher: Matcher
    ) -> list[Awaitable[bool]]:
        """The stores this event needs: a hand-off per matching sensor, or dead letters.
        BusError: a body stored apart (`bus.claims`) cannot be read now."""
        if stream not in matcher.streams:
            return []  # no sensor reads this stream: not even the headers are decoded
        subject, headers, body = msg.subject, msg.headers, msg.data
        entries: list[Entry] | None = None
        event: CloudEvent | None = None
        attributes = events.binary_attributes(headers)
        if attributes is not None:
            try:
                head = events.make_event(attributes, None)
            except events.EventDecodeError:
                attributes = None  # decoded in full below, to say what is wrong
            else:
                entries = matcher.gated(subject, filters.EventView.of(head))
                if not entries:
                    return []
        try:
            if claims.HEADER in headers:
                body = await self.bus.body_of(headers, body)
            if attributes is not None:  # the attributes are checked: only the data is left
                data = events.decode_data(body, attributes.get("datacontenttype"))
                event = events.make_event(attributes, data)
            else:
                event = events.from_nats(headers, body)
        except (events.EventDecodeError, ClaimGoneError) as e:
            names = {matcher.sensors[x.sensor].name for x in entries or ()}
            log.warning("not a CloudEvent, sent to DLQ", subject=subject, seq=msg.stream_seq,
                        sensors=sorted(names), error=str(e))  # fmt: skip
            names = names or {deadletter.DISPATCH}
            return [self._letter(msg, n, "decode", e) for n in sorted(names)]
        view = filters.EventView.of(event)
        hits = matcher.match(subject, view, entries)
        if not hits:
            log.debug("event filtered out", event_id=event.get_id(), type=event.get_type())
            return []
        depth = results.depth_of(event)
        if depth >= results.MAX_DEPTH:
            log.error("result of a chain of results too deep; not firing (a loop of sensors "
                      "following each other's results?)", depth=depth, limit=results.MAX_DEPTH,
                      source=event.get_source(), event_id=event.get_id())  # fmt: skip
            return []
        out: list[Awaitable[bool]] = []
        for index, deps in sorted(hits.items()):
            sensor = matcher.sensors[index]
            if msg.stream_seq <= self.floors.get((stream, sensor.name), 0):
                continue  # its per-sensor consumer of an earlier version had it
            hand = handoff.HandOff(sensor.name, stream, msg.stream_seq, subject,
                                   frozenset(deps), sensor.rev)  # fmt: skip
            out.append(self._hand_off(hand, headers, body))
        return out

    async def _hand_off(
        self, hand: handoff.HandOff, headers: Mapping[str, str], body: bytes
    ) -> bool:
        """Store the hand-off; a BusError is left to `dispatch`, which logs once per batch."""
        hdrs, data, hand = hand.message(headers, body, self.bus.max_payload)
        async with self._window:
            await self.bus.publish(hand.work_subject, data, hdrs, msg_id=hand.msg_id)
        metrics.matched(hand.sensor).inc()
        return True

    async def _letter(self, msg: Delivery, sensor: str, reason: str, error: Exception) -> bool:
        letter = deadletter.Letter(sensor, reason, str(error), msg.subject, msg.stream_seq,
                                   msg.num_delivered, raw=msg.data)  # fmt: skip
        async with self._window:
            return await deadletter.send(self.bus, letter)

