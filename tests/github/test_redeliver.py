"""`eventsvc github redeliver` against the local GitHub API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from eventsvc import cli
from eventsvc.github import redeliver
from eventsvc.github.client import GitHubClient
from tests.github import fakegithub
from tests.github.fakegithub import FakeGitHub

HOOK = "acme/shop/77"


def seed(fake: FakeGitHub, hook: str = HOOK) -> None:
    now = datetime.now(UTC)
    fake.add_delivery(hook, "old", 500, now - timedelta(hours=30))  # outside the window
    fake.add_delivery(hook, "ok", 202, now - timedelta(hours=5))
    fake.add_delivery(hook, "timeout", 0, now - timedelta(hours=4))
    fake.add_delivery(hook, "healed", 503, now - timedelta(hours=3))
    fake.add_delivery(hook, "healed", 202, now - timedelta(hours=2), redelivery=True)
    fake.add_delivery(hook, "bad", 502, now - timedelta(hours=2))
    fake.add_delivery(hook, "bad", 502, now - timedelta(hours=1), redelivery=True)


def redelivered_ids(fake: FakeGitHub) -> list[str]:
    return [r.path.split("/")[-2] for r in fake.calls("POST", "/") if r.path.endswith("/attempts")]


async def test_failed_deliveries_redelivered_once_per_guid(
    fake_github: FakeGitHub, github_client: Callable[..., GitHubClient]
) -> None:
    seed(fake_github)
    by_guid = {d["guid"]: d["id"] for d in reversed(fake_github.deliveries[HOOK])}
    lines: list[str] = []
    summary = await redeliver.redeliver(
        github_client(app=False), [redeliver.Hook("acme/shop", 77)],
        redeliver.since_from(24 * 3600), echo=lines.append,
    )  # fmt: skip
    assert sorted(redelivered_ids(fake_github)) == sorted(
        [str(by_guid["timeout"]), str(by_guid["bad"])]
    )
    assert (summary.redelivered, summary.errors, summary.skipped) == (2, 0, 1)
    assert all(line.startswith("redelivered [") for line in lines)
    # pages of 2 were followed with GitHub's cursor
    assert any("cursor" in r.query for r in fake_github.calls("GET", "/repos/acme/shop/hooks"))
    # the redeliveries succeeded: a second run has nothing left to do
    again = await redeliver.redeliver(
        github_client(app=False), [redeliver.Hook("acme/shop", 77)],
        redeliver.since_from(24 * 3600), echo=lines.append,
    )  # fmt: skip
    assert again.redelivered == 0 and again.skipped == 3


async def test_cli_app_hook_dry_run_and_failure_exit(
    fake_github: FakeGitHub, app_keys: tuple[str, str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], keep_logging_config: None,
) -> None:  # fmt: skip
    seed(fake_github, "app")
    monkeypatch.setenv("EVENTSVC_GITHUB_API_URL", fake_github.url)
    monkeypatch.setenv("EVENTSVC_GITHUB_APP_ID", fakegithub.APP_ID)
    monkeypatch.setenv("EVENTSVC_GITHUB_APP_PRIVATE_KEY", app_keys[0])
    code = await asyncio.to_thread(cli.main, ["github", "redeliver", "--since", "24h",
                                              "--dry-run"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and out.count("would redeliver [") == 2
    assert "would redeliver 2" in out
    assert redelivered_ids(fake_github) == []
    fake_github.fail("POST", "/app/hook/deliveries/", 422, message="Invalid delivery")
    code = await asyncio.to_thread(cli.main, ["github", "redeliver", "--since", "1d"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.count("FAILED") == 1 and out.count("redelivered [") == 1
    assert "redelivered 1, 1 redelivery error(s)" in out


def test_hook_id_needs_repo(capsys: pytest.CaptureFixture[str], keep_logging_config: None) -> None:
    assert cli.main(["github", "redeliver", "--hook-id", "3"]) == 2
    assert "--hook-id needs --repo" in capsys.readouterr().err


def test_usage_and_configuration_errors_exit_2(
    capsys: pytest.CaptureFixture[str], keep_logging_config: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("EVENTSVC_GITHUB_TOKEN", "EVENTSVC_GITHUB_TOKEN_FILE", "EVENTSVC_GITHUB_APP_ID",
                "EVENTSVC_GITHUB_APP_ID_FILE", "EVENTSVC_CONFIG"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    assert cli.main(["github", "redeliver", "--repo", "acme"]) == 2
    assert "--repo 'acme' is not owner/name" in capsys.readouterr().err
    assert cli.main(["github", "redeliver", "--repo", "acme/shop"]) == 2
    assert "no GitHub credentials" in capsys.readouterr().err
