"""`promotion` against a real bare git repository and the local GitHub API."""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from eventsvc import events
from eventsvc.config import load_config
from eventsvc.errors import PermanentTriggerError
from eventsvc.github import gitops
from eventsvc.github.client import GitHubClient, GitHubSettings
from eventsvc.triggers import Services, TriggerContext
from eventsvc.triggers.promotion import PromotionTrigger
from tests.github import fakegithub
from tests.github.deployrepo import STAGING, commit_to, git, make_deploy_repo, show
from tests.github.fakegithub import FakeGitHub

REPO = "acme/deploy"
HEAD = "eventsvc/promote/staging/shop"
STAGING_FILE = "overlays/staging/kustomization.yaml"


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    async with fakegithub.serve(FakeGitHub()) as fake:
        yield fake


@pytest.fixture
def deploy(tmp_path: Path, fake: FakeGitHub) -> tuple[Path, str]:
    bare, url = make_deploy_repo(tmp_path)
    fake.git_repos[REPO] = str(bare)
    return bare, url


@pytest.fixture
async def make_trigger(
    fake: FakeGitHub, tmp_path: Path
) -> AsyncIterator[Callable[[], PromotionTrigger]]:
    """A trigger in its own `Services`, as another replica would be; all of them keep
    their git mirrors in one data dir, like replicas sharing a volume."""
    made: list[Services] = []

    def make() -> PromotionTrigger:
        # the deployment repository is a file:// URL: allowed here, off by default
        services = Services(load_config(environ={}, data_dir=str(tmp_path / "data"),
                                        promotion_allow_file_urls=True))  # fmt: skip
        settings = GitHubSettings(api_url=fake.url, token=fakegithub.PAT)
        services.github = GitHubClient(settings)
        made.append(services)
        return PromotionTrigger(services)

    yield make
    for services in made:
        await services.close()


def release(tag: str, event_id: str = "e1") -> events.CloudEvent:
    return events.make_event(
        {"specversion": "1.0", "id": event_id, "type": "com.github.release.published",
         "source": "https://github.com/acme/shop", "datacontenttype": "application/json"},
        {"action": "published", "release": {"tag_name": tag},
         "repository": {"full_name": "acme/shop"}},
    )  # fmt: skip


def ctx(event: events.CloudEvent, trigger: str = "stage") -> TriggerContext:
    return TriggerContext("promote", trigger, {"release": event})


def spec(url: str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "repo": url, "githubRepo": REPO, "branch": "main", "environment": "staging",
        "app": "shop",
        "edits": [{"file": STAGING_FILE,
                   "image": {"name": "ghcr.io/acme/shop", "newTagFrom": "data.release.tag_name"}}],
        "commit": {"author": {"name": "Promoter", "email": "promoter@example.com"}},
        "pullRequest": {"labels": ["promotion"], "reviewers": ["alice"], "draft": True},
    }  # fmt: skip
    base.update(over)
    return base


def changed_lines(before: str, after: str) -> list[str]:
    return [ln for ln in difflib.unified_diff(before.splitlines(), after.splitlines(),
                                              lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]  # fmt: skip


async def test_first_promotion_opens_pr_with_exact_change(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger]
) -> None:
    bare, url = deploy
    result = await make_trigger().execute(spec(url), ctx(release("1.5.0")))
    assert result.detail["outcome"] == "opened"
    assert changed_lines(STAGING, show(bare, HEAD, STAGING_FILE)) == [
        '-    newTag: "1.4.0"  # staging runs ahead of production',
        '+    newTag: "1.5.0"  # staging runs ahead of production',
    ]
    assert git(bare, "rev-list", "--count", f"main..{HEAD}").strip() == "1"
    assert git(bare, "log", "-1", "--format=%an <%ae>", HEAD).strip() == (
        "Promoter <promoter@example.com>"
    )
    [pull] = fake.pulls[REPO]
    assert pull["title"] == "Promote shop to staging: 1.5.0"
    assert (pull["head"]["ref"], pull["base"]["ref"], pull["draft"]) == (HEAD, "main", True)
    assert "`images[ghcr.io/acme/shop].newTag` 1.4.0 → **1.5.0**" in pull["body"]
    assert [lab["name"] for lab in pull["labels"]] == ["promotion"]
    assert pull["requested_reviewers"] == [{"login": "alice"}]
    assert show(bare, "main", STAGING_FILE) == STAGING  # the target is untouched


async def test_second_event_updates_the_same_pr(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger]
) -> None:
    bare, url = deploy
    trigger = make_trigger()
    await trigger.execute(spec(url), ctx(release("1.5.0")))
    result = await trigger.execute(spec(url), ctx(release("1.6.0", "e2")))
    assert result.detail["outcome"] == "updated"
    assert len(fake.pulls[REPO]) == 1
    assert fake.pulls[REPO][0]["title"] == "Promote shop to staging: 1.6.0"
    assert 'newTag: "1.6.0"' in show(bare, HEAD, STAGING_FILE)
    assert git(bare, "rev-list", "--count", f"main..{HEAD}").strip() == "1"
    assert len(fake.calls("PATCH", f"/repos/{REPO}/pulls/1")) == 1
    assert len(fake.calls("POST", f"/repos/{REPO}/pulls/1/requested_reviewers")) == 1
    again = await trigger.execute(spec(url), ctx(release("1.6.0", "e3")))
    assert again.detail["outcome"] == "unchanged"
    assert len(fake.calls("PATCH", f"/repos/{REPO}/pulls/1")) == 1


async def test_unchanged_values_open_no_pr(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger]
) -> None:
    bare, url = deploy
    result = await make_trigger().execute(spec(url), ctx(release("1.4.0")))
    assert result.detail["outcome"] == "unchanged"
    assert "already holds the values" in result.detail["message"]
    assert fake.calls("POST", f"/repos/{REPO}/pulls") == []
    assert HEAD not in git(bare, "branch", "--list")


async def test_event_back_to_target_value_closes_the_open_pr(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger]
) -> None:
    _, url = deploy
    trigger = make_trigger()
    await trigger.execute(spec(url), ctx(release("1.5.0")))
    result = await trigger.execute(spec(url), ctx(release("1.4.0", "e2")))  # what main holds
    assert result.detail["outcome"] == "unchanged"
    assert result.detail["closedPullRequest"] == 1
    assert fake.pulls[REPO][0]["state"] == "closed"
    assert "already holds the values" in fake.comments[f"{REPO}#1"][0]["body"]


async def test_racing_promotions_on_one_branch_both_land(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    bare, url = deploy
    batch = "eventsvc/promote/staging"
    shop = spec(url, headBranch=batch)
    worker = spec(url, headBranch=batch, app="worker", edits=[{
        "file": STAGING_FILE, "image": {"name": "ghcr.io/acme/worker", "newTag": "2.1.0"}}])
    other = make_trigger()  # another replica: its own process-local lock
    original = gitops.Git.push
    raced: list[str] = []

    async def push_after_the_other(self: gitops.Git, rev: str, branch: str, expect: str | None,
                                   force: bool, **kw: Any) -> bool:  # fmt: skip
        if not raced:  # the worker promotion lands between our fetch and our push
            raced.append(branch)
            await other.execute(worker, ctx(release("x", "w1"), "worker"))
        return await original(self, rev, branch, expect, force, **kw)

    monkeypatch.setattr(gitops.Git, "push", push_after_the_other)
    result = await make_trigger().execute(shop, ctx(release("1.5.0")))
    text = show(bare, batch, STAGING_FILE)
    assert 'newTag: "1.5.0"' in text and "newTag: 2.1.0" in text
    assert result.detail["outcome"] == "updated"
    assert len(fake.pulls[REPO]) == 1
    assert git(bare, "rev-list", "--count", f"main..{batch}").strip() == "1"


async def test_concurrent_promotions_both_land(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger]
) -> None:
    bare, url = deploy
    batch = "eventsvc/promote/staging"
    specs = [
        spec(url, headBranch=batch, app=name, edits=[{
            "file": STAGING_FILE, "image": {"name": f"ghcr.io/acme/{name}", "newTag": tag}}])
        for name, tag in (("shop", "1.5.0"), ("worker", "2.2.0"))
    ]  # fmt: skip
    await asyncio.gather(*(make_trigger().execute(s, ctx(release("x", f"c{i}")))
                           for i, s in enumerate(specs)))  # fmt: skip
    text = show(bare, batch, STAGING_FILE)
    assert 'newTag: "1.5.0"' in text and "newTag: 2.2.0" in text
    assert len(fake.open_pulls(REPO)) == 1


async def test_direct_push_retries_when_target_moved(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    bare, url = deploy
    original = gitops.Git.push
    moved: list[bool] = []

    async def push_after_someone(self: gitops.Git, rev: str, branch: str, expect: str | None,
                                 force: bool, **kw: Any) -> bool:  # fmt: skip
        if not moved:
            moved.append(True)
            commit_to(bare, tmp_path, "main", "charts/shop/values.yaml", "replicaCount: 3\n")
        return await original(self, rev, branch, expect, force, **kw)

    monkeypatch.setattr(gitops.Git, "push", push_after_someone)
    result = await make_trigger().execute(
        spec(url, pullRequest={"enabled": False}), ctx(release("1.5.0"))
    )
    assert result.detail["outcome"] == "pushed"
    assert 'newTag: "1.5.0"' in show(bare, "main", STAGING_FILE)
    assert show(bare, "main", "charts/shop/values.yaml") == "replicaCount: 3\n"
    assert fake.requests == []


async def test_merged_pr_branch_is_not_carried_over(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger]
) -> None:
    bare, url = deploy
    trigger = make_trigger()
    values = {"file": "charts/shop/values.yaml", "set": {"path": "replicaCount", "value": 5}}
    await trigger.execute(spec(url, edits=[values]), ctx(release("x")))
    fake.merge_pull(REPO, 1)  # merged (say squashed) elsewhere; the branch stays
    result = await trigger.execute(spec(url), ctx(release("1.5.0", "e2")))
    assert result.detail["outcome"] == "opened"
    assert show(bare, HEAD, "charts/shop/values.yaml") == show(bare, "main",
                                                               "charts/shop/values.yaml")
    assert len(fake.pulls[REPO]) == 2


async def test_copy_from_staging_folder_and_from_staging_branch(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger]
) -> None:
    bare, url = deploy
    trigger = make_trigger()
    folder = spec(url, environment="production", edits=[{
        "file": "overlays/production/kustomization.yaml",
        "image": {"name": "ghcr.io/acme/shop", "copyFrom": {"file": STAGING_FILE}}}])
    result = await trigger.execute(folder, ctx(release("x")))
    assert result.detail["changes"] == [
        "overlays/production/kustomization.yaml: images[ghcr.io/acme/shop].newTag: "
        "1.3.2 -> 1.4.0"
    ]
    branch = spec(url, branch="production", environment="production", edits=[{
        "file": "kustomization.yaml",
        "image": {"name": "ghcr.io/acme/shop", "copyFrom": {"branch": "staging"}}}])
    commit_to(bare, bare.parent, "staging", "kustomization.yaml",
              STAGING.replace('"1.4.0"', '"1.4.1"'))  # fmt: skip
    result = await make_trigger().execute(branch, ctx(release("y", "e2")))
    assert result.detail["base"] == "production"
    assert 'newTag: "1.4.1"' in show(bare, HEAD.replace("staging", "production"),
                                     "kustomization.yaml")  # fmt: skip


async def test_missing_event_field_is_permanent(
    deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger]
) -> None:
    _, url = deploy
    bad = spec(url, edits=[{"file": STAGING_FILE,
                            "image": {"name": "x", "newTagFrom": "data.image.tag"}}])  # fmt: skip
    with pytest.raises(PermanentTriggerError, match=r"newTagFrom: 'data.image.tag' is not a"):
        await make_trigger().execute(bad, ctx(release("1")))


def test_check_reports_spec_mistakes() -> None:
    problems = PromotionTrigger.check({
        "repo": "file:///x", "edits": [
            {"file": "a", "image": {"name": "n"}},
            {"file": "a", "set": {"path": "p", "value": 1, "valueFrom": "data.x"}},
            {"file": "a"},
        ]})  # fmt: skip
    messages = [m for _, m in problems]
    assert any("nothing to set" in m for m in messages)
    assert any("value or valueFrom, not both" in m for m in messages)
    assert any("exactly one of 'image'" in m for m in messages)
    assert any("githubRepo" in m for m in messages)


async def test_end_to_end_release_webhook_opens_pr(
    fake: FakeGitHub, deploy: tuple[Path, str], tmp_path: Path,
    start_service: Callable[..., Any], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import aiohttp

    from tests.conftest import post_github, write_sensor

    bare, url = deploy
    monkeypatch.setenv("EVENTSVC_GITHUB_API_URL", fake.url)
    monkeypatch.setenv("EVENTSVC_GITHUB_TOKEN", fakegithub.PAT)
    write_sensor(tmp_path / "sensors", "promote", f"""
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: promote}}
spec:
  dependencies:
    - name: release
      eventSubject: events.github.release
      filters:
        context: {{type: com.github.release.published}}
  triggers:
    - template:
        name: stage
        promotion:
          repo: {url}
          githubRepo: {REPO}
          branch: main
          environment: staging
          app: shop
          edits:
            - file: {STAGING_FILE}
              image: {{name: ghcr.io/acme/shop, newTagFrom: data.release.tag_name}}
""")
    service = await start_service(promotion_allow_file_urls=True)
    payload = {"action": "published", "release": {"tag_name": "2.0.0"},
               "repository": {"full_name": "acme/shop",
                              "html_url": "https://github.com/acme/shop"}}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        resp = await post_github(session, service.url, "release", payload)
        assert resp.status == 202
    for _ in range(300):
        if fake.pulls.get(REPO):
            break
        await asyncio.sleep(0.05)
    assert fake.pulls[REPO][0]["title"] == "Promote shop to staging: 2.0.0"
    assert 'newTag: "2.0.0"' in show(bare, HEAD, STAGING_FILE)


async def test_remembered_tips_are_checked_by_the_push(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger],
    tmp_path: Path,
) -> None:  # fmt: skip
    """A run first tries the tips it saw last time, without asking the remote; when the
    target or the branch moved meanwhile, the push is refused and the run starts over."""
    bare, url = deploy
    trigger, other = make_trigger(), make_trigger()
    await trigger.execute(spec(url), ctx(release("1.5.0")))
    commit_to(bare, tmp_path, "main", "charts/shop/values.yaml", "replicaCount: 3\n")
    await trigger.execute(spec(url), ctx(release("1.6.0", "e2")))  # target moved
    assert git(bare, "rev-parse", f"{HEAD}^").strip() == git(bare, "rev-parse", "main").strip()
    assert show(bare, HEAD, "charts/shop/values.yaml") == "replicaCount: 3\n"
    values = {"file": "charts/shop/values.yaml", "set": {"path": "replicaCount", "value": 5}}
    await other.execute(spec(url, edits=[values]), ctx(release("x", "e3")))  # branch moved
    result = await trigger.execute(spec(url), ctx(release("1.7.0", "e4")))
    assert result.detail["outcome"] == "updated"
    assert show(bare, HEAD, "charts/shop/values.yaml") == "replicaCount: 5\n"
    assert 'newTag: "1.7.0"' in show(bare, HEAD, STAGING_FILE)
    again = await trigger.execute(spec(url), ctx(release("1.7.0", "e5")))  # nothing to push:
    assert again.detail["outcome"] == "unchanged"  # believed only after asking the remote
