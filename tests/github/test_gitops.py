"""git over HTTPS with a token: the token reaches the server as a header and nowhere else."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from eventsvc.github import gitops
from eventsvc.github.gitops import Git, GitAuthError

TOKEN = "ghs_secret_installation_token_123"


@pytest.fixture
async def git_http() -> AsyncIterator[tuple[str, list[str]]]:
    """A smart-HTTP endpoint that records Authorization headers and refuses access."""
    seen: list[str] = []

    async def refs(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.Response(status=403, text="Permission to acme/deploy.git denied\n")

    app = web.Application()
    app.router.add_get("/acme/deploy.git/info/refs", refs)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/acme/deploy.git", seen
    finally:
        await runner.cleanup()


async def test_token_goes_as_header_never_argv_or_messages(
    git_http: tuple[str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, seen = git_http
    git = Git(url, tmp_path / "w", TOKEN)
    await git.init()
    with pytest.raises(GitAuthError) as info:
        await git.ls_remote(["main"])
    expected = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert f"Basic {expected}" in seen
    assert all(TOKEN not in arg and expected not in arg for cmd in git.commands for arg in cmd)
    assert TOKEN not in str(info.value) and expected not in str(info.value)
    assert "contents: write" in str(info.value)
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and expected not in out.out + out.err
    config = (tmp_path / "w" / "config").read_text()
    assert TOKEN not in config and expected not in config


def test_auth_env_only_for_http_remotes() -> None:
    assert gitops.auth_env("git@github.com:acme/deploy.git", TOKEN) == {}
    assert gitops.auth_env("file:///tmp/x.git", TOKEN) == {}
    env = gitops.auth_env("https://github.com/acme/deploy.git", TOKEN)
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert gitops.safe_url("https://user:pw@github.com/a/b.git") == "https://github.com/a/b.git"


def test_git_repr_hides_token(tmp_path: Path) -> None:
    assert TOKEN not in repr(Git("https://github.com/a/b.git", tmp_path, TOKEN))
