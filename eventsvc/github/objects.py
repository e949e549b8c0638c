"""Write a commit that replaces a few files, as git loose objects, without a git process.

A promotion changes one or two files on top of the target. The trees on their
paths were already read (with the files, in one `git cat-file --batch`), so the
new blobs, the trees above them and the commit are written here directly:
`objects/xx/yyyy…`, zlib-compressed `<type> <size>\\0<content>`, the format every
git reads. Each object goes to a temp file and is renamed into place, so readers
and concurrent writers never see half an object (the same object from two writers
is the same bytes). Untouched entries keep their mode and sha; an edited file
keeps its mode. SHA-1 repositories only (what `git init` makes for the mirror).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

TREE_MODE = b"40000"
FILE_MODE = b"100644"
EXEC_MODE = b"100755"
Entry = tuple[bytes, bytes, bytes]  # (mode, name, 20-byte sha)


def parse_tree(data: bytes) -> list[Entry]:
    entries: list[Entry] = []
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        nul = data.index(b"\0", space)
        entries.append((data[pos:space], data[space + 1 : nul], data[nul + 1 : nul + 21]))
        pos = nul + 21
    return entries


def tree_bytes(entries: list[Entry]) -> bytes:
    """Entries in git's order: by name, a tree's name compared as if it ended in '/'."""
    ordered = sorted(entries, key=lambda e: e[1] + (b"/" if e[0] == TREE_MODE else b""))
    return b"".join(mode + b" " + name + b"\0" + sha for mode, name, sha in ordered)


def write_object(gitdir: Path, kind: str, data: bytes) -> str:
    raw = f"{kind} {len(data)}\0".encode() + data
    sha = hashlib.sha1(raw, usedforsecurity=False).hexdigest()
    path = gitdir / "objects" / sha[:2] / sha[2:]
    if path.exists():
        return sha
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="tmp_obj_")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(zlib.compress(raw, 1))
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sha


def write_commit(
    gitdir: Path,
    parent: str,
    tree_of: Callable[[str], bytes],
    files: Mapping[str, bytes],
    message: str,
    ident: str,
) -> tuple[str, str]:
    """(commit sha, tree sha) of `parent` with `files` replaced. `tree_of(dir)` gives
    the parent's tree object at `dir` ("" for the root); `ident` is `Name <email>`."""
    tree = _write_tree(gitdir, "", tree_of, files)
    stamp = f"{ident} {int(time.time())} +0000"
    body = f"tree {tree}\nparent {parent}\nauthor {stamp}\ncommitter {stamp}\n\n{message}"
    return write_object(gitdir, "commit", body.encode()), tree


def _write_tree(
    gitdir: Path, where: str, tree_of: Callable[[str], bytes], files: Mapping[str, bytes]
) -> str:
    entries = {name: (mode, sha) for mode, name, sha in parse_tree(tree_of(where))}
    below: dict[bytes, dict[str, bytes]] = {}
    for path, content in files.items():
        head, _, rest = path.partition("/")
        name = head.encode()
        if rest:
            below.setdefault(name, {})[rest] = content
            continue
        old = entries.get(name, (FILE_MODE, b""))[0]
        mode = old if old in (FILE_MODE, EXEC_MODE) else FILE_MODE  # not a link or a tree
        entries[name] = (mode, bytes.fromhex(write_object(gitdir, "blob", content)))
    for name, inner in below.items():
        sub = f"{where}/{name.decode()}" if where else name.decode()
        entries[name] = (TREE_MODE, bytes.fromhex(_write_tree(gitdir, sub, tree_of, inner)))
    data = tree_bytes([(mode, name, sha) for name, (mode, sha) in entries.items()])
    return write_object(gitdir, "tree", data)
