"""Edits to YAML files in a deployment repository that keep everything else as written.

ruamel.yaml's round-trip mode keeps comments, key order and quoting; we also
detect the file's indentation (mapping indent, sequence dash offset) so the
dump reproduces it, and hand back the original text untouched when nothing
changed. Two edits exist:

- `set_image`: a Kustomize `images[]` entry (matched by `name`): `newTag`,
  `digest`, `newName`; the entry (and `images:`) is added when missing.
- `set_path`: a value at a dotted path (`image.tag`, `spec.values.0.tag`) in any
  YAML file; missing mappings on the way are created.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import ScalarString

_KEY_LINE = re.compile(r"^(\s*)(?:-\s+)?[^\s#:][^#]*:\s*(#.*)?$")
_MISSING = object()


class EditError(ValueError):
    """An edit cannot be applied; the message names the file, the path and why."""


@dataclass(frozen=True, slots=True)
class Change:
    file: str
    field: str  # e.g. "images[ghcr.io/acme/shop].newTag" or "image.tag"
    old: Any
    new: Any

    def __str__(self) -> str:
        old = "(unset)" if self.old is None else self.old
        return f"{self.file}: {self.field}: {old} -> {self.new}"


def _indentation(text: str) -> tuple[int, int, int]:
    """(mapping indent, sequence indent, dash offset) as the file writes them."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    mapping, seq = None, None
    for cur, nxt in itertools.pairwise(lines):
        match = _KEY_LINE.match(cur)
        if match is None or cur.rstrip().endswith(("|", ">", "|-", ">-")):
            continue
        base = len(match.group(1)) + (2 if cur.lstrip().startswith("- ") else 0)
        depth = len(nxt) - len(nxt.lstrip())
        if nxt.lstrip().startswith("- ") and depth >= base and seq is None:
            seq = depth - base
        elif depth > base and mapping is None and not nxt.lstrip().startswith("- "):
            mapping = depth - base
        if mapping is not None and seq is not None:
            break
    m = mapping or 2
    offset = seq if seq is not None else 0
    return m, max(offset + 2, m if offset else 2), offset


class YamlDoc:
    """One YAML file held for round-trip editing."""

    def __init__(self, text: str, file: str = "(yaml)") -> None:
        self.text = text
        self.file = file
        self.yaml = YAML(typ="rt")
        self.yaml.preserve_quotes = True
        self.yaml.width = 4096
        mapping, sequence, offset = _indentation(text)
        self.yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
        self.yaml.explicit_start = text.lstrip().startswith("---")
        try:
            docs = list(self.yaml.load_all(text))
        except YAMLError as e:
            raise EditError(f"{file}: not valid YAML: {e}") from e
        if len(docs) > 1:
            raise EditError(f"{file}: holds {len(docs)} YAML documents; edits need one")
        self.data: Any = docs[0] if docs else CommentedMap()
        if self.data is None:
            self.data = CommentedMap()
        self.changes: list[Change] = []

    def dump(self) -> str:
        """The edited text; the original text, byte for byte, when nothing changed."""
        if not self.changes:
            return self.text
        out = io.StringIO()
        self.yaml.dump(self.data, out)
        return out.getvalue()

    # ---- Kustomize images ------------------------------------------------------------
    def image(self, name: str) -> Mapping[str, Any] | None:
        images = self.data.get("images") if isinstance(self.data, Mapping) else None
        for entry in images or []:
            if isinstance(entry, Mapping) and entry.get("name") == name:
                return entry
        return None

    def set_image(
        self,
        name: str,
        new_tag: str | None = None,
        digest: str | None = None,
        new_name: str | None = None,
    ) -> list[Change]:
        if not isinstance(self.data, CommentedMap):
            raise EditError(f"{self.file}: a kustomization must be a mapping at the top")
        images = self.data.get("images")
        if images is None:
            images = self.data["images"] = CommentedSeq()
        if not isinstance(images, CommentedSeq):
            raise EditError(f"{self.file}: 'images' must be a list of {{name, newTag}} entries")
        entry = self.image(name)
        if entry is None:
            entry = CommentedMap(name=name)
            images.append(entry)
        assert isinstance(entry, CommentedMap)
        field = f"images[{name}]"
        wanted = {"newName": new_name, "newTag": new_tag, "digest": digest}
        made: list[Change] = []
        for key, value in wanted.items():
            if value is not None:
                made += self._set(entry, key, str(value), f"{field}.{key}")
        # a digest wins over newTag in Kustomize: a tag bump alone must drop an old digest
        if new_tag is not None and digest is None and "digest" in entry:
            made.append(Change(self.file, f"{field}.digest", entry.pop("digest"), None))
            self.changes.append(made[-1])
        return made

    # ---- any path ------------------------------------------------------------------
    def get(self, path: str) -> Any:
        node: Any = self.data
        for part in _split(path):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.lstrip("-").isdigit() and (
                -len(node) <= int(part) < len(node)
            ):
                node = node[int(part)]
            else:
                return None
        return node

    def set_path(self, path: str, value: Any) -> list[Change]:
        parts = _split(path)
        if not parts:
            raise EditError(f"{self.file}: empty path")
        node: Any = self.data
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                    raise EditError(f"{self.file}: {where}: no list item {part!r}")
                node = node[int(part)]
            elif isinstance(node, CommentedMap):
                if part not in node or node[part] is None:
                    node[part] = CommentedMap()
                node = node[part]
            else:
                raise EditError(f"{self.file}: {where}: is a {type(node).__name__}, not a mapping")
        last = parts[-1]
        if isinstance(node, list):
            if not last.lstrip("-").isdigit() or not -len(node) <= int(last) < len(node):
                raise EditError(f"{self.file}: {path}: no list item {last!r}")
            return self._set(node, int(last), value, path)
        if not isinstance(node, CommentedMap):
            parent = ".".join(parts[:-1]) or "(top)"
            raise EditError(
                f"{self.file}: {path}: {parent} is a {type(node).__name__}, not a mapping"
            )
        return self._set(node, last, value, path)

    def _set(self, node: Any, key: Any, value: Any, field: str) -> list[Change]:
        old = node.get(key, _MISSING) if isinstance(node, Mapping) else node[key]
        if old is not _MISSING and _same(old, value):
            return []
        if isinstance(old, ScalarString) and isinstance(value, str):
            value = type(old)(value)  # keep the quoting style of the old value
        node[key] = value
        change = Change(self.file, field, None if old is _MISSING else _plain(old), _plain(value))
        self.changes.append(change)
        return [change]


def _split(path: str) -> list[str]:
    """`a.b[0].c` and `a.b.0.c` both give ["a", "b", "0", "c"]."""
    return [p for p in re.split(r"\.|\[(-?\d+)\]", path) if p]


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return old is new or str(old).lower() == str(new).lower()
    return old == new or (not isinstance(old, Mapping | list) and str(old) == str(new))


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, ScalarString) else value
