"""End to end, the shipped promote-on-healthy sensor (sensors/promotion.yaml) and its Watch
(sensors/argocd-environments.yaml): staging's Argo CD Application turns Healthy and Synced
in the Kubernetes API test server -> the running service's watch gateway announces it ->
the production promotion pull request on the GitHub API test server, against real git
deployment repositories (folder per environment, and branch per environment)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from eventsvc import loader
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.triggers.promotion import PromotionTrigger, split_image_ref
from tests.conftest import RunningService
from tests.github import fakegithub
from tests.github.deployrepo import STAGING, commit_to, git, make_deploy_repo, show
from tests.github.fakegithub import FakeGitHub
from tests.triggers.conftest import FakeCluster
from tests.triggers.test_environment_e2e import eventually

ROOT = Path(__file__).resolve().parents[2]
AV = "argoproj.io/v1alpha1"
SHOP_HEAD = "eventsvc/promote/production/shop"
API_HEAD = "eventsvc/promote/production/api"
DIGEST = "sha256:" + "ab" * 32
API_KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
images:
  - name: ghcr.io/acme/api
    newTag: {tag}
"""


@pytest.fixture
async def github() -> AsyncIterator[FakeGitHub]:
    async with fakegithub.serve(FakeGitHub()) as fake:
        yield fake


@pytest.fixture
def repos(tmp_path: Path, github: FakeGitHub) -> dict[str, Path]:
    """acme/deploy (overlays on main) and acme/api-deploy (staging and production branches)."""
    for name in ("shop", "api"):
        (tmp_path / name).mkdir()
    shop, _ = make_deploy_repo(tmp_path / "shop", env_branches=False)
    api, _ = make_deploy_repo(tmp_path / "api")
    commit_to(api, tmp_path / "api", "staging", "kustomization.yaml", API_KUSTOMIZATION.format(tag="2.1.0"))
    commit_to(api, tmp_path / "api", "production", "kustomization.yaml",
              API_KUSTOMIZATION.format(tag="2.0.0"))  # fmt: skip
    github.git_repos |= {"acme/deploy": str(shop), "acme/api-deploy": str(api)}
    return {"acme/deploy": shop, "acme/api-deploy": api}


def local_copy(text: str, repos: dict[str, Path]) -> str:
    """The shipped sensors with the deployment repositories at their file:// URLs."""
    for name, bare in repos.items():
        text = re.sub(
            rf"^(\s+)repo: https://github.com/{name}\.git$",
            lambda m, b=bare, n=name: f"{m[1]}repo: {b.resolve().as_uri()}\n{m[1]}githubRepo: {n}",
            text,
            flags=re.M,
        )
    return text


@pytest.fixture
async def service(
    kubeapi: FakeCluster, github: FakeGitHub, repos: dict[str, Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, nats_server: EmbeddedNats,
    start_service: Callable[..., Awaitable[RunningService]],
) -> RunningService:  # fmt: skip
    monkeypatch.setenv("EVENTSVC_KUBECONFIG", str(kubeapi.kubeconfig))
    monkeypatch.setenv("EVENTSVC_GITHUB_API_URL", github.url)
    monkeypatch.setenv("EVENTSVC_GITHUB_TOKEN", fakegithub.PAT)
    sensors = tmp_path / "sensors"
    sensors.mkdir()
    text = (ROOT / "sensors" / "promotion.yaml").read_text()
    (sensors / "promotion.yaml").write_text(local_copy(text, repos))
    watch = (ROOT / "sensors" / "argocd-environments.yaml").read_text()
    (sensors / "argocd-environments.yaml").write_text(watch)
    running = await start_service(nats_url=nats_server.url, promotion_allow_file_urls=True)
    gateway = running.service.state.watch
    assert gateway is not None
    await eventually(gateway.ready, "the watch to be open")
    return running


def application(name: str, image: str, health: str = "Progressing",
                sync: str = "OutOfSync") -> dict[str, Any]:  # fmt: skip
    return {"apiVersion": AV, "kind": "Application",
            "metadata": {"name": name, "namespace": "argocd",
                         "labels": {"eventsvc.dev/stage": "staging"}},
            "status": {"health": {"status": health},
                       "sync": {"status": sync, "revision": "c" * 40},
                       "summary": {"images": [image, "docker.io/library/redis:7"]},
                       "reconciledAt": "t0"}}  # fmt: skip


def argo_cd(kubeapi: FakeCluster, name: str, **status: Any) -> None:
    """Argo CD writes the Application's status."""
    kubeapi.api.modify(AV, "applications", name, "argocd", {"status": status})


def test_the_shipped_sensor_and_watch_lint() -> None:
    loaded = loader.load_paths([ROOT / "sensors" / "promotion.yaml",
                               ROOT / "sensors" / "argocd-environments.yaml"])  # fmt: skip
    assert loaded.problems == []
    assert "promote-on-healthy" in {s.name for s in loaded.sensors}


async def test_staging_healthy_at_a_new_image_opens_the_production_pr(
    kubeapi: FakeCluster, github: FakeGitHub, repos: dict[str, Path], service: RunningService,
    tmp_path: Path,
) -> None:  # fmt: skip
    shop = repos["acme/deploy"]
    kubeapi.api.seed(application("shop-staging", "ghcr.io/acme/shop:1.4.0"))
    # Argo CD syncs 1.5.0 and rolls it out: none of this is a verdict on the new image yet
    argo_cd(kubeapi, "shop-staging", reconciledAt="t1")  # a heartbeat: silent
    argo_cd(kubeapi, "shop-staging", health={"status": "Progressing"}, sync={"status": "Synced"},
            summary={"images": ["ghcr.io/acme/shop:1.5.0"]})  # fmt: skip
    # meanwhile 1.6.0 was merged for staging: not running there yet, so not promoted
    commit_to(shop, tmp_path / "shop", "main", "overlays/staging/kustomization.yaml",
              STAGING.replace('"1.4.0"', '"1.6.0"'))  # fmt: skip
    argo_cd(kubeapi, "shop-staging", health={"status": "Healthy"})

    await eventually(lambda: bool(github.pulls.get("acme/deploy")), "the production PR", 60)
    production = "overlays/production/kustomization.yaml"
    assert 'newTag: "1.5.0"' in show(shop, SHOP_HEAD, production)
    assert show(shop, "main", production).count('newTag: "1.3.2"') == 1  # main untouched
    [pull] = github.pulls["acme/deploy"]
    assert (pull["head"]["ref"], pull["base"]["ref"]) == (SHOP_HEAD, "main")
    assert pull["title"] == "Promote shop 1.5.0 to production"
    assert "Application `shop-staging`" in pull["body"] and "c" * 40 in pull["body"]
    assert "1.3.2 → **1.5.0**" in pull["body"]


async def test_branch_per_environment_and_degraded_stays_put(
    kubeapi: FakeCluster, github: FakeGitHub, repos: dict[str, Path], service: RunningService,
) -> None:  # fmt: skip
    api = repos["acme/api-deploy"]
    kubeapi.api.seed(application("api-staging", f"ghcr.io/acme/api:2.1.0@{DIGEST}"))
    argo_cd(kubeapi, "api-staging", health={"status": "Degraded"}, sync={"status": "Synced"})
    # a Healthy Application of another image (a sidecar-only app, say) is no verdict on api
    kubeapi.api.seed(application("worker-staging", "ghcr.io/acme/worker:3.0.0", "Healthy",
                                 "Synced"))  # fmt: skip
    argo_cd(kubeapi, "api-staging", health={"status": "Healthy"})

    await eventually(lambda: bool(github.pulls.get("acme/api-deploy")), "the production PR", 60)
    [pull] = github.pulls["acme/api-deploy"]
    assert (pull["head"]["ref"], pull["base"]["ref"]) == (API_HEAD, "production")
    text = show(api, API_HEAD, "kustomization.yaml")
    assert "newTag: 2.1.0" in text and f"digest: {DIGEST}" in text
    assert git(api, "rev-list", "--count", f"production..{API_HEAD}").strip() == "1"
    assert "2.0.0 → **2.1.0**" in pull["body"]
    assert github.pulls.get("acme/deploy", []) == []


def test_image_references_split_into_name_tag_and_digest() -> None:
    assert split_image_ref("ghcr.io/acme/shop:1.5.0") == ("ghcr.io/acme/shop", "1.5.0", None)
    assert split_image_ref(f"ghcr.io/acme/shop@{DIGEST}") == ("ghcr.io/acme/shop", None, DIGEST)
    assert split_image_ref(f"registry:5000/shop:1.5@{DIGEST}") == ("registry:5000/shop", "1.5",
                                                                   DIGEST)  # fmt: skip
    assert split_image_ref("registry:5000/shop") is None  # a port, no tag
    assert split_image_ref("shop") is None


def test_image_from_sets_tag_and_digest_and_excludes_them() -> None:
    edit = {"file": "k.yaml", "image": {"name": "x", "imageFrom": "data.images", "newTag": "1"}}
    spec = {"repo": "https://github.com/a/b.git", "branch": "main", "environment": "e",
            "app": "a", "edits": [edit]}  # fmt: skip
    [(where, message)] = PromotionTrigger.check(spec)
    assert where == ("edits", 0, "image", "imageFrom") and "remove newTag" in message
    del edit["image"]["newTag"]
    assert PromotionTrigger.check(spec) == []


SHOP_TRIGGER = "healthy-staging-to-production"



def watch_event(obj: dict[str, Any], changes: dict[str, Any], kind: str = "changed"
                ) -> dict[str, Any]:  # fmt: skip
    return {"specversion": "1.0", "id": "argocd-environments:u-1:101",
            "type": f"dev.eventsvc.k8s.{kind}", "source": "https://kubernetes.default.svc",
            "subject": f"argocd/{obj['metadata']['name']}", "datacontenttype": "application/json",
            "data": {"object": obj, "changes": changes}}  # fmt: skip


@pytest.mark.parametrize(("obj", "changes", "kind", "fires"), [
    (application("shop-staging", "ghcr.io/acme/shop:1.5", "Healthy", "Synced"),
     {"status.health.status": {"from": "Progressing", "to": "Healthy"}}, "changed", True),
    (application("shop-staging", "ghcr.io/acme/shop:1.5", "Healthy", "Synced"),
     {"status.summary.images": {"from": ["ghcr.io/acme/shop:1.4"], "to": ["..."]}}, "changed",
     True),  # a rollout too quick to be seen Progressing
    (application("shop-staging", "ghcr.io/acme/shop:1.5", "Healthy", "OutOfSync"),
     {"status.health.status": {"from": "Progressing", "to": "Healthy"}}, "changed", False),
    (application("shop-staging", "ghcr.io/acme/shop:1.5", "Healthy", "Synced"),
     {"status.sync.revision": {"from": "a", "to": "b"}}, "changed", False),
    (application("shop-staging", "ghcr.io/acme/shop:1.5", "Healthy", "Synced"),
     {"status.health.status": {"from": "Healthy", "to": None}}, "deleted", False),
    (application("shop-staging", "ghcr.io/acme/other:1.5", "Healthy", "Synced"),
     {"status.health.status": {"from": "Progressing", "to": "Healthy"}}, "changed", False),
])  # fmt: skip
def test_what_counts_as_healthy_at_a_new_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], obj: dict[str, Any],
    changes: dict[str, Any], kind: str, fires: bool, keep_logging_config: None,
) -> None:  # fmt: skip
    from eventsvc import cli

    path = tmp_path / "event.json"
    path.write_text(json.dumps(watch_event(obj, changes, kind)))
    expect = "--expect-fire" if fires else "--expect-no-fire"
    code = cli.main(["test", str(ROOT / "sensors" / "promotion.yaml"), "--event", str(path),
                     "--nats-subject", "events.k8s.argocd-environments", expect, SHOP_TRIGGER])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
