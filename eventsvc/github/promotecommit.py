"""What a promotion commit holds, and reading it back from a mirror.

An `Edit` is one resolved change (literal values only). The edits pending on a
promotion branch ride in its commit message, as JSON in the `Eventsvc-Promotion:`
trailer (with `Eventsvc-Batch-Since:` when bumps are batched), so the next run can
re-apply them on top of a newer target. `Snapshot` reads the objects a run needs
from the mirror, many per `git cat-file --batch`.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eventsvc import logs
from eventsvc.errors import ExternalError
from eventsvc.github.gitops import Blob, Git
from eventsvc.github.yamledit import Change, EditError, YamlDoc

log = logs.get("eventsvc.github.promotecommit")
TRAILER = "Eventsvc-Promotion:"
SINCE_TRAILER = "Eventsvc-Batch-Since:"  # epoch seconds of the first bump of a batch


@dataclass(frozen=True, slots=True)
class Edit:
    """One resolved edit: literal values only (what the trailer stores)."""

    file: str
    image: str | None = None  # Kustomize image name, or
    path: str | None = None  # a YAML path
    values: tuple[tuple[str, Any], ...] = ()  # (newTag|digest|newName|value, literal)
    app: str | None = None  # whose bump it is (listed in batched pull requests)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.file, "image" if self.image else "set", self.image or self.path or "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"file": self.file}
        out.update({"image": self.image} if self.image else {"path": self.path})
        out.update(dict(self.values))
        if self.app is not None:
            out["app"] = self.app
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Edit:
        values = tuple((k, v) for k, v in doc.items()
                       if k not in ("file", "image", "path", "app"))  # fmt: skip
        app = doc.get("app")
        if not plain_path(str(doc["file"])):
            raise ValueError(f"not a plain path in the repository: {doc['file']!r}")
        return cls(str(doc["file"]), doc.get("image"), doc.get("path"), values,
                   None if app is None else str(app))  # fmt: skip

    def apply(self, doc: YamlDoc) -> list[Change]:
        vals = dict(self.values)
        if self.image:
            return doc.set_image(self.image, new_tag=_opt(vals.get("newTag")),
                                 digest=_opt(vals.get("digest")),
                                 new_name=_opt(vals.get("newName")))  # fmt: skip
        assert self.path is not None
        return doc.set_path(self.path, vals["value"])


def plain_path(file: str) -> bool:
    """True for a normalized path inside the repository (`overlays/staging/x.yaml`): not
    absolute, no `..`, `.` or empty parts, no line break."""
    if not file or any(c in file for c in "\n\r\0") or file.startswith(("/", "../")):
        return False
    return posixpath.normpath(file) == file and file not in (".", "..")


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


class Snapshot:
    """Objects read from the mirror, many per `git cat-file --batch`."""

    def __init__(self, git: Git) -> None:
        self.git = git
        self.objects: dict[str, Blob | None] = {}

    async def load(self, names: Iterable[str]) -> None:
        todo = [n for n in dict.fromkeys(names) if n not in self.objects]
        if todo:
            self.objects.update(zip(todo, await self.git.read(todo), strict=True))

    def get(self, name: str) -> Blob | None:
        return self.objects.get(name)

    @staticmethod
    def names(rev: str, files: Iterable[str]) -> list[str]:
        """What editing `files` at `rev` reads: the files and every tree above them."""
        out = [f"{rev}:"]
        for file in files:
            parts = file.split("/")
            out += [f"{rev}:{'/'.join(parts[:i])}" for i in range(1, len(parts))]
            out.append(f"{rev}:{file}")
        return out

    def trees(self, rev: str) -> dict[str, bytes]:
        """The trees read at `rev`, by directory ("" is the root)."""
        prefix = f"{rev}:"
        return {
            name[len(prefix) :]: blob.data
            for name, blob in self.objects.items()
            if blob is not None and blob.type == "tree" and name.startswith(prefix)
        }

    def text(self, rev: str, path: str) -> str | None:
        blob = self.objects.get(f"{rev}:{path}")
        return blob.text if blob is not None and blob.type == "blob" else None


def load_doc(text: str, file: str) -> YamlDoc:
    try:
        return YamlDoc(text, file)
    except EditError as e:
        raise ExternalError(str(e)) from e


def trailers(edits: Iterable[Edit], since: float | None) -> str:
    """The trailer lines that carry `edits` (and a batch's start) in a commit message."""
    text = TRAILER + " " + json.dumps([e.to_json() for e in edits], separators=(",", ":"))
    return text if since is None else f"{text}\n{SINCE_TRAILER} {since:.3f}"


def read_trailers(commit: Blob) -> tuple[list[Edit], float | None]:
    """Edits pending on a promotion commit, and when its batch started."""
    _, _, message = commit.text.partition("\n\n")
    edits: list[Edit] | None = None
    since: float | None = None
    for line in reversed(message.splitlines()):
        if line.startswith(TRAILER) and edits is None:
            try:
                edits = [Edit.from_json(d) for d in json.loads(line[len(TRAILER) :])]
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("unreadable promotion trailer ignored", commit=commit.text[:60])
                edits = []
        elif line.startswith(SINCE_TRAILER) and since is None:
            try:
                since = float(line[len(SINCE_TRAILER) :])
            except ValueError:
                since = None
    return edits or [], since


def tree_of(commit: Blob) -> str:
    first = commit.text.split("\n", 1)[0]  # "tree <sha>"
    return first.split()[1] if first.startswith("tree ") else ""
