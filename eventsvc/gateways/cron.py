"""The cron gateway: every tick of every Schedule becomes a CloudEvent on `events.cron.<name>`.

Every replica may run it; there is no leader. A tick's `Nats-Msg-Id` (and CloudEvent
id) is `<schedule>:<scheduled instant>`, so JetStream keeps one event per tick
whichever replicas publish it (within the EVENTS duplicate window).

One scheduler task serves all schedules from a heap of next fire times and hands
due ticks to a fixed pool of publisher tasks; the time logic is pure and lives in
`eventsvc.schedules`. The newest published instant per schedule is written to the
JetStream KV bucket `eventsvc_cron` with compare-and-set (never backwards), at most
once a second per schedule. On start, and after ticks could not be published, the
ticks owed since that instant are emitted per the schedule's catch-up policy.

Reload: the gateway polls the sensors directory (file names, mtimes and sizes)
and replaces its schedules when Schedule files change; a change with problems is
logged and the running set kept. `replace_schedules` is the entry point for any
other reload mechanism.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import json
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from eventsvc import dirwatch, events, logs, metrics, schedules
from eventsvc.bus import Bus, KeyValueStore
from eventsvc.dirwatch import DirectoryWatcher
from eventsvc.errors import BusError
from eventsvc.schedules import Schedule

log = logs.get("eventsvc.gateways.cron")
GATEWAY = "cron"
EVENT_TYPE = "dev.eventsvc.schedule.tick"
SUBJECT_PREFIX = "events.cron."
KV_BUCKET = "eventsvc_cron"
RETRY_DELAYS = (0.2, 1.0)  # publish attempts after the first, while connected
RECOVER_EVERY = 1.0  # seconds between checks of a schedule that fell behind
_PUBLISHED = metrics.EVENTS_PUBLISHED.labels(GATEWAY, "false")
_DUPLICATE = metrics.EVENTS_PUBLISHED.labels(GATEWAY, "true")
IDLE_WAKE = 60.0  # the scheduler re-reads the clock at least this often
LEAD = 0.25  # seconds before a tick when its next instant and headers are prepared


class Clock(Protocol):
    def now(self) -> datetime: ...

    def wait_seconds(self, seconds: float) -> float:
        """How long to really wait for `seconds` of this clock to pass."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait_seconds(self, seconds: float) -> float:
        return seconds


# ---------------------------------------------------------------- events


def source(name: str) -> str:
    return f"eventsvc://schedules/{name}"


def tick_id(name: str, instant: datetime) -> str:
    return f"{name}:{events.format_time(instant)}"


def tick_message(
    schedule: Schedule, instant: datetime, fired: datetime
) -> tuple[str, dict[str, str], bytes]:
    """(subject, binary-mode headers, body) for the tick of `schedule` at `instant`."""
    return (
        SUBJECT_PREFIX + schedule.name,
        tick_headers(schedule, instant),
        tick_body(schedule, instant, fired),
    )


def tick_headers(schedule: Schedule, instant: datetime) -> dict[str, str]:
    """Binary-mode CloudEvent headers plus the dedup id: everything known before firing."""
    headers = events.binary_headers({
        "specversion": "1.0",
        "id": tick_id(schedule.name, instant),
        "type": EVENT_TYPE,
        "source": source(schedule.name),
        "subject": schedule.name,
        "time": instant,
        "datacontenttype": "application/json",
    })  # fmt: skip
    headers["Nats-Msg-Id"] = tick_id(schedule.name, instant)
    return headers


def tick_body(schedule: Schedule, instant: datetime, fired: datetime) -> bytes:
    data = {
        "scheduledTime": events.format_time(instant),
        "firedTime": events.format_time(fired),
        "data": schedule.data,
    }
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def _encode_last(instant: datetime) -> bytes:
    return json.dumps({"scheduledTime": events.format_time(instant)}).encode()


def decode_last(value: bytes) -> datetime | None:
    try:
        text = json.loads(value)["scheduledTime"]
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- gateway


@dataclass(slots=True)
class _Slot:
    """A schedule's running state; `gen` invalidates its heap entries on replace."""

    schedule: Schedule
    gen: int
    last: datetime  # ticks after this instant are owed (published, or started here)
    recovering: bool = False


@dataclass(slots=True)
class _Tick:
    """A tick handed to the publishers: headers are prepared before its instant."""

    schedule: Schedule
    instant: datetime
    headers: dict[str, str]


@dataclass(slots=True)
class CronStats:
    published: int = 0
    duplicates: int = 0
    failed: int = 0
    caught_up: int = 0


class CronGateway:
    def __init__(
        self,
        bus: Bus,
        *,
        clock: Clock | None = None,
        publishers: int = 64,
        sensors_dir: str | Path | None = None,
        poll_interval: float = 2.0,
        flush_interval: float = 5.0,
        kv_bucket: str = KV_BUCKET,
        watcher: DirectoryWatcher | None = None,
    ) -> None:
        """`sensors_dir`: reload Schedule files when they change, told by `watcher` (the
        service's one watcher of that directory), or by a watcher of its own polling every
        `poll_interval` seconds."""
        self.bus = bus
        self.clock: Clock = clock or SystemClock()
        self.stats = CronStats()
        self._publishers = publishers
        self._sensors_dir = Path(sensors_dir) if sensors_dir else None
        self._poll_interval = poll_interval
        self._flush_interval = flush_interval
        self._bucket = kv_bucket
        self._kv: KeyValueStore | None = None
        self._slots: dict[str, _Slot] = {}
        self._heap: list[tuple[float, int, str, int, datetime | None]] = []
        self._seq = itertools.count()
        self._gens = itertools.count(1)
        self._queue: asyncio.Queue[_Tick] = asyncio.Queue()
        # prepared ticks (fire time, name, generation, tick), in fire-time order
        self._staged: collections.deque[tuple[float, str, int, _Tick]] = collections.deque()
        self._dirty: dict[str, datetime] = {}  # newest published instant, not yet in KV
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._publisher_tasks: list[asyncio.Task[None]] = []
        self._watcher = watcher
        self._own_watcher: DirectoryWatcher | None = None

    @property
    def schedules(self) -> list[Schedule]:
        return [s.schedule for s in self._slots.values()]

    async def start(self, initial: Sequence[Schedule]) -> None:
        self._kv = await self.bus.kv(self._bucket)
        self._publisher_tasks = [
            asyncio.create_task(self._publish_loop(), name=f"cron-publisher-{i}")
            for i in range(self._publishers)
        ]
        await self.replace_schedules(initial)
        self._tasks = [asyncio.create_task(self._schedule_loop(), name="cron-scheduler"),
                       asyncio.create_task(self._flush_loop(), name="cron-kv")]  # fmt: skip
        if self._sensors_dir is not None:
            self._own_watcher = dirwatch.follow(
                self._watcher, self._sensors_dir, self._poll_interval, "schedules",
                self._files_changed)
        log.info("cron gateway started", schedules=sorted(self._slots))

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop scheduling, let queued ticks publish (up to `drain_timeout`), store the KV."""
        if self._own_watcher is not None:
            await self._own_watcher.stop()
        await _cancel(self._tasks)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), drain_timeout)
        await _cancel(self._publisher_tasks)
        with contextlib.suppress(BusError):
            await self._flush()
        log.info("cron gateway stopped", **vars_of(self.stats))

    def failed(self) -> BaseException | None:
        for task in (*self._tasks, *self._publisher_tasks):
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    async def replace_schedules(self, new: Sequence[Schedule]) -> None:
        """Run exactly `new` from now on: added ones catch up from the KV, changed ones restart."""
        now = self.clock.now()
        wanted = {s.name: s for s in new}
        for name in set(self._slots) - set(wanted):
            del self._slots[name]  # its heap entries are skipped when they come up
            log.info("schedule removed", schedule=name)
        added = [s for name, s in wanted.items() if name not in self._slots]
        for name, schedule in wanted.items():
            slot = self._slots.get(name)
            if slot is not None and not slot.schedule.same_as(schedule):
                self._slots[name] = _Slot(schedule, next(self._gens), now)
                self._push_next(self._slots[name], now)
                log.info("schedule changed", schedule=name, expression=schedule.expression)
        lasts = await _bounded((self._read_last(s.name) for s in added), limit=32)
        for schedule, last in zip(added, lasts, strict=True):
            slot = _Slot(schedule, next(self._gens), now)
            self._slots[schedule.name] = slot
            if last is not None:
                slot.last = last
                self._catch_up(slot, now)
                slot.last = max(last, now, key=datetime.timestamp)
            self._push_next(slot, now)
        self._wake.set()

    # ------------------------------------------------------------ scheduling

    def _catch_up(self, slot: _Slot, now: datetime) -> None:
        ticks = schedules.missed_ticks(slot.schedule, slot.last, now)
        if ticks:
            log.info("catching up", schedule=slot.schedule.name, policy=slot.schedule.catchup,
                     ticks=len(ticks), first=events.format_time(ticks[0]))  # fmt: skip
        for instant in ticks:
            self.stats.caught_up += 1
            headers = tick_headers(slot.schedule, instant)
            self._queue.put_nowait(_Tick(slot.schedule, instant, headers))

    def _push(self, when: datetime, slot: _Slot, instant: datetime | None) -> None:
        item = (when.timestamp(), next(self._seq), slot.schedule.name, slot.gen, instant)
        heapq.heappush(self._heap, item)

    def _push_next(self, slot: _Slot, after: datetime) -> None:
        try:
            instant = schedules.next_fire(slot.schedule, after)
        except schedules.NoNextFire as e:
            log.warning("schedule has no next tick", schedule=slot.schedule.name, error=str(e))
            return
        self._push(schedules.fire_at(slot.schedule, instant), slot, instant)

    async def _schedule_loop(self) -> None:
        """Prepare ticks up to LEAD ahead (next instant, headers), release them when due.

        Preparing ahead keeps the work at the instant down to building the body and
        publishing, which is what lets a thousand ticks of one second go out together.
        """
        while True:
            self._wake.clear()
            now = self.clock.now()
            self._stage(now)
            self._release(now)
            wake_at = [now.timestamp() + IDLE_WAKE]
            if self._staged:
                wake_at.append(self._staged[0][0])
            if self._heap:
                wake_at.append(self._heap[0][0] - LEAD)
            delay = min(wake_at) - self.clock.now().timestamp()  # staging took time
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.clock.wait_seconds(delay))
            else:
                await asyncio.sleep(0)  # let publishers run between large batches

    def _stage(self, now: datetime) -> None:
        horizon = now.timestamp() + LEAD
        while self._heap and self._heap[0][0] <= horizon:
            fire_ts, _, name, gen, instant = heapq.heappop(self._heap)
            slot = self._slots.get(name)
            if slot is None or slot.gen != gen:
                continue
            if instant is None:
                self._recover(slot, now)
                continue
            tick = _Tick(slot.schedule, instant, tick_headers(slot.schedule, instant))
            self._staged.append((fire_ts, name, gen, tick))
            self._push_next(slot, instant)

    def _release(self, now: datetime) -> None:
        now_ts = now.timestamp()
        while self._staged and self._staged[0][0] <= now_ts:
            _, name, gen, tick = self._staged.popleft()
            slot = self._slots.get(name)
            if slot is None or slot.gen != gen:
                continue
            if self.bus.connected:
                self._queue.put_nowait(tick)
            else:
                self._fell_behind(slot, now)

    def _fell_behind(self, slot: _Slot, now: datetime) -> None:
        """Ticks could not be published: check again soon and emit what the policy owes."""
        if not slot.recovering:
            slot.recovering = True
            self._push(now + timedelta(seconds=RECOVER_EVERY), slot, None)
            self._wake.set()

    def _recover(self, slot: _Slot, now: datetime) -> None:
        if not self.bus.connected:
            self._push(now + timedelta(seconds=RECOVER_EVERY), slot, None)
            return
        slot.recovering = False
        self._catch_up(slot, now)

    # ------------------------------------------------------------ publishing

    async def _publish_loop(self) -> None:
        while True:
            tick = await self._queue.get()
            try:
                await self._publish(tick)
            finally:
                self._queue.task_done()

    async def _publish(self, tick: _Tick) -> None:
        schedule, instant = tick.schedule, tick.instant
        subject = SUBJECT_PREFIX + schedule.name
        error: BusError | None = None
        for delay in (0.0, *RETRY_DELAYS):
            if delay:
                await asyncio.sleep(delay)
            if not self.bus.connected:
                break
            fired = self.clock.now()
            body = tick_body(schedule, instant, fired)
            try:
                ack = await self.bus.publish(subject, body, tick.headers)
            except BusError as e:
                error = e
                continue
            (_DUPLICATE if ack.duplicate else _PUBLISHED).inc()
            metrics.CRON_LATENESS_SECONDS.observe(max((fired - instant).total_seconds(), 0.0))
            self.stats.duplicates += ack.duplicate
            self.stats.published += not ack.duplicate
            self._published(schedule.name, instant)
            return
        self.stats.failed += 1
        reason = str(error) if error else "not connected"
        log.error("tick not published", schedule=schedule.name,
                  scheduled=events.format_time(instant), error=reason)  # fmt: skip
        slot = self._slots.get(schedule.name)
        if slot is not None:
            self._fell_behind(slot, self.clock.now())

    def _published(self, name: str, instant: datetime) -> None:
        slot = self._slots.get(name)
        if slot is not None and instant.timestamp() > slot.last.timestamp():
            slot.last = instant
        dirty = self._dirty.get(name)
        if dirty is None or instant.timestamp() > dirty.timestamp():
            self._dirty[name] = instant

    # ------------------------------------------------------------ KV state

    async def _read_last(self, name: str) -> datetime | None:
        assert self._kv is not None
        entry = await self._kv.get(name)
        return decode_last(entry[0]) if entry else None

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self._flush_interval)
            try:
                await self._flush()
            except BusError as e:
                log.warning("cron state not stored; will retry", error=str(e))

    async def _flush(self) -> None:
        dirty, self._dirty = self._dirty, {}
        results = await _bounded(
            (self._store_last(name, instant) for name, instant in dirty.items()),
            limit=32,
            return_exceptions=True,
        )
        for (name, instant), result in zip(dirty.items(), results, strict=True):
            if isinstance(result, BusError):
                self._dirty.setdefault(name, instant)  # a newer one may have arrived meanwhile
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _store_last(self, name: str, instant: datetime) -> None:
        """Compare-and-set: replicas only ever move the stored instant forward."""
        assert self._kv is not None
        for _ in range(10):
            entry = await self._kv.get(name)
            if entry is None:
                if await self._kv.create(name, _encode_last(instant)):
                    return
                continue
            stored = decode_last(entry[0])
            if stored is not None and stored.timestamp() >= instant.timestamp():
                return
            if await self._kv.update(name, _encode_last(instant), entry[1]):
                return
        log.warning("cron state contended; not stored this time", schedule=name)

    # ------------------------------------------------------------ reload

    async def _files_changed(self) -> bool:
        await self.reload()
        return True  # an invalid file is logged and waits for its next change

    async def reload(self) -> bool:
        """Re-read Schedule files from the sensors directory; False (and logs) when invalid."""
        assert self._sensors_dir is not None
        found, problems = await asyncio.to_thread(
            schedules.load_schedules, [self._sensors_dir]
        )
        if problems:
            for p in problems:
                log.error("schedule file invalid; keeping the running schedules", problem=str(p))
            return False
        await self.replace_schedules(found)
        log.debug("schedules reloaded", schedules=sorted(s.name for s in found))
        return True


def vars_of(stats: CronStats) -> dict[str, int]:
    return {"published": stats.published, "duplicates": stats.duplicates,
            "failed": stats.failed, "caught_up": stats.caught_up}  # fmt: skip


async def _bounded(
    aws: Iterable[Awaitable[Any]], limit: int, return_exceptions: bool = False
) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(aw: Awaitable[Any]) -> Any:
        async with sem:
            return await aw

    return await asyncio.gather(*(one(a) for a in aws), return_exceptions=return_exceptions)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    tasks.clear()
    for r in results:
        if isinstance(r, Exception):
            log.error("cron task failed", error=f"{type(r).__name__}: {r}")
