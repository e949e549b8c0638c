"""`promotion` when its values come from event data, which strangers write.

A sensor may render `repo`, `branch`, `headBranch`, `copyFrom.branch` or `githubRepo`
from the event (`repo: "{{ data.repo }}"`). Such a value never becomes a git option
or a command (`--upload-pack=touch FILE;` once ran), an event-chosen host never gets
the GitHub token, and file:// needs `promotion.allowFileUrls`. A refused value is a
RefusedValueError (never retried) naming the field, the value and the fix.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from eventsvc import events
from eventsvc.config import load_config
from eventsvc.errors import RefusedValueError
from eventsvc.github.client import GitHubClient, GitHubSettings
from eventsvc.github.gitops import GitAuthError
from eventsvc.sensors.params import Scope, compile_template
from eventsvc.triggers import Services, TriggerContext
from eventsvc.triggers.promotion import PromotionTrigger
from tests.conftest import RunningService, post_github, write_sensor
from tests.github import fakegithub
from tests.github.deployrepo import git, make_deploy_repo
from tests.github.fakegithub import FakeGitHub
from tests.github.hosts import Cert, Host, make_cert, serve_host, trust

REPO = "acme/deploy"
HEAD = "eventsvc/promote/staging/shop"
STAGING_FILE = "overlays/staging/kustomization.yaml"
# a sensor's promotion section: every value a git command line sees comes from the event
SECTION: dict[str, Any] = {
    "repo": "{{ data.repo }}", "githubRepo": "{{ data.github_repo }}",
    "branch": "{{ data.branch }}", "headBranch": "{{ data.head }}",
    "environment": "staging", "app": "shop",
    "edits": [{"file": "overlays/production/kustomization.yaml",
               "image": {"name": "ghcr.io/acme/shop",
                         "copyFrom": {"branch": "{{ data.source }}", "file": STAGING_FILE}}}],
}  # fmt: skip


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def app_keys() -> tuple[str, str]:
    return fakegithub.make_private_key()


@pytest.fixture
async def fake(app_keys: tuple[str, str]) -> AsyncIterator[FakeGitHub]:
    async with fakegithub.serve(FakeGitHub(public_key=app_keys[1])) as fake:
        yield fake


@pytest.fixture
def deploy(tmp_path: Path, fake: FakeGitHub) -> tuple[Path, str]:
    bare, url = make_deploy_repo(tmp_path)
    fake.git_repos[REPO] = str(bare)
    return bare, url


@pytest.fixture
async def make_trigger(
    fake: FakeGitHub, tmp_path: Path
) -> AsyncIterator[Callable[..., PromotionTrigger]]:
    made: list[Services] = []

    def make(allow_file: bool = True, settings: GitHubSettings | None = None) -> PromotionTrigger:
        config = load_config(environ={}, data_dir=str(tmp_path / "data"),
                             promotion_allow_file_urls=allow_file)  # fmt: skip
        services = Services(config)
        services.github = GitHubClient(
            settings or GitHubSettings(api_url=fake.url, token=fakegithub.PAT))
        made.append(services)
        return PromotionTrigger(services)

    yield make
    for services in made:
        await services.close()


@pytest.fixture
async def other_http() -> AsyncIterator[Host]:
    async with serve_host() as host:
        yield host


@pytest.fixture
async def other_https(cert: Cert, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Host]:
    trust(cert, monkeypatch)
    async with serve_host(cert) as host:
        yield host


def rendered(url: str, section: dict[str, Any] = SECTION, **data: Any) -> tuple[
    dict[str, Any], TriggerContext
]:
    """`section` rendered with an event carrying `data`, as the sensor engine does."""
    payload = {"repo": url, "github_repo": REPO, "branch": "main", "head": HEAD,
               "source": "main", **data}  # fmt: skip
    event = events.make_event(
        {"specversion": "1.0", "id": "ev-1", "type": "com.acme.image.pushed",
         "source": "https://ci.other-team.example", "datacontenttype": "application/json"},
        payload,
    )  # fmt: skip
    render, problems = compile_template(section, frozenset({"image"}))
    assert problems == []
    return render(Scope({"image": event})), TriggerContext("promote", "stage", {"image": event})


async def test_the_rendered_section_works_when_the_values_are_plain(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[..., PromotionTrigger]
) -> None:
    """The control: the same template and event shape, with honest values, promote."""
    bare, url = deploy
    spec, ctx = rendered(url)
    result = await make_trigger().execute(spec, ctx)
    assert result.detail["outcome"] == "opened"
    assert HEAD in git(bare, "branch", "--list")


@pytest.mark.parametrize(("key", "field", "value"), [
    ("repo", "repo", "--upload-pack=touch {marker};"),
    ("repo", "repo", "--upload-pack=touch {marker};git@github.com:acme/deploy.git"),
    ("repo", "repo", "ssh://-oProxyCommand=touch%20{marker}/acme/deploy.git"),
    ("repo", "repo", "ext::sh -c touch% {marker}"),
    ("branch", "branch", "--upload-pack=touch {marker};"),
    ("head", "headBranch", "--upload-pack=touch {marker};"),
    ("head", "headBranch", "x..y"),
    ("source", "edits[0].image.copyFrom.branch", "-utouch {marker};"),
    ("github_repo", "githubRepo", "acme/deploy/../../../orgs/acme"),
])  # fmt: skip
async def test_event_values_never_become_git_options(
    key: str, field: str, value: str, fake: FakeGitHub, deploy: tuple[Path, str],
    make_trigger: Callable[..., PromotionTrigger], tmp_path: Path,
) -> None:  # fmt: skip
    bare, url = deploy
    marker = tmp_path / "PWNED"
    bad = value.format(marker=marker)
    spec, ctx = rendered(url, **{key: bad})
    before = git(bare, "for-each-ref")
    with pytest.raises(RefusedValueError) as info:
        await make_trigger().execute(spec, ctx)
    message = str(info.value)
    assert message.startswith(f"{field}: {bad!r} "), message  # names the field and the value
    assert "refused" in message and ("Give " in message or "such as" in message)  # the fix
    assert not marker.exists()
    assert git(bare, "for-each-ref") == before
    assert fake.requests == []  # refused before GitHub was asked anything


async def test_an_event_chosen_http_host_is_refused_and_asked_nothing(
    fake: FakeGitHub, other_http: Host, make_trigger: Callable[..., PromotionTrigger]
) -> None:
    spec, ctx = rendered(f"{other_http.url}/acme/deploy.git")
    with pytest.raises(RefusedValueError) as info:
        await make_trigger().execute(spec, ctx)
    assert str(info.value).startswith(f"repo: '{other_http.url}/acme/deploy.git' uses http://")
    assert other_http.seen == [] and fake.requests == []


@pytest.mark.parametrize("pull_request", [True, False])
async def test_an_event_chosen_https_host_gets_no_credentials(
    pull_request: bool, fake: FakeGitHub, other_https: Host, app_keys: tuple[str, str],
    make_trigger: Callable[..., PromotionTrigger],
) -> None:  # fmt: skip
    """The other host is asked (the repository might be public), without any token; with
    an App no installation token is even made for it."""
    app = GitHubSettings(api_url=fake.url, app_id=fakegithub.APP_ID, private_key=app_keys[0])
    section = {**SECTION, "pullRequest": {"enabled": pull_request}}
    if not pull_request:
        section.pop("headBranch")
    spec, ctx = rendered(f"{other_https.url}/acme/deploy.git", section)
    with pytest.raises(GitAuthError):
        await make_trigger(settings=app).execute(spec, ctx)
    assert other_https.seen, "git asked the other host"
    assert other_https.authorizations == []
    if not pull_request:
        assert fake.tokens_issued == 0 and fake.requests == []


async def test_the_configured_github_host_does_get_the_token(
    cert: Cert, monkeypatch: pytest.MonkeyPatch, make_trigger: Callable[..., PromotionTrigger]
) -> None:
    """The positive control for the test above: same set-up, the host is GitHub's."""
    trust(cert, monkeypatch)
    async with serve_host(cert) as github:
        settings = GitHubSettings(api_url=github.url, token=fakegithub.PAT)
        section = {**SECTION, "pullRequest": {"enabled": False}}
        section.pop("headBranch")
        spec, ctx = rendered(f"{github.url}/acme/deploy.git", section)
        with pytest.raises(GitAuthError):
            await make_trigger(settings=settings).execute(spec, ctx)
    basic = base64.b64encode(f"x-access-token:{fakegithub.PAT}".encode()).decode()
    assert github.authorizations == [f"Basic {basic}"]


async def test_file_urls_need_the_setting(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[..., PromotionTrigger]
) -> None:
    bare, url = deploy
    spec, ctx = rendered(url)
    with pytest.raises(RefusedValueError) as info:
        await make_trigger(allow_file=False).execute(spec, ctx)
    message = str(info.value)
    assert message.startswith(f"repo: {url!r} uses file://")
    assert "promotion.allowFileUrls: true" in message
    assert "EVENTSVC_PROMOTION_ALLOW_FILE_URLS=true" in message
    assert HEAD not in git(bare, "branch", "--list") and fake.requests == []


def test_values_written_in_the_spec_are_refused_when_the_sensor_loads() -> None:
    problems = dict(PromotionTrigger.check({
        "repo": "http://git.example/acme/deploy.git", "githubRepo": "acme/../x",
        "branch": "-main", "headBranch": "a..b", "environment": "s", "app": "a",
        "edits": [{"file": "f", "image": {"name": "n", "copyFrom": {"branch": "--x"}}}],
    }))  # fmt: skip
    assert "uses http://" in problems[("repo",)]
    assert "is not owner/name" in problems[("githubRepo",)]
    assert "starts with '-'" in problems[("branch",)]
    assert "is not a valid branch name" in problems[("headBranch",)]
    assert "starts with '-'" in problems[("edits", 0, "image", "copyFrom", "branch")]
    assert PromotionTrigger.check({**SECTION, "repo": "file:///srv/deploy.git"}) == []
    assert PromotionTrigger.check(SECTION) == []  # `{{ }}`: checked when rendered


async def test_end_to_end_a_dispatch_webhook_cannot_run_a_command(
    fake: FakeGitHub, deploy: tuple[Path, str], tmp_path: Path,
    start_service: Callable[..., Awaitable[RunningService]], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The reported case, from one request: a repository_dispatch payload (anyone with
    a token for the repository can send one) names the repository to promote in."""
    bare, _ = deploy
    marker = tmp_path / "PWNED"
    monkeypatch.setenv("EVENTSVC_GITHUB_API_URL", fake.url)
    monkeypatch.setenv("EVENTSVC_GITHUB_TOKEN", fakegithub.PAT)
    write_sensor(tmp_path / "sensors", "promote", f"""
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: promote}}
spec:
  dependencies:
    - name: dispatch
      eventSubject: events.github.repository_dispatch
  triggers:
    - template:
        name: stage
        promotion:
          repo: "{{{{ data.client_payload.repo }}}}"
          githubRepo: {REPO}
          branch: main
          environment: staging
          app: shop
          edits:
            - file: {STAGING_FILE}
              image: {{name: ghcr.io/acme/shop, newTag: "{{{{ data.client_payload.tag }}}}"}}
""")
    service = await start_service(promotion_allow_file_urls=True)
    payload = {"action": "promote", "branch": "main",
               "client_payload": {"repo": f"--upload-pack=touch {marker};", "tag": "9.9.9"},
               "repository": {"full_name": "acme/shop"}}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        resp = await post_github(session, service.url, "repository_dispatch", payload)
        assert resp.status == 202
    bus = service.service.state.bus_ref.bus
    assert bus is not None
    records: list[dict[str, Any]] = []
    for _ in range(400):
        records = [json.loads(m.data) for m in await bus.stream_messages("DLQ")]
        if records:
            break
        await asyncio.sleep(0.05)
    [record] = records
    assert record["reason"] == "permanent failure"
    assert record["error"].startswith(f"repo: '--upload-pack=touch {marker};' starts with '-'")
    assert not marker.exists()
    assert HEAD not in git(bare, "branch", "--list") and fake.pulls == {}
