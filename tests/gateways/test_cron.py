"""The cron gateway against a real nats-server: ticks, replicas, catch-up, reload, start-up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eventsvc import bus as bus_mod
from eventsvc import events, schedules, yamldoc
from eventsvc.bus import Bus
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.bus.streams import EVENTS
from eventsvc.config import Config
from eventsvc.errors import SpecError
from eventsvc.gateways.cron import EVENT_TYPE, CronGateway
from eventsvc.schedules import Schedule

T0 = datetime(2030, 1, 7, 10, 0, tzinfo=UTC)  # minute-aligned; far from any real clock


class FakeClock:
    """Time that moves only when told; the scheduler polls it every few milliseconds."""

    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current

    def wait_seconds(self, seconds: float) -> float:
        return min(seconds, 0.005)

    def set(self, now: datetime) -> None:
        self.current = now


def schedule_yaml(name: str, expr: str, **spec: str) -> str:
    extra = "".join(f"  {k}: {v}\n" for k, v in spec.items())
    return (
        "apiVersion: eventsvc.dev/v1alpha1\nkind: Schedule\n"
        f"metadata: {{name: {name}}}\nspec:\n  schedule: {expr!r}\n{extra}"
    )


def make(name: str, expr: str, **spec: str) -> Schedule:
    docs, _ = yamldoc.parse_documents(schedule_yaml(name, expr, **spec), f"{name}.yaml")
    schedule, problems = schedules.parse_schedule(docs[0])
    assert schedule is not None, problems
    return schedule


async def until(check: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not check():  # noqa: ASYNC110 - state of another object, polled on purpose
            await asyncio.sleep(0.01)


async def ticks(bus: Bus, name: str) -> list[events.CloudEvent]:
    return [
        events.from_nats(m.headers, m.data)
        for m in await bus.stream_messages(EVENTS, f"events.cron.{name}")
    ]


async def wait_ticks(bus: Bus, name: str, count: int) -> list[events.CloudEvent]:
    async with asyncio.timeout(15):
        while len(found := await ticks(bus, name)) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return found


def scheduled(found: Sequence[events.CloudEvent]) -> list[datetime]:
    return sorted(e.get_time() for e in found)  # type: ignore[misc]


@pytest.fixture
async def gateways(bus: Bus) -> AsyncIterator[Callable[..., Awaitable[CronGateway]]]:
    started: list[CronGateway] = []

    async def start(initial: Sequence[Schedule], **kw: Any) -> CronGateway:
        gateway = CronGateway(kw.pop("on_bus", bus), **kw)
        await gateway.start(initial)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


@pytest.fixture
async def second_bus(
    nats_server: EmbeddedNats, config_factory: Callable[..., Config]
) -> AsyncIterator[Bus]:
    b = await bus_mod.connect(nats_server.url, config_factory(nats_url=nats_server.url))
    yield b
    await b.close()


async def test_tick_event_shape(bus: Bus, gateways: Callable[..., Awaitable[CronGateway]]) -> None:
    clock = FakeClock(T0 - timedelta(seconds=0.5))
    job = make("report", "* * * * *", timezone="Europe/Berlin", data="{team: platform}")
    gateway = await gateways([job], clock=clock)
    clock.set(T0 + timedelta(seconds=0.25))
    [event] = await wait_ticks(bus, "report", 1)
    assert event.get_type() == EVENT_TYPE
    assert event.get_source() == "eventsvc://schedules/report"
    assert event.get_subject() == "report"
    assert event.get_id() == "report:2030-01-07T10:00:00Z"
    assert event.get_time() == T0
    assert event.get_data() == {
        "scheduledTime": "2030-01-07T10:00:00Z",
        "firedTime": "2030-01-07T10:00:00.250000Z",
        "data": {"team": "platform"},
    }
    [msg] = await bus.stream_messages(EVENTS, "events.cron.report")
    assert msg.headers["Nats-Msg-Id"] == "report:2030-01-07T10:00:00Z"
    assert msg.headers["ce-type"] == EVENT_TYPE  # binary mode
    assert gateway.stats.published == 1


async def test_two_replicas_store_one_event_per_tick(
    bus: Bus, second_bus: Bus, gateways: Callable[..., Awaitable[CronGateway]]
) -> None:
    clock = FakeClock(T0 - timedelta(seconds=0.5))
    jobs = [make("sync", "* * * * *"), make("fast", "*/20 * * * * *")]
    a = await gateways(jobs, clock=clock)
    b = await gateways(jobs, clock=clock, on_bus=second_bus)
    for minute in range(3):
        clock.set(T0 + timedelta(minutes=minute, seconds=40.1))
        expected = (minute + 1) * 4  # "sync" once and "fast" three times a minute, so far
        await until(lambda n=expected: a.stats.published + a.stats.duplicates == n  # type: ignore[misc]
                    and b.stats.published + b.stats.duplicates == n)  # fmt: skip
    # each replica tried every tick; JetStream kept one copy of each
    assert a.stats.published + b.stats.published == 12
    assert a.stats.duplicates + b.stats.duplicates == 12
    sync = await ticks(bus, "sync")
    assert scheduled(sync) == [T0 + timedelta(minutes=m) for m in range(3)]
    fast = await ticks(bus, "fast")
    assert scheduled(fast) == [T0 + timedelta(seconds=20 * i) for i in range(9)]
    assert len({e.get_id() for e in sync + fast}) == 12


@pytest.mark.parametrize(
    ("policy", "caught_up"),
    [("none", []), ("last", [3]), ("all", [1, 2, 3])],
)
async def test_catch_up_after_downtime(
    bus: Bus,
    gateways: Callable[..., Awaitable[CronGateway]],
    policy: str,
    caught_up: list[int],
) -> None:
    job = make("nightly", "* * * * *", catchup=f"{{policy: {policy}, maxDuration: 1h}}")
    clock = FakeClock(T0 - timedelta(seconds=0.5))
    first = await gateways([job], clock=clock)
    clock.set(T0 + timedelta(seconds=0.1))
    await until(lambda: first.stats.published == 1)
    await first.stop()  # stores the last fired instant (T0) in KV
    # down across the ticks at T0+1m, T0+2m and T0+3m
    clock.set(T0 + timedelta(minutes=3, seconds=30))
    second = await gateways([job], clock=clock)
    clock.set(T0 + timedelta(minutes=4, seconds=0.1))
    minutes = [0, *caught_up, 4]
    found = await wait_ticks(bus, "nightly", len(minutes))
    assert scheduled(found) == [T0 + timedelta(minutes=m) for m in minutes]
    late = [e for e in found if e.get_time() in [T0 + timedelta(minutes=m) for m in caught_up]]
    for event in late:  # each catch-up event keeps its own scheduled time, fired later
        data = event.get_data()
        assert isinstance(data, dict)
        assert datetime.fromisoformat(data["firedTime"]) >= T0 + timedelta(minutes=3, seconds=30)
    assert second.stats.caught_up == len(caught_up)


async def test_kv_never_moves_backwards(
    bus: Bus, gateways: Callable[..., Awaitable[CronGateway]]
) -> None:
    clock = FakeClock(T0 - timedelta(seconds=0.5))
    job = make("kv", "* * * * *")
    gateway = await gateways([job], clock=clock)
    kv = await bus.kv("eventsvc_cron")
    newer = json.dumps({"scheduledTime": "2030-01-07T11:00:00Z"}).encode()
    await kv.put("kv", newer)  # another replica got further
    clock.set(T0 + timedelta(seconds=0.1))
    await until(lambda: gateway.stats.published == 1)
    await gateway.stop()
    entry = await kv.get("kv")
    assert entry is not None and entry[0] == newer


async def test_reload_replaces_schedules_and_keeps_them_on_errors(
    bus: Bus, gateways: Callable[..., Awaitable[CronGateway]], tmp_path: Path
) -> None:
    directory = tmp_path / "sensors"
    directory.mkdir(exist_ok=True)
    (directory / "a.yaml").write_text(schedule_yaml("a", "@daily"))
    found, _ = schedules.load_schedules([directory])
    gateway = await gateways(found, sensors_dir=directory, poll_interval=0.05)
    assert [s.name for s in gateway.schedules] == ["a"]
    (directory / "b.yaml").write_text(schedule_yaml("b", "@hourly"))
    await until(lambda: sorted(s.name for s in gateway.schedules) == ["a", "b"])
    (directory / "b.yaml").write_text(schedule_yaml("b", "@hourly", timezone="Nowhere/Land"))
    (directory / "c.yaml").write_text(schedule_yaml("c", "@hourly"))
    await asyncio.sleep(0.3)  # several polls: the broken file keeps the running set
    assert sorted(s.name for s in gateway.schedules) == ["a", "b"]
    (directory / "b.yaml").unlink()
    await until(lambda: sorted(s.name for s in gateway.schedules) == ["a", "c"])


async def test_tick_reaches_a_sensor_end_to_end(
    start_service: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    directory = tmp_path / "sensors"
    directory.mkdir(exist_ok=True)
    (directory / "heartbeat.yaml").write_text(
        schedule_yaml("heartbeat", "@every 1s", data="{check: ping}") + """---
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: heartbeat}
spec:
  dependencies:
    - name: tick
      eventSubject: events.cron.heartbeat
      filters:
        context: {type: dev.eventsvc.schedule.tick, subject: heartbeat}
  triggers:
    - template:
        name: forward
        conditions: tick
        nats: {subject: events.test.heartbeat}
""")
    service = await start_service(components=("sensors", "cron"))
    bus = service.service.state.bus_ref.bus
    async with asyncio.timeout(20):
        while not (forwarded := await bus.stream_messages(EVENTS, "events.test.heartbeat")):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    event = events.from_nats(forwarded[0].headers, forwarded[0].data)
    assert event.get_type() == EVENT_TYPE
    data = event.get_data()
    assert isinstance(data, dict) and data["data"] == {"check": "ping"}
    assert event.get_time() == datetime.fromisoformat(data["scheduledTime"])


async def test_service_refuses_invalid_schedule_files(
    start_service: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    directory = tmp_path / "sensors"
    directory.mkdir(exist_ok=True)
    path = directory / "bad.yaml"
    path.write_text(schedule_yaml("bad", "0 3 * * *", timezone="Mars/Olympus"))
    with pytest.raises(SpecError) as e:
        await start_service(components=("cron",))
    assert str(e.value).startswith(f"{path}:6: spec.timezone: 'Mars/Olympus' is not an IANA")
