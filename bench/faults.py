"""bench.faults: no accepted event lost, no result lost, every duplicate recognisable.

    python -m bench.faults [--scenarios a,b,...] [--events N] [--rate R] [--concurrency C]

Each scenario runs on loopback with processes of its own (eventsvc as `python -m eventsvc
run`, nats-server, and the trigger receiver `bench.faults_receiver`), injects its fault in
the middle of a burst of signed GitHub webhooks, waits until the system is idle, and
counts, from the receiver's log and the RESULTS and DLQ streams:

- sent: deliveries posted (a refused one, 503 or no answer, is posted again with the same
  delivery id for a while, as one redelivers from GitHub; `start-under-traffic` does not),
- accepted: deliveries answered 2xx (202 stored, 200 duplicate of a stored one),
- once: accepted events whose `http` trigger reached the receiver,
- again: repeated trigger requests carrying the Idempotency-Key of the event's first one
  (at-least-once; a receiver that remembers keys acts once), and `other key`: a repeat with
  a DIFFERENT key, which no receiver could recognise (a bug),
- lost: accepted events that never reached the receiver,
- missing: events that reached the receiver without a final `success` result in RESULTS
  (whose id must also be the key the receiver saw),
- DLQ: records in the DLQ stream,
- follow (scenario `cluster`): a second sensor follows `results.faults.call`; every
  successful run of the first must be followed: `followed` / `f.again` / `f.lost`,
- pause: the longest time without any trigger request, between the first and the last
  (how long the fault held the triggers up), and time: the scenario's wall time.

Scenarios (`--scenarios`, default all): nats-kill-embedded, nats-kill-external,
eventsvc-kill, eventsvc-kill-embedded, replica-kill, cluster, split-start,
start-under-traffic, sigterm, large; each one's first docstring line says what it does.
eventsvc runs with `sensors.ackWait` = `--ack-wait` (10s), so work held by a killed
process comes back within seconds rather than the default minute.

Exit 1 when a lost, missing or f.lost cell is not 0, a repeat had another key, or a
scenario could not run. Processes are stopped by pid at the end of each scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp

from bench import common
from eventsvc import bus as bus_mod
from eventsvc import events, logs
from eventsvc.bus.embedded import free_port, server_binary
from eventsvc.bus.streams import DLQ, EVENTS, RESULTS, WORK
from eventsvc.config import load_config
from eventsvc.errors import BusError
from eventsvc.sensors import dispatch

REPO = Path(__file__).resolve().parents[1]
SENSOR, TRIGGER = "faults", "call"
FOLLOWER, FOLLOW_TRIGGER = "faults-follow", "followed"
HOOK, FOLLOW_HOOK = f"/hook/{SENSOR}", "/hook/follow"
MB = 2**20
SHOWN = 15  # problem lines printed per scenario
STOP_WAIT = 30.0  # seconds a SIGTERM'd process gets before SIGKILL (cleanup)


def log_line(text: str) -> None:
    print(f"  {time.strftime('%H:%M:%S')} {text}", flush=True)


# --- processes ------------------------------------------------------------------------


class Proc:
    """One child process started by the harness, its output appended to a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} never started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        assert not self.alive, f"{self.name} runs already"
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        self._log.write(f"--- start {self.starts + 1} at {time.strftime('%H:%M:%S')} ---\n".encode())
        self._log.flush()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=REPO, env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        self.starts += 1

    async def kill9(self) -> None:
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
            assert self.proc is not None
            await asyncio.wait_for(self.proc.wait(), 10)

    async def terminate(self, timeout: float = STOP_WAIT) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await asyncio.wait_for(self.proc.wait(), 10)
        return self.proc.returncode

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            text = []
        code = self.proc.returncode if self.proc else None
        body = "\n".join("      " + line[:300] for line in text[-lines:])
        return f"    --- {self.name} ({self.log_path}, exit {code}) ---\n{body}"


def children(pid: int, binary: str = "nats-server") -> list[int]:
    """Direct children of `pid` whose command is `binary` (the embedded nats-server)."""
    try:
        kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [k for k in kids if Path(cmdline(k)[0] if cmdline(k) else "").name == binary]


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode() for a in raw.split(b"\0") if a]


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError as e:
        raise RuntimeError(f"process {pid} is gone ({e})") from e
    pairs = (item.decode().partition("=") for item in raw.split(b"\0") if item)
    return {k: v for k, _, v in pairs}


async def wait_nats(port: int, proc: Proc, timeout: float = 30.0) -> None:
    """Until nats-server on `port` sends its INFO line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive:
            raise RuntimeError(f"{proc.name} exited at start\n{proc.tail()}")
        with contextlib.suppress(OSError, TimeoutError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            line = await asyncio.wait_for(reader.readline(), 2)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            if line.startswith(b"INFO"):
                return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready on port {port} in {timeout:g}s\n{proc.tail()}")


class Svc(Proc):
    """An `eventsvc run` process on a fixed HTTP port (kept over restarts)."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str],
                 port: int) -> None:  # fmt: skip
        super().__init__(name, argv, log_path, env)
        self.port = port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.base}/webhooks/github"

    async def ready(self, timeout: float = 60.0) -> float:
        """Until GET /readyz answers 200; the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if not self.alive:
                    raise RuntimeError(f"{self.name} exited while starting\n{self.tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.base}/readyz") as r:
                        if r.status == 200:
                            return time.monotonic() - started
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name}: /readyz not 200 in {timeout:g}s\n{self.tail()}")


# --- the trigger receiver -------------------------------------------------------------


class Receiver(Proc):
    def __init__(self, directory: Path, delay: float) -> None:
        self.port = free_port()
        self.out = directory / "received.jsonl"
        self.out.touch()
        argv = [sys.executable, "-m", "bench.faults_receiver", "--port", str(self.port),
                "--out", str(self.out), "--delay", str(delay)]  # fmt: skip
        super().__init__("receiver", argv, directory / "receiver.log")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def ready(self) -> None:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline:
                if not self.alive:
                    raise RuntimeError(f"receiver exited\n{self.tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.base}/readyz") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"receiver not ready\n{self.tail()}")

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.out.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def count(self, path: str = HOOK) -> int:
        return sum(1 for r in self.records() if r.get("path") == path)


# --- the bus, as the harness reads it -------------------------------------------------


class Monitor:
    """The harness's own NATS connection: RESULTS, DLQ, EVENTS and the consumers' state."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None) -> None:
        self.url = url
        self.config = load_config(environ={}, nats_user=user, nats_password=password)
        self.bus: bus_mod.Bus | None = None

    async def open(self) -> None:
        self.bus = await bus_mod.connect(self.url, self.config, connect_timeout=3)

    async def close(self) -> None:
        if self.bus is not None:
            with contextlib.suppress(BusError, TimeoutError):
                await asyncio.wait_for(self.bus.close(), 10)

    async def read_all(self, stream: str) -> list[bus_mod.Delivery]:
        """Every message of `stream`, checked to reach the last sequence the stream had
        when asked (a read cut short by a slow fetch is read again)."""
        assert self.bus is not None
        for _ in range(5):
            state = await self.bus.stream_state(stream)
            msgs = await self.bus.stream_messages(stream)
            if state.messages == 0 or (msgs and msgs[-1].stream_seq >= state.last_seq):
                return msgs
            await asyncio.sleep(0.5)
        raise BusError(f"{stream}: could not read up to its last message")

    async def results(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(subject, result id, data) of every result."""
        out = []
        for msg in await self.read_all(RESULTS):
            with contextlib.suppress(events.EventDecodeError):
                event = events.from_nats(msg.headers, msg.data)
                data = event.get_data()
                if isinstance(data, dict):
                    out.append((msg.subject, str(event.get_id()), data))
        return out

    async def dlq(self) -> list[dict[str, Any]]:
        out = []
        for msg in await self.read_all(DLQ):
            with contextlib.suppress(ValueError):
                out.append(json.loads(msg.data))
        return out

    async def stored_ids(self) -> set[str]:
        from urllib.parse import unquote

        return {unquote(m.headers.get("ce-id", "")) for m in await self.read_all(EVENTS)}

    async def backlog(self) -> dict[str, int]:
        """Unfinished messages per consumer: dispatch on EVENTS and RESULTS, work-<sensor>."""
        assert self.bus is not None
        out = {f"dispatch/{s}": await self.bus.consumer_backlog(s, dispatch.DURABLE)
               for s in (EVENTS, RESULTS)}  # fmt: skip
        out.update({c.name: c.pending for c in await self.bus.consumer_states(WORK)})
        return out

    async def idle(self) -> bool:
        """Nothing left to dispatch, nothing handed off left unfinished (acked)."""
        assert self.bus is not None
        for stream in (EVENTS, RESULTS):
            if await self.bus.consumer_backlog(stream, dispatch.DURABLE):
                return False
        return all(c.pending == 0 for c in await self.bus.consumer_states(WORK))


# --- the load -------------------------------------------------------------------------


def large_body(i: int, size: int) -> bytes:
    payload = json.loads(common.pr_body(i))
    payload["pull_request"]["body"] = "x" * size
    return json.dumps(payload).encode()


@dataclass
class Load:
    """Signed webhooks over `concurrency` connections, paced at `rate` deliveries per second;
    a refused delivery is posted again (same delivery id, next URL) for `redeliver_for` s."""

    urls: list[str]
    ids: list[str]
    body: Callable[[int], bytes]
    concurrency: int
    rate: float
    redeliver_for: float
    pause: float = 0.5
    sent: set[str] = field(default_factory=set)
    accepted: dict[str, int] = field(default_factory=dict)
    answers: Counter[str] = field(default_factory=Counter)
    done: bool = False
    started: float = 0.0
    finished: float = 0.0

    async def run(self) -> None:
        counter = iter(range(len(self.ids)))
        self.started = time.monotonic()
        conn = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=120)
        try:
            async with aiohttp.ClientSession(connector=conn, timeout=timeout) as http:
                await asyncio.gather(*(self._worker(http, counter) for _ in range(self.concurrency)))
        finally:
            self.done = True
            self.finished = time.monotonic()

    async def _worker(self, http: aiohttp.ClientSession, counter: Any) -> None:
        for i in counter:
            if self.rate > 0:
                due = self.started + i / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            delivery, body = self.ids[i], self.body(i)
            headers = common.signed_headers(body, delivery)
            self.sent.add(delivery)
            first = time.monotonic()
            attempt = 0
            while True:
                url = self.urls[(i + attempt) % len(self.urls)]
                status = await self._post(http, url, body, headers)
                if 200 <= status < 300:
                    self.accepted[delivery] = status
                    break
                retryable = status == 0 or status >= 500
                if not retryable or time.monotonic() - first > self.redeliver_for:
                    break
                attempt += 1
                await asyncio.sleep(self.pause)

    async def _post(self, http: aiohttp.ClientSession, url: str, body: bytes,
                    headers: dict[str, str]) -> int:  # fmt: skip
        try:
            async with http.post(url, data=body, headers=headers) as r:
                await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            status = 0
        self.answers["no answer" if status == 0 else str(status)] += 1
        return status

    def summary(self) -> str:
        took = (self.finished or time.monotonic()) - self.started
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(self.answers.items()))
        return f"{len(self.sent)} sent in {took:.1f}s, answers {{{answers}}}"


async def until(probe: Callable[[], bool | Awaitable[bool]], what: str, timeout: float,
                step: float = 0.05) -> None:  # fmt: skip
    """Poll `probe` until true; TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        await asyncio.sleep(step)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


# --- one scenario's world -------------------------------------------------------------


@dataclass
class Options:
    events: int
    concurrency: int
    rate: float
    ack_wait: str
    timeout: float
    delay: float
    outage: float
    redeliver_for: float
    large: int
    verbose: bool


@dataclass
class Row:
    name: str
    sent: int = 0
    accepted: int = 0
    once: int = 0
    again: int = 0
    other_key: int = 0
    lost: int = 0
    missing: int = 0
    dlq: int = 0
    followed: int | None = None
    f_again: int | None = None
    f_lost: int | None = None
    pause: float = 0.0  # the longest time without any trigger request, first to last
    seconds: float = 0.0
    error: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.error or self.lost or self.missing or self.other_key or self.f_lost
                    or self.problems)  # fmt: skip


class World:
    """The processes, files and counts of one scenario; `close` stops every process."""

    def __init__(self, name: str, opts: Options, root: Path) -> None:
        self.name = name
        self.opts = opts
        self.dir = root / name
        self.dir.mkdir(parents=True)
        self.procs: list[Proc] = []
        self.orphans: set[int] = set()  # embedded nats-servers of eventsvc processes
        self.receiver = Receiver(self.dir, opts.delay)
        self.monitor: Monitor | None = None
        self.load: Load | None = None
        self.load_task: asyncio.Task[None] | None = None
        self.follower = False
        self.notes: list[str] = []
        self.size_of: dict[str, int] = {}  # delivery -> pull_request.body length (large)

    def note(self, text: str) -> None:
        self.notes.append(text)
        if self.opts.verbose:
            log_line(f"{self.name}: {text}")

    async def start_receiver(self) -> None:
        self.procs.append(self.receiver)
        await self.receiver.start()
        await self.receiver.ready()

    def sensors(self, follower: bool = False) -> Path:
        directory = self.dir / "sensors"
        directory.mkdir(exist_ok=True)
        (directory / f"{SENSOR}.yaml").write_text(f"""\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: {SENSOR}}}
spec:
  dependencies:
    - name: pr
      eventSubject: events.github.pull_request
      filters:
        context: {{type: {{prefix: com.github.pull_request.}}}}
  triggers:
    - template:
        name: {TRIGGER}
        http: {{url: "{self.receiver.base}{HOOK}", timeout: 60s}}
""")
        if follower:
            self.follower = True
            (directory / f"{FOLLOWER}.yaml").write_text(f"""\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: {FOLLOWER}}}
spec:
  dependencies:
    - name: run
      eventSubject: results.{SENSOR}.{TRIGGER}
      filters:
        data: [{{path: outcome, value: [success]}}]
  triggers:
    - template:
        name: {FOLLOW_TRIGGER}
        http: {{url: "{self.receiver.base}{FOLLOW_HOOK}", timeout: 60s}}
""")
        return directory

    def svc(self, name: str, *, nats_url: str | None = None, nats_port: int | None = None,
            components: str | None = None, env: dict[str, str] | None = None) -> Svc:  # fmt: skip
        port = free_port()
        argv = [sys.executable, "-m", "eventsvc", "run", "--host", "127.0.0.1", "--port", str(port),
                "--sensors", str(self.dir / "sensors"), "--data-dir", str(self.dir / f"data-{name}")]  # fmt: skip
        if nats_url:
            argv += ["--nats-url", nats_url]
        else:
            argv += ["--nats-port", str(nats_port or free_port())]
        if components:
            argv += ["--components", components]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSVC_")}
        environ.update({
            "EVENTSVC_GITHUB_WEBHOOK_SECRET": common.SECRET,
            "EVENTSVC_LOG_FORMAT": "json",
            "EVENTSVC_ACK_WAIT": self.opts.ack_wait,
            **(env or {}),
        })  # fmt: skip
        proc = Svc(name, argv, self.dir / f"{name}.log", environ, port)
        self.procs.append(proc)
        return proc

    async def nats(self, name: str = "nats") -> tuple[Proc, str]:
        """An external nats-server -js with a store of its own; (process, URL)."""
        port = free_port()
        store = self.dir / name
        store.mkdir()
        argv = [server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store),
                "-l", str(store / "nats-server.log")]  # fmt: skip
        proc = Proc(name, argv, self.dir / f"{name}.out")
        self.procs.append(proc)
        await proc.start()
        await wait_nats(port, proc)
        return proc, f"nats://127.0.0.1:{port}"

    async def embedded(self) -> tuple[Svc, list[int]]:
        """One `eventsvc run` with its embedded NATS, ready and watched; its children."""
        self.sensors()
        svc = self.svc("eventsvc", nats_port=free_port())
        await svc.start()
        await svc.ready()
        kids = self.remember_children(svc)
        nats_port = int(svc.argv[svc.argv.index("--nats-port") + 1])
        await self.watch(f"nats://127.0.0.1:{nats_port}")
        return svc, kids

    def remember_children(self, svc: Svc) -> list[int]:
        kids = children(svc.pid)
        self.orphans.update(kids)
        return kids

    async def external(self) -> tuple[Svc, Proc, str]:
        """One `eventsvc run` on an external nats-server, ready and watched: (eventsvc, the
        nats-server, its URL)."""
        self.sensors()
        nats, url = await self.nats()
        svc = self.svc("eventsvc", nats_url=url)
        await svc.start()
        await svc.ready()
        await self.watch(url)
        return svc, nats, url

    async def load_a_third(self, urls: list[str], fired: int = 0) -> tuple[asyncio.Task[None], int]:
        """Start the load on `urls`, wait until a third of it is accepted (and `fired` trigger
        requests arrived): (the load's task, deliveries accepted by then)."""
        task = self.start_load(urls)
        await self.accepted_at_least(1 / 3)
        if fired:
            await self.fired_at_least(fired)
        assert self.load is not None
        return task, len(self.load.accepted)

    async def watch(self, url: str, user: str | None = None, password: str | None = None) -> None:
        self.monitor = Monitor(url, user, password)
        await self.monitor.open()

    def start_load(self, urls: list[str], *, count: int | None = None,
                   body: Callable[[int], bytes] = common.pr_body, concurrency: int | None = None,
                   rate: float | None = None, redeliver: bool = True) -> asyncio.Task[None]:  # fmt: skip
        run = uuid.uuid4().hex[:8]
        n = self.opts.events if count is None else count
        self.load = Load(urls, [f"{self.name}-{run}-{i}" for i in range(n)], body,
                         concurrency or self.opts.concurrency,
                         self.opts.rate if rate is None else rate,
                         self.opts.redeliver_for if redeliver else 0.0)  # fmt: skip
        self.load_task = asyncio.create_task(self.load.run(), name=f"load-{self.name}")
        return self.load_task

    async def accepted_at_least(self, fraction: float) -> None:
        load = self.load
        assert load is not None
        want = max(1, int(len(load.ids) * fraction))
        await until(lambda: len(load.accepted) >= want or load.done,
                    f"{want} accepted deliveries", 300)  # fmt: skip

    async def fired_at_least(self, count: int) -> None:
        load = self.load
        assert load is not None
        await until(lambda: self.receiver.count() >= count or load.done,
                    f"{count} trigger runs", 120, step=0.1)  # fmt: skip

    async def close(self) -> None:
        """Stop the load and every process this scenario started, by pid, eventsvc first."""
        if self.load_task is not None and not self.load_task.done():
            self.load_task.cancel()
            await asyncio.gather(self.load_task, return_exceptions=True)
        if self.monitor is not None:
            await self.monitor.close()
        order: list[Proc] = [p for p in self.procs if isinstance(p, Svc)]
        order += [p for p in self.procs if not isinstance(p, Svc | Receiver)]
        order += [p for p in self.procs if isinstance(p, Receiver)]
        for proc in order:
            with contextlib.suppress(Exception):
                await proc.terminate()
            proc.close()
        for pid in self.orphans:  # an embedded nats-server left behind by a killed eventsvc
            if Path(cmdline(pid)[0] if cmdline(pid) else "").name == "nats-server":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    self.note(f"killed orphaned embedded nats-server {pid}")


# --- counting -------------------------------------------------------------------------


@dataclass
class Tally:
    row: Row
    done: bool  # nothing lost or missing
    lost_ids: list[str]
    missing_ids: list[str]


def keys_by_id(records: list[dict[str, Any]], path: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in sorted((r for r in records if r.get("path") == path), key=lambda r: r.get("t", 0)):
        out.setdefault(str(r.get("id")), []).append(str(r.get("key")))
    return out


def repeats(keys: dict[str, list[str]]) -> tuple[int, int]:
    """(repeats with the first request's key, repeats with another key)."""
    same = sum(k == ks[0] for ks in keys.values() for k in ks[1:])
    other = sum(k != ks[0] for ks in keys.values() for k in ks[1:])
    return same, other


def tally(world: World, results: list[tuple[str, str, dict[str, Any]]],
          dlq: list[dict[str, Any]]) -> Tally:  # fmt: skip
    load = world.load
    assert load is not None
    records = world.receiver.records()
    row = Row(world.name, sent=len(load.sent), accepted=len(load.accepted), dlq=len(dlq))
    accepted = set(load.accepted)
    main = keys_by_id(records, HOOK)
    row.once = len(accepted & main.keys())
    stamps = sorted(float(r["t"]) for r in records if r.get("path") == HOOK and "t" in r)
    row.pause = max((b - a for a, b in itertools.pairwise(stamps)), default=0.0)
    row.again, row.other_key = repeats(main)
    lost = sorted(accepted - main.keys())
    row.lost = len(lost)
    success: dict[str, set[str]] = {}  # event id -> ids of its success results
    follow_success: set[str] = set()
    for subject, rid, data in results:
        if data.get("outcome") != "success":
            continue
        for eid in data.get("eventIds") or []:
            if subject == f"results.{SENSOR}.{TRIGGER}":
                success.setdefault(str(eid), set()).add(rid)
            elif subject == f"results.{FOLLOWER}.{FOLLOW_TRIGGER}":
                follow_success.add(str(eid))
    missing = sorted(i for i in main if i not in success)
    for eid, keys in main.items():
        if eid in success and success[eid] != {keys[0]}:
            row.problems.append(f"event {eid}: success result id(s) {sorted(success[eid])} "
                                f"!= Idempotency-Key {keys[0]}")  # fmt: skip
    unaccepted = sorted(main.keys() - accepted)
    if unaccepted:
        row.notes.append(f"{len(unaccepted)} events fired that were never answered 2xx "
                         "(stored, the answer lost; allowed)")  # fmt: skip
    if world.follower:
        follow = keys_by_id(records, FOLLOW_HOOK)
        runs = {rid for rids in success.values() for rid in rids}  # the first sensor's runs
        row.followed = len(runs & follow.keys())
        row.f_again, other = repeats(follow)
        row.other_key += other
        f_lost = sorted(runs - follow.keys())
        row.f_lost = len(f_lost)
        f_missing = sorted(i for i in follow if i not in follow_success)
        missing += [f"follow:{i}" for i in f_missing]
        lost += [f"follow:{i}" for i in f_lost]
    row.missing = len(missing)
    if not accepted:
        row.problems.append("nothing was accepted: the scenario tested nothing")
    for wid, size in world.size_of.items():  # large bodies arrived whole
        got = {r.get("bodylen") for r in records if r.get("id") == wid and r.get("path") == HOOK}
        if got and got != {size}:
            row.problems.append(f"event {wid}: pull_request.body of {size} bytes arrived as {got}")
    return Tally(row, not lost and not missing, lost, missing)


async def settle(world: World, since: float) -> Row:
    """Wait (bounded) until every accepted event fired with a success result and the system
    is idle; then count. On timeout, say what is missing and why."""
    monitor, load = world.monitor, world.load
    assert monitor is not None and load is not None
    deadline = time.monotonic() + world.opts.timeout
    last: Tally | None = None
    idle_seen = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        try:
            main = keys_by_id(world.receiver.records(), HOOK)
            if set(load.accepted) - main.keys():
                continue
            if not await monitor.idle():
                idle_seen = 0
                continue
            last = tally(world, await monitor.results(), await monitor.dlq())
        except BusError as e:
            world.note(f"monitor: {e}")
            continue
        if last.done:
            idle_seen += 1
            if idle_seen >= 2:  # idle twice in a row, a second apart: nothing comes late
                break
    try:
        last = tally(world, await monitor.results(), await monitor.dlq())
    except BusError as e:
        if last is None:
            raise
        world.note(f"final read failed ({e}); counts from the last good read")
    row = last.row
    stamps = [r["t"] for r in world.receiver.records() if isinstance(r.get("t"), float)]
    burst_end = time.time() - (time.monotonic() - load.finished)
    settled = (f"{'settled' if last.done else 'gave up'} "
               f"{time.monotonic() - load.finished:.1f}s after the burst")  # fmt: skip
    if stamps:
        settled += f", last trigger request {max(stamps) - burst_end:+.1f}s after it"
    row.notes = world.notes + row.notes + [load.summary(), settled]
    if not last.done:
        row.problems.append(f"not settled within {world.opts.timeout:g}s")
        await explain(world, last, row)
    row.seconds = time.monotonic() - since
    return row


async def explain(world: World, last: Tally, row: Row) -> None:
    """Why each lost or missing event is so (first few)."""
    monitor = world.monitor
    assert monitor is not None
    try:
        stored = await monitor.stored_ids()
        results = await monitor.results()
        backlog = await monitor.backlog()
    except BusError as e:
        row.problems.append(f"cannot explain: {e}")
        return
    row.problems.append(f"unfinished messages per consumer: {backlog}")
    for eid in last.lost_ids[:10]:
        outcomes = [d.get("outcome") for _, _, d in results if eid in (d.get("eventIds") or [])]
        row.problems.append(f"lost {eid}: in EVENTS: {eid in stored}; results: {outcomes}")
    for eid in last.missing_ids[:10]:
        outcomes = [(rid, d.get("outcome")) for _, rid, d in results
                    if eid.removeprefix("follow:") in (d.get("eventIds") or [])]  # fmt: skip
        row.problems.append(f"missing result {eid}: results seen {outcomes}")


# --- scenarios ------------------------------------------------------------------------


async def kill_embedded_nats(world: World) -> None:
    """kill -9 of eventsvc's embedded nats-server mid-burst, restarted on its port and store."""
    world.sensors()
    nats_port = free_port()
    svc = world.svc("eventsvc", nats_port=nats_port)
    await svc.start()
    await svc.ready()
    kids = world.remember_children(svc)
    if len(kids) != 1:
        raise RuntimeError(f"expected one nats-server child of eventsvc {svc.pid}, found {kids}")
    await world.watch(f"nats://127.0.0.1:{nats_port}")
    task, at = await world.load_a_third([svc.webhook_url])
    argv = cmdline(kids[0])
    os.kill(kids[0], signal.SIGKILL)
    world.note(f"kill -9 embedded nats-server {kids[0]} at {at} accepted")
    await asyncio.sleep(world.opts.outage)
    again = Proc("nats-restarted", argv, world.dir / "nats-restarted.out")
    world.procs.append(again)
    await again.start()
    await wait_nats(nats_port, again)
    world.note(f"nats-server restarted on port {nats_port}, same store, as pid {again.pid}")
    await task
    await until(lambda: svc.alive, "eventsvc alive", 1)
    world.note(f"eventsvc ready again: {await svc.ready(60):.1f}s after the burst")


async def kill_external_nats(world: World) -> None:
    """kill -9 of an external nats-server mid-burst, restarted on its port and store."""
    svc, nats, url = await world.external()
    task, at = await world.load_a_third([svc.webhook_url])
    await nats.kill9()
    world.note(f"kill -9 nats-server at {at} accepted")
    await asyncio.sleep(world.opts.outage)
    await nats.start()
    await wait_nats(int(url.rsplit(":", 1)[1]), nats)
    world.note(f"nats-server restarted, same port and store, pid {nats.pid}")
    await task
    await svc.ready(60)


async def kill_eventsvc(world: World) -> None:
    """kill -9 of eventsvc (external nats-server) while triggers run, then a restart."""
    svc, _, _ = await world.external()
    task, at = await world.load_a_third([svc.webhook_url], fired=10)
    fired = world.receiver.count()
    await svc.kill9()
    world.note(f"kill -9 eventsvc at {at} accepted, {fired} trigger requests received")
    await asyncio.sleep(world.opts.outage)
    await svc.start()
    took = await svc.ready()
    world.note(f"eventsvc restarted, ready in {took:.1f}s")
    await task


async def kill_eventsvc_embedded(world: World) -> None:
    """kill -9 of eventsvc with its embedded NATS while triggers run, then a restart.

    Restarted with the same command; its nats-server child dies with it (it did not, once:
    the next start then ran a second server on the same store)."""
    svc, kids = await world.embedded()
    task, at = await world.load_a_third([svc.webhook_url], fired=10)
    fired = world.receiver.count()
    await svc.kill9()
    for _ in range(20):  # the parent-death signal reaches the child a moment later
        alive = [k for k in kids if cmdline(k)]
        if not alive:
            break
        await asyncio.sleep(0.1)
    world.note(f"kill -9 eventsvc at {at} accepted, {fired} trigger requests received; "
               f"its nats-server {kids} {'still runs' if alive else 'is gone'}")  # fmt: skip
    await asyncio.sleep(world.opts.outage)
    await svc.start()
    took = await svc.ready()
    now = world.remember_children(svc)
    url = (Path(svc.argv[svc.argv.index("--data-dir") + 1]) / "nats" / "url").read_text().strip()
    world.note(f"eventsvc restarted, ready in {took:.1f}s, with nats-server {now} at {url}")
    if alive:
        world.note(f"two nats-servers {alive + now} now share one store directory")
    if world.monitor is not None and world.monitor.url != url:  # read what the new one uses
        await world.monitor.close()
        await world.watch(url)
    await task


async def kill_replica(world: World) -> None:
    """Two gateway+sensors replicas on one nats-server; kill -9 one mid-trigger."""
    world.sensors()
    _, url = await world.nats()
    replicas = [world.svc(n, nats_url=url, components="gateway,sensors") for n in ("a", "b")]
    for r in replicas:
        await r.start()
    for r in replicas:
        await r.ready()
    await world.watch(url)
    task, at = await world.load_a_third([r.webhook_url for r in replicas], fired=10)
    await replicas[0].kill9()
    world.note(f"kill -9 replica a at {at} accepted; b carries on alone (its deliveries "
               "are posted again to b)")  # fmt: skip
    await task


async def cluster(world: World) -> None:
    """3-node cluster: kill -9 of the EVENTS leader, later of the RESULTS leader.

    The nodes run deploy/nats/nats-server.conf as tests/deploy/test_nats_cluster.py does;
    streams keep 3 copies. The EVENTS leader is restarted after `--outage`, the RESULTS
    leader stays down. A second sensor follows the first one's results."""
    from tests.deploy.conftest import NATS_CONF
    from tests.deploy.test_nats_cluster import PASSWORD, Node, node_conf, start_node, wait_healthy

    world.sensors(follower=True)
    nodes = [Node(f"nats-{i}", world.dir / f"nats-{i}") for i in range(3)]
    text = NATS_CONF.read_text()
    procs: dict[str, Proc] = {}
    for node in nodes:  # as the test starts them; a restart repeats the command and environment
        try:
            await start_node(node, node_conf(text, node, nodes))
        finally:
            proc = procs[node.name] = Proc(node.name, [], world.dir / f"{node.name}.out")
            proc.proc, proc.starts = node.proc, 1
            world.procs.append(proc)
        proc.argv, proc.env = cmdline(proc.pid), environ_of(proc.pid)
        if not proc.argv:
            raise RuntimeError(f"{node.name} exited at once; see {node.store / 'server.log'}")

    def live() -> list[Node]:
        for node in nodes:
            node.proc = procs[node.name].proc if procs[node.name].alive else None
        return [n for n in nodes if n.proc is not None]

    def dead() -> set[str]:
        return {n.name for n in nodes if not procs[n.name].alive}

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        await wait_healthy(http, live(), within=60)
        url = ",".join(n.url for n in nodes)
        svc = world.svc("eventsvc", nats_url=url, env={
            "EVENTSVC_NATS_USER": "eventsvc", "EVENTSVC_NATS_PASSWORD": PASSWORD,
            "EVENTSVC_STREAM_REPLICAS": "3"})  # fmt: skip
        await svc.start()
        await svc.ready(120)
        await world.watch(url, "eventsvc", PASSWORD)
        # spread over 20 s at least, so that the second kill too lands within the burst
        task = world.start_load([svc.webhook_url], rate=min(world.opts.rate, world.opts.events / 20))
        assert world.load is not None
        for stream, fraction, restart in ((EVENTS, 1 / 3, True), (RESULTS, 2 / 3, False)):
            await world.accepted_at_least(fraction)
            leader = await leader_of(http, live(), stream, exclude=dead(), timeout=60)
            at = len(world.load.accepted)
            await procs[leader].kill9()
            world.note(f"kill -9 {leader}, leader of {stream}, at {at} accepted"
                       + (" (after the burst)" if world.load.done else ""))  # fmt: skip
            if restart:
                await asyncio.sleep(world.opts.outage)
                await procs[leader].start()
                started = time.monotonic()
                await wait_healthy(http, live(), within=120)
                world.note(f"{leader} restarted, cluster healthy in {time.monotonic() - started:.1f}s")
        await task
        leaders = {s: await leader_of(http, live(), s, exclude=dead()) for s in (EVENTS, RESULTS)}
        world.note(f"after the burst: leaders {leaders}, {len(live())} nodes up")


async def leader_of(http: aiohttp.ClientSession, nodes: list[Any], stream: str,
                    exclude: set[str], timeout: float = 60) -> str:  # fmt: skip
    """The node leading `stream` as /jsz of the live `nodes` says, waiting for an election
    (a leader in `exclude`, a dead node a survivor has not yet given up, does not count)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in nodes:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with http.get(f"{node.monitor}/jsz?accounts=true&streams=true") as r:
                    jsz = await r.json(content_type=None)
                for account in jsz.get("account_details") or []:
                    for detail in account.get("stream_detail") or []:
                        leader = (detail.get("cluster") or {}).get("leader")
                        if detail.get("name") == stream and leader and leader not in exclude:
                            return str(leader)
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no leader of {stream} in {timeout:g}s")


async def split_start(world: World) -> None:
    """A gateway-only process takes traffic; the sensors-only one starts mid-burst.

    The production layout (external NATS, `--components gateway` and `sensors,cron`)."""
    world.sensors()
    _, url = await world.nats()
    gateway = world.svc("gateway", nats_url=url, components="gateway")
    await gateway.start()
    await gateway.ready()
    await world.watch(url)
    task = world.start_load([gateway.webhook_url])
    await world.accepted_at_least(1 / 2)
    assert world.load is not None
    sensors = world.svc("sensors", nats_url=url, components="sensors,cron")
    world.note(f"sensors process started at {len(world.load.accepted)} accepted")
    await sensors.start()
    took = await sensors.ready()
    world.note(f"sensors process ready in {took:.1f}s")
    await task


async def start_under_traffic(world: World) -> None:
    """Webhooks posted while eventsvc starts (once each, no redelivery): every 2xx fires."""
    world.sensors()
    nats_port = free_port()
    svc = world.svc("eventsvc", nats_port=nats_port)
    # spread over 12 s at least: the start (interpreter, embedded NATS, streams) takes seconds
    rate = min(world.opts.rate, world.opts.events / 12.0)
    task = world.start_load([svc.webhook_url], redeliver=False, rate=rate)
    await asyncio.sleep(0.2)
    await svc.start()
    took = await svc.ready()
    world.remember_children(svc)
    assert world.load is not None
    world.note(f"eventsvc ready {took:.1f}s after start, {len(world.load.sent)} posted by then")
    await world.watch(f"nats://127.0.0.1:{nats_port}")
    await task


async def sigterm(world: World) -> None:
    """SIGTERM of eventsvc (embedded NATS) mid-burst, then a restart."""
    svc, _ = await world.embedded()
    task, at = await world.load_a_third([svc.webhook_url], fired=10)
    began = time.monotonic()
    code = await svc.terminate(60)
    world.note(f"SIGTERM at {at} accepted: exit {code} after {time.monotonic() - began:.1f}s")
    await svc.start()
    took = await svc.ready()
    world.remember_children(svc)
    world.note(f"restarted, ready in {took:.1f}s")
    await task


async def large(world: World) -> None:
    """2, 9 and 20 MB webhooks (bodies over NATS' max_payload: claim check)."""
    svc, _ = await world.embedded()
    sizes = [s * MB for s in (2, 9, 20) for _ in range(world.opts.large)]

    def body(i: int) -> bytes:
        return large_body(i, sizes[i])

    task = world.start_load([svc.webhook_url], count=len(sizes), body=body, concurrency=3, rate=0)
    assert world.load is not None
    world.size_of = {world.load.ids[i]: s for i, s in enumerate(sizes)}
    await task


SCENARIOS: dict[str, Callable[[World], Awaitable[None]]] = {
    "nats-kill-embedded": kill_embedded_nats,
    "nats-kill-external": kill_external_nats,
    "eventsvc-kill": kill_eventsvc,
    "eventsvc-kill-embedded": kill_eventsvc_embedded,
    "replica-kill": kill_replica,
    "cluster": cluster,
    "split-start": split_start,
    "start-under-traffic": start_under_traffic,
    "sigterm": sigterm,
    "large": large,
}


async def run_scenario(name: str, opts: Options, root: Path) -> Row:
    world = World(name, opts, root)
    since = time.monotonic()
    log_line(f"{name}: {(SCENARIOS[name].__doc__ or '').splitlines()[0]}")
    try:
        await world.start_receiver()
        await SCENARIOS[name](world)
        row = await settle(world, since)
    except Exception as e:  # the scenario could not run: say so, with the logs' tails
        row = Row(name, error=f"{type(e).__name__}: {e}", notes=world.notes)
        row.problems += [p.tail() for p in world.procs if isinstance(p, Svc)]
        if world.load is not None:
            row.sent, row.accepted = len(world.load.sent), len(world.load.accepted)
        row.seconds = time.monotonic() - since
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(world.close(), 120)
    state = "FAILED" if row.failed else "ok"
    log_line(f"{name}: {state} in {row.seconds:.0f}s")
    for text in row.notes:
        print(f"      {text}")
    for text in row.problems[:SHOWN]:
        print(f"    ! {text}")
    if len(row.problems) > SHOWN:
        print(f"    ! ... and {len(row.problems) - SHOWN} more")
    return row


COLUMNS = ("scenario", "sent", "accepted", "once", "again", "other key", "lost", "missing", "DLQ",
           "followed", "f.again", "f.lost", "pause", "time")  # fmt: skip


def table(rows: list[Row]) -> str:
    def cell(v: int | None) -> str:
        return "-" if v is None else str(v)

    lines = [[r.name, str(r.sent), str(r.accepted), str(r.once), str(r.again), str(r.other_key),
              str(r.lost), str(r.missing), str(r.dlq), cell(r.followed), cell(r.f_again),
              cell(r.f_lost), f"{r.pause:.1f}s", f"{r.seconds:.0f}s" + (" ERROR" if r.error else "")]
             for r in rows]  # fmt: skip
    widths = [max(len(c), *(len(x[i]) for x in lines)) for i, c in enumerate(COLUMNS)]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(COLUMNS, widths, strict=True)))]
    for x in lines:
        out.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths, strict=True))))
    return "\n".join(out)


def verdict(rows: list[Row]) -> str:
    bad = [r for r in rows if r.failed]
    if not bad:
        return (f"verdict: OK: {len(rows)} scenario(s), no accepted event lost, no result "
                "missing, every repeated trigger request carried its first key")
    why = []
    for r in bad:
        parts = [f"{k} {v}" for k, v in (("lost", r.lost), ("missing", r.missing),
                                          ("other key", r.other_key), ("f.lost", r.f_lost or 0)) if v]  # fmt: skip
        if r.error:
            parts.append(f"error ({r.error.splitlines()[0][:80]})")
        if r.problems and not parts:
            parts.append(r.problems[0][:100])
        why.append(f"{r.name}: {', '.join(parts)}")
    return "verdict: FAILED: " + "; ".join(why)


async def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, of: {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--events", type=int, default=1000, help="webhooks per scenario (default 1000)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections (default 16)")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="webhooks started per second, so faults land mid-burst (default 200)")
    parser.add_argument("--ack-wait", default="10s",
                        help="sensors.ackWait of eventsvc: how soon a killed process's work comes back (default 10s)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds to wait, after the burst, for every event to settle (default 180)")
    parser.add_argument("--delay", type=float, default=0.02,
                        help="seconds the receiver takes to answer, so runs are in flight (default 0.02)")
    parser.add_argument("--outage", type=float, default=2.0, help="seconds a killed process stays down (default 2)")
    parser.add_argument("--redeliver-for", type=float, default=60.0,
                        help="seconds a refused delivery is posted again with its id (default 60)")
    parser.add_argument("--large", type=int, default=3, help="webhooks of each large size (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the logs and stores (kept anyway on failure)")
    parser.add_argument("--verbose", "-v", action="store_true", help="print notes as they happen")
    args = parser.parse_args()
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    opts = Options(args.events, args.concurrency, args.rate, args.ack_wait, args.timeout,
                   args.delay, args.outage, args.redeliver_for, args.large, args.verbose)  # fmt: skip
    logs.configure("console", "critical")  # the harness's own bus client stays quiet
    root = Path(tempfile.mkdtemp(prefix="eventsvc-faults-"))
    print(f"bench.faults: {', '.join(names)}; {args.events} webhooks at {args.rate:g}/s over "
          f"{args.concurrency} connections, ackWait {args.ack_wait}; logs under {root}", flush=True)
    rows = [await run_scenario(name, opts, root) for name in names]
    print()
    print(table(rows))
    print(verdict(rows))
    failed = any(r.failed for r in rows)
    if failed or args.keep:
        print(f"logs and stores kept under {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
