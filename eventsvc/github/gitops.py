"""The real `git` CLI, run with `asyncio.create_subprocess_exec`, for promotion commits.

Credentials: over HTTPS a token goes to git as an `http.extraHeader`
(`Authorization: Basic base64(x-access-token:TOKEN)`, what GitHub accepts for App
installation tokens and personal tokens) through `GIT_CONFIG_COUNT/KEY/VALUE`
environment variables: never in argv (readable by every user in `ps`), never in
the remote URL (which git prints and stores), and scrubbed from any output we
keep. SSH URLs use the ambient SSH set-up (`GIT_SSH_COMMAND`, agent, keys).
Prompts are disabled: a missing credential fails at once instead of hanging.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from eventsvc import logs
from eventsvc.errors import PermanentTriggerError, TemporaryTriggerError

log = logs.get("eventsvc.github.git")
# config injected through the environment: ours replaces any inherited one
_INJECTED_CONFIG = re.compile(r"^GIT_CONFIG_(COUNT|KEY_\d+|VALUE_\d+|PARAMETERS)$")
_AUTH_FAILURE = (
    "authentication failed",
    "could not read username",
    "permission denied",
    "invalid username or password",
    "the requested url returned error: 401",
    "the requested url returned error: 403",
    "repository not found",
)


class GitError(TemporaryTriggerError):
    """A git command failed in a way that may pass on retry (network, race)."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class GitAuthError(PermanentTriggerError):
    """git was refused access to the repository; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Author:
    name: str = "eventsvc"
    email: str = "eventsvc@users.noreply.github.com"


def safe_url(url: str) -> str:
    """`url` without any user:password part, for messages and logs."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def auth_env(url: str, token: str | None) -> dict[str, str]:
    """Environment that makes git send `token` to an http(s) remote; empty otherwise."""
    if not token or urlsplit(url).scheme not in ("http", "https"):
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }


@dataclass(slots=True)
class Git:
    """A working directory tied to one remote (`origin`)."""

    url: str
    workdir: Path
    token: str | None = field(default=None, repr=False)
    author: Author = field(default_factory=Author)
    seconds: float = 0.0  # time spent in git, for the result and the benchmark
    commands: list[list[str]] = field(default_factory=list)  # argv of every run (no secrets)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not _INJECTED_CONFIG.match(k)}
        env.update(
            GIT_TERMINAL_PROMPT="0",
            GIT_ASKPASS="",
            SSH_ASKPASS="",
            LC_ALL="C",
            GIT_AUTHOR_NAME=self.author.name,
            GIT_AUTHOR_EMAIL=self.author.email,
            GIT_COMMITTER_NAME=self.author.name,
            GIT_COMMITTER_EMAIL=self.author.email,
        )
        env.update(auth_env(self.url, self.token))
        return env

    def _scrub(self, text: str) -> str:
        if self.token:
            text = text.replace(self.token, "***")
            text = text.replace(base64.b64encode(f"x-access-token:{self.token}".encode()).decode(),
                                "***")  # fmt: skip
        return text

    async def run(self, *args: str, input: bytes | None = None, check: bool = True) -> str:
        argv = ["git", "-C", str(self.workdir), *args]
        self.commands.append(argv)
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(),
        )
        out, err = await proc.communicate(input)
        self.seconds += time.perf_counter() - started
        if check and proc.returncode != 0:
            # porcelain output (push) reports rejections on stdout
            stderr = self._scrub((err + b"\n" + out).decode(errors="replace")).strip()
            what = f"git {' '.join(args[:2])} on {safe_url(self.url)} failed: {stderr[-800:]}"
            if any(s in stderr.lower() for s in _AUTH_FAILURE):
                raise GitAuthError(
                    f"{what}; check that the GitHub App is installed on the repository with "
                    "contents: write (or that the token may push), or the SSH key for SSH URLs"
                )
            raise GitError(what, stderr)
        return out.decode(errors="replace")

    async def init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await self.run("init", "-q")
        await self.run("remote", "add", "origin", self.url)

    async def ls_remote(self, branches: Sequence[str]) -> dict[str, str]:
        """Branch name -> sha for those of `branches` that exist on the remote."""
        refs = [f"refs/heads/{b}" for b in branches]
        out = await self.run("ls-remote", "origin", *refs)
        found: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref.startswith("refs/heads/"):
                found[ref.removeprefix("refs/heads/")] = sha
        return found

    async def fetch(self, branches: Sequence[str], depth: int = 1) -> None:
        specs = [f"+refs/heads/{b}:refs/remotes/origin/{b}" for b in branches]
        await self.run("fetch", "-q", "--no-tags", f"--depth={depth}", "origin", *specs)

    async def checkout(self, start: str) -> None:
        await self.run("checkout", "-q", "--force", "-B", "eventsvc-work", start)

    async def show(self, rev: str, path: str) -> str | None:
        """The content of `path` at `rev`, or None when it does not exist there."""
        try:
            return await self.run("cat-file", "blob", f"{rev}:{path}")
        except GitError:
            return None

    async def message(self, rev: str) -> str:
        return await self.run("log", "-1", "--format=%B", rev)

    async def commit_all(self, paths: Sequence[str], message: str) -> bool:
        """Stage `paths` and commit; False when the index holds no change."""
        await self.run("add", "--", *paths)
        diff = await self.run("diff", "--cached", "--name-only")
        if not diff.strip():
            return False
        await self.run("commit", "-q", "--no-verify", "-F", "-", input=message.encode())
        return True

    async def tree(self, rev: str) -> str:
        return (await self.run("rev-parse", f"{rev}^{{tree}}")).strip()

    async def head(self) -> str:
        return (await self.run("rev-parse", "HEAD")).strip()

    async def push(self, branch: str, expect: str | None, force: bool) -> bool:
        """Push HEAD to `branch`; False when the remote moved (rejected), to fetch and retry.

        `force` replaces the branch only if it still points at `expect` (None: must
        not exist yet), so a racing promotion is never overwritten.
        """
        args = ["push", "--porcelain", "origin", f"HEAD:refs/heads/{branch}"]
        if force:
            args.insert(1, f"--force-with-lease=refs/heads/{branch}:{expect or ''}")
        try:
            await self.run(*args)
        except GitError as e:
            text = e.stderr.lower()
            if any(s in text for s in ("rejected", "stale info", "fetch first", "non-fast-forward",
                                       "cannot lock ref", "failed to update ref")):  # fmt: skip
                log.info("push rejected, the branch moved; will fetch and retry", branch=branch)
                return False
            raise
        return True


def write_files(workdir: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = workdir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
