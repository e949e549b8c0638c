"""What the console reads from JetStream (EVENTS, RESULTS, DLQ) and the two changes it
makes there (replay, discard). No second database: every answer is read from the streams.

Streams are read newest first in windows (`newest`): a page of the latest events costs
one window, not a pass over the whole stream.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from eventsvc import events, subjects
from eventsvc.bus import Bus, Delivery
from eventsvc.bus.claims import HEADER as CLAIM_HEADER
from eventsvc.errors import EventsvcError
from eventsvc.events import CloudEvent
from eventsvc.subjects import DLQ, EVENTS, RESULTS

WINDOW = 1000  # messages read per step when going back through a stream
REPLAY_ATTRIBUTE = "replayof"  # a replayed event's extension naming the original id
REPLAYABLE_ROOTS = ("events.", "results.")  # a letter is republished only on these


@dataclass(frozen=True, slots=True)
class Stored:
    """One message of a stream, as read."""

    seq: int
    subject: str
    headers: Mapping[str, str]
    body: bytes
    stored_at: datetime | None = None


async def newest(
    bus: Bus, stream: str, scan: int = 0, subject: str | None = None
) -> AsyncGenerator[Stored, None]:
    """Messages of `stream` (on `subject`, filtered by the server) newest first, in windows
    of `WINDOW` sequences; at most `scan` sequences of the stream looked at (0: all).
    Close it (`contextlib.aclosing`) when stopping early."""
    state = await bus.stream_state(stream)
    if state.messages == 0:
        return
    end = state.last_seq
    floor = max(state.first_seq, end - scan + 1) if scan else state.first_seq
    if subject is not None:
        # from its newest message down, every window's read finds a message at once (in
        # it, or the first one after it): none waits for a fetch to come back empty
        end = min(end, await bus.last_seq(stream, subject))
    while end >= floor:
        start = max(floor, end - WINDOW + 1)
        for item in reversed(await window(bus, stream, start, end, subject)):
            yield _stored(item)
        end = start - 1


def _stored(item: Delivery) -> Stored:
    return Stored(item.stream_seq, item.subject, item.headers, item.data, item.stored_at)


async def window(
    bus: Bus, stream: str, start: int, end: int, subject: str | None = None
) -> list[Delivery]:
    """The messages of `stream` (on `subject`) from sequence `start` to `end`, oldest first."""
    out: list[Delivery] = []
    async with contextlib.aclosing(bus.read_stream(stream, subject, start=start)) as items:
        async for item in items:
            if item.stream_seq > end:
                break
            out.append(item)
            if item.stream_seq == end or item.num_pending == 0:
                break  # the last one: not waiting for a fetch to come back empty
    return out


async def decode(bus: Bus, msg: Stored) -> CloudEvent:
    """The CloudEvent of a stored message (its body read from the claims bucket when it
    was stored apart); `EventsvcError` when it cannot be read or is no CloudEvent."""
    body = await bus.body_of(msg.headers, msg.body)
    return events.from_nats(msg.headers, body)


def attributes(msg: Stored) -> dict[str, Any] | None:
    """The attributes of a binary-mode message from its headers alone (no body read);
    None for a structured one."""
    return events.binary_attributes(msg.headers)


async def summary(bus: Bus, msg: Stored) -> dict[str, Any]:
    """An event as the lists show it: attributes (no data), stream sequence, NATS subject."""
    attrs = attributes(msg)
    if attrs is None:
        try:
            attrs = events.to_dict(await decode(bus, msg))
        except EventsvcError as e:
            attrs = {"error": str(e)}
        attrs.pop("data", None)
        attrs.pop("data_base64", None)
    return {"seq": msg.seq, "natsSubject": msg.subject, **attrs}


def contains(filters: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool]:
    """A test that every attribute named in `filters` holds its (non-empty) text."""
    wanted = {k: v for k, v in filters.items() if v}

    def test(item: Mapping[str, Any]) -> bool:
        return all(v in str(item.get(k) or "") for k, v in wanted.items())

    return test


async def list_events(
    bus: Bus, filters: Mapping[str, str], limit: int, before: int = 0, scan: int = 20_000
) -> list[dict[str, Any]]:
    test = contains(filters)
    out: list[dict[str, Any]] = []
    async with contextlib.aclosing(newest(bus, EVENTS, scan=scan)) as found:
        async for msg in found:
            if before and msg.seq >= before:
                continue
            item = await summary(bus, msg)
            if test(item):
                out.append(item)
                if len(out) >= limit:
                    break
    return out


async def find_event(bus: Bus, event_id: str, seq: int = 0) -> tuple[Stored, CloudEvent] | None:
    """The newest stored event with id `event_id` (at `seq` when given and still there)."""
    if seq:
        at = await window(bus, EVENTS, seq, seq)
        if at and at[0].stream_seq == seq:
            msg = _stored(at[0])
            found = await _with_id(bus, msg, event_id)
            if found is not None:
                return msg, found
    async with contextlib.aclosing(newest(bus, EVENTS)) as stored:
        async for msg in stored:
            event = await _with_id(bus, msg, event_id)
            if event is not None:
                return msg, event
    return None


async def _with_id(bus: Bus, msg: Stored, event_id: str) -> CloudEvent | None:
    attrs = attributes(msg)
    if attrs is not None and attrs.get("id") != event_id:
        return None
    try:
        event = await decode(bus, msg)
    except EventsvcError:
        return None
    return event if event.get_id() == event_id else None


# ---------------------------------------------------------------- runs (RESULTS)


def run_record(msg: Stored, event: CloudEvent) -> dict[str, Any]:
    data = event.get_data()
    record = dict(data) if isinstance(data, Mapping) else {}
    when = event.get_attributes().get("time")
    record["id"] = event.get_id()
    record["seq"] = msg.seq
    record["time"] = events.format_time(when) if when is not None and not isinstance(
        when, str) else when  # fmt: skip
    return record


async def list_runs(
    bus: Bus,
    *,
    sensor: str = "",
    trigger: str = "",
    outcome: str = "",
    since: str | datetime = "",
    event_id: str = "",
    limit: int = 100,
    scan: int = 20_000,
    subject: str | None = None,
) -> list[dict[str, Any]]:
    """Results newest first; `since` is a time (RFC 3339 text or a datetime): the scan
    stops at the first result older than it."""
    floor = parse_time(since) if isinstance(since, str) else since
    if subject is None and sensor:  # the server picks that sensor's results
        subject = (subjects.result(sensor, trigger) if trigger
                   else f"results.{subjects.token(sensor)}.>")  # fmt: skip
    out: list[dict[str, Any]] = []
    needle = json.dumps(event_id).encode() if event_id else b""
    wanted = {"sensor": sensor, "trigger": trigger, "outcome": outcome}
    async with contextlib.aclosing(newest(bus, RESULTS, scan, subject)) as stored:
        async for msg in stored:
            if needle and needle not in msg.body and CLAIM_HEADER not in msg.headers:
                continue  # cheap: most results do not name the event
            try:
                record = run_record(msg, await decode(bus, msg))
            except EventsvcError:
                continue
            when = parse_time(str(record.get("time") or ""))
            if floor is not None and when is not None and when < floor:
                break  # newest first: everything further back is older still
            if any(v and record.get(k) != v for k, v in wanted.items()):
                continue
            if event_id and event_id not in (record.get("eventIds") or []):
                continue
            out.append(record)
            if len(out) >= limit:
                break
    return out


def parse_time(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


RUN_CLOCK_SKEW = timedelta(minutes=2)
"""A result is published after its event was stored; the scan for an event's runs stops
at results older than the event by this much (replicas' clocks may differ a little)."""


async def runs_of(
    bus: Bus, msg: Stored, event_id: str, sensors: list[str], limit: int = 200
) -> list[dict[str, Any]]:
    """The results of the runs the stored event `msg` caused among `sensors` (those it
    matched: only their result subjects are read)."""
    since = msg.stored_at - RUN_CLOCK_SKEW if msg.stored_at is not None else ""
    out: list[dict[str, Any]] = []
    for sensor in sensors:
        out += await list_runs(bus, event_id=event_id, since=since, limit=limit,
                               subject=f"results.{subjects.token(sensor)}.>")  # fmt: skip
    return sorted(out, key=lambda r: r["seq"], reverse=True)


async def run_counts(bus: Bus, scan: int) -> dict[tuple[str, str, str], int]:
    """(sensor, trigger, outcome) -> runs among the newest `scan` results. A binary-mode
    result's body is its data: read as JSON alone, without building the CloudEvent."""
    counts: dict[tuple[str, str, str], int] = {}
    async with contextlib.aclosing(newest(bus, RESULTS, scan=scan)) as stored:
        async for msg in stored:
            try:
                if attributes(msg) is not None and CLAIM_HEADER not in msg.headers:
                    data = json.loads(msg.body)
                else:
                    data = (await decode(bus, msg)).get_data()
            except (ValueError, EventsvcError):
                continue
            if isinstance(data, dict):
                key = (str(data.get("sensor")), str(data.get("trigger")),
                       str(data.get("outcome")))  # fmt: skip
                counts[key] = counts.get(key, 0) + 1
    return counts


async def find_run(bus: Bus, run_id: str) -> dict[str, Any] | None:
    async with contextlib.aclosing(newest(bus, RESULTS)) as stored:
        async for msg in stored:
            attrs = attributes(msg)
            if attrs is not None and attrs.get("id") != run_id:
                continue
            try:
                event = await decode(bus, msg)
            except EventsvcError:
                continue
            if event.get_id() == run_id:
                return run_record(msg, event)
    return None


# ---------------------------------------------------------------- dead letters (DLQ)


def letter_record(msg: Stored) -> dict[str, Any]:
    try:
        record = json.loads(msg.body)
    except ValueError:
        text = msg.body[:2000].decode(errors="replace")
        record = {"error": "unreadable dead letter", "raw": text}
    if not isinstance(record, dict):
        record = {"raw": record}
    record["seq"] = msg.seq
    return record


async def list_letters(bus: Bus, sensor: str = "", limit: int = 200) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with contextlib.aclosing(newest(bus, DLQ)) as stored:
        async for msg in stored:
            record = letter_record(msg)
            if sensor and record.get("sensor") != sensor:
                continue
            out.append(record)
            if len(out) >= limit:
                break
    return out


class ReplayError(EventsvcError):
    pass


def replay_events(record: Mapping[str, Any]) -> list[CloudEvent]:
    """The events of a dead letter, each with a new id and `replayof` = its original id."""
    docs: list[Any] = list((record.get("events") or {}).values())
    if not docs and record.get("event"):
        docs = [record["event"]]
    if not docs:
        raise ReplayError("this dead letter holds no CloudEvent (it could not be decoded); "
                          "it can only be discarded")  # fmt: skip
    seen: set[str] = set()
    out: list[CloudEvent] = []
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("id") in seen:
            continue
        seen.add(str(doc.get("id")))
        attrs = {k: v for k, v in doc.items() if k != REPLAY_ATTRIBUTE}
        attrs["id"] = str(uuid.uuid4())
        attrs[REPLAY_ATTRIBUTE] = str(doc.get("id"))
        try:
            out.append(events.from_dict(attrs))
        except EventsvcError as e:
            raise ReplayError(f"its event cannot be rebuilt: {e}") from e
    return out


async def replay(bus: Bus, seq: int) -> list[str]:
    """Republish the events of the dead letter at `seq` on the subject they first came on,
    each with a new id recording the original; then remove the letter. The new ids."""
    got = await bus.get_message(DLQ, seq)
    if got is None:
        raise ReplayError(f"no dead letter #{seq} (replayed or discarded already?)")
    record = letter_record(Stored(seq, "", got[0], got[1]))
    subject = str(record.get("subject") or "")
    if not subject.startswith(REPLAYABLE_ROOTS):
        raise ReplayError(f"dead letter #{seq} names no subject under events.> or results.> "
                          f"({subject[:80]!r})")  # fmt: skip
    ids: list[str] = []
    for event in replay_events(record):
        headers, body = events.to_binary(event)
        await bus.publish(subject, body, headers, msg_id=f"{event.get_source()}:{event.get_id()}")
        ids.append(event.get_id())
    await bus.delete_message(DLQ, seq)
    return ids


async def discard(bus: Bus, seq: int) -> bool:
    return await bus.delete_message(DLQ, seq)
