"""bench.promote: event -> promotion PR opened, against a local bare repo and GitHub API.

Runs the `promotion` trigger as the sensor engine does, for N release events: each
for its own app (its own branch, so every run opens a PR), then N more that bump the
same app again and again (every run updates the one open PR). Prints p50/p99 of a
whole run and how it splits between git (ls-remote, a fetch when a tip is new to the
kept mirror, cat-file, fast-import, push) and GitHub API calls. The first ls-remote
and the PR listing run at once, so the two shares may overlap by a few percent.
The fake GitHub API runs in this process, so API time includes its handling.
`--no-cache` gives every run a temp repository (a cold mirror) instead.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from eventsvc import events
from eventsvc.config import load_config
from eventsvc.github.client import GitHubClient, GitHubSettings
from eventsvc.triggers import Services, TriggerContext
from eventsvc.triggers.promotion import PromotionTrigger
from tests.github import fakegithub
from tests.github.deployrepo import make_deploy_repo

REPO = "acme/deploy"


def event(i: int) -> events.CloudEvent:
    return events.make_event(
        {"specversion": "1.0", "id": f"bench-{i}", "type": "com.github.release.published",
         "source": "https://github.com/acme/shop", "datacontenttype": "application/json"},
        {"release": {"tag_name": f"1.{i}.0"}, "repository": {"full_name": "acme/shop"}},
    )  # fmt: skip


def spec(url: str, app: str) -> dict[str, Any]:
    return {
        "repo": url, "githubRepo": REPO, "branch": "main", "environment": "staging", "app": app,
        "edits": [{"file": "overlays/staging/kustomization.yaml",
                   "image": {"name": f"ghcr.io/acme/{app}", "newTagFrom": "data.release.tag_name"}}],
        "pullRequest": {"labels": ["promotion"], "reviewers": ["alice"]},
    }  # fmt: skip


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, rows: list[dict[str, Any]], wall: list[float]) -> None:
    git = [r["gitSeconds"] for r in rows]
    api = [r["apiSeconds"] for r in rows]
    total = sum(wall)
    outcomes = sorted({r["outcome"] for r in rows})
    print(f"{name}: {len(wall)} promotions ({', '.join(outcomes)})")
    print(f"  event -> PR   p50 {pct(wall, .5) * 1000:7.1f} ms   p99 {pct(wall, .99) * 1000:7.1f} ms"
          f"   mean {statistics.mean(wall) * 1000:7.1f} ms")  # fmt: skip
    print(f"  git           p50 {pct(git, .5) * 1000:7.1f} ms   p99 {pct(git, .99) * 1000:7.1f} ms"
          f"   share {sum(git) / total:6.1%}")  # fmt: skip
    print(f"  GitHub API    p50 {pct(api, .5) * 1000:7.1f} ms   p99 {pct(api, .99) * 1000:7.1f} ms"
          f"   share {sum(api) / total:6.1%}")  # fmt: skip
    other = total - sum(git) - sum(api)
    print(f"  other (YAML edits, temp dirs, Python)                    share {other / total:6.1%}")


async def main(n: int, cache: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-promote-") as tmp:
        bare, url = make_deploy_repo(Path(tmp), env_branches=False)
        fake = fakegithub.FakeGitHub(git_repos={REPO: str(bare)})
        async with fakegithub.serve(fake):
            sections = {} if cache else {"promotion": {"gitCacheDir": False}}
            config = load_config(environ={}, data_dir=str(Path(tmp) / "data"),
                                 promotion_allow_file_urls=True)  # a local file:// repository
            services = Services(dataclasses.replace(config, sections=sections))
            services.github = GitHubClient(
                GitHubSettings(api_url=fake.url, token=fakegithub.PAT)
            )
            trigger = PromotionTrigger(services)
            try:
                await trigger.execute(spec(url, "warmup"), TriggerContext("b", "t", {"e": event(0)}))
                for name, app_of in (("new PR each", lambda i: f"app-{i}"),
                                     ("same PR updated", lambda i: "shop")):  # fmt: skip
                    rows, wall = [], []
                    for i in range(1, n + 1):
                        ctx = TriggerContext("bench", "promote", {"release": event(i)})
                        started = time.perf_counter()
                        result = await trigger.execute(spec(url, app_of(i)), ctx)
                        wall.append(time.perf_counter() - started)
                        rows.append(result.detail)
                    report(name, rows, wall)
                print(f"  pull requests in the fake: {len(fake.pulls[REPO])}, "
                      f"API requests: {len(fake.requests)}")
            finally:
                await services.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=100, help="promotions per scenario")
    parser.add_argument("--no-cache", action="store_true",
                        help="a temp repository per run instead of the kept mirror")  # fmt: skip
    args = parser.parse_args()
    print(f"git mirror cache: {'off' if args.no_cache else 'on'}")
    asyncio.run(main(args.n, not args.no_cache))
