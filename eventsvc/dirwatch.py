"""One watcher of the sensors directory for every part that reads it: the engine (Sensor
files), the cron gateway (Schedules) and the watch gateway (Watches).

It polls file names, mtimes and sizes (`yamldoc.file_stamps`, in a thread): polling keeps
this dependency-free and works on every volume type, including Kubernetes ConfigMap
mounts, which swap a symlink. When anything changed, each subscriber's `reload` runs in
turn; one that fails (or answers False: "not settled, ask again") is asked again at the
next poll even if nothing changed, and the others are not held up by it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from eventsvc import logs, yamldoc

log = logs.get("eventsvc.reload")
Reload = Callable[[], Awaitable[bool]]
"""Re-read the directory; True when settled (an invalid file that was logged is settled),
False to be asked again at the next poll."""


class DirectoryWatcher:
    def __init__(self, directory: str | Path, interval: float = 1.0) -> None:
        self.directory = Path(directory)
        self.interval = interval
        self._subscribers: dict[str, Reload] = {}
        self._unsettled: set[str] = set()
        self._seen: dict[Path, yamldoc.Stamp] | None = None
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, name: str, reload: Reload) -> None:
        """`reload` runs after every change from now on (the first poll sets the baseline
        when `start` has not)."""
        self._subscribers[name] = reload

    def start(self) -> None:
        """Take the directory as it is now as the baseline, and poll from now on."""
        if self._seen is None:
            self._seen = yamldoc.file_stamps(self.directory)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="directory-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def poll(self) -> bool:
        """One pass; True when the directory had changed."""
        stamps = await asyncio.to_thread(yamldoc.file_stamps, self.directory)
        changed = stamps != self._seen
        self._seen = stamps
        for name, reload in list(self._subscribers.items()):
            if not changed and name not in self._unsettled:
                continue
            try:
                settled = await reload()
            except Exception as e:  # keep watching: the next change may fix it
                log.error("reload failed; the running set is kept", part=name,
                          error=f"{type(e).__name__}: {e}")  # fmt: skip
                settled = False
            if settled:
                self._unsettled.discard(name)
            else:
                self._unsettled.add(name)
        return changed

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.poll()


def follow(
    watcher: DirectoryWatcher | None, directory: Path, interval: float, name: str,
    reload: Reload,
) -> DirectoryWatcher | None:
    """Subscribe `reload` to the service's `watcher`, or, for a part running on its own
    (tests, a single gateway), to a started watcher of its own: returned, for `stop`."""
    if watcher is not None:
        watcher.subscribe(name, reload)
        return None
    own = DirectoryWatcher(directory, interval)
    own.subscribe(name, reload)
    own.start()
    return own
