"""The watch gateway against a real nats-server, the fake API server and the real
kubernetes client: added/changed/deleted, silent heartbeats, restarts, 410 relists,
two replicas."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from eventsvc import events, kube, watches, yamldoc
from eventsvc.bus import Bus
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.bus.streams import EVENTS
from eventsvc.config import Config
from eventsvc.gateways.watch import WatchGateway
from tests.conftest import RunningService
from tests.triggers.kubeapi import KubeApi, build_app, write_kubeconfig

AV = "argoproj.io/v1alpha1"
WATCH = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Watch
metadata: {name: apps}
spec:
  group: argoproj.io
  version: v1alpha1
  resource: applications
  namespace: argocd
  labelSelector: eventsvc.dev/managed=true
  fields: [status.health.status, status.sync.status]
"""


@pytest.fixture
async def api() -> AsyncIterator[KubeApi]:
    fake = KubeApi()
    runner = web.AppRunner(build_app(fake), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    fake.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argocd"}})
    try:
        yield fake
    finally:
        fake.drop_watches()
        await runner.cleanup()


@pytest.fixture
async def gateways(
    api: KubeApi, bus: Bus, config_factory: Callable[..., Config], tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[WatchGateway]]]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
    config = dataclasses.replace(
        config_factory(), sections={"kubernetes": {"kubeconfig": str(kubeconfig)}}
    )
    docs, _ = yamldoc.parse_documents(WATCH, "apps.yaml")
    watch, problems = watches.parse_watch(docs[0])
    assert watch is not None, problems
    running: list[WatchGateway] = []

    async def start() -> WatchGateway:
        gateway = WatchGateway(bus, lambda: kube.Cluster.connect(config), max_backoff=0.2)
        await gateway.start([watch])
        running.append(gateway)
        await until(gateway.ready)
        return gateway

    yield start
    for gateway in running:
        await gateway.stop()


async def until(check: Callable[[], bool], limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not check():  # noqa: ASYNC110 - state of another object, polled on purpose
            await asyncio.sleep(0.01)


async def announced(bus: Bus) -> list[events.CloudEvent]:
    return [
        events.from_nats(m.headers, m.data)
        for m in await bus.stream_messages(EVENTS, "events.k8s.apps")
    ]


async def wait_events(bus: Bus, count: int) -> list[events.CloudEvent]:
    """Exactly `count` events (waits for them, then a little for any extra)."""
    async with asyncio.timeout(10):
        while len(found := await announced(bus)) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    found = await announced(bus)
    assert len(found) == count, [summary(e) for e in found]
    return found


def summary(event: events.CloudEvent) -> tuple[str, str, Any]:
    data = event.get_data()
    assert isinstance(data, dict)
    return event.get_type().rsplit(".", 1)[1], str(event.get_subject()), data["changes"]


def app(name: str, health: str = "Progressing", sync: str = "OutOfSync") -> dict[str, Any]:
    return {"apiVersion": AV, "kind": "Application",
            "metadata": {"name": name, "namespace": "argocd",
                         "labels": {"eventsvc.dev/managed": "true"}},
            "status": {"health": {"status": health}, "sync": {"status": sync},
                       "reconciledAt": "t0"}}  # fmt: skip


def status(api: KubeApi, name: str, **fields: Any) -> None:
    api.modify(AV, "applications", name, "argocd", {"status": fields})


def health(value: str) -> dict[str, str]:
    return {"status": value}


async def test_added_changed_deleted_and_heartbeats_are_silent(
    api: KubeApi, bus: Bus, gateways: Callable[[], Awaitable[WatchGateway]]
) -> None:
    api.seed(app("before"))  # existed before the first start: recorded, not announced
    await gateways()
    obj = api.seed(app("shop"))
    api.seed({**app("unmanaged"), "metadata": {"name": "unmanaged", "namespace": "argocd"}})
    status(api, "shop", reconciledAt="t1")  # heartbeat: no watched field changed
    status(api, "shop", health=health("Healthy"))
    status(api, "shop", reconciledAt="t2")
    api.remove(AV, "applications", "shop", "argocd")
    found = await wait_events(bus, 3)
    assert [summary(e) for e in found] == [
        ("added", "argocd/shop", {"status.health.status": {"from": None, "to": "Progressing"},
                                  "status.sync.status": {"from": None, "to": "OutOfSync"}}),
        ("changed", "argocd/shop", {"status.health.status": {"from": "Progressing",
                                                             "to": "Healthy"}}),
        ("deleted", "argocd/shop", {"status.health.status": {"from": "Healthy", "to": None},
                                    "status.sync.status": {"from": "OutOfSync", "to": None}}),
    ]  # fmt: skip
    first = found[0]
    assert first.get_source() == api.url
    assert first.get_id() == f"apps:{obj['metadata']['uid']}:{obj['metadata']['resourceVersion']}"
    data = found[1].get_data()
    assert isinstance(data, dict) and data["object"]["status"]["health"]["status"] == "Healthy"
    assert found[2].get_id() == f"apps:{obj['metadata']['uid']}:deleted"


async def test_a_restart_resumes_and_announces_a_change_made_while_down_once(
    api: KubeApi, bus: Bus, gateways: Callable[[], Awaitable[WatchGateway]]
) -> None:
    gateway = await gateways()
    api.seed(app("shop"))
    await wait_events(bus, 1)
    await gateway.stop()
    status(api, "shop", reconciledAt="t1")
    status(api, "shop", sync={"status": "Synced"})  # while down
    await gateways()
    found = await wait_events(bus, 2)
    assert summary(found[1]) == (
        "changed", "argocd/shop", {"status.sync.status": {"from": "OutOfSync", "to": "Synced"}})
    watch_from = [r.query.get("resourceVersion") for r in api.sent("GET", "applications")
                  if r.query.get("watch")]  # fmt: skip
    assert watch_from[-1] not in (None, "", "0")  # resumed, not relisted from scratch


@pytest.mark.parametrize("as_http", [False, True])
async def test_a_410_relist_announces_only_real_differences(
    api: KubeApi, bus: Bus, gateways: Callable[[], Awaitable[WatchGateway]], as_http: bool
) -> None:
    api.gone_as_http = as_http
    gateway = await gateways()
    for name in ("a", "b", "c"):
        api.seed(app(name))
    await wait_events(bus, 3)
    await gateway.stop()
    status(api, "a", health=health("Degraded"))
    status(api, "b", reconciledAt="t9")  # heartbeat only
    api.remove(AV, "applications", "c", "argocd")
    api.compact()
    gateway = await gateways()
    found = await wait_events(bus, 5)
    assert sorted(summary(e)[:2] for e in found[3:]) == [
        ("changed", "argocd/a"), ("deleted", "argocd/c")]  # fmt: skip
    assert gateway.states["apps"].relists == 1
    status(api, "b", sync={"status": "Synced"})  # and it keeps watching
    assert summary((await wait_events(bus, 6))[5])[:2] == ("changed", "argocd/b")


async def test_a_dropped_watch_reconnects(
    api: KubeApi, bus: Bus, gateways: Callable[[], Awaitable[WatchGateway]]
) -> None:
    await gateways()
    api.seed(app("shop"))
    await wait_events(bus, 1)
    api.drop_watches()
    status(api, "shop", health=health("Healthy"))
    await wait_events(bus, 2)


async def test_two_replicas_announce_each_change_once(
    api: KubeApi, bus: Bus, gateways: Callable[[], Awaitable[WatchGateway]]
) -> None:
    one, two = await gateways(), await gateways()
    api.seed(app("shop"))
    for value in ("Healthy", "Degraded", "Healthy"):
        status(api, "shop", health=health(value))
        status(api, "shop", reconciledAt=value)
    api.remove(AV, "applications", "shop", "argocd")
    found = await wait_events(bus, 5)
    assert [summary(e)[0] for e in found] == ["added", "changed", "changed", "changed", "deleted"]
    assert one.states["apps"].published + two.states["apps"].published == 5


# ---------------------------------------------------------------- hot reload


@pytest.fixture
async def reloading(
    api: KubeApi, bus: Bus, config_factory: Callable[..., Config], tmp_path: Path
) -> AsyncIterator[tuple[WatchGateway, Path, list[int]]]:
    """A gateway reloading Watch files from a directory that starts empty, and how many
    times it connected to the cluster."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url)
    config = dataclasses.replace(
        config_factory(), sections={"kubernetes": {"kubeconfig": str(kubeconfig)}}
    )
    folder = tmp_path / "specs"
    folder.mkdir()
    connects: list[int] = []

    async def connect() -> kube.Cluster:
        connects.append(1)
        return await kube.Cluster.connect(config)

    gateway = WatchGateway(bus, connect, max_backoff=0.2, sensors_dir=folder, poll_interval=0.05)
    await gateway.start([])
    try:
        yield gateway, folder, connects
    finally:
        await gateway.stop()


def write_watch(folder: Path, text: str = WATCH) -> None:
    path = folder / "apps.yaml"
    path.write_text(text)
    stamp = path.stat().st_mtime_ns + 1_000_000  # a new stamp even within one clock tick
    os.utime(path, ns=(stamp, stamp))


async def test_a_watch_file_added_while_running_starts_watching(
    api: KubeApi, bus: Bus, reloading: tuple[WatchGateway, Path, list[int]]
) -> None:
    gateway, folder, connects = reloading
    api.seed(app("before"))
    await asyncio.sleep(0.2)
    assert gateway.states == {} and gateway.ready() and connects == []  # no cluster needed yet
    write_watch(folder)
    await until(lambda: "apps" in gateway.states and gateway.ready())
    assert connects == [1]
    api.seed(app("shop"))
    [added] = await wait_events(bus, 1)  # "before" existed already: recorded silently
    assert summary(added)[:2] == ("added", "argocd/shop")


async def test_a_removed_watch_file_stops_and_adding_it_back_resumes(
    api: KubeApi, bus: Bus, reloading: tuple[WatchGateway, Path, list[int]]
) -> None:
    gateway, folder, _ = reloading
    write_watch(folder)
    await until(lambda: "apps" in gateway.states and gateway.ready())
    api.seed(app("shop"))
    await wait_events(bus, 1)
    (folder / "apps.yaml").unlink()
    await until(lambda: gateway.states == {})
    assert gateway.watches == []
    status(api, "shop", health=health("Healthy"))  # while not watched
    await asyncio.sleep(0.3)
    assert len(await announced(bus)) == 1
    write_watch(folder)  # resumes from the kept resourceVersion: the change is announced once
    found = await wait_events(bus, 2)
    assert summary(found[1])[:2] == ("changed", "argocd/shop")


async def test_a_changed_watch_restarts_without_announcing_its_new_baseline(
    api: KubeApi, bus: Bus, reloading: tuple[WatchGateway, Path, list[int]]
) -> None:
    gateway, folder, _ = reloading
    write_watch(folder, WATCH.replace(", status.sync.status]", "]"))
    await until(lambda: "apps" in gateway.states and gateway.ready())
    api.seed(app("shop"))
    api.seed({**app("other"), "metadata": {"name": "other", "namespace": "argocd",
                                           "labels": {"tier": "web"}}})  # fmt: skip
    await wait_events(bus, 1)
    status(api, "shop", sync={"status": "Synced"})  # not watched yet: silent
    # more fields, and a selector that now also takes `other` in
    write_watch(folder, WATCH.replace("eventsvc.dev/managed=true", "tier!=cache"))
    await until(lambda: [len(w.fields) for w in gateway.watches] == [2] and gateway.ready())
    found = await wait_events(bus, 2)  # `other` entered the selection; `shop` is a baseline
    assert summary(found[1])[:2] == ("added", "argocd/other")
    status(api, "shop", sync={"status": "OutOfSync"})  # the new field is watched
    found = await wait_events(bus, 3)
    assert summary(found[2]) == ("changed", "argocd/shop", {
        "status.sync.status": {"from": "Synced", "to": "OutOfSync"}})  # fmt: skip


async def test_a_watch_moved_to_another_namespace_starts_afresh_and_bad_files_are_ignored(
    api: KubeApi, bus: Bus, reloading: tuple[WatchGateway, Path, list[int]]
) -> None:
    gateway, folder, _ = reloading
    api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}})
    write_watch(folder)
    await until(lambda: "apps" in gateway.states and gateway.ready())
    api.seed(app("shop"))
    await wait_events(bus, 1)
    write_watch(folder, WATCH.replace("fields:", "feilds:"))  # invalid: the running set stays
    await asyncio.sleep(0.3)
    assert gateway.watches[0].namespace == "argocd" and gateway.ready()
    api.seed({**app("team-app"), "metadata": {"name": "team-app", "namespace": "team",
                                              "labels": {"eventsvc.dev/managed": "true"}}})
    write_watch(folder, WATCH.replace("namespace: argocd", "namespace: team"))
    await until(lambda: [w.namespace for w in gateway.watches] == ["team"] and gateway.ready())
    await asyncio.sleep(0.3)
    assert len(await announced(bus)) == 1  # team-app existed before: recorded silently,
    status(api, "shop", health=health("Degraded"))  # and argocd is no longer watched
    api.modify(AV, "applications", "team-app", "team", {"status": {"health": health("Healthy")}})
    found = await wait_events(bus, 2)
    assert summary(found[1])[:2] == ("changed", "team/team-app")


async def test_the_running_service_picks_up_a_first_watch_file(
    api: KubeApi, bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    nats_server: EmbeddedNats, start_service: Callable[..., Awaitable[RunningService]],
) -> None:  # fmt: skip
    monkeypatch.setenv("EVENTSVC_KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", api.url)))
    service = await start_service(nats_url=nats_server.url)
    gateway = service.service.state.watch
    assert gateway is not None and gateway.states == {}
    assert "watches_connected" not in service.service.state.readiness(service.service.config)
    write_watch(tmp_path / "sensors")
    await until(lambda: "apps" in gateway.states and gateway.ready(), limit=30)
    assert service.service.state.readiness(service.service.config)["watches_connected"]
    api.seed(app("shop"))
    [added] = await wait_events(bus, 1)
    assert summary(added)[:2] == ("added", "argocd/shop")
