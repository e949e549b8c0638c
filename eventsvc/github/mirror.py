"""Kept bare repositories, one per deployment repository, fetched incrementally.

A promotion used to clone into a fresh temp dir every time (about a dozen git
processes). Now each repository URL has a bare repository under
`<dataDir>/git/<sha256(url)[:16]>.git` (config `promotion.gitCacheDir`; `false`
turns the cache off and gives every run a temp repository). Objects a run needs
are fetched only when the remote tip is not already there, and a run writes its
commit as plain git objects (`eventsvc.github.objects`), so the cache has no working tree to
keep clean. `tips` remembers the remote branch tips last seen, which a run may
try first (see `PromotionRun._remembered`): a wrong memory only costs a refused push.

Concurrency: fetches update refs and the `shallow` file, so they (and `git gc`)
hold the mirror's lock: an `asyncio.Lock` inside a process and `flock` on
`eventsvc.lock` across processes (two replicas on one volume). Reads, new objects
(written whole and renamed into place) and the push of a sha need no lock; the
push's lease settles races on the remote itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from eventsvc import logs
from eventsvc.config import Config
from eventsvc.errors import ConfigError
from eventsvc.github import objects
from eventsvc.github.gitops import Git, GitError

log = logs.get("eventsvc.github.mirror")
GC_EVERY = 100  # commits written by this process between two `git gc --auto`
PRESENT_MAX = 10_000
_LOCK_POLL = 0.005


@dataclass(slots=True)
class Mirror:
    """One kept bare repository."""

    path: Path
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    present: set[str] = field(default_factory=set)  # shas this process saw in it
    tips: dict[str, str | None] = field(default_factory=dict)  # remote branches, last seen
    commits: int = 0

    @contextlib.asynccontextmanager
    async def locked(self) -> AsyncIterator[None]:
        """This process's lock, then the cross-process file lock."""
        async with self.lock:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / "eventsvc.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(_LOCK_POLL)
                yield
            finally:
                os.close(fd)  # releases the flock

    def saw(self, shas: Iterable[str]) -> None:
        """Remember commits read from (or written to) this repository."""
        if len(self.present) > PRESENT_MAX:  # forgetting only costs an incremental fetch
            self.present.clear()
        self.present.update(shas)

    async def ensure(self, git: Git, tips: Mapping[str, str]) -> None:
        """Make the commits `tips` (branch -> sha) available, fetching what is not here."""
        missing = sorted(b for b, sha in tips.items() if sha not in self.present)
        if not missing:
            return
        async with self.locked():
            await git.init()
            await git.fetch(missing)

    async def commit(
        self, git: Git, parent: str, trees: Mapping[str, bytes], files: Mapping[str, str],
        message: str,
    ) -> tuple[str, str]:  # fmt: skip
        """(commit, tree) of `parent` with `files` replaced; `trees`: the parent's trees
        on the files' paths, by directory. Written as loose objects, no lock needed."""
        def tree_of(where: str) -> bytes:
            if where not in trees:  # never guess: an empty tree would delete its files
                raise GitError(f"tree {where or '(root)'!r} of {parent} was not read")
            return trees[where]

        started = time.perf_counter()
        sha, tree = await asyncio.to_thread(
            objects.write_commit, self.path, parent, tree_of,
            {path: text.encode() for path, text in files.items()}, message, git.ident(),
        )  # fmt: skip
        git.seconds += time.perf_counter() - started
        self.commits += 1
        if self.commits % GC_EVERY == 0:
            async with self.locked():
                await git.gc_auto()
        self.saw([sha])
        return sha, tree


class Mirrors:
    """Kept repositories by URL under `root`; `root=None`: a temp repository per run."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._mirrors: dict[str, Mirror] = {}

    @classmethod
    def from_config(cls, config: Config) -> Mirrors:
        value = config.section("promotion").get("gitCacheDir", True)
        if value is False:
            return cls(None)
        if value is True or value is None:
            return cls(Path(config.data_dir) / "git")
        if not isinstance(value, str) or not value:
            raise ConfigError(
                f"Config 'promotion.gitCacheDir' has value {value!r}. "
                "Give a directory, or false to clone into a temp directory on every run."
            )
        return cls(Path(value))

    @contextlib.asynccontextmanager
    async def mirror(self, url: str) -> AsyncIterator[Mirror]:
        if self.root is None:
            tmp = Path(tempfile.mkdtemp(prefix="eventsvc-promote-"))
            try:
                yield Mirror(tmp / "repo.git")
            finally:
                await asyncio.to_thread(shutil.rmtree, tmp, True)
            return
        if url not in self._mirrors:
            digest = hashlib.sha256(url.encode()).hexdigest()[:16]
            self._mirrors[url] = Mirror(self.root / f"{digest}.git")
        yield self._mirrors[url]
