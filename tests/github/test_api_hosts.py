"""The GitHub API client sends its token only to URLs under the configured `apiUrl`.

Same scheme, host and port, below the API root: a request elsewhere is refused
before anything is sent, and a `Link: rel="next"` page elsewhere stops the listing
with an error (following it would hand the `Bearer` token to that host; ignoring it
would pass part of a list off as all of it). Each test runs a second local server
as "another host" and checks it received no Authorization header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from eventsvc.github.client import GitHubApiError, GitHubClient, GitHubSettings
from tests.github.fakegithub import PAT, FakeGitHub
from tests.github.hosts import Host, serve_host


@pytest.fixture
async def other_http() -> AsyncIterator[Host]:
    async with serve_host() as host:
        yield host


def comments(n: int) -> list[dict[str, object]]:
    return [{"id": i, "body": f"comment {i}"} for i in range(n)]


async def test_next_page_on_another_host_is_not_followed(
    fake_github: FakeGitHub, github_client: Callable[..., GitHubClient], other_http: Host
) -> None:
    fake_github.comments["acme/shop#7"] = comments(5)
    fake_github.link_base = other_http.url
    client = github_client(app=False)
    got: list[object] = []
    with pytest.raises(GitHubApiError) as info:
        async for item in client.paginate("/repos/acme/shop/issues/7/comments", repo="acme/shop"):
            got.append(item)
    assert len(got) == fake_github.page_size  # the first page, from GitHub
    assert other_http.seen == []  # not asked at all: no token could reach it
    message = str(info.value)
    assert f"Link header puts the next page at '{other_http.url}/repos/acme/shop" in message
    assert f"outside the configured GitHub API {fake_github.url}" in message
    assert "github.apiUrl" in message


async def test_next_page_with_another_scheme_or_port_is_not_followed(
    fake_github: FakeGitHub, github_client: Callable[..., GitHubClient]
) -> None:
    fake_github.comments["acme/shop#7"] = comments(5)
    client = github_client(app=False)
    for base in (fake_github.url.replace("http://", "https://"), "http://127.0.0.1:1"):
        fake_github.link_base = base
        with pytest.raises(GitHubApiError, match="outside the configured GitHub API"):
            [c async for c in client.paginate("/repos/acme/shop/issues/7/comments")]


async def test_next_page_on_the_api_is_followed(
    fake_github: FakeGitHub, github_client: Callable[..., GitHubClient]
) -> None:
    fake_github.comments["acme/shop#7"] = comments(5)
    client = github_client(app=False)
    got = [c async for c in client.paginate("/repos/acme/shop/issues/7/comments")]
    assert [c["id"] for c in got] == [0, 1, 2, 3, 4]


async def test_no_request_leaves_the_configured_api(
    fake_github: FakeGitHub, github_client: Callable[..., GitHubClient], other_http: Host
) -> None:
    client = github_client(app=False)
    port = other_http.url.rsplit(":", 1)[1]
    for path in (f"{other_http.url}/repos/acme/shop", f"@127.0.0.1:{port}/repos/acme/shop"):
        with pytest.raises(GitHubApiError, match="refused, not a URL under the configured"):
            await client.call("GET", path)
    assert other_http.seen == [] and fake_github.requests == []


async def test_an_api_redirect_to_another_host_carries_no_token(
    fake_github: FakeGitHub, github_client: Callable[..., GitHubClient], other_http: Host
) -> None:
    fake_github.fail("GET", "/repos/acme/shop/pulls", 302,
                     headers={"Location": f"{other_http.url}/elsewhere"})  # fmt: skip
    client = github_client(app=False)
    with pytest.raises(GitHubApiError):  # the other host answers 401
        await client.call("GET", "/repos/acme/shop/pulls")
    assert fake_github.requests[0].auth == f"Bearer {PAT}"
    assert [s.path for s in other_http.seen] == ["/elsewhere"]
    assert other_http.authorizations == []


@pytest.mark.parametrize(("api_url", "url", "owned"), [
    ("https://api.github.com", "https://api.github.com/repos/a/b?page=2", True),
    ("https://api.github.com", "https://API.github.com:443/repos/a/b", True),
    ("https://api.github.com", "http://api.github.com/repos/a/b", False),
    ("https://api.github.com", "https://api.github.com:8443/repos/a/b", False),
    ("https://api.github.com", "https://api.github.com.evil.example/repos/a/b", False),
    ("https://api.github.com", "https://api.github.com@evil.example/repos/a/b", False),
    ("https://ghe.acme.example/api/v3", "https://ghe.acme.example/api/v3/repos/a/b", True),
    ("https://ghe.acme.example/api/v3", "https://ghe.acme.example/api/v30/repos", False),
    ("https://ghe.acme.example/api/v3", "https://ghe.acme.example/login", False),
])  # fmt: skip
def test_owns_compares_scheme_host_port_and_api_root(api_url: str, url: str, owned: bool) -> None:
    assert GitHubClient(GitHubSettings(api_url=api_url, token=PAT)).owns(url) is owned
