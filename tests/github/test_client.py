"""The GitHub client against the local API: auth, token renewal, rate limits, errors."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from eventsvc.config import load_config
from eventsvc.errors import ConfigError
from eventsvc.github.client import (
    GitHubApiError,
    GitHubClient,
    GitHubRetryableError,
    GitHubSettings,
    parse_repo,
)
from tests.github import fakegithub
from tests.github.conftest import Sleeps
from tests.github.fakegithub import FakeGitHub

REPO = "acme/deploy"
Make = Callable[..., GitHubClient]


async def test_app_auth_finds_installation_and_caches_token(
    fake_github: FakeGitHub, github_client: Make
) -> None:
    client = github_client()
    await client.call("POST", f"/repos/{REPO}/statuses/abc", json={"state": "success"}, repo=REPO)
    await client.call("POST", f"/repos/{REPO}/statuses/abc", json={"state": "success"}, repo=REPO)
    assert fake_github.tokens_issued == 1
    assert len(fake_github.calls("GET", f"/repos/{REPO}/installation")) == 1
    posts = fake_github.calls("POST", f"/repos/{REPO}/statuses")
    assert [p.auth for p in posts] == ["Bearer ghs_installation_1"] * 2
    token_call = fake_github.calls("POST", "/app/installations/42/access_tokens")[0]
    assert token_call.auth.startswith("Bearer ey")  # the JWT, not a token


async def test_token_renewed_shortly_before_expiry(
    fake_github: FakeGitHub, github_client: Make
) -> None:
    now = [time.time()]
    fake_github.clock = lambda: now[0]
    client = github_client(clock=lambda: now[0])
    assert await client.token_for(REPO) == "ghs_installation_1"
    now[0] += 3600 - 200  # inside the renewal margin of a one-hour token
    assert await client.token_for(REPO) == "ghs_installation_2"
    assert await client.token_for(REPO) == "ghs_installation_2"
    assert fake_github.tokens_issued == 2


async def test_token_refused_early_is_renewed_once(
    fake_github: FakeGitHub, github_client: Make
) -> None:
    client = github_client()
    await client.call("POST", f"/repos/{REPO}/statuses/a", json={"state": "success"}, repo=REPO)
    fake_github.revoke_tokens()
    await client.call("POST", f"/repos/{REPO}/statuses/a", json={"state": "success"}, repo=REPO)
    assert fake_github.tokens_issued == 2
    assert len(fake_github.statuses) == 2


async def test_personal_token(fake_github: FakeGitHub, github_client: Make) -> None:
    client = github_client(app=False)
    await client.call("POST", f"/repos/{REPO}/statuses/a", json={"state": "pending"}, repo=REPO)
    assert fake_github.requests[-1].auth == f"Bearer {fakegithub.PAT}"
    assert fake_github.tokens_issued == 0


async def test_retry_after_is_waited_then_retried(
    fake_github: FakeGitHub, github_client: Make
) -> None:
    sleeps = Sleeps()
    client = github_client(sleep=sleeps)
    fake_github.fail("POST", f"/repos/{REPO}/statuses", 429, headers={"Retry-After": "2"},
                     message="You have exceeded a secondary rate limit.")  # fmt: skip
    await client.call("POST", f"/repos/{REPO}/statuses/a", json={"state": "success"}, repo=REPO)
    assert sleeps.waits == [2.0]
    assert len(fake_github.calls("POST", f"/repos/{REPO}/statuses")) == 2
    assert len(fake_github.statuses) == 1


async def test_primary_limit_waits_until_reset(
    fake_github: FakeGitHub, github_client: Make
) -> None:
    sleeps = Sleeps()
    now = time.time()
    client = github_client(sleep=sleeps, clock=lambda: now)
    reset = str(int(now) + 5)
    fake_github.fail("GET", f"/repos/{REPO}/pulls", 403,
                     headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset},
                     message="API rate limit exceeded for installation ID 42.")  # fmt: skip
    assert await client.call("GET", f"/repos/{REPO}/pulls", repo=REPO) == []
    assert len(sleeps.waits) == 1 and 5 <= sleeps.waits[0] <= 7


async def test_secondary_limit_without_headers_backs_off(
    fake_github: FakeGitHub, github_client: Make
) -> None:
    sleeps = Sleeps()
    client = github_client(sleep=sleeps, settings={"secondary_backoff": 0.01})
    fake_github.fail("POST", f"/repos/{REPO}/statuses", 403, times=2,
                     message="You have exceeded a secondary rate limit. Please wait.")  # fmt: skip
    await client.call("POST", f"/repos/{REPO}/statuses/a", json={"state": "success"}, repo=REPO)
    assert sleeps.waits == [0.01, 0.02]


async def test_long_wait_becomes_retryable_error(
    fake_github: FakeGitHub, github_client: Make
) -> None:
    client = github_client(settings={"max_wait": 10})
    fake_github.fail("GET", f"/repos/{REPO}/pulls", 429, headers={"Retry-After": "600"})
    with pytest.raises(GitHubRetryableError) as info:
        await client.call("GET", f"/repos/{REPO}/pulls", repo=REPO)
    assert info.value.delay == 600


async def test_server_errors_are_retried(fake_github: FakeGitHub, github_client: Make) -> None:
    sleeps = Sleeps()
    client = github_client(sleep=sleeps, settings={"backoff": 0.01})
    fake_github.fail("GET", f"/repos/{REPO}/pulls", 502, times=2)
    assert await client.call("GET", f"/repos/{REPO}/pulls", repo=REPO) == []
    assert sleeps.waits == [0.01, 0.02]


async def test_404_on_repo_says_install_the_app(
    fake_github: FakeGitHub, github_client: Make
) -> None:
    client = github_client(app=False)
    fake_github.missing_repos.add(REPO)
    with pytest.raises(GitHubApiError) as info:
        await client.call("GET", f"/repos/{REPO}/pulls", repo=REPO)
    assert info.value.status == 404
    assert "app is not installed on the repo" in str(info.value)
    assert "'acme/deploy'" in str(info.value)


async def test_403_names_the_permission(fake_github: FakeGitHub, github_client: Make) -> None:
    client = github_client(app=False)
    fake_github.fail("POST", f"/repos/{REPO}/pulls", 403,
                     headers={"X-Accepted-GitHub-Permissions": "pull_requests=write"},
                     message="Resource not accessible by integration")  # fmt: skip
    with pytest.raises(GitHubApiError, match=r"pull_requests=write.*grant it"):
        await client.call("POST", f"/repos/{REPO}/pulls", json={}, repo=REPO)


async def test_422_lists_github_errors(fake_github: FakeGitHub, github_client: Make) -> None:
    client = github_client(app=False)
    with pytest.raises(GitHubApiError, match=r"422.*missing_field|422.*Validation") as info:
        await client.call("POST", f"/repos/{REPO}/pulls", json={"title": "x"}, repo=REPO)
    assert "check the branch names" in str(info.value)


async def test_bad_app_key_is_a_401_with_a_fix(
    fake_github: FakeGitHub, github_client: Make
) -> None:
    other_key, _ = fakegithub.make_private_key()
    client = github_client(settings={}, app=True)
    client.auth.private_key = other_key  # type: ignore[union-attr]
    with pytest.raises(GitHubApiError, match=r"401.*private key"):
        await client.token_for(REPO)


async def test_pagination_follows_link(fake_github: FakeGitHub, github_client: Make) -> None:
    client = github_client(app=False)
    for i in range(5):
        await client.call("POST", f"/repos/{REPO}/issues/3/comments", json={"body": f"c{i}"},
                          repo=REPO)  # fmt: skip
    bodies = [c["body"] async for c in client.paginate(f"/repos/{REPO}/issues/3/comments",
                                                        repo=REPO)]  # fmt: skip
    assert bodies == [f"c{i}" for i in range(5)]


def test_settings_from_config_section_and_env(tmp_path: Path, app_keys: tuple[str, str]) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_text(app_keys[0])
    cfg_file = tmp_path / "eventsvc.yaml"
    cfg_file.write_text(
        "github:\n  webhookSecrets: [s]\n  apiUrl: https://ghe.example/api/v3/\n"
        f"  appId: 99\n  installationId: 7\n  privateKeyFile: {key_file}\n"
    )
    config = load_config(cfg_file, environ={})
    assert config.github_webhook_secrets == ("s",)
    settings = GitHubSettings.from_config(config, environ={})
    assert settings.api_url == "https://ghe.example/api/v3"
    assert (settings.app_id, settings.installation_id) == ("99", 7)
    assert settings.private_key == app_keys[0]
    assert "BEGIN" not in repr(settings)
    token_file = tmp_path / "token"
    token_file.write_text("ghp_x\n")
    env = {"EVENTSVC_GITHUB_TOKEN_FILE": str(token_file)}
    settings = GitHubSettings.from_config(load_config(environ={}), environ=env)
    assert settings.token == "ghp_x" and settings.api_url == "https://api.github.com"
    with pytest.raises(ConfigError, match="no GitHub credentials"):
        GitHubSettings.from_config(load_config(environ={}), environ={}).auth()
    # as deploy/ mounts them: the App's id and key from one Secret, as files
    id_file = tmp_path / "app-id"
    id_file.write_text("4242\n")
    env = {"EVENTSVC_GITHUB_APP_ID_FILE": str(id_file),
           "EVENTSVC_GITHUB_APP_PRIVATE_KEY_FILE": str(key_file)}  # fmt: skip
    settings = GitHubSettings.from_config(load_config(environ={}), environ=env)
    assert (settings.app_id, settings.private_key) == ("4242", app_keys[0].strip())


def test_parse_repo() -> None:
    assert parse_repo("https://github.com/acme/deploy.git") == "acme/deploy"
    assert parse_repo("git@github.com:acme/deploy.git") == "acme/deploy"
    assert parse_repo("ssh://git@ghe.example:2222/acme/deploy") == "acme/deploy"
    assert parse_repo("acme/deploy") == "acme/deploy"
    assert parse_repo("file:///tmp/deploy.git") is None
