"""No secret in a log line or a printed message: `eventsvc run` with every secret set
(webhook secret, NATS password in the URL, GitHub token, /events token), through a NATS
outage and back, logs none of them; URLs are shown with `<redacted>` for the password."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import structlog

from eventsvc import events, logs
from eventsvc.bus.embedded import EmbeddedNats, free_port
from eventsvc.config import load_config
from tests.conftest import github_headers, log_sensor, pr_payload, sign, write_sensor

REPO = Path(__file__).resolve().parents[1]
WEBHOOK_SECRET = "whsec-3b9f0c1e7a5d4c28"
NATS_PASSWORD = "natspw-6d1e9a7f2c4b8035"
GITHUB_TOKEN = "ghp_5f2a9c0d7e1b4a6c8d3e"
EVENTS_TOKEN = "evtok-8c4e1a0b6d2f9e73"
UI_TOKEN = "uitok-1f6b3e9d0c7a2e58"
UI_WRITE_TOKEN = "uiwtok-9a0e4c2b7d1f6e35"
SECRETS = (WEBHOOK_SECRET, NATS_PASSWORD, GITHUB_TOKEN, EVENTS_TOKEN, UI_TOKEN, UI_WRITE_TOKEN)


def test_redact_url() -> None:
    assert logs.redact_url("nats://app:s3cret@nats:4222") == "nats://app:<redacted>@nats:4222"
    assert logs.redact_url("nats://t0ken@nats:4222") == "nats://<redacted>@nats:4222"
    assert logs.redact_url("nats://a:x@h1:1,nats://h2:2, tls://b:y@h3") == (
        "nats://a:<redacted>@h1:1,nats://h2:2, tls://b:<redacted>@h3"
    )
    assert logs.redact_url("cannot connect to nats://a:p,w%40d@h (x)") == (
        "cannot connect to nats://a:<redacted>@h (x)"
    )
    for plain in ("nats://127.0.0.1:4222", "dev@example.com", "https://x.example/a@b", ""):
        assert logs.redact_url(plain) == plain


def test_config_redacted_hides_the_password_in_the_url() -> None:
    config = load_config(environ={"EVENTSVC_NATS_URL": f"nats://app:{NATS_PASSWORD}@nats:4222"})
    assert config.redacted()["nats_url"] == "nats://app:<redacted>@nats:4222"
    assert NATS_PASSWORD not in json.dumps(config.redacted(), default=str)


def test_every_logged_string_is_redacted() -> None:
    buffer = io.StringIO()
    real = sys.stderr
    sys.stderr = buffer
    try:
        logs.configure("json", "debug")
        logs.get("t").warning("x", error=f"failed nats://u:{NATS_PASSWORD}@h",
                              nested={"urls": [f"nats://{NATS_PASSWORD}@h"]})  # fmt: skip
    finally:
        sys.stderr = real
        structlog.reset_defaults()
    line = json.loads(buffer.getvalue())
    assert NATS_PASSWORD not in buffer.getvalue()
    assert line["error"] == "failed nats://u:<redacted>@h"
    assert line["nested"] == {"urls": ["nats://<redacted>@h"]}


def test_send_prints_the_url_without_its_password() -> None:
    url = f"nats://app:{NATS_PASSWORD}@127.0.0.1:{free_port()}"
    result = subprocess.run([sys.executable, "-m", "eventsvc", "send", "--type", "t",
                             "--source", "s", "--nats-url", url],
                            capture_output=True, text=True, cwd=REPO, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert "cannot connect to NATS at nats://app:<redacted>@127.0.0.1:" in result.stderr
    assert NATS_PASSWORD not in result.stdout + result.stderr


async def _ready(http: aiohttp.ClientSession, url: str, want: int = 200) -> None:
    for _ in range(300):
        try:
            async with http.get(url + "/readyz") as r:
                if r.status == want:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz never answered {want}")


async def test_run_with_every_secret_logs_none_of_them(tmp_path: Path) -> None:
    nats_port, port = free_port(), free_port()
    auth = ("--user", "app", "--pass", NATS_PASSWORD)  # the server requires the password
    nats = EmbeddedNats(tmp_path / "nats", port=nats_port, extra_args=auth)
    await nats.start()
    sensors = tmp_path / "sensors"
    write_sensor(sensors, "s", log_sensor("s"))
    env = {**os.environ, "EVENTSVC_GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET,
           "EVENTSVC_GITHUB_TOKEN": GITHUB_TOKEN, "EVENTSVC_EVENTS_TOKEN": EVENTS_TOKEN,
           "EVENTSVC_UI_TOKEN": UI_TOKEN, "EVENTSVC_UI_WRITE_TOKEN": UI_WRITE_TOKEN,
           "EVENTSVC_LOG_FORMAT": "json", "EVENTSVC_LOG_LEVEL": "debug"}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "eventsvc", "run", "--port", str(port),
        "--nats-url", f"nats://app:{NATS_PASSWORD}@127.0.0.1:{nats_port}",
        "--data-dir", str(tmp_path / "data"), "--sensors", str(sensors), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await _ready(http, base)
            body = json.dumps(pr_payload()).encode()
            headers = github_headers("pull_request", body,
                                     **{"X-Hub-Signature-256": sign(body, WEBHOOK_SECRET)})
            async with http.post(base + "/webhooks/github", data=body, headers=headers) as r:
                assert r.status in (200, 202), await r.text()
            ce = {"specversion": "1.0", "id": "ci-1", "type": "com.example.ci.done",
                  "source": "https://ci.example", "data": {"n": 1}}  # fmt: skip
            for token, status in ((EVENTS_TOKEN, 202), (EVENTS_TOKEN + "x", 401)):
                async with http.post(base + "/events", data=json.dumps(ce), headers={
                    "Content-Type": events.STRUCTURED_CONTENT_TYPE,
                    "Authorization": f"Bearer {token}",
                }) as r:  # fmt: skip
                    assert r.status == status, await r.text()
            # the console: read with the read token, a write refused to it, a wrong token,
            # a write with the write token (discarding nothing: a 4xx with a reason)
            for method, path, token, status in (
                ("GET", "/api/v1/events", UI_TOKEN, 200),
                ("POST", "/api/v1/dlq/discard", UI_TOKEN, 403),
                ("GET", "/api/v1/events", UI_TOKEN + "x", 401),
                ("POST", "/api/v1/dlq/discard", UI_WRITE_TOKEN, 400),
            ):
                async with http.request(method, base + path, json={"ids": []} if method ==
                                        "POST" else None,
                                        headers={"Authorization": f"Bearer {token}"}) as r:
                    assert r.status == status, (path, token[:6], await r.text())
            await nats.stop()  # an outage: "nats disconnected", client errors, then back
            await _ready(http, base, want=503)
            nats = EmbeddedNats(tmp_path / "nats", port=nats_port, extra_args=auth)
            await nats.start()
            await _ready(http, base)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await nats.stop()
    out = err.decode()
    assert proc.returncode == 0, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    seen = {line["event"] for line in lines}
    for event in ("starting", "eventsvc ready", "nats disconnected", "nats reconnected"):
        assert event in seen, sorted(seen)
    assert f"nats://app:<redacted>@127.0.0.1:{nats_port}" in out
    for secret in SECRETS:
        assert secret not in out, [line for line in out.splitlines() if secret in line]
