"""git gets credentials only for the configured GitHub.

The token rides as an `Authorization: Basic` header only to https URLs on the hosts
`GitHubSettings.git_hosts()` derives from `apiUrl`; another host (an event may name
any) gets none, and no installation token is even made for it. Each test runs a
second local HTTPS server as "another host" and checks it received no Authorization.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from eventsvc.github.client import GitHubClient, GitHubSettings
from eventsvc.github.gitops import Git, GitAuthError
from tests.github.fakegithub import FakeGitHub
from tests.github.hosts import Cert, Host, redirect_to, serve_host, trust

TOKEN = "ghs_secret_installation_token_123"
BASIC = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()


@pytest.fixture
async def other_https(cert: Cert, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Host]:
    """Another host, over HTTPS git trusts: it asks for credentials (401 Basic)."""
    trust(cert, monkeypatch)
    async with serve_host(cert) as host:
        yield host


@pytest.mark.parametrize(("api_url", "hosts"), [
    ("https://api.github.com", {"api.github.com:443", "github.com:443"}),
    ("https://ghe.acme.example/api/v3", {"ghe.acme.example:443"}),
    ("https://GHE.acme.example:8443/api/v3/", {"ghe.acme.example:8443"}),
    ("https://api.acme.ghe.com", {"api.acme.ghe.com:443", "acme.ghe.com:443"}),
])  # fmt: skip
def test_git_hosts_are_the_configured_github(api_url: str, hosts: set[str]) -> None:
    assert GitHubSettings(api_url=api_url).git_hosts() == hosts


async def test_another_https_host_gets_no_token(other_https: Host, tmp_path: Path) -> None:
    url = f"{other_https.url}/acme/deploy.git"
    work = Git(url, tmp_path / "w", TOKEN, token_hosts=GitHubSettings().git_hosts())
    await work.init()
    with pytest.raises(GitAuthError):
        await work.ls_remote(["main"])
    assert other_https.seen, "git did ask the other host"
    assert other_https.authorizations == []
    assert "GIT_CONFIG_VALUE_0" not in work.env()


async def test_a_redirect_from_github_to_another_host_carries_no_token(
    cert: Cert, other_https: Host, tmp_path: Path
) -> None:
    async with serve_host(cert, redirect_to(lambda: other_https.url)) as github:
        hosts = GitHubSettings(api_url=github.url).git_hosts()
        work = Git(f"{github.url}/acme/deploy.git", tmp_path / "w", TOKEN, token_hosts=hosts)
        await work.init()
        with pytest.raises(GitAuthError):
            await work.ls_remote(["main"])
    assert github.authorizations == [BASIC]  # GitHub itself gets the token
    assert other_https.seen and other_https.authorizations == []


async def test_git_token_is_made_only_for_the_github_hosts(
    fake_github: FakeGitHub, github_client: Callable[..., GitHubClient], other_https: Host
) -> None:
    client = github_client(app=True)
    assert await client.git_token(f"{other_https.url}/acme/deploy.git", "acme/deploy") is None
    assert await client.git_token("http://github.com/acme/deploy.git", "acme/deploy") is None
    assert fake_github.tokens_issued == 0  # no installation token even made
    github = f"https://127.0.0.1:{fake_github.url.rsplit(':', 1)[1]}/acme/deploy.git"
    token = await client.git_token(github, "acme/deploy")
    assert token is not None and token.startswith("ghs_installation_")
