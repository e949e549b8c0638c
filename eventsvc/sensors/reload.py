"""Hot reload of Sensor files: on each change the directory watcher reports
(`eventsvc/dirwatch.py`), reload the files that changed and reconcile the engine's workers.

Each file is judged on its own: a file that fails lint is rejected with its
`file:line` problems logged, and the sensors it declared before keep running as
they were. A sensor name declared by two files is rejected in the newer file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from eventsvc import loader, logs, yamldoc
from eventsvc.errors import SpecProblem
from eventsvc.sensors.engine import Engine
from eventsvc.sensors.model import SensorSpec

log = logs.get("eventsvc.sensors.reload")
Stamp = yamldoc.Stamp
_stamps = yamldoc.file_stamps


class SensorReloader:
    """What runs, by file; `check()` does one pass (tests call it directly)."""

    def __init__(self, engine: Engine, directory: str | Path) -> None:
        self.engine = engine
        self.directory = Path(directory)
        self.stamps: dict[Path, Stamp] = {}
        self.good: dict[Path, list[SensorSpec]] = {}  # the running version, by file
        self.problems: dict[Path, list[SpecProblem]] = {}  # the last rejected change, by file
        self.generation = 0  # bumped on every pass that changed something

    def prime(self, sensors: list[SensorSpec]) -> None:
        """Take what the service started with as the running version."""
        self.stamps = _stamps(self.directory)
        self.good = {}
        for spec in sensors:
            self.good.setdefault(Path(spec.file), []).append(spec)

    async def reload(self) -> bool:
        """The directory watcher's callback: one pass, always settled (a rejected file is
        logged and waits for its next change)."""
        await self.check()
        return True

    async def check(self) -> bool:
        """One pass; True when the engine was reconciled.

        Stat and parse in a thread: reading YAML and compiling expressions must not hold
        up the event loop (health checks, deliveries) while a file is being judged.
        """
        stamps = await asyncio.to_thread(_stamps, self.directory)
        if stamps == self.stamps:
            return False
        changed = [p for p, s in stamps.items() if self.stamps.get(p) != s]
        removed = [p for p in self.stamps if p not in stamps]
        self.stamps = stamps
        for path in removed:
            self.good.pop(path, None)
            self.problems.pop(path, None)
            log.info("sensor file removed", file=str(path))
        for path in changed:
            self._judge(path, await asyncio.to_thread(loader.load_paths, [path]))
        await self.engine.apply(self._wanted())
        self.generation += 1
        return True

    def _judge(self, path: Path, loaded: loader.Loaded) -> None:
        for warning in loaded.warnings:
            log.warning("sensor file warning", problem=str(warning))
        problems = list(loaded.problems)
        problems += self._clashes(path, loaded.sensors)
        if problems:
            self.problems[path] = problems
            for p in problems:
                log.error("sensor change rejected; the running version is kept", problem=str(p))
            return
        self.problems.pop(path, None)
        self.good[path] = loaded.sensors
        log.info("sensor file loaded", file=str(path), sensors=[s.name for s in loaded.sensors])

    def _clashes(self, path: Path, sensors: list[SensorSpec]) -> list[SpecProblem]:
        owners = {s.name: f for f, specs_ in self.good.items() if f != path for s in specs_}
        return [
            SpecProblem(
                str(path), 1, "metadata.name",
                f"Sensor {s.name!r} is already declared in {owners[s.name]}",
            )
            for s in sensors
            if s.name in owners
        ]

    def _wanted(self) -> list[SensorSpec]:
        return [s for path in sorted(self.good) for s in self.good[path]]
