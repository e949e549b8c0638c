"""Fixtures for GitHub tests: a local GitHub API and an App key pair."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from eventsvc.github.client import GitHubClient, GitHubSettings
from tests.github import fakegithub, hosts
from tests.github.fakegithub import FakeGitHub


@pytest.fixture(scope="session")
def app_keys() -> tuple[str, str]:
    return fakegithub.make_private_key()


@pytest.fixture
async def fake_github(app_keys: tuple[str, str]) -> AsyncIterator[FakeGitHub]:
    async with fakegithub.serve(FakeGitHub(public_key=app_keys[1])) as fake:
        yield fake


class Sleeps:
    """Records the waits asked for and returns at once: rate-limit tests stay fast."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def github_client(
    fake_github: FakeGitHub, app_keys: tuple[str, str]
) -> AsyncIterator[Callable[..., GitHubClient]]:
    made: list[GitHubClient] = []

    def make(app: bool = True, **kw: Any) -> GitHubClient:
        settings = GitHubSettings(
            api_url=fake_github.url,
            token=None if app else fakegithub.PAT,
            app_id=fakegithub.APP_ID if app else None,
            private_key=app_keys[0] if app else None,
            **kw.pop("settings", {}),
        )
        client = GitHubClient(settings, sleep=kw.pop("sleep", Sleeps()), **kw)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()



@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> hosts.Cert:
    """A self-signed certificate for 127.0.0.1 (see `tests.github.hosts.trust`)."""
    return hosts.make_cert(tmp_path_factory.mktemp("tls"))
