"""The embedded nats-server does not outlive eventsvc: after a `kill -9` of `eventsvc run`
its server goes too, so the next start does not find a second server on its store."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


async def test_kill_9_of_eventsvc_takes_its_embedded_server_along(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSVC_")}
    env.update(EVENTSVC_LOG_FORMAT="json", EVENTSVC_GITHUB_WEBHOOK_SECRET="s")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventsvc", "run", "--components", "gateway", "--port", "0",
        "--nats-port", "0", "--data-dir", str(tmp_path / "data"), "--sensors", str(tmp_path),
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    server_pid = 0
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while not server_pid:
                line = await proc.stdout.readline()
                assert line, "eventsvc exited before starting its server"
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("event") == "embedded nats started":
                    server_pid = int(entry["pid"])
        assert _alive(server_pid)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        for _ in range(150):  # 15 s
            if not _alive(server_pid):
                break
            await asyncio.sleep(0.1)
        assert not _alive(server_pid), "the embedded nats-server outlived eventsvc"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if server_pid and _alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)
