"""The command line as a user runs it: exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from eventsvc.bus import Bus
from eventsvc.bus.embedded import EmbeddedNats

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventsvc", *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=60)  # fmt: skip


def test_lint_clean_examples_exit_0() -> None:
    result = run("lint", "sensors/")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problem(s)" in result.stderr


def test_lint_findings_exit_1_with_file_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: eventsvc.dev/v1alpha1\nkind: Sensor\nmetadata: {name: x}\n"
                   "spec:\n  dependencies: [{name: a}]\n  triggers: [{template: {name: t, lgo: {}}}]\n")  # fmt: skip
    result = run("lint", str(bad))
    assert result.returncode == 1
    assert f"{bad}:6: spec.triggers[0].template.lgo: unknown field; did you mean 'log'?" in result.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("lint").returncode == 2
    assert run("lint", str(tmp_path)).returncode == 2  # no YAML files there
    result = run("run", "--components", "gateway,bogus")
    assert result.returncode == 2
    assert "Choose from gateway, sensors, cron" in result.stderr


def test_run_without_secret_refuses_and_says_how_to_fix(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = run("run", "--components", "gateway", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 2
    assert "EVENTSVC_GITHUB_WEBHOOK_SECRET" in result.stderr
    assert "--insecure-no-signature" in result.stderr


@pytest.mark.usefixtures("nats_server")
async def test_send_publishes_a_cloudevent(nats_server: EmbeddedNats, bus: Bus) -> None:
    import asyncio

    from eventsvc import events

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventsvc", "send", "--type", "com.example.image.pushed",
        "--source", "https://ci.example", "--id", "cli-1", "--data", '{"tag": "1.2.3"}',
        "--nats-url", nats_server.url, cwd=REPO, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert b"sent cli-1 to events.cli.com.example.image.pushed" in out
    [msg] = await bus.stream_messages("EVENTS", "events.cli.>")
    assert events.from_nats(msg.headers, msg.data).get_data() == {"tag": "1.2.3"}


def test_send_to_unreachable_bus_says_so() -> None:
    result = run("send", "--type", "t", "--source", "s", "--nats-url", "nats://127.0.0.1:1")
    assert result.returncode == 1
    assert "cannot connect to NATS at nats://127.0.0.1:1" in result.stderr


@pytest.mark.parametrize(("data", "message"), [
    ("@/nonexistent/event.json", "cannot read '/nonexistent/event.json'"),
    ('{"tag": 1.2.3}', "--data is not valid JSON"),
])  # fmt: skip
def test_send_refuses_unreadable_or_broken_data_before_connecting(data: str, message: str) -> None:
    # exit 2 and no traceback; nothing is sent (the bus URL is unreachable on purpose)
    result = run("send", "--type", "t", "--source", "s", "--data", data,
                 "--nats-url", "nats://127.0.0.1:1")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_nightly_cleanup_example_sweeps_on_its_tick(tmp_path: Path) -> None:
    import json

    tick = {"specversion": "1.0", "id": "nightly-cleanup:2026-11-28T02:00:00Z",
            "type": "dev.eventsvc.schedule.tick", "source": "eventsvc://schedules/nightly-cleanup",
            "subject": "nightly-cleanup", "time": "2026-11-28T02:00:00Z",
            "data": {"scheduledTime": "2026-11-28T02:00:00Z", "firedTime": "2026-11-28T02:00:00Z",
                     "data": {}}}  # fmt: skip
    path = tmp_path / "tick.json"
    path.write_text(json.dumps(tick))
    result = run("test", "sensors/nightly-cleanup.yaml", "--event", str(path),
                 "--nats-subject", "events.cron.nightly-cleanup", "--expect-fire", "sweep-previews")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"mode": "sweep"' in result.stdout
    tick["source"] = "eventsvc://schedules/other"
    path.write_text(json.dumps(tick))
    result = run("test", "sensors/nightly-cleanup.yaml", "--event", str(path),
                 "--nats-subject", "events.cron.nightly-cleanup", "--expect-fire", "sweep-previews")  # fmt: skip
    assert result.returncode == 1


def test_output_cut_short_by_the_reader_is_no_traceback() -> None:
    # as in `eventsvc test ... | head -3`: the pipe closes before the output is written
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventsvc", "schema"], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_run_on_a_taken_http_port_says_so(tmp_path: Path) -> None:
    import os
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "EVENTSVC_GITHUB_WEBHOOK_SECRET": "s"}
        result = run("run", "--host", "127.0.0.1", "--port", str(port), "--nats-port", "0",
                     "--data-dir", str(tmp_path), "--components", "gateway",
                     "--log-format", "json", env=env)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port} (" in result.stderr
    assert "choose another port with --port or EVENTSVC_HTTP_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_an_unwritable_data_dir_says_so(tmp_path: Path) -> None:
    import os

    blocker = tmp_path / "file"
    blocker.write_text("")  # a file where the data directory should be made
    env = {**os.environ, "EVENTSVC_GITHUB_WEBHOOK_SECRET": "s"}
    result = run("run", "--host", "127.0.0.1", "--port", "0", "--nats-port", "0",
                 "--data-dir", str(blocker / "data"), "--components", "gateway",
                 "--log-format", "json", env=env)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"the embedded NATS store '{blocker}/data/nats' cannot be created (" in result.stderr
    assert "point --data-dir or EVENTSVC_DATA_DIR at a writable directory" in result.stderr
    assert "Traceback" not in result.stderr


async def test_send_finds_the_embedded_server_of_a_local_run(tmp_path: Path) -> None:
    """`eventsvc run` may have moved its embedded NATS to a free port: send finds it."""
    import asyncio
    import os

    from eventsvc import bus as bus_mod
    from eventsvc.bus.embedded import local_url
    from eventsvc.config import load_config

    server = EmbeddedNats(tmp_path / "data" / "nats", port=0)
    await server.start()
    try:
        assert local_url(tmp_path / "data") == server.url
        config = load_config(environ={})
        bus = await bus_mod.connect(server.url, config)
        await bus.ensure_streams(bus_mod.default_streams(config))
        env = {k: v for k, v in os.environ.items() if k != "EVENTSVC_NATS_URL"}
        env["EVENTSVC_DATA_DIR"] = str(tmp_path / "data")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventsvc", "send", "--type", "t", "--source", "s", "--id", "x1",
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert len(await bus.stream_messages("EVENTS", "events.cli.>")) == 1
        await bus.close()
    finally:
        await server.stop()
    assert local_url(tmp_path / "data") is None  # gone with the server


async def test_run_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    """No --host, no http.host, no EVENTSVC_HTTP_HOST: 127.0.0.1, where /events is open."""
    import asyncio
    import json
    import os
    import signal

    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTSVC_")}
    env["EVENTSVC_GITHUB_WEBHOOK_SECRET"] = "s"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventsvc", "run", "--components", "gateway", "--port", "0",
        "--nats-port", "0", "--data-dir", str(tmp_path), "--log-format", "json",
        cwd=REPO, env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen: dict[str, dict[str, object]] = {}
    try:
        async with asyncio.timeout(30):
            while "http listening" not in seen:
                line = await proc.stderr.readline()
                assert line, f"eventsvc run ended before listening: {seen}"
                if line.startswith(b"{"):
                    record = json.loads(line)
                    seen[record["event"]] = record
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()
    assert seen["http listening"]["host"] == "127.0.0.1"
    assert seen["starting"]["config"]["http_host"] == "127.0.0.1"  # type: ignore[index]
    assert any(e.startswith("POST /events accepts events without a token") for e in seen)


def test_run_help_names_the_loopback_default() -> None:
    result = run("run", "--help")
    assert "default 127.0.0.1, loopback only" in " ".join(result.stdout.split())
