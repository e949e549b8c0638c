"""The kept bare repository: fetched incrementally, written with plumbing, shared safely."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from eventsvc.config import load_config
from eventsvc.github import gitops
from eventsvc.github.gitops import Git, GitError
from eventsvc.github.mirror import Mirror, Mirrors
from eventsvc.github.promotecommit import Snapshot
from tests.github.deployrepo import STAGING, VALUES, commit_to, git, make_deploy_repo, show

FILE = "overlays/staging/kustomization.yaml"


async def test_commit_replaces_only_the_given_files(tmp_path: Path) -> None:
    bare, url = make_deploy_repo(tmp_path)
    mirror = Mirror(tmp_path / "cache.git")
    work = Git(url, mirror.path, allow_file=True)
    await work.init()
    await work.fetch(["main"])
    main = git(bare, "rev-parse", "main").strip()
    snap = Snapshot(work)
    await snap.load([main, *snap.names(main, [FILE]), f"{main}:nope.yaml"])
    commit = snap.get(main)
    assert commit is not None and commit.type == "commit"
    assert snap.text(main, FILE) == STAGING and snap.get(f"{main}:nope.yaml") is None
    sha, tree = await mirror.commit(work, main, snap.trees(main), {FILE: "images: []\n"},
                                    "msg\n")  # fmt: skip
    assert await work.push(sha, "bump", None, force=True)
    assert show(bare, "bump", FILE) == "images: []\n"
    assert show(bare, "bump", "charts/shop/values.yaml") == VALUES
    assert git(bare, "rev-parse", "bump^{tree}").strip() == tree
    assert git(bare, "rev-parse", "bump^").strip() == main
    assert git(bare, "log", "-1", "--format=%an|%B", "bump").strip() == "eventsvc|msg"
    git(bare, "fsck", "--strict", "--no-dangling")
    # the lease: a second push expecting "no branch" is refused, not forced
    assert not await work.push(main, "bump", None, force=True)


async def test_objects_match_what_git_itself_writes(tmp_path: Path) -> None:
    """Entry order (a tree sorts as name + '/'), modes and nesting, checked against
    the same change committed by git in a working tree."""
    seed = tmp_path / "seed"
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    for rel in ("a/x.yaml", "a.b", "a-b/y.yaml", "a/deep/er/z.yaml", "run.sh", "b.yaml"):
        (seed / rel).parent.mkdir(parents=True, exist_ok=True)
        (seed / rel).write_text(f"{rel}: 1\n")
    (seed / "run.sh").chmod(0o755)
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "seed")
    base = git(seed, "rev-parse", "HEAD").strip()
    mirror = Mirror(tmp_path / "cache.git")
    work = Git(seed.resolve().as_uri(), mirror.path, allow_file=True)
    await work.init()
    await work.fetch(["main"])
    change = {"a/deep/er/z.yaml": "z: 2\n", "run.sh": "echo 2\n", "a-b/y.yaml": "y: 2\n"}
    snap = Snapshot(work)
    await snap.load(snap.names(base, change))
    _, tree = await mirror.commit(work, base, snap.trees(base), change, "m\n")
    with pytest.raises(GitError, match="was not read"):  # never an empty tree instead
        await mirror.commit(work, base, {}, change, "m\n")

    for rel, text in change.items():
        (seed / rel).write_text(text)
    git(seed, "commit", "-q", "-am", "change")
    assert tree == git(seed, "rev-parse", "HEAD^{tree}").strip()


async def test_mirror_fetches_only_what_it_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bare, url = make_deploy_repo(tmp_path)
    fetched: list[list[str]] = []
    original = Git.fetch

    async def counting(self: Git, branches: list[str], depth: int = 1) -> None:
        fetched.append(list(branches))
        await original(self, branches, depth)

    monkeypatch.setattr(Git, "fetch", counting)
    mirrors = Mirrors(tmp_path / "git")
    async with mirrors.mirror(url) as mirror:
        work = Git(url, mirror.path, allow_file=True)
        tips = await work.ls_remote(["main"])
        await mirror.ensure(work, tips)
        mirror.saw(tips.values())  # what a run does once it read them
        await mirror.ensure(work, tips)
        assert fetched == [["main"]]
        commit_to(bare, tmp_path, "main", "charts/shop/values.yaml", "replicaCount: 3\n")
        moved = await work.ls_remote(["main"])
        await mirror.ensure(work, moved)
        assert fetched == [["main"], ["main"]]
        [blob] = await work.read([f"{moved['main']}:charts/shop/values.yaml"])
        assert blob is not None and blob.text == "replicaCount: 3\n"
    assert mirror.path.parent == tmp_path / "git" and (mirror.path / "HEAD").is_file()


async def test_file_lock_serialises_two_mirrors_on_one_path(tmp_path: Path) -> None:
    """Two processes (here: two Mirror objects, each with its own fd) never hold it at once."""
    one, two = Mirror(tmp_path / "m.git"), Mirror(tmp_path / "m.git")
    inside: list[str] = []
    overlap: list[bool] = []

    async def hold(mirror: Mirror, name: str) -> None:
        async with mirror.locked():
            overlap.append(bool(inside))
            inside.append(name)
            await asyncio.sleep(0.05)
            inside.remove(name)

    await asyncio.gather(hold(one, "one"), hold(two, "two"))
    assert overlap == [False, False]


def test_cache_dir_from_config(tmp_path: Path) -> None:
    config = load_config(environ={}, data_dir=str(tmp_path))
    assert Mirrors.from_config(config).root == tmp_path / "git"
    off = dataclasses.replace(config, sections={"promotion": {"gitCacheDir": False}})
    assert Mirrors.from_config(off).root is None
    there = dataclasses.replace(config, sections={"promotion": {"gitCacheDir": "/var/x"}})
    assert Mirrors.from_config(there).root == Path("/var/x")


async def test_cache_off_uses_a_temp_repository_per_run(tmp_path: Path) -> None:
    _, url = make_deploy_repo(tmp_path)
    async with Mirrors(None).mirror(url) as mirror:
        await Git(url, mirror.path, allow_file=True).init()
        assert mirror.path.is_dir()
    assert not mirror.path.exists()


def test_fetched_refs_are_flat() -> None:
    assert gitops.fetched_ref("a/b").count("/") == gitops.fetched_ref("a/b/c").count("/")
