"""The console's readers on a real JetStream: newest first in windows, subject filters,
deletion, the live subscription, and what a dead letter may be replayed as."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest

from eventsvc import bus as bus_mod
from eventsvc import events
from eventsvc.console import store
from eventsvc.subjects import DLQ, EVENTS


async def publish(bus: bus_mod.Bus, subject: str, n: int) -> str:
    event = events.make_event({"specversion": "1.0", "id": f"e{n}", "type": "t", "source": "s",
                               "datacontenttype": "application/json"}, {"n": n})  # fmt: skip
    headers, body = events.to_binary(event)
    await bus.publish(subject, body, headers, msg_id=f"e{n}")
    return event.get_id()


async def collect(bus: bus_mod.Bus, stream: str, **kw: Any) -> list[int]:
    async with contextlib.aclosing(store.newest(bus, stream, **kw)) as found:
        return [m.seq async for m in found]


async def test_newest_first_in_windows(bus: bus_mod.Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "WINDOW", 7)
    for n in range(30):
        await publish(bus, "events.a.x" if n % 10 == 0 else "events.b.x", n)
    assert await collect(bus, EVENTS) == list(range(30, 0, -1))
    assert await collect(bus, EVENTS, scan=12) == list(range(30, 18, -1))
    # the filter's newest message is far back: the read starts there
    assert await collect(bus, EVENTS, subject="events.a.>") == [21, 11, 1]
    assert await collect(bus, EVENTS, subject="events.none.>") == []
    listed = await store.list_events(bus, {"type": "t"}, limit=3, before=10)
    assert [e["id"] for e in listed] == ["e8", "e7", "e6"]


async def test_delete_and_last_seq(bus: bus_mod.Bus) -> None:
    for n in range(3):
        await bus.publish(f"dlq.s{n}", json.dumps({"sensor": f"s{n}"}).encode())
    assert await bus.last_seq(DLQ, "dlq.>") == 3
    assert await bus.last_seq(DLQ, "dlq.s0") == 1
    assert await store.discard(bus, 2) is True
    assert await store.discard(bus, 2) is False
    assert await store.discard(bus, 99) is False
    assert [x["sensor"] for x in await store.list_letters(bus)] == ["s2", "s0"]


async def test_the_live_subscription_sees_new_messages(bus: bus_mod.Bus) -> None:
    subscription = await bus.subscribe("events.>")
    try:
        assert await subscription.next(timeout=0.1) is None
        event_id = await publish(bus, "events.live.x", 1)
        got = await subscription.next(timeout=10)
    finally:
        await subscription.close()
    assert got is not None
    subject, headers, body = got
    assert subject == "events.live.x"
    item = await store.summary(bus, store.Stored(1, subject, headers, body))
    assert item["id"] == event_id


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ({"subject": "events.a", "raw": "not json"}, "holds no CloudEvent"),
        ({"subject": "work.x", "event": {"id": "1"}}, "names no subject under events.>"),
    ],
)
async def test_letters_that_cannot_be_replayed(
    bus: bus_mod.Bus, record: dict[str, Any], why: str
) -> None:
    await bus.publish("dlq.x", json.dumps(record).encode())
    with pytest.raises(store.ReplayError, match=why):
        await store.replay(bus, 1)
    assert len(await store.list_letters(bus)) == 1  # kept


def test_a_replayed_event_records_the_original() -> None:
    original = {"specversion": "1.0", "id": "a", "type": "t", "source": "s", "data": {"x": 1},
                "replayof": "older"}  # fmt: skip
    (event,) = store.replay_events({"events": {"d1": original, "d2": original}})
    assert event.get_id() != "a"
    assert event.get_attributes()["replayof"] == "a"
    assert event.get_data() == {"x": 1}
