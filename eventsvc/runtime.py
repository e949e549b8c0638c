"""Start, run and stop the parts chosen by `--components`.

`run()` is the sync entry; `serve()` owns every long-lived task. Signals only set
the stop event; shutdown turns readiness off, stops intake, lets in-flight
requests and trigger runs finish within the drain deadline, then closes the bus
and stops the embedded NATS server.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from eventsvc import bus as bus_mod
from eventsvc import kube, loader, logs, schedules, watches
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.config import COMPONENTS, Config
from eventsvc.console import Console
from eventsvc.dirwatch import DirectoryWatcher
from eventsvc.errors import ConfigError, SpecError
from eventsvc.gateways.app import build_app
from eventsvc.gateways.cloudevents_http import CloudEventsGateway
from eventsvc.gateways.common import BodyBudget, BusRef
from eventsvc.gateways.cron import CronGateway
from eventsvc.gateways.github import GitHubGateway
from eventsvc.gateways.watch import WatchGateway
from eventsvc.sensors import dispatch
from eventsvc.sensors.engine import Engine
from eventsvc.sensors.model import SensorSpec
from eventsvc.sensors.reload import SensorReloader
from eventsvc.triggers import Services

log = logs.get("eventsvc.runtime")


@dataclass(slots=True)
class State:
    """What readiness is made of."""

    bus_ref: BusRef = field(default_factory=BusRef)
    sensors_loaded: bool = False
    stopping: bool = False
    engine: Engine | None = None
    watch: WatchGateway | None = None
    http_port: int | None = None
    body_budget: BodyBudget | None = None
    nats_url: str | None = None
    bus_down_since: float | None = None  # monotonic time the connection was lost

    def bus_changed(self, what: str) -> None:
        """The client's word on its connection: `disconnected` or `reconnected`."""
        if what == "disconnected" and self.bus_down_since is None:
            self.bus_down_since = time.monotonic()
        elif what == "reconnected":
            self.bus_down_since = None

    def liveness(self, config: Config) -> str | None:
        """Why `/healthz` should fail (a restart would help), or None."""
        since, limit = self.bus_down_since, config.nats_unhealthy_after
        if since is None or not limit or time.monotonic() - since < limit:
            return None
        return (f"NATS unreachable for {time.monotonic() - since:.0f}s (more than "
                f"nats.unhealthyAfter {limit:g}s); restarting the process may help")

    def readiness(self, config: Config) -> dict[str, bool]:
        bus = self.bus_ref.bus
        checks = {
            "bus_connected": bool(bus and bus.connected),
            "streams_ready": bool(bus and bus.streams_ready),
            "not_stopping": not self.stopping,
        }
        if "sensors" in config.components:
            checks["sensors_loaded"] = self.sensors_loaded
        if self.watch is not None and self.watch.states:
            checks["watches_connected"] = self.watch.ready()
        return checks


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = State()
        self.started = asyncio.Event()
        self._embedded: EmbeddedNats | None = None
        self._runner: web.AppRunner | None = None
        self._services: Services | None = None
        self._cron: CronGateway | None = None
        self._reloader: SensorReloader | None = None
        self._watcher = DirectoryWatcher(config.sensors_dir)

    async def serve(self, stop: asyncio.Event) -> None:
        try:
            await self._start()
            self.started.set()
            await self._wait(stop)
        finally:
            await self._shutdown()

    async def _start(self) -> None:
        config = self.config
        sensors = self._load_sensors() if "sensors" in config.components else []
        timers = self._load_schedules() if "cron" in config.components else []
        watched = self._load_watches() if "watch" in config.components else []
        routes: list[web.RouteDef] = []
        if "gateway" in config.components:
            budget = BodyBudget(config.max_inflight_bytes)  # one for both: it bounds memory
            self.state.body_budget = budget
            routes += GitHubGateway(config, self.state.bus_ref, budget).routes()
            routes += CloudEventsGateway(config, self.state.bus_ref, budget).routes()
        routes += Console(config, self.state,
                          lambda: self._reloader.problems if self._reloader else {}).routes()
        url = config.nats_url
        if not url:
            self._embedded = EmbeddedNats(Path(config.data_dir) / "nats", port=config.nats_port)
            url = await self._embedded.start()
        self.state.nats_url = url
        await self._start_http(routes)
        bus = await bus_mod.connect(url, config, on_state=self.state.bus_changed)
        await bus.ensure_streams(bus_mod.default_streams(config))
        # before any gateway may accept: an accepted event is then always dispatched
        await dispatch.ensure_consumers(bus, config)
        self.state.bus_ref.bus = bus
        self._services = Services(config, bus)
        if "sensors" in config.components:
            self.state.engine = Engine(bus, self._services, config)
            await self.state.engine.start(sensors)
            self.state.sensors_loaded = True
            self._reloader = SensorReloader(self.state.engine, config.sensors_dir)
            self._reloader.prime(sensors)
            self._watcher.subscribe("sensors", self._reloader.reload)
        if "cron" in config.components:
            self._cron = CronGateway(bus, sensors_dir=config.sensors_dir, watcher=self._watcher)
            await self._cron.start(timers)
        if "watch" in config.components:  # connects to the cluster once a Watch file exists
            # asked for by name (`--components ...,watch`, as the sensors Deployment does),
            # no cluster access is an error; in the default set the watches wait idle
            self.state.watch = WatchGateway(bus, lambda: kube.Cluster.connect(config),
                                            sensors_dir=config.sensors_dir,
                                            watcher=self._watcher,
                                            required=config.components != COMPONENTS)  # fmt: skip
            await self.state.watch.start(watched)
        self._watcher.start()  # one poll of the sensors directory for every part above
        log.info("eventsvc ready", components=list(config.components), nats=logs.redact_url(url),
                 http_port=self.state.http_port, sensors=[s.name for s in sensors])  # fmt: skip

    def _load_sensors(self) -> list[SensorSpec]:
        loaded = loader.load_paths([self.config.sensors_dir])
        if loaded.problems:
            raise SpecError(loaded.problems)
        for warning in loaded.warnings:
            log.warning("sensor file warning", problem=str(warning))
        if not loaded.files:
            log.warning("no sensor files found", dir=self.config.sensors_dir)
        return loaded.sensors

    def _load_schedules(self) -> list[schedules.Schedule]:
        found, problems = schedules.load_schedules([self.config.sensors_dir])
        if problems:
            raise SpecError(problems)
        return found

    def _load_watches(self) -> list[watches.Watch]:
        found, problems = watches.load_watches([self.config.sensors_dir])
        if problems:
            raise SpecError(problems)
        return found

    async def _start_http(self, routes: list[web.RouteDef]) -> None:
        config = self.config
        app = build_app(routes, lambda: self.state.readiness(config), config.max_body_bytes,
                        lambda: self.state.liveness(config))  # fmt: skip
        app.on_response_prepare.append(self._closing)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=self.config.drain_timeout
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http_host, self.config.http_port)
        try:
            await site.start()
        except OSError as e:  # most often: the port is taken by another process
            raise ConfigError(
                f"cannot listen on {self.config.http_host}:{self.config.http_port} "
                f"({e.strerror or e}); choose another port with --port or EVENTSVC_HTTP_PORT"
            ) from e
        addresses = self._runner.addresses  # (host, port, ...) of each listening socket
        self.state.http_port = int(addresses[0][1]) if addresses else self.config.http_port
        log.info("http listening", host=self.config.http_host, port=self.state.http_port)

    async def _wait(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
            engine = self.state.engine
            if engine is not None and (failure := engine.failed()) is not None:
                raise failure
            if self._cron is not None and (failure := self._cron.failed()) is not None:
                raise failure
            watch = self.state.watch
            if watch is not None and (failure := watch.failed()) is not None:
                raise failure

    async def _closing(self, request: web.Request, response: web.StreamResponse) -> None:
        """While shutting down, every answer closes its connection: keep-alive clients
        send their next request to another replica."""
        if self.state.stopping:
            response.force_close()
            response.headers["Connection"] = "close"

    async def _shutdown(self) -> None:
        self.state.stopping = True
        loop = asyncio.get_running_loop()
        if self._runner is not None and self.config.shutdown_grace > 0 and self.started.is_set():
            # readiness fails and answers close their connections, but requests already on
            # their way (a keep-alive client that has not noticed yet) are still answered
            log.info("shutting down: answering for the grace period",
                     grace=self.config.shutdown_grace)  # fmt: skip
            await asyncio.sleep(self.config.shutdown_grace)
        deadline = loop.time() + self.config.drain_timeout
        log.info("shutting down", drain_timeout=self.config.drain_timeout)
        if self._runner is not None:
            await self._runner.cleanup()  # stops intake, waits for in-flight requests
        await self._watcher.stop()  # no reload while the parts stop
        if self._cron is not None:
            await self._cron.stop(max(deadline - loop.time(), 0.0))
        if self.state.watch is not None:
            await self.state.watch.stop()
        if self.state.engine is not None:
            await self.state.engine.stop(deadline)
        if self._services is not None:
            await self._services.close()
        if self.state.bus_ref.bus is not None:
            await self.state.bus_ref.bus.close()
        if self._embedded is not None:
            await self._embedded.stop()
        log.info("stopped")


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Service(config).serve(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(config: Config) -> None:
    asyncio.run(serve(config))
