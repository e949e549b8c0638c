"""The real `git` CLI, run with `asyncio.create_subprocess_exec`, for promotion commits.

No working tree and no checkout: a run works in a bare repository (a per-repository
cache, see `eventsvc.github.mirror`), reads files with one `git cat-file --batch`,
writes blob, trees and commit as loose objects (`eventsvc.github.objects`, on
top of the target's tree: only the edited files are touched), and pushes that
commit's sha with a lease (`git push URL SHA:refs/heads/BRANCH`). The remote is
always given as a URL on the command line, so nothing about it is stored in the
repository's config.

Credentials: over HTTPS a token goes to git as an `http.extraHeader`
(`Authorization: Basic base64(x-access-token:TOKEN)`, what GitHub accepts for App
installation tokens and personal tokens) through `GIT_CONFIG_COUNT/KEY/VALUE`
environment variables: never in argv (readable by every user in `ps`), never in
the remote URL (which git prints and stores), and scrubbed from any output we
keep. The header is only sent to the hosts in `Git.token_hosts` (the configured
GitHub, see `GitHubSettings.git_hosts`); any other host gets no credentials.
SSH URLs use the ambient SSH set-up (`GIT_SSH_COMMAND`, agent, keys).
Prompts are disabled: a missing credential fails at once instead of hanging.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import time
from collections.abc import Collection, Sequence
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


def https_host(url: str) -> str | None:
    """`host:port` (lower case, port 443 when not given) of an https URL; None for others.
    What `token_hosts` holds and what a remote is compared with before it gets a token."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "https" or not parts.hostname:
        return None
    try:
        port = parts.port or 443
    except ValueError:
        return None
    return f"{parts.hostname.lower()}:{port}"


def auth_env(url: str, token: str | None, hosts: Collection[str]) -> dict[str, str]:
    """Environment that makes git send `token` to an https remote on one of `hosts`
    (`host:port`, see `https_host`); empty for any other remote."""
    if not token or https_host(url) not in hosts:
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
    }


@dataclass(frozen=True, slots=True)
class Blob:
    """An object read with `cat-file --batch`: its type and content."""

    type: str  # blob, commit, tree
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")


@dataclass(slots=True)
class Git:
    """git commands on one bare repository (`gitdir`) against one remote (`url`).

    `token` goes only to an https `url` on one of `token_hosts` (`host:port`)."""

    url: str
    gitdir: Path
    token: str | None = field(default=None, repr=False)
    author: Author = field(default_factory=Author)
    token_hosts: frozenset[str] = frozenset()
    seconds: float = 0.0  # time spent in git, for the result and the benchmark
    commands: list[list[str]] = field(default_factory=list)  # argv of every run (no secrets)

    def __post_init__(self) -> None:
        if self.token and https_host(self.url) not in self.token_hosts:
            log.info("no credentials sent: the repository is not on the configured GitHub",
                     url=safe_url(self.url), github=sorted(self.token_hosts))  # fmt: skip

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
        env.update(auth_env(self.url, self.token, self.token_hosts))
        return env

    def _scrub(self, text: str) -> str:
        if self.token:
            text = text.replace(self.token, "***")
            text = text.replace(base64.b64encode(f"x-access-token:{self.token}".encode()).decode(),
                                "***")  # fmt: skip
        return text

    async def run_bytes(self, *args: str, input: bytes | None = None) -> bytes:
        # --git-dir: never discover another repository above the cache directory
        argv = ["git", f"--git-dir={self.gitdir}", *args]
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
        if proc.returncode != 0:
            # porcelain output (push) reports rejections on stdout
            stderr = self._scrub((err + b"\n" + out).decode(errors="replace")).strip()
            what = f"git {' '.join(args[:2])} on {safe_url(self.url)} failed: {stderr[-800:]}"
            if any(s in stderr.lower() for s in _AUTH_FAILURE):
                raise GitAuthError(
                    f"{what}; check that the GitHub App is installed on the repository with "
                    "contents: write (or that the token may push), or the SSH key for SSH URLs"
                )
            raise GitError(what, stderr)
        return out

    async def run(self, *args: str, input: bytes | None = None) -> str:
        return (await self.run_bytes(*args, input=input)).decode(errors="replace")

    async def init(self) -> None:
        """Create the bare repository unless it exists."""
        if not (self.gitdir / "HEAD").is_file():
            self.gitdir.mkdir(parents=True, exist_ok=True)
            await self.run("init", "-q", "--bare")

    async def ls_remote(self, branches: Sequence[str]) -> dict[str, str]:
        """Branch name -> sha for those of `branches` that exist on the remote."""
        refs = [f"refs/heads/{b}" for b in dict.fromkeys(branches)]
        out = await self.run("ls-remote", self.url, *refs)
        found: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref.startswith("refs/heads/"):
                found[ref.removeprefix("refs/heads/")] = sha
        return found

    async def fetch(self, branches: Sequence[str], depth: int = 1) -> None:
        """Fetch `branches`; incremental in a kept repository. Local ref names are
        flat (`refs/eventsvc/fetched/<hash>`): branches `a/b` and, later, `a/b/c` never
        collide there."""
        specs = [f"+refs/heads/{b}:{fetched_ref(b)}" for b in dict.fromkeys(branches)]
        shallow = [f"--depth={depth}"] if depth > 0 else []
        await self.run("fetch", "-q", "--no-tags", "--no-write-fetch-head", *shallow, self.url,
                       *specs)  # fmt: skip

    async def read(self, names: Sequence[str]) -> list[Blob | None]:
        """Objects by name (`SHA`, `SHA:path`) in one process; None for those missing."""
        if not names:
            return []
        if any("\n" in n for n in names):
            raise PermanentTriggerError(f"a path holds a line break: {names!r}")
        out = await self.run_bytes("cat-file", "--batch",
                                   input=("\n".join(names) + "\n").encode())  # fmt: skip
        found: list[Blob | None] = []
        pos = 0
        for _ in names:
            end = out.index(b"\n", pos)
            header = out[pos:end].decode(errors="replace")
            pos = end + 1
            if header.endswith((" missing", " ambiguous")):
                found.append(None)
                continue
            _, kind, size = header.rsplit(" ", 2)
            found.append(Blob(kind, out[pos : pos + int(size)]))
            pos += int(size) + 1
        return found

    def ident(self) -> str:
        """`Name <email>` for commits."""
        return f"{_ident(self.author.name)} <{_ident(self.author.email)}>"

    async def push(
        self, rev: str, branch: str, expect: str | None, force: bool,
        hold: tuple[str, str] | None = None,
    ) -> bool:  # fmt: skip
        """Push `rev` to `branch`; False when the remote moved (rejected), to fetch and retry.

        `force` replaces the branch only if it still points at `expect` (None: must
        not exist yet), so a racing promotion is never overwritten. `hold=(other,
        sha)`: push only if branch `other` is still at `sha` too (an atomic push that
        leaves `other` as it is).
        """
        args = ["push", "--porcelain", self.url, f"{rev}:refs/heads/{branch}"]
        if force:
            args.insert(1, f"--force-with-lease=refs/heads/{branch}:{expect or ''}")
        if hold is not None:
            other, sha = hold
            args[1:1] = ["--atomic", f"--force-with-lease=refs/heads/{other}:{sha}"]
            args.append(f"{sha}:refs/heads/{other}")
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

    async def gc_auto(self) -> None:
        """Pack loose objects when git thinks it is time (cheap when it is not)."""
        await self.run("gc", "--auto", "--quiet")


def fetched_ref(branch: str) -> str:
    return "refs/eventsvc/fetched/" + hashlib.sha256(branch.encode()).hexdigest()[:16]


def _ident(text: str) -> str:
    return re.sub(r"[<>\n]", "", text).strip() or "eventsvc"
