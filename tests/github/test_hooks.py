"""`eventsvc github hooks sync|status` against the local GitHub API, extended with the
repository and organisation hook endpoints."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from eventsvc import cli
from eventsvc.github import hooks
from eventsvc.github.client import GitHubClient
from tests.github import fakegithub
from tests.github.fakegithub import BODY, FakeGitHub

URL = "https://events.example.com/webhooks/github"
SECRET = "s3cret-for-hooks"


@dataclass
class HookGitHub(FakeGitHub):
    """FakeGitHub with GET/POST .../hooks and PATCH .../hooks/{id}, as GitHub answers them
    (the secret is never shown back)."""

    hooks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # owner key -> hooks
    secrets: dict[int, str] = field(default_factory=dict)
    _hook_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(70))

    def app(self) -> web.Application:
        app = super().app()
        for base in ("/repos/{o}/{r}/hooks", "/orgs/{org}/hooks"):
            app.router.add_get(base, self.list_hooks)
            app.router.add_post(base, self.create_hook)
            app.router.add_patch(base + "/{hook}", self.update_hook)
        return app

    def add_hook(self, owner: str, **hook: Any) -> dict[str, Any]:
        item = {"id": next(self._hook_ids), "name": "web", "active": True, "events": ["push"],
                "config": {"url": URL, "content_type": "json", "insecure_ssl": "0"},
                "last_response": {"code": None, "status": "unused", "message": None}}
        item.update(hook)
        self.hooks.setdefault(owner, []).append(item)
        return item

    @staticmethod
    def _owner(request: web.Request) -> str:
        if "org" in request.match_info:
            return "org:" + request.match_info["org"]
        return f"{request.match_info['o']}/{request.match_info['r']}"

    async def list_hooks(self, request: web.Request) -> web.Response:
        return self._page(request, self.hooks.get(self._owner(request), []))

    def _store(self, hook: dict[str, Any], body: dict[str, Any]) -> None:
        config = dict(body.get("config") or {})
        if "secret" in config:
            self.secrets[hook["id"]] = config.pop("secret")
            config["secret"] = "********"
        hook.update({k: v for k, v in body.items() if k != "config"})
        if "config" in body:
            hook["config"] = config

    async def create_hook(self, request: web.Request) -> web.Response:
        hook = self.add_hook(self._owner(request))
        self._store(hook, request[BODY])
        return web.json_response(hook, status=201)

    async def update_hook(self, request: web.Request) -> web.Response:
        for hook in self.hooks.get(self._owner(request), []):
            if str(hook["id"]) == request.match_info["hook"]:
                self._store(hook, request[BODY])
                return web.json_response(hook)
        return web.json_response({"message": "Not Found"}, status=404)


@pytest.fixture
async def fake(app_keys: tuple[str, str]) -> AsyncIterator[HookGitHub]:
    async with fakegithub.serve(HookGitHub(public_key=app_keys[1])) as served:
        yield served


@pytest.fixture
async def client(fake: HookGitHub, app_keys: tuple[str, str]) -> AsyncIterator[
        Callable[..., GitHubClient]]:  # fmt: skip
    made: list[GitHubClient] = []

    def make(app: bool = False) -> GitHubClient:
        settings = hooks.GitHubSettings(
            api_url=fake.url, token=None if app else fakegithub.PAT,
            app_id=fakegithub.APP_ID if app else None, private_key=app_keys[0] if app else None)
        made.append(GitHubClient(settings))
        return made[-1]

    yield make
    for c in made:
        await c.close()


def writes(fake: HookGitHub) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests if r.method in ("POST", "PATCH")
            and "/hooks" in r.path]  # fmt: skip


DESIRED = hooks.Desired(URL, ("pull_request", "push"), SECRET)


async def test_sync_creates_one_hook_then_has_nothing_to_do(
    fake: HookGitHub, client: Callable[..., GitHubClient]
) -> None:
    lines: list[str] = []
    target = hooks.Target("acme/shop")
    await hooks.sync(client(), [target], DESIRED, echo=lines.append)
    [hook] = fake.hooks["acme/shop"]
    assert hook["events"] == ["pull_request", "push"] and hook["active"] is True
    assert hook["config"]["url"] == URL and hook["config"]["content_type"] == "json"
    assert hook["config"]["insecure_ssl"] == "0" and fake.secrets[hook["id"]] == SECRET
    assert lines == [f"acme/shop: created hook {hook['id']} for {URL} (events: pull_request, "
                     "push)"]
    before = writes(fake)
    again: list[str] = []
    await hooks.sync(client(), [target], DESIRED, echo=again.append)
    assert writes(fake) == before  # idempotent: nothing sent the second time
    assert again == [f"acme/shop: hook {hook['id']} is up to date"]


async def test_sync_repairs_and_never_adds_a_second_hook(
    fake: HookGitHub, client: Callable[..., GitHubClient]
) -> None:
    fake.add_hook("acme/other", config={"url": "https://elsewhere.example.com/hook"})
    broken = fake.add_hook("acme/other", active=False, events=["push"],
                           config={"url": URL, "content_type": "form", "insecure_ssl": "1"})
    dup = fake.add_hook("acme/other")
    lines: list[str] = []
    await hooks.sync(client(), [hooks.Target("acme/other")], DESIRED, echo=lines.append)
    assert len(fake.hooks["acme/other"]) == 3  # none created, none deleted
    assert broken["active"] is True and broken["events"] == ["pull_request", "push"]
    assert broken["config"]["content_type"] == "json" and broken["config"]["insecure_ssl"] == "0"
    assert fake.secrets[broken["id"]] == SECRET
    assert fake.hooks["acme/other"][0]["config"]["url"] != URL  # another URL: left alone
    assert lines[0].startswith(f"acme/other: repaired hook {broken['id']}: events push -> "
                               "pull_request, push; content type 'form' -> 'json'")
    assert "TLS verification off -> on" in lines[0] and "inactive -> active" in lines[0]
    assert lines[1].startswith(f"acme/other: hook {dup['id']} is a second hook for the same URL")
    assert writes(fake) == [f"PATCH /repos/acme/other/hooks/{broken['id']}"]


async def test_dry_run_changes_nothing(fake: HookGitHub,
                                       client: Callable[..., GitHubClient]) -> None:  # fmt: skip
    lines: list[str] = []
    await hooks.sync(client(), [hooks.Target("acme/shop"), hooks.Target("acme", org=True)],
                     DESIRED, dry_run=True, echo=lines.append)  # fmt: skip
    assert writes(fake) == []
    assert lines == [f"acme/shop: would create a hook for {URL} (events: pull_request, push)",
                     f"org acme: would create a hook for {URL} (events: pull_request, push)"]


async def test_org_hooks_and_app_credentials(fake: HookGitHub,
                                             client: Callable[..., GitHubClient]) -> None:  # fmt: skip
    await hooks.sync(client(), [hooks.Target("acme", org=True)], DESIRED, echo=lambda _: None)
    assert [h["config"]["url"] for h in fake.hooks["org:acme"]] == [URL]
    await hooks.sync(client(app=True), [hooks.Target("acme/app-repo")], DESIRED,
                     echo=lambda _: None)  # fmt: skip
    assert fake.hooks["acme/app-repo"][0]["events"] == ["pull_request", "push"]
    assert any(r.auth.startswith("token ghs_installation_") or "ghs_installation_" in r.auth
               for r in fake.requests if r.path == "/repos/acme/app-repo/hooks")  # fmt: skip


async def test_status_shows_the_last_deliveries(fake: HookGitHub,
                                                client: Callable[..., GitHubClient]) -> None:  # fmt: skip
    hook = fake.add_hook("acme/shop", last_response={"code": 502, "status": "failed",
                                                     "message": "Bad Gateway"})  # fmt: skip
    now = datetime.now(UTC)
    fake.add_delivery(f"acme/shop/{hook['id']}", "g-ok", 202, now - timedelta(minutes=5))
    fake.add_delivery(f"acme/shop/{hook['id']}", "g-bad", 502, now - timedelta(minutes=1),
                      event="pull_request")  # fmt: skip
    lines: list[str] = []
    failing = await hooks.status(client(), [hooks.Target("acme/shop")], URL, 10, lines.append)
    assert failing == 1  # the newest delivery failed
    assert lines[0].startswith(f"acme/shop: hook {hook['id']} {URL} active, events push; "
                               "last response 502 failed Bad Gateway")
    assert "502" in lines[1] and "g-bad" in lines[1] and "pull_request" in lines[1]
    assert "202" in lines[2] and "g-ok" in lines[2]


def test_events_come_from_the_sensors() -> None:
    deps = [("events.github.push", None),
            ("events.github.*", {"any": [{"githubevent": "pull_request"}]}),
            ("events.>", {"type": {"prefix": "com.github.release."}}),
            ("events.cron.nightly", None), ("results.a.b", None),
            ("events.>", {"source": "ci"})]  # fmt: skip
    assert hooks.events_for(deps) == ("pull_request", "push", "release")
    assert hooks.events_for([*deps, ("events.github.>", None)]) == ("*",)


async def test_cli_sync_reads_the_sensors_and_config(
    fake: HookGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], keep_logging_config: None,
) -> None:  # fmt: skip
    (tmp_path / "s.yaml").write_text(
        "apiVersion: eventsvc.dev/v1alpha1\nkind: Sensor\nmetadata: {name: s}\nspec:\n"
        "  dependencies:\n    - {name: d, eventSubject: events.github.issue_comment}\n"
        "  triggers:\n    - template: {name: t, log: {}}\n")
    monkeypatch.setenv("EVENTSVC_GITHUB_API_URL", fake.url)
    monkeypatch.setenv("EVENTSVC_GITHUB_TOKEN", fakegithub.PAT)
    monkeypatch.delenv("EVENTSVC_CONFIG", raising=False)
    monkeypatch.delenv("EVENTSVC_GITHUB_WEBHOOK_SECRET", raising=False)
    argv = ["github", "hooks", "sync", "--repo", "acme/shop", "--url", URL,
            "--sensors", str(tmp_path)]  # fmt: skip
    assert await asyncio.to_thread(cli.main, argv) == 2  # no secret: refused
    assert "EVENTSVC_GITHUB_WEBHOOK_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("EVENTSVC_GITHUB_WEBHOOK_SECRET", SECRET)
    assert await asyncio.to_thread(cli.main, argv) == 0
    assert "acme/shop: created hook" in capsys.readouterr().out
    assert fake.hooks["acme/shop"][0]["events"] == ["issue_comment"]
    assert await asyncio.to_thread(cli.main, ["github", "hooks", "status", "--repo",
                                              "acme/shop"]) == 0  # fmt: skip
    assert "last response - unused" in capsys.readouterr().out
    assert await asyncio.to_thread(cli.main, ["github", "hooks", "sync", "--url", URL]) == 2
    assert "give --repo" in capsys.readouterr().err
    fake.fail("GET", "/repos/acme/shop/hooks", 403, message="Resource not accessible")
    assert await asyncio.to_thread(cli.main, argv) == 1
    assert "403" in capsys.readouterr().err


async def test_cli_sync_keeps_to_the_allowed_events(
    fake: HookGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], keep_logging_config: None,
) -> None:  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text("github:\n  allowedEvents: [push]\n")
    monkeypatch.setenv("EVENTSVC_GITHUB_API_URL", fake.url)
    monkeypatch.setenv("EVENTSVC_GITHUB_TOKEN", fakegithub.PAT)
    monkeypatch.setenv("EVENTSVC_GITHUB_WEBHOOK_SECRET", SECRET)
    argv = ["github", "hooks", "sync", "--repo", "acme/shop", "--url", URL, "--config",
            str(config), "--events", "push,release"]  # fmt: skip
    assert await asyncio.to_thread(cli.main, argv) == 0
    assert "release left out: not in github.allowedEvents" in capsys.readouterr().err
    assert fake.hooks["acme/shop"][0]["events"] == ["push"]
