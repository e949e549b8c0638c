"""Sensors delivered as a ConfigMap volume: a merge that changes the ConfigMap reaches
the running service through the kubelet's atomic update and the hot reload."""

from __future__ import annotations

import itertools
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from eventsvc.sensors.engine import Engine
from tests.conftest import log_sensor
from tests.sensors.conftest import eventually


class ConfigMapVolume:
    """A directory laid out as the kubelet mounts a ConfigMap: the files live in
    `..<timestamp>/`, `..data` points there, and each key is a link through `..data`.
    An update writes a new timestamped directory and renames a new `..data` link over
    the old one, so readers see the old set or the new set, never a mix."""

    _stamps = itertools.count(1)

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def write(self, data: Mapping[str, str]) -> None:
        stamped = self.root / f"..2025_01_01_00_00_{next(self._stamps):02d}.000000001"
        stamped.mkdir()
        for key, text in data.items():
            (stamped / key).write_text(text)
        old = os.readlink(self.root / "..data") if (self.root / "..data").is_symlink() else None
        (self.root / "..data_tmp").symlink_to(stamped.name)
        os.replace(self.root / "..data_tmp", self.root / "..data")
        for key in data:
            if not (self.root / key).is_symlink():
                (self.root / key).symlink_to(f"..data/{key}")
        for link in self.root.iterdir():
            if not link.name.startswith(".") and link.name not in data:
                link.unlink()
        if old:
            for f in (self.root / old).iterdir():
                f.unlink()
            (self.root / old).rmdir()


sensor = log_sensor


async def test_configmap_update_reaches_the_running_service(
    tmp_path: Path, start_service: Callable[..., Awaitable[Any]]
) -> None:
    volume = ConfigMapVolume(tmp_path / "sensors")
    volume.write({"a.yaml": sensor("a")})
    svc = await start_service(components=("sensors",), nats_port=0)
    engine: Engine = svc.service.state.engine
    assert sorted(engine.workers) == ["a"], "each sensor once, not again under ..data"

    async def names(expected: list[str]) -> bool:
        return sorted(engine.workers) == expected

    # a merge adds a sensor and changes another: one atomic swap
    before = engine.workers["a"]
    volume.write({"a.yaml": sensor("a", "events.other.>"), "b.yaml": sensor("b")})
    await eventually(lambda: names(["a", "b"]), "the added sensor to start")
    await eventually(lambda: _changed(engine, "a", before), "the changed sensor to restart")
    assert engine.workers["a"].sensor.subjects == ("events.other.>",)

    # a merge removes a sensor file
    volume.write({"b.yaml": sensor("b")})
    await eventually(lambda: names(["b"]), "the removed sensor to stop")
    assert svc.service.state.readiness(svc.service.config)["sensors_loaded"]


async def _changed(engine: Engine, name: str, before: object) -> bool:
    current = engine.workers.get(name)
    return current is not None and current is not before
