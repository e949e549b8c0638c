"""Delivery mechanics shared by every trigger: backoff, the run ledger (idempotency and
attempts, in KV), rate limits and per-key concurrency.

Retries are done by delayed redelivery (`nak(delay)`), never by sleeping on the
event: the ledger remembers, per (sensor, trigger, events), how many attempts were
made and when the next one is due, so a redelivered event runs only what is due and
never fires a trigger that already fired.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum

from eventsvc import logs
from eventsvc.bus import KeyValueStore
from eventsvc.config import Config
from eventsvc.errors import BusError
from eventsvc.sensors.spec import ConcurrencyPolicy, RateLimit, RetryStrategy

log = logs.get("eventsvc.sensors")
LEDGER_BUCKET = "eventsvc-fired"
LEDGER_TTL = 7 * 86400.0


class Outcome(StrEnum):
    SUCCESS = "success"
    SKIPPED = "skipped"  # the kind looked and had nothing to do (e.g. a gated-out draft PR)
    RETRY = "retry"  # a temporary failure; another attempt is scheduled
    FAILED = "failed"  # permanent failure or retries exhausted: the DLQ has it
    SUPERSEDED = "superseded"  # a newer event for the same concurrency key replaced it
    DUPLICATE = "duplicate"  # redelivered after it already finished; not run again


FINAL = frozenset({Outcome.SUCCESS, Outcome.SKIPPED, Outcome.FAILED, Outcome.SUPERSEDED})


def default_strategy(config: Config) -> RetryStrategy:
    return RetryStrategy(steps=config.max_deliveries, duration=config.redelivery_delay, factor=2.0)


def backoff(
    strategy: RetryStrategy, attempt: int, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based) before the next one."""
    delay = strategy.duration * strategy.factor ** max(0, attempt - 1)
    if strategy.jitter:
        delay += delay * strategy.jitter * rand()
    if strategy.max_duration:
        delay = min(delay, strategy.max_duration)
    return delay


def run_key(sensor: str, trigger: str, event_ids: Iterable[str]) -> str:
    """The ledger key of one trigger run over one set of events (order does not matter)."""
    ids = "\0".join(sorted(set(event_ids)))
    digest = hashlib.sha256(f"{sensor}\0{trigger}\0{ids}".encode()).hexdigest()[:32]
    return f"run.{sensor}.{trigger}.{digest}"


def consumed_key(sensor: str, trigger: str, event_id: str) -> str:
    """Marks an event as used by a completed correlated run of `trigger`."""
    digest = hashlib.sha256(f"{sensor}\0{trigger}\0{event_id}".encode()).hexdigest()[:32]
    return f"used.{sensor}.{trigger}.{digest}"


@dataclass(frozen=True, slots=True)
class RunState:
    outcome: str
    attempts: int
    not_before: float = 0.0  # epoch seconds; the next attempt is not due before
    error: str = ""

    @property
    def final(self) -> bool:
        return self.outcome in FINAL


class Ledger:
    """Run states in KV. Failures to read count as 'unknown' (the run goes ahead: at
    least once); failures to write are logged and leave redelivery to do its job."""

    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    async def get(self, key: str) -> RunState | None:
        try:
            entry = await self.kv.get(key)
        except BusError as e:
            log.warning("run ledger unreadable; running anyway", key=key, error=str(e))
            return None
        if entry is None:
            return None
        try:
            return RunState(**json.loads(entry[0]))
        except (ValueError, TypeError):
            return None

    async def put(self, key: str, state: RunState) -> None:
        try:
            await self.kv.put(key, json.dumps(asdict(state)).encode())
        except BusError as e:
            log.warning("run ledger not written; a redelivery may run it again",
                        key=key, error=str(e))  # fmt: skip

    async def mark(self, key: str) -> None:
        try:
            await self.kv.put(key, b"1")
        except BusError as e:
            log.warning("ledger mark not written", key=key, error=str(e))

    async def marked(self, key: str) -> bool:
        try:
            return await self.kv.get(key) is not None
        except BusError:
            return False


class RateLimiter:
    """A token bucket per trigger, in this process: `requests_per_unit` per unit, no burst
    beyond that. With several replicas each one applies the limit on its own."""

    def __init__(self, limit: RateLimit) -> None:
        self.rate = limit.requests_per_unit / limit.unit_seconds
        self.capacity = float(limit.requests_per_unit)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Wait for a token; returns the seconds waited."""
        waited = 0.0
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return waited
                pause = (1 - self.tokens) / self.rate
                waited += pause
                await asyncio.sleep(pause)


@dataclass(slots=True)
class _Waiter:
    seq: int
    future: asyncio.Future[bool]


@dataclass(slots=True)
class _Slot:
    running: bool = False
    waiters: deque[_Waiter] | None = None


class KeyedGate:
    """One run per key at a time (in this process). `queue` runs waiters in order;
    `replace` keeps only the newest waiter (by stream sequence): older ones are told
    they were superseded."""

    def __init__(self, policy: ConcurrencyPolicy) -> None:
        self.policy = policy
        self._slots: dict[str, _Slot] = {}

    async def acquire(self, key: str, seq: int) -> bool:
        """True when the caller may run (and must `release`); False when superseded."""
        slot = self._slots.setdefault(key, _Slot(waiters=deque()))
        assert slot.waiters is not None
        if not slot.running and not slot.waiters:
            slot.running = True
            return True
        if self.policy is ConcurrencyPolicy.REPLACE:
            newest = max((w.seq for w in slot.waiters), default=-1)
            if newest > seq:
                return False
            while slot.waiters:
                old = slot.waiters.popleft()
                if not old.future.done():
                    old.future.set_result(False)
        me = _Waiter(seq, asyncio.get_running_loop().create_future())
        slot.waiters.append(me)
        try:
            return await me.future
        except asyncio.CancelledError:
            if me in slot.waiters:
                slot.waiters.remove(me)
            elif me.future.done() and not me.future.cancelled() and me.future.result():
                self.release(key)  # handed the slot while being cancelled: pass it on
            raise

    def release(self, key: str) -> None:
        slot = self._slots.get(key)
        if slot is None:
            return
        assert slot.waiters is not None
        while slot.waiters:
            nxt = slot.waiters.popleft()
            if not nxt.future.done():
                nxt.future.set_result(True)
                return
        slot.running = False
        del self._slots[key]

    def queued(self, key: str) -> int:
        slot = self._slots.get(key)
        return len(slot.waiters) if slot and slot.waiters else 0
