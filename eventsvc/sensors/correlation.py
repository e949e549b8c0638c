"""Conditions completed by different events: partial matches kept in JetStream KV.

One KV entry per (sensor, trigger, correlation key) holds, by dependency name, the
latest event that matched it, with its expiry. An event that satisfies some of a
trigger's dependencies but not its condition is merged into that entry (with
compare-and-set, so replicas can share it); when the merged set satisfies the
condition, the trigger runs with every dependency's event. After the run
finished, the events it used are marked used and taken out of the entry, so a
restart or another replica neither loses a partial match nor uses an event twice.

Events pair only when their dependencies' `correlate` keys are equal; a dependency
without `correlate` has the empty key and pairs with other such dependencies.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cronsim import CronSim

from eventsvc import events, logs
from eventsvc.bus import KeyValueStore
from eventsvc.errors import BusError
from eventsvc.events import CloudEvent
from eventsvc.sensors import conditions, delivery

log = logs.get("eventsvc.sensors")
PARTIAL_BUCKET = "eventsvc-partial"
_CAS_TRIES = 20


def last_reset(schedules: Sequence[str], now: float) -> float:
    """Epoch time of the latest `conditionsReset` tick at or before `now` (UTC); 0 if none."""
    when = datetime.fromtimestamp(now, UTC)
    ticks = [next(CronSim(expr, when, reverse=True)).timestamp() for expr in schedules]
    return max(ticks, default=0.0)


def partial_key(sensor: str, trigger: str, correlation: str) -> str:
    digest = hashlib.sha256(correlation.encode()).hexdigest()[:32]
    return f"{sensor}.{trigger}.{digest}"


@dataclass(frozen=True, slots=True)
class Completed:
    """A condition completed by several events: the key to clean up and the events."""

    key: str
    events: dict[str, CloudEvent]


class PartialStore:
    def __init__(self, kv: KeyValueStore, ledger: delivery.Ledger) -> None:
        self.kv = kv
        self.ledger = ledger

    async def merge(
        self,
        sensor: str,
        trigger: str,
        correlation: str,
        matched: Mapping[str, CloudEvent],
        condition: conditions.Condition,
        window: float,
        resets: Sequence[str] = (),
    ) -> Completed | None:
        """Add `matched` (dependency -> event) to the partial match; the events when the
        condition is now met (nothing is written then), else None (the merge is stored)."""
        key = partial_key(sensor, trigger, correlation)
        for _ in range(_CAS_TRIES):
            entry = await self.kv.get(key)
            state = _decode(entry[0]) if entry else {}
            now = time.time()
            state = await self._live(sensor, trigger, state, last_reset(resets, now))
            for dep, event in matched.items():
                state[dep] = {"event": events.to_dict(event), "until": now + window, "at": now}
            if condition(set(state)):
                return Completed(key, {d: events.from_dict(v["event"]) for d, v in state.items()})
            body = json.dumps(state, default=str).encode()
            if entry is not None:
                stored = await self.kv.update(key, body, entry[1])
            else:
                stored = await self.kv.create(key, body)
            if stored:
                log.info("partial match stored", sensor=sensor, trigger=trigger,
                         correlation=correlation, have=sorted(state))  # fmt: skip
                return None
        raise BusError(f"partial match {key}: too many concurrent writers, will retry")

    async def _live(
        self, sensor: str, trigger: str, state: dict[str, Any], reset: float
    ) -> dict[str, Any]:
        """Entries not expired, not older than the last reset, and whose event was not
        used by a completed run already."""
        now = time.time()
        live: dict[str, Any] = {}
        for dep, item in state.items():
            if float(item.get("until", 0)) < now or float(item.get("at", 0)) < reset:
                continue
            event_id = str(item.get("event", {}).get("id", ""))
            if await self.ledger.marked(delivery.consumed_key(sensor, trigger, event_id)):
                continue
            live[dep] = item
        return live

    async def consume(self, sensor: str, trigger: str, done: Completed) -> None:
        """Mark the run's events used and take them out of the partial match."""
        ids = {dep: ev.get_id() for dep, ev in done.events.items()}
        for event_id in set(ids.values()):
            await self.ledger.mark(delivery.consumed_key(sensor, trigger, event_id))
        try:
            for _ in range(_CAS_TRIES):
                entry = await self.kv.get(done.key)
                if entry is None:
                    return
                state = _decode(entry[0])
                left = {
                    d: v for d, v in state.items()
                    if str(v.get("event", {}).get("id")) not in set(ids.values())
                }  # fmt: skip
                if left == state:
                    return
                if not left:
                    await self.kv.delete(done.key)
                    return
                if await self.kv.update(done.key, json.dumps(left).encode(), entry[1]):
                    return
        except BusError as e:  # the used-marks keep the events from pairing again
            log.warning("partial match not cleaned up", key=done.key, error=str(e))


def _decode(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
