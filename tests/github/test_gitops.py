"""git over HTTPS with a token: the token reaches the configured GitHub host as a header
and nowhere else (the server here is that host: the settings' apiUrl names it)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from eventsvc.github import gitops
from eventsvc.github.client import GitHubSettings
from eventsvc.github.gitops import Git, GitAuthError
from tests.github.hosts import Cert, Host, serve_host, trust

TOKEN = "ghs_secret_installation_token_123"


@pytest.fixture
async def github_git(cert: Cert, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Host]:
    """The GitHub git host over HTTPS: records Authorization headers, refuses access."""

    async def refuse(request: web.Request) -> web.StreamResponse:
        return web.Response(status=403, text="Permission to acme/deploy.git denied\n")

    trust(cert, monkeypatch)
    async with serve_host(cert, refuse) as host:
        yield host


async def test_token_goes_as_header_never_argv_or_messages(
    github_git: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"{github_git.url}/acme/deploy.git"
    hosts = GitHubSettings(api_url=github_git.url).git_hosts()  # this host is the GitHub
    git = Git(url, tmp_path / "w", TOKEN, token_hosts=hosts)
    await git.init()
    with pytest.raises(GitAuthError) as info:
        await git.ls_remote(["main"])
    expected = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert github_git.authorizations == [f"Basic {expected}"]
    assert all(TOKEN not in arg and expected not in arg for cmd in git.commands for arg in cmd)
    assert TOKEN not in str(info.value) and expected not in str(info.value)
    assert "contents: write" in str(info.value)
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and expected not in out.out + out.err
    config = (tmp_path / "w" / "config").read_text()
    assert TOKEN not in config and expected not in config


def test_auth_env_only_for_https_remotes_on_the_github_hosts() -> None:
    hosts = GitHubSettings().git_hosts()
    assert gitops.auth_env("git@github.com:acme/deploy.git", TOKEN, hosts) == {}
    assert gitops.auth_env("file:///tmp/x.git", TOKEN, hosts) == {}
    assert gitops.auth_env("http://github.com/acme/deploy.git", TOKEN, hosts) == {}
    assert gitops.auth_env("https://evil.example/acme/deploy.git", TOKEN, hosts) == {}
    assert gitops.auth_env("https://github.com:8443/acme/deploy.git", TOKEN, hosts) == {}
    assert gitops.auth_env("https://github.com/acme/deploy.git", TOKEN, frozenset()) == {}
    env = gitops.auth_env("https://github.com/acme/deploy.git", TOKEN, hosts)
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert gitops.auth_env("https://GitHub.com:443/acme/deploy.git", TOKEN, hosts) == env
    assert gitops.safe_url("https://user:pw@github.com/a/b.git") == "https://github.com/a/b.git"


def test_git_repr_hides_token(tmp_path: Path) -> None:
    assert TOKEN not in repr(Git("https://github.com/a/b.git", tmp_path, TOKEN))
