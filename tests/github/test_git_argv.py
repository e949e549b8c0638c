"""URLs and branch names reach git's command line as operands, never as options.

They often come from event data (`repo: "{{ data.repo }}"`), written by strangers.
A refused value is an UnsafeValueError (permanent) naming the field, the value and
the fix, raised before any git process starts; behind that check, `--` before the
operands and GIT_ALLOW_PROTOCOL stop git itself from taking one as an option or an
`ext::` command, which the tests show by switching the check off.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eventsvc.errors import PermanentTriggerError, RefusedValueError, as_trigger_error
from eventsvc.github import gitops
from eventsvc.github.gitops import Git, GitError, UnsafeValueError
from tests.github.deployrepo import git, make_deploy_repo

# each one ran `touch MARKER` somewhere in git (or ssh) before the fix, or could have
ATTACKS = [
    "--upload-pack=touch {marker};",
    "--upload-pack=touch {marker};git@github.com:acme/deploy.git",
    "-utouch {marker};",
    "--config=core.sshCommand=touch {marker}",
    "ext::sh -c touch% {marker}",
    "ext::sh",
    "ssh://-oProxyCommand=touch%20{marker}/acme/deploy.git",
    "ssh://-oProxyCommand=touch{marker}@github.com/acme/deploy.git",
    "git@-oProxyCommand=touch:acme/deploy.git",
    "-oProxyCommand=touch@github.com:acme/deploy.git",
    "github.com:--upload-pack=touch",
]


@pytest.mark.parametrize("template", ATTACKS)
async def test_option_like_url_is_refused_before_git_runs(template: str, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    url = template.format(marker=marker)
    with pytest.raises(UnsafeValueError) as info:
        await Git(url, tmp_path / "w").ls_remote(["main"])
    message = str(info.value)
    assert isinstance(info.value, RefusedValueError)  # refused, and never retried:
    assert isinstance(as_trigger_error(info.value), PermanentTriggerError)
    assert message.startswith(f"repo: {url!r} ")  # the field and the value as given
    assert "Give a repository URL such as https://github.com/acme/deploy.git" in message
    assert not marker.exists()
    assert not (tmp_path / "w").exists()  # nothing ran, not even git init


@pytest.mark.parametrize("template", [
    "--upload-pack=touch {marker};",
    "-utouch {marker};",
    "ext::sh -c touch% {marker}",
])  # fmt: skip
async def test_git_itself_refuses_them_too(
    template: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: with the check switched off, `--` makes git read the value as
    a repository, and GIT_ALLOW_PROTOCOL keeps the ext:: helper off."""
    monkeypatch.setattr(gitops, "check_url", lambda url, field="repo", allow_file=False: url)
    marker = tmp_path / "PWNED"
    work = Git(template.format(marker=marker), tmp_path / "w")
    await work.init()
    with pytest.raises(GitError):
        await work.ls_remote(["main"])
    with pytest.raises(GitError):
        await work.fetch(["main"])
    assert not marker.exists()
    [remote] = [cmd for cmd in work.commands if "ls-remote" in cmd]
    assert remote[remote.index("--") + 1] == work.url


@pytest.mark.parametrize("name", ["--upload-pack=touch {marker};", "-x", "main;touch {marker}",
                                  "a..b", "a b", "HEAD", "x.lock", ".hidden", "a/", "a@{{1}}",
                                  "a:b", "", "a\\b", "a~1", "a^", "a*", "a?", "a[b", "a\nb"])  # fmt: skip
async def test_branch_names_that_are_no_plain_names_are_refused(name: str, tmp_path: Path) -> None:
    bare, url = make_deploy_repo(tmp_path)
    marker = tmp_path / "PWNED"
    branch = name.format(marker=marker)
    work = Git(url, tmp_path / "w", allow_file=True)
    await work.init()
    main = git(bare, "rev-parse", "main").strip()
    for call in (lambda: work.ls_remote(["main", branch]), lambda: work.fetch([branch]),
                 lambda: work.push(main, branch, None, force=True),
                 lambda: work.push(main, "ok", None, force=True, hold=(branch, main))):  # fmt: skip
        with pytest.raises(UnsafeValueError) as info:
            await call()
        assert str(info.value).startswith(f"branch: {branch!r} ")
        assert "Give a plain branch name such as main" in str(info.value)
    assert not marker.exists()
    assert work.commands == [[*work.commands[0][:2], "init", "-q", "--bare"]]  # nothing else ran
    assert "ok" not in git(bare, "branch", "--list")


async def test_remote_commands_put_double_dash_before_the_url(tmp_path: Path) -> None:
    bare, url = make_deploy_repo(tmp_path)
    work = Git(url, tmp_path / "w", allow_file=True)
    await work.init()
    tips = await work.ls_remote(["main", "staging"])
    await work.fetch(["main"])
    assert await work.push(tips["main"], "copy", None, force=True,
                           hold=("staging", tips["staging"]))  # fmt: skip
    remote = [cmd for cmd in work.commands if cmd[2] in ("ls-remote", "fetch", "push")]
    assert [cmd[2] for cmd in remote] == ["ls-remote", "fetch", "push"]
    for cmd in remote:
        dash = cmd.index("--")
        assert cmd[dash + 1] == url
        assert all(not arg.startswith("-") for arg in cmd[dash + 2 :])
    assert git(bare, "rev-parse", "copy").strip() == tips["main"]


async def test_file_urls_only_when_allowed(tmp_path: Path) -> None:
    _, url = make_deploy_repo(tmp_path)
    with pytest.raises(UnsafeValueError) as info:
        Git(url, tmp_path / "w")
    assert str(info.value).startswith(f"repo: {url!r} uses file://")
    assert "promotion.allowFileUrls: true" in str(info.value)
    assert "EVENTSVC_PROMOTION_ALLOW_FILE_URLS=true" in str(info.value)
    allowed = Git(url, tmp_path / "w", allow_file=True)
    assert allowed.env()["GIT_ALLOW_PROTOCOL"] == "https:ssh:file"
    assert Git("https://github.com/a/b.git", tmp_path).env()["GIT_ALLOW_PROTOCOL"] == "https:ssh"


@pytest.mark.parametrize("url", [
    "https://github.com/acme/deploy.git",
    "https://ghe.acme.example:8443/acme/deploy",
    "https://x-access-token:abc@github.com/acme/deploy.git",
    "https://[::1]/acme/deploy.git",
    "ssh://git@github.com/acme/deploy.git",
    "ssh://git@github.com:2222/acme/deploy.git",
    "git@github.com:acme/deploy.git",
    "github.com:acme/deploy.git",
])  # fmt: skip
def test_plain_repository_urls_pass(url: str) -> None:
    assert gitops.url_problem(url) is None


@pytest.mark.parametrize(("url", "problem"), [
    ("http://github.com/acme/deploy.git", "uses http://; allowed schemes are https, ssh"),
    ("git://github.com/acme/deploy.git", "uses git://"),
    ("ftp://github.com/acme/deploy.git", "uses ftp://"),
    ("file:///srv/deploy.git", "uses file://"),
    ("/srv/deploy.git", "a local path is a file:// remote"),
    ("./deploy.git", "is neither a URL nor user@host:path"),
    ("https://github.com/acme/de ploy.git", "holds spaces"),
    ("https://github.com/acme/deploy.git\n--upload-pack=x", "control characters"),
    ("https://evil.example\\@github.com/acme/deploy.git", "backslashes"),
    ("https://github.com", "does not name a host and a repository path"),
    ("https://-evil/acme/deploy.git", "does not name a host"),
    ("", "is empty"),
])  # fmt: skip
def test_other_urls_are_refused_with_the_reason(url: str, problem: str) -> None:
    found = gitops.url_problem(url)
    assert found is not None and problem in found


def test_a_refused_url_shows_no_password() -> None:
    with pytest.raises(UnsafeValueError) as info:
        gitops.check_url("http://x-access-token:ghp_secret@evil.example/acme/d.git", "repo")
    assert "ghp_secret" not in str(info.value)
    assert "'http://x-access-token:***@evil.example/acme/d.git'" in str(info.value)


@pytest.mark.parametrize("name", ["main", "eventsvc/promote/staging/shop", "release-1.2",
                                  "feature/ü", "a.b/c_d"])  # fmt: skip
def test_plain_branch_names_pass(name: str) -> None:
    assert gitops.branch_problem(name) is None


async def test_shas_the_remote_lists_must_be_shas(tmp_path: Path) -> None:
    """ls-remote output is the remote's word: a line that is no `<sha>\\t<ref>` is dropped."""
    bare, url = make_deploy_repo(tmp_path)
    work = Git(url, tmp_path / "w", allow_file=True)
    await work.init()
    tips = await work.ls_remote(["main"])
    assert tips == {"main": git(bare, "rev-parse", "main").strip()}
    with pytest.raises(UnsafeValueError, match="is not a commit sha"):
        await work.push("--force", "x", None, force=False)
