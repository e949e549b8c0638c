"""The console's JSON API against a real service and NATS: events with verdicts and
runs, sensors, runs, dead letters replayed and discarded, schedules, the live tail,
and who may read and change things."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventsvc.config import Config
from eventsvc.console.auth import Access, ConsoleAuth
from eventsvc.gateways.common import Rejection
from tests.conftest import RunningService
from tests.console.conftest import PR_SENSOR, eventually, send_pr, send_thing


async def get(session: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, Any]:
    async with session.get(url, **kw) as resp:
        return resp.status, await resp.json()


async def runs_for(session: aiohttp.ClientSession, base: str, event_id: str) -> list[Any]:
    status, body = await get(session, f"{base}/api/v1/runs", params={"event": event_id})
    assert status == 200
    return list(body["runs"])


async def test_an_event_with_its_verdicts_and_runs(console_service: RunningService) -> None:
    base = console_service.url
    async with aiohttp.ClientSession() as session:
        event_id = await send_pr(session, base, title="<script>alert(1)</script>")
        runs = await eventually(lambda: runs_for(session, base, event_id), "the PR's run")
        assert [(r["sensor"], r["trigger"], r["outcome"]) for r in runs] == [
            ("pr-main", "announce", "success")]

        status, listed = await get(session, f"{base}/api/v1/events",
                                   params={"type": "pull_request"})  # fmt: skip
        assert status == 200
        assert [e["id"] for e in listed["events"]] == [event_id]
        assert listed["events"][0]["natsSubject"] == "events.github.pull_request"
        status, none = await get(session, f"{base}/api/v1/events", params={"source": "nowhere"})
        assert none["events"] == []
        seq = listed["events"][0]["seq"]
        status, older = await get(session, f"{base}/api/v1/events", params={"before": str(seq)})
        assert status == 200 and older["events"] == []

        status, detail = await get(session, f"{base}/api/v1/events/{event_id}")
        assert status == 200
        assert detail["attributes"]["type"] == "com.github.pull_request.opened"
        assert detail["data"]["pull_request"]["title"] == "<script>alert(1)</script>"
        verdicts = {v["sensor"]: v for v in detail["verdicts"]}
        assert verdicts["pr-main"]["matched"] is True
        assert verdicts["pr-main"]["matchedDependencies"] == ["pr"]
        release = verdicts["pr-release"]
        assert release["matched"] is False
        (dep,) = release["dependencies"]
        assert dep["failed"].startswith("FAIL  data")
        assert "pull_request.base.ref" in dep["failed"] and "release" in dep["failed"]
        assert verdicts["flaky"]["dependencies"][0]["failed"].startswith("FAIL  eventSubject")
        assert [r["trigger"] for r in detail["runs"]] == ["announce"]

        run_id = detail["runs"][0]["id"]
        status, run = await get(session, f"{base}/api/v1/runs/{run_id}")
        assert status == 200 and run["eventIds"] == [event_id]
        assert [a["id"] for a in run["attempts"]] == [run_id]
        assert run["rendered"] == {"body": {"log": {"message": "PR 7"}}}
        status, missing = await get(session, f"{base}/api/v1/events/no-such-id")
        assert status == 404 and missing["reason"] == "not_found"

        # the dry run of a changed sensor against the stored event: nothing runs
        changed = PR_SENSOR.replace("value: [main]", "value: [main, release]")
        changed = changed.replace("name: pr-main", "name: pr-tried")
        async with session.post(f"{base}/api/v1/try",
                                json={"yaml": changed, "event": event_id}) as resp:  # fmt: skip
            assert resp.status == 200
            tried = await resp.json()
        assert tried["ok"] is True and tried["fires"] == ["announce"]
        assert "dependency pr: MATCHED" in tried["report"]
        async with session.post(f"{base}/api/v1/try",
                                json={"yaml": "kind: Sensor\n", "event": event_id}) as resp:
            tried = await resp.json()
        assert tried["ok"] is False and "try.yaml:" in tried["report"]
        assert len(await runs_for(session, base, event_id)) == 1  # still the one real run


async def test_sensors_runs_and_schedules(console_service: RunningService, tmp_path: Path) -> None:
    base = console_service.url
    async with aiohttp.ClientSession() as session:
        event_id = await send_pr(session, base)
        await eventually(lambda: runs_for(session, base, event_id), "the PR's run")
        status, body = await get(session, f"{base}/api/v1/sensors")
        assert [s["name"] for s in body["sensors"]] == ["flaky", "pr-main", "pr-release"]
        status, sensor = await get(session, f"{base}/api/v1/sensors/pr-main")
        assert status == 200
        assert sensor["status"] == "loaded"
        assert "name: pr-main" in sensor["yaml"]
        assert sensor["triggers"] == [{"name": "announce", "kind": "log", "conditions": None}]
        assert sensor["backlog"] == 0
        assert [r["eventIds"] for r in sensor["runs"]] == [[event_id]]
        status, _ = await get(session, f"{base}/api/v1/sensors/nope")
        assert status == 404

        status, runs = await get(session, f"{base}/api/v1/runs",
                                 params={"sensor": "pr-main", "outcome": "success"})  # fmt: skip
        assert len(runs["runs"]) == 1
        status, runs = await get(session, f"{base}/api/v1/runs", params={"outcome": "failed"})
        assert runs["runs"] == []
        status, runs = await get(session, f"{base}/api/v1/runs",
                                 params={"since": "2999-01-01T00:00:00Z"})  # fmt: skip
        assert runs["runs"] == []
        status, bad = await get(session, f"{base}/api/v1/runs", params={"limit": "x"})
        assert status == 400 and "limit" in bad["error"]

        status, overview = await get(session, f"{base}/api/v1/overview")
        assert status == 200
        assert overview["bus"]["connected"] is True
        names = [s["name"] for s in overview["sensors"]]
        assert names == ["flaky", "pr-main", "pr-release"]
        pr_main = next(s for s in overview["sensors"] if s["name"] == "pr-main")
        assert pr_main["triggers"][0]["runs"] == {"success": 1}
        assert pr_main["listensTo"] == ["events.github.pull_request"]
        assert overview["subjects"] == [{"subject": "events.github.pull_request", "count": 1}]
        assert any(s["source"] == "https://github.com/acme/shop" for s in overview["sources"])

        (tmp_path / "sensors" / "nightly.yaml").write_text(
            "apiVersion: eventsvc.dev/v1alpha1\nkind: Schedule\nmetadata: {name: nightly}\n"
            "spec: {schedule: '0 3 * * *', timezone: Europe/Berlin}\n")  # fmt: skip
        status, sched = await get(session, f"{base}/api/v1/schedules")
        assert status == 200
        (nightly,) = sched["schedules"]
        assert nightly["name"] == "nightly" and len(nightly["next"]) == 3
        assert nightly["next"][0].endswith(("+01:00", "+02:00"))


async def test_dead_letters_replayed_and_discarded(
    console_service: RunningService, receiver: Any
) -> None:
    base = console_service.url

    async def letters() -> list[Any]:
        async with session.get(f"{base}/api/v1/dlq") as resp:
            return list((await resp.json())["letters"])

    async with aiohttp.ClientSession() as session:
        first = await send_thing(console_service)
        (letter,) = await eventually(letters, "a dead letter")
        assert letter["sensor"] == "flaky" and letter["event"]["id"] == first
        async with session.post(f"{base}/api/v1/dlq/replay",
                                json={"seqs": [letter["seq"]]}) as resp:  # fmt: skip
            assert resp.status == 200
            (replayed,) = (await resp.json())["replayed"]
        (new_id,) = replayed["ids"]
        assert new_id != first
        got = await receiver.wait_for(1)
        assert got[0]["id"] == new_id and got[0]["replayof"] == first
        assert await letters() == []

        receiver.fail_first = receiver.attempts + 1  # the next call fails again
        third = await send_thing(console_service)
        found = await eventually(lambda: _letters_for(letters, third), "the third event's letter")
        async with session.post(f"{base}/api/v1/dlq/discard",
                                json={"seqs": [found[0]["seq"], 999999]}) as resp:  # fmt: skip
            assert resp.status == 200
            body = await resp.json()
        assert body == {"discarded": [found[0]["seq"]], "missing": [999999]}
        async with session.post(f"{base}/api/v1/dlq/replay", data="seqs=1",
                                headers={"Content-Type": "application/x-www-form-urlencoded"}
                                ) as resp:  # fmt: skip
            assert resp.status == 415


async def _letters_for(letters: Any, event_id: str) -> list[Any]:
    return [x for x in await letters() if (x.get("event") or {}).get("id") == event_id]


async def test_live_tail_streams_new_events(console_service: RunningService) -> None:
    base = console_service.url
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/api/v1/events/stream",
                               params={"type": "pull_request"}) as resp:  # fmt: skip
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert (await resp.content.readline()).startswith(b":")
            await send_thing(console_service)  # filtered out by type
            event_id = await send_pr(session, base)
            while True:
                line = await asyncio.wait_for(resp.content.readline(), 20)
                if line.startswith(b"data: "):
                    break
            item = json.loads(line[6:])
            assert item["id"] == event_id
            assert item["natsSubject"] == "events.github.pull_request"


async def test_the_root_and_ui_paths_serve_the_console(console_service: RunningService) -> None:
    base = console_service.url
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/ui/"
        for path in ("/ui/", "/ui/events/some-id", "/ui/dlq"):
            async with session.get(base + path) as resp:
                assert resp.status == 200
                assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
                assert "/ui/static/app.js" in await resp.text()
        size = 0
        for name in ("app.js", "app.css"):
            async with session.get(f"{base}/ui/static/{name}") as resp:
                assert resp.status == 200
                size += len(await resp.read())
        assert size < 300 * 1024  # the first page, whole, is well under 300 KB
        async with session.get(f"{base}/ui/static/..%2Fapi.py") as resp:
            assert resp.status == 404


# ---------------------------------------------------------------- access


class FakeRequest:
    def __init__(self, authorization: str | None = None, cookie: str | None = None) -> None:
        self.headers = {"Authorization": authorization} if authorization else {}
        self.cookies = {"eventsvc_ui": cookie} if cookie else {}


def check(auth: ConsoleAuth, access: Access, **kw: Any) -> tuple[int, str] | None:
    try:
        auth.check(FakeRequest(**kw), access)  # type: ignore[arg-type]
    except Rejection as r:
        return r.status, r.message
    return None


def test_loopback_without_tokens_is_open(config_factory: Any) -> None:
    auth = ConsoleAuth(config_factory(), environ={})
    assert check(auth, Access.WRITE) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5"])
def test_another_bind_without_tokens_is_closed(config_factory: Any, host: str) -> None:
    config: Config = config_factory(http_host=host)
    status, message = check(ConsoleAuth(config, environ={}), Access.READ) or (0, "")
    assert status == 401 and "EVENTSVC_UI_TOKEN" in message


def test_a_token_file_that_is_missing_keeps_it_closed(config_factory: Any, tmp_path: Path) -> None:
    env = {"EVENTSVC_UI_TOKEN_FILE": str(tmp_path / "not-mounted")}
    status, message = check(ConsoleAuth(config_factory(), environ=env), Access.READ) or (0, "")
    assert status == 401 and "EVENTSVC_UI_TOKEN" in message


def test_read_and_write_tokens(config_factory: Any, tmp_path: Path) -> None:
    secret = tmp_path / "write"
    secret.write_text("w-token\n")
    env = {"EVENTSVC_UI_TOKEN": "r-token", "EVENTSVC_UI_WRITE_TOKEN_FILE": str(secret)}
    auth = ConsoleAuth(config_factory(), environ=env)  # a token closes loopback too
    status, message = check(auth, Access.READ) or (0, "")
    assert status == 401 and "EVENTSVC_UI_TOKEN" in message
    assert check(auth, Access.READ, authorization="Bearer r-token") is None
    assert check(auth, Access.READ, cookie="r-token") is None
    assert check(auth, Access.READ, authorization="Bearer w-token") is None
    status, message = check(auth, Access.WRITE, authorization="Bearer r-token") or (0, "")
    assert status == 403 and "EVENTSVC_UI_WRITE_TOKEN" in message
    assert check(auth, Access.WRITE, cookie="w-token") is None
    status, message = check(auth, Access.READ, authorization="Bearer nope") or (0, "")
    assert status == 401 and "nope" not in message
    status, _ = check(auth, Access.READ, authorization="Basic abc") or (0, "")
    assert status == 401


async def test_the_api_refuses_without_token(
    start_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTSVC_UI_TOKEN", "r-token")
    monkeypatch.setenv("EVENTSVC_UI_WRITE_TOKEN", "w-token")
    service = await start_service()
    base = service.url
    # unsafe: the jar keeps cookies of an IP address host (127.0.0.1), as browsers do
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        status, body = await get(session, f"{base}/api/v1/events")
        assert status == 401 and "EVENTSVC_UI_TOKEN" in body["error"]
        status, _ = await get(session, f"{base}/api/v1/events",
                              headers={"Authorization": "Bearer r-token"})  # fmt: skip
        assert status == 200
        async with session.post(f"{base}/api/v1/dlq/discard", json={"seqs": [1]},
                                headers={"Authorization": "Bearer r-token"}) as resp:  # fmt: skip
            assert resp.status == 403
            assert "EVENTSVC_UI_WRITE_TOKEN" in (await resp.json())["error"]
        async with session.post(f"{base}/api/v1/login", json={"token": "r-token"}) as resp:
            assert resp.status == 200
        status, _ = await get(session, f"{base}/api/v1/dlq")  # the cookie now
        assert status == 200


async def test_a_rejected_reload_shows_with_its_problems(
    console_service: RunningService, tmp_path: Path
) -> None:
    """The sensor keeps running its last good version; the console says why the change was
    refused, with file:line."""
    path = tmp_path / "sensors" / "pr-release.yaml"
    path.write_text(path.read_text().replace("log: {message: backport}", "log: {mesage: 1}"))
    base = console_service.url
    async with aiohttp.ClientSession() as session:

        async def rejected() -> dict[str, Any]:
            _, body = await get(session, f"{base}/api/v1/sensors/pr-release")
            return body if body["status"] != "loaded" else {}

        sensor = await eventually(rejected, "the reload to be rejected")
        assert sensor["status"] == "rejected change"
        assert any(p.startswith(f"{path}:") for p in sensor["problems"]), sensor["problems"]
        _, overview = await get(session, f"{base}/api/v1/overview")
        assert str(path) in overview["rejected"]


async def test_the_live_tail_ends_when_the_service_stops(console_service: RunningService) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{console_service.url}/api/v1/events/stream") as resp:
            await resp.content.readline()
            await asyncio.wait_for(console_service.stop(), 30)
            await asyncio.wait_for(resp.content.read(), 10)  # the stream ends
            assert resp.content.at_eof()


@pytest.mark.parametrize("path, body, status", [
    ("/api/v1/try", b'{"yaml": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400),
    ("/api/v1/dlq/replay", b'{"seqs": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", 400),
    ("/api/v1/dlq/replay", b'{"seqs": [99999999999999999999999999]}', 400),
    ("/api/v1/dlq/discard", b'{"seqs": [18446744073709551616]}', 400),
    ("/api/v1/dlq/replay", b'{"seqs": [1.5, "2"]}', 400),
    ("/api/v1/login", b"[" * 30_000 + b"]" * 30_000, 400),
    ("/api/v1/dlq/replay", b'{"seqs": [1], "pad": "' + b"x" * 70_000 + b'"}', 413),
])  # fmt: skip
async def test_hostile_bodies_get_a_4xx_with_a_reason(
    console_service: RunningService, path: str, body: bytes, status: int
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(console_service.url + path, data=body,
                                headers={"Content-Type": "application/json"}) as resp:
            assert resp.status == status, await resp.text()
            answer = await resp.json()
            assert answer["reason"] and answer["error"]
        async with session.get(console_service.url + "/healthz") as resp:
            assert resp.status == 200
