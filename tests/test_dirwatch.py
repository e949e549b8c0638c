"""One watcher of the sensors directory: every subscriber hears each change once; one that
fails or is not settled is asked again at the next poll, and holds up no other."""

from __future__ import annotations

import os
from pathlib import Path

from eventsvc.dirwatch import DirectoryWatcher


def touch(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = path.stat().st_mtime + 1  # a distinct mtime even on coarse file systems
    os.utime(path, (stamp, stamp))


async def test_subscribers_hear_each_change_and_the_unsettled_are_asked_again(
    tmp_path: Path,
) -> None:
    watcher = DirectoryWatcher(tmp_path, interval=3600)  # polled by hand below
    calls: list[str] = []
    answers = {"flaky": [False, True], "broken": [RuntimeError("boom"), True]}

    def subscriber(name: str) -> object:
        async def reload() -> bool:
            calls.append(name)
            if name in answers:
                answer = answers[name].pop(0)
                if isinstance(answer, Exception):
                    raise answer
                return bool(answer)
            return True

        return reload

    for name in ("sensors", "flaky", "broken", "steady"):
        watcher.subscribe(name, subscriber(name))  # type: ignore[arg-type]
    watcher.start()
    try:
        assert not await watcher.poll()  # nothing changed since the baseline
        assert calls == []
        touch(tmp_path / "a.yaml", "kind: Sensor")
        assert await watcher.poll()
        assert calls == ["sensors", "flaky", "broken", "steady"]  # a failure holds none up
        calls.clear()
        assert not await watcher.poll()  # no change: only the two not settled, again
        assert calls == ["flaky", "broken"]
        calls.clear()
        assert not await watcher.poll()
        assert calls == []
        (tmp_path / "a.yaml").unlink()  # a removed file is a change too
        assert await watcher.poll()
        assert calls == ["sensors", "flaky", "broken", "steady"]
    finally:
        await watcher.stop()
