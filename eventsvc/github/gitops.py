"""The real `git` CLI, run with `asyncio.create_subprocess_exec`, for promotion commits.

No working tree and no checkout: a run works in a bare repository (a per-repository
cache, see `eventsvc.github.mirror`), reads files with one `git cat-file --batch`,
writes blob, trees and commit as loose objects (`eventsvc.github.objects`, on
top of the target's tree: only the edited files are touched), and pushes that
commit's sha with a lease (`git push URL SHA:refs/heads/BRANCH`). The remote is
always given as a URL on the command line, so nothing about it is stored in the
repository's config.

Values on the command line: URLs and branch names often come from event data
(`repo: "{{ data.repo }}"`), which strangers write. They never become options:
every remote command puts `--` before its operands, and `check_url` /
`check_branch` refuse a value starting with `-` (and anything else git would read
as more than a plain URL or branch) before git runs. Remotes are `https://`,
`ssh://` or scp-like `git@host:path`; `file://` only when the caller allows it
(config `promotion.allowFileUrls`). `GIT_ALLOW_PROTOCOL` says the same to git
itself, so a redirect or a transport helper (`ext::`) cannot widen it.

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
from eventsvc.errors import ExternalError, RefusedValueError, RetryableExternalError

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
SCHEMES = ("https", "ssh")  # remote URL schemes always allowed; file:// on request
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
_SCP = re.compile(rf"(?:(?P<user>[^@:/]+)@)?(?P<host>{_HOST}):(?P<path>.+)")
_NETLOC = re.compile(rf"(?:(?P<user>[^@/]*)@)?(?P<host>{_HOST})(?::(?P<port>\d{{1,5}}))?")
_USER = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:-]*")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1 or SHA-256
URL_EXAMPLE = "https://github.com/acme/deploy.git, ssh://git@github.com/acme/deploy.git or " \
    "git@github.com:acme/deploy.git"  # fmt: skip
FILE_HINT = ("file:// URLs are off: set promotion.allowFileUrls: true "
             "(EVENTSVC_PROMOTION_ALLOW_FILE_URLS=true) for local repositories")  # fmt: skip


class GitError(RetryableExternalError):
    """A git command failed in a way that may pass on retry (network, race)."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class GitAuthError(ExternalError):
    """git was refused access to the repository; the message says what to fix."""


class UnsafeValueError(RefusedValueError):
    """A URL or branch name that must not reach a git command line; often event data.
    The message names the field, the value and what to write instead."""


def _shown(value: str) -> str:
    """A refused `value` for a message: as given (what is wrong must show), but with a
    URL's password masked and not the whole of a huge one."""
    text = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)[^/@]*@", r"\1***@", value)
    return repr(text if len(text) <= 200 else text[:200] + "...")


def url_problem(url: str, allow_file: bool = False) -> str | None:
    """Why git must not be given `url` as a remote, or None when it is a plain
    https, ssh, scp-like (or, with `allow_file`, file) repository URL."""
    if not url:
        return "is empty"
    if url.startswith("-"):
        return "starts with '-', which git would read as an option, not a repository"
    if not re.fullmatch(r"[\x21-\x7e]+", url) or "\\" in url:
        return "holds spaces, control characters, backslashes or non-ASCII characters"
    if "://" not in url:
        scp = _SCP.fullmatch(url)
        if scp is None:  # a local path, or <transport>::<address> (ext::sh -c ...)
            return ("is neither a URL nor user@host:path"
                    + ("" if allow_file else "; a local path is a file:// remote"))  # fmt: skip
        if (scp["user"] or "").startswith("-") or scp["path"].startswith(("-", ":")):
            return "has a user or path starting with '-' or ':', which ssh or git would misread"
        return None
    scheme = url.split("://", 1)[0].lower()
    if scheme == "file":
        if not allow_file:
            return f"uses file://; {FILE_HINT}"
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            return "is not file:///absolute/path"
        return None
    if scheme not in SCHEMES:
        allowed = "https, ssh" + (", file" if allow_file else "")
        return f"uses {scheme}://; allowed schemes are {allowed} (and git@host:path)"
    parts = urlsplit(url)
    netloc = _NETLOC.fullmatch(parts.netloc)
    if netloc is None or not parts.path.strip("/"):
        return "does not name a host and a repository path"
    user = netloc["user"]
    if user is not None and (user.startswith("-") or not _USER.fullmatch(user)):
        return "has a user part git or ssh would misread"
    return None


def check_url(url: str, field: str = "repo", allow_file: bool = False) -> str:
    """`url`, or UnsafeValueError naming `field` when git must not be given it."""
    problem = url_problem(url, allow_file)
    if problem is not None:
        raise UnsafeValueError(
            f"{field}: {_shown(url)} {problem}; refused (it never reaches git). "
            f"Give a repository URL such as {URL_EXAMPLE}"
        )
    return url


def branch_problem(name: str) -> str | None:
    """Why `name` is not a branch name git would take as it is (`git check-ref-format
    --branch` rules), or None."""
    if not name:
        return "is empty"
    if name.startswith("-"):
        return "starts with '-', which git would read as an option"
    if (_BAD_REF.search(name) or name.startswith("/") or name.endswith(("/", "."))
            or name in ("@", "HEAD")
            or any(p.startswith(".") or p.endswith(".lock") for p in name.split("/"))):  # fmt: skip
        return ("is not a valid branch name (no spaces, '..', ':', '~', '^', '?', '*', '[', "
                "'\\', '@{', or a part starting with '.' or ending with '.lock')")
    return None


def check_branch(name: str, field: str = "branch") -> str:
    """`name`, or UnsafeValueError naming `field` when it is no plain branch name."""
    problem = branch_problem(name)
    if problem is not None:
        raise UnsafeValueError(
            f"{field}: {_shown(name)} {problem}; refused (it never reaches git). "
            "Give a plain branch name such as main or eventsvc/promote/staging/shop"
        )
    return name


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

    `url` is checked at once (`check_url`, UnsafeValueError); `token` goes only to
    an https `url` on one of `token_hosts` (`host:port`)."""

    url: str
    gitdir: Path
    token: str | None = field(default=None, repr=False)
    author: Author = field(default_factory=Author)
    allow_file: bool = False  # file:// remotes (config promotion.allowFileUrls)
    token_hosts: frozenset[str] = frozenset()
    seconds: float = 0.0  # time spent in git, for the result and the benchmark
    commands: list[list[str]] = field(default_factory=list)  # argv of every run (no secrets)

    def __post_init__(self) -> None:
        check_url(self.url, "repo", self.allow_file)
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
            # the transports git may use at all, redirects and helpers included
            GIT_ALLOW_PROTOCOL=":".join([*SCHEMES, *(["file"] if self.allow_file else [])]),
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
        refs = [f"refs/heads/{check_branch(b)}" for b in dict.fromkeys(branches)]
        out = await self.run("ls-remote", "--", self.url, *refs)
        found: dict[str, str] = {}
        for line in out.splitlines():  # the remote's words: only a sha and a ref are used
            sha, _, ref = line.partition("\t")
            if _SHA.fullmatch(sha) and ref.startswith("refs/heads/"):
                found[ref.removeprefix("refs/heads/")] = sha
        return found

    async def fetch(self, branches: Sequence[str], depth: int = 1) -> None:
        """Fetch `branches`; incremental in a kept repository. Local ref names are
        flat (`refs/eventsvc/fetched/<hash>`): branches `a/b` and, later, `a/b/c` never
        collide there."""
        specs = [f"+refs/heads/{check_branch(b)}:{fetched_ref(b)}" for b in dict.fromkeys(branches)]
        shallow = [f"--depth={depth}"] if depth > 0 else []
        await self.run("fetch", "-q", "--no-tags", "--no-write-fetch-head", *shallow, "--",
                       self.url, *specs)  # fmt: skip

    async def read(self, names: Sequence[str]) -> list[Blob | None]:
        """Objects by name (`SHA`, `SHA:path`) in one process; None for those missing."""
        if not names:
            return []
        if any("\n" in n for n in names):
            raise RefusedValueError(f"a path holds a line break: {names!r}")
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
        check_branch(branch)
        for sha in (rev, expect, hold[1] if hold else None):
            if sha is not None and not _SHA.fullmatch(sha):
                raise UnsafeValueError(f"push: {_shown(sha)} is not a commit sha")
        options = ["--porcelain"]
        refspecs = [f"{rev}:refs/heads/{branch}"]
        if force:
            options.append(f"--force-with-lease=refs/heads/{branch}:{expect or ''}")
        if hold is not None:
            other, sha = hold
            options += ["--atomic", f"--force-with-lease=refs/heads/{check_branch(other)}:{sha}"]
            refspecs.append(f"{sha}:refs/heads/{other}")
        args = ["push", *options, "--", self.url, *refspecs]
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
