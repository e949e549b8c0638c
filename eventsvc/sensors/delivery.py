"""Delivery mechanics shared by every trigger: backoff, the run ledger (idempotency and
attempts, in KV), rate limits and per-key concurrency.

Rate limits and per-key concurrency hold across replicas (`Coordinator`): a fixed
window counter per trigger in KV (compare-and-set), and per concurrency key a lease
in a KV bucket whose entries expire after `LEASE_TTL` unless the holder refreshes
them, so a crashed holder's lease lapses. The in-process `KeyedGate` stays in front
of the lease: waiters in one process queue in memory and only the head polls KV.

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
from eventsvc.sensors.model import ConcurrencyPolicy, RateLimit, RetryStrategy

log = logs.get("eventsvc.sensors")
LEDGER_BUCKET = "eventsvc-fired"
LEDGER_TTL = 7 * 86400.0
LEASE_BUCKET = "eventsvc-leases"
LEASE_TTL = 30.0  # a crashed holder's lease lapses after this; held leases refresh at 1/3
SHARED_BUCKET = "eventsvc-delivery"  # latest sequence per concurrency key, rate windows
SHARED_TTL = 86400.0


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
    """Run states in KV. A failure to read raises (BusError): the run waits for a
    redelivery rather than running blind; failures to write are logged and leave
    redelivery to do its job."""

    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    async def get(self, key: str) -> RunState | None:
        entry = await self.kv.get(key)
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
    beyond that. The fallback of `Coordinator.rate` when KV cannot be reached."""

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


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(slots=True)
class Lease:
    """A held concurrency key: the local slot and, when KV was reachable, the KV lease."""

    gate: KeyedGate
    key: str
    kv_key: str = ""
    revision: int = 0
    heartbeat: asyncio.Task[None] | None = None


class Coordinator:
    """Delivery state shared by every replica: concurrency leases, the latest event per
    concurrency key (for `replace`) and rate-limit windows, all in JetStream KV.

    KV failures never lose an event: a gate falls back to this process only, a rate
    limit to the in-process token bucket, both with a warning."""

    def __init__(
        self,
        leases: KeyValueStore,
        shared: KeyValueStore,
        replica: str,
        lease_ttl: float = LEASE_TTL,
        poll: float = 1.0,
    ) -> None:
        self.leases = leases
        self.shared = shared
        self.replica = replica
        self.lease_ttl = lease_ttl
        self.poll = poll  # the longest pause between two tries for a held lease

    # -- concurrency -------------------------------------------------------------------

    async def acquire(self, gate: KeyedGate, scope: str, key: str, seq: int) -> Lease | None:
        """Wait until this run may go for `key` (scope = sensor.trigger); None when a newer
        event for the key superseded it (`replace`). The caller must `release` a Lease."""
        replace = gate.policy is ConcurrencyPolicy.REPLACE
        mark = f"seq.{scope}.{_digest(key)}"
        if replace and await self._note_latest(mark, seq) > seq:
            return None
        if not await gate.acquire(key, seq):
            return None
        lease = Lease(gate, key, f"{scope}.{_digest(key)}")
        pause = 0.02
        try:
            while True:
                if replace and await self._latest(mark) > seq:
                    gate.release(key)
                    return None
                got = await self._take(lease.kv_key, seq)
                if got is None:  # KV unreachable: this process's gate only
                    lease.kv_key = ""
                    return lease
                if got:
                    lease.revision = got
                    lease.heartbeat = asyncio.create_task(
                        self._refresh(lease), name=f"lease-{lease.kv_key}"
                    )
                    return lease
                await asyncio.sleep(pause * (0.5 + random.random()))
                pause = min(self.poll, pause * 2)
        except BaseException:
            gate.release(key)
            raise

    async def release(self, lease: Lease) -> None:
        if lease.heartbeat is not None:
            lease.heartbeat.cancel()
            await asyncio.gather(lease.heartbeat, return_exceptions=True)
        try:
            if lease.kv_key and not await self.leases.delete(lease.kv_key, last=lease.revision):
                log.warning("concurrency lease was lost while running (it expired); another "
                            "replica may have run the same key at once", key=lease.key)  # fmt: skip
        except BusError as e:  # it expires after LEASE_TTL
            log.warning("concurrency lease not released; it expires on its own",
                        key=lease.key, error=str(e))  # fmt: skip
        finally:
            lease.gate.release(lease.key)

    async def _take(self, kv_key: str, seq: int) -> int | None:
        """The lease's revision when taken, 0 when another holder has it, None when KV
        cannot be reached."""
        body = json.dumps({"holder": self.replica, "seq": seq}).encode()
        try:
            if await self.leases.create(kv_key, body):
                entry = await self.leases.get(kv_key)
                return entry[1] if entry is not None else 0
        except BusError as e:
            log.warning("concurrency lease store unavailable; gating in this process only",
                        key=kv_key, error=str(e))  # fmt: skip
            return None
        return 0

    async def _refresh(self, lease: Lease) -> None:
        body = json.dumps({"holder": self.replica, "refreshed": time.time()}).encode()
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                if not await self.leases.update(lease.kv_key, body, lease.revision):
                    log.warning("concurrency lease lost while running", key=lease.key)
                    return
                entry = await self.leases.get(lease.kv_key)
                if entry is not None:
                    lease.revision = entry[1]
            except BusError as e:
                log.warning("concurrency lease not refreshed", key=lease.key, error=str(e))

    async def _note_latest(self, mark: str, seq: int) -> int:
        """Record `seq` as the newest event for the key unless a newer one is; the newest."""
        try:
            for _ in range(20):
                entry = await self.shared.get(mark)
                latest = _int(entry[0]) if entry else 0
                if latest >= seq:
                    return latest
                body = str(seq).encode()
                ok = (
                    await self.shared.update(mark, body, entry[1])
                    if entry
                    else await self.shared.create(mark, body)
                )
                if ok:
                    return seq
        except BusError as e:
            log.warning("latest event per key not recorded; replace holds in this process only",
                        key=mark, error=str(e))  # fmt: skip
        return seq

    async def _latest(self, mark: str) -> int:
        try:
            entry = await self.shared.get(mark)
        except BusError:
            return 0
        return _int(entry[0]) if entry else 0

    # -- rate limits -------------------------------------------------------------------

    async def rate(self, scope: str, limit: RateLimit, fallback: RateLimiter) -> float:
        """Wait for a slot in the trigger's current fixed window, shared by every replica;
        returns the seconds waited."""
        key = f"rate.{scope}"
        unit = limit.unit_seconds
        waited = 0.0
        try:
            while True:
                now = time.time()
                entry = await self.shared.get(key)
                state = _json(entry[0]) if entry else {}
                window = max(int(now // unit), int(state.get("w", 0)))
                used = int(state.get("n", 0)) if int(state.get("w", 0)) == window else 0
                if used < limit.requests_per_unit:
                    body = json.dumps({"w": window, "n": used + 1}).encode()
                    ok = (
                        await self.shared.update(key, body, entry[1])
                        if entry
                        else await self.shared.create(key, body)
                    )
                    if ok:
                        return waited
                    await asyncio.sleep(0.01 * random.random())  # lost a race: read again
                    continue
                pause = max(0.01, (window + 1) * unit - now) + 0.05 * random.random()
                waited += pause
                await asyncio.sleep(pause)
        except BusError as e:
            log.warning("shared rate limit unavailable; limiting in this process only",
                        scope=scope, error=str(e))  # fmt: skip
            return waited + await fallback.acquire()


def _int(body: bytes) -> int:
    try:
        return int(body)
    except ValueError:
        return 0


def _json(body: bytes) -> dict[str, int]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
