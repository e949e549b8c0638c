"""Conditions completed by different events: partial matches kept in JetStream KV.

One KV entry per (sensor, trigger, correlation key) holds, by dependency name, the
latest event that matched it, with its expiry. An event that satisfies some of a
trigger's dependencies but not its condition is merged into that entry (with
compare-and-set, so replicas can share it); when the merged set satisfies the
condition, the trigger runs with every dependency's event.

Completing is a claim: the replica writes, with compare-and-set on the revision it
read, the completed events out of the entry and into a claim named by the event that
completed it. Only one replica wins; a loser re-reads the entry, no longer sees the
claimed events and merges its own event as a partial match (it waits for new
partners). A redelivery of the completing event (its replica crashed mid-run) finds
its own claim and runs with the same events. After the run finished, the events it
used are marked used and the claim is removed, so a restart or another replica
neither loses a partial match nor uses an event twice.

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
CLAIMS = "~claims"  # not a valid dependency name


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
    """A condition completed by several events: the entry, the events, and the id of the
    event whose claim holds them."""

    key: str
    events: dict[str, CloudEvent]
    claimer: str = ""


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
        """Add `matched` (dependency -> event, one event) to the partial match. When the
        condition is now met, claim the events and return them; else store the merge and
        return None."""
        key = partial_key(sensor, trigger, correlation)
        mine = {e.get_id() for e in matched.values()}
        for _ in range(_CAS_TRIES):
            entry = await self.kv.get(key)
            now = time.time()
            state = _decode(entry[0]) if entry else {}
            claims = _claims(state.pop(CLAIMS, None), now)
            for claimer in mine & set(claims):  # a redelivery of the completing event
                held = claims[claimer]["events"]
                return Completed(key, {d: events.from_dict(v) for d, v in held.items()}, claimer)
            taken = {str(ev.get("id", "")) for c in claims.values() for ev in c["events"].values()}
            state = {
                d: v for d, v in state.items() if str(v.get("event", {}).get("id", "")) not in taken
            }  # fmt: skip
            state = await self._live(sensor, trigger, state, last_reset(resets, now))
            for dep, event in matched.items():
                state[dep] = {"event": events.to_dict(event), "until": now + window, "at": now}
            done: Completed | None = None
            if condition(set(state)):
                claimer = sorted(mine)[0]
                held = {d: v["event"] for d, v in state.items()}
                until = max(float(v["until"]) for v in state.values())
                claims[claimer] = {"events": held, "until": until}
                done = Completed(key, {d: events.from_dict(v) for d, v in held.items()}, claimer)
                state = {}
            body = json.dumps({**state, CLAIMS: claims} if claims else state, default=str)
            if entry is not None:
                stored = await self.kv.update(key, body.encode(), entry[1])
            else:
                stored = await self.kv.create(key, body.encode())
            if stored:
                if done is not None:
                    log.info("partial match completed and claimed", sensor=sensor,
                             trigger=trigger, correlation=correlation, by=done.claimer,
                             event_id=",".join(sorted(mine)))  # fmt: skip
                else:
                    log.info("partial match stored", sensor=sensor, trigger=trigger,
                             correlation=correlation, have=sorted(state),
                             event_id=",".join(sorted(mine)))  # fmt: skip
                return done
        raise BusError(f"partial match {key}: too many concurrent writers, will retry")

    async def _live(
        self, sensor: str, trigger: str, state: dict[str, Any], reset: float
    ) -> dict[str, Any]:
        """Entries not expired, not older than the last reset, and whose event was not
        used by a completed run already."""
        now = time.time()
        live: dict[str, Any] = {}
        for dep, item in state.items():
            if not isinstance(item, dict):
                continue
            if float(item.get("until", 0)) < now or float(item.get("at", 0)) < reset:
                continue
            event_id = str(item.get("event", {}).get("id", ""))
            if await self.ledger.marked(delivery.consumed_key(sensor, trigger, event_id)):
                continue
            live[dep] = item
        return live

    async def consume(self, sensor: str, trigger: str, done: Completed) -> None:
        """Mark the run's events used, drop its claim and any entry holding them."""
        ids = {ev.get_id() for ev in done.events.values()}
        for event_id in ids:
            await self.ledger.mark(delivery.consumed_key(sensor, trigger, event_id))
        try:
            for _ in range(_CAS_TRIES):
                entry = await self.kv.get(done.key)
                if entry is None:
                    return
                state = _decode(entry[0])
                claims = dict(state.pop(CLAIMS, None) or {})
                had = len(claims)
                claims.pop(done.claimer, None)
                left = {
                    d: v for d, v in state.items()
                    if str(v.get("event", {}).get("id")) not in ids
                }  # fmt: skip
                if left == state and len(claims) == had:
                    return
                if not left and not claims:
                    if await self.kv.delete(done.key, last=entry[1]):
                        return
                    continue
                body = json.dumps({**left, CLAIMS: claims} if claims else left).encode()
                if await self.kv.update(done.key, body, entry[1]):
                    return
        except BusError as e:  # the used-marks keep the events from pairing again
            log.warning("partial match not cleaned up", key=done.key, error=str(e))


def _claims(value: object, now: float) -> dict[str, dict[str, Any]]:
    """Claims not expired: claimer event id -> {events: {dep: event dict}, until}."""
    if not isinstance(value, dict):
        return {}
    return {
        k: v for k, v in value.items()
        if isinstance(v, dict) and isinstance(v.get("events"), dict)
        and float(v.get("until", 0)) >= now
    }  # fmt: skip


def _decode(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
