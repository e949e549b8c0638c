"""A small YAML writer that can put comments at a field path.

PyYAML cannot emit comments; converted files need them where something was left
out, so the block structure is written here and scalars are quoted by PyYAML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

Path = tuple[str | int, ...]
Comments = Mapping[Path, Sequence[str]]


def scalar(value: Any) -> str:
    """One scalar (or an empty collection) as flow YAML, quoted where YAML needs it."""
    if isinstance(value, str) and "\n" not in value and value and not _needs_quotes(value):
        return value
    if isinstance(value, str) and "\n" in value:  # one line: a JSON string is YAML too
        return json.dumps(value, ensure_ascii=False)
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, allow_unicode=True)
    return text.removesuffix("\n...\n").rstrip("\n")


def _needs_quotes(text: str) -> bool:
    loaded: Any
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError:
        return True
    return loaded != text or text != text.strip() or text[0] in "{[&*!|>'\"%@`#-?:,"


def _key(key: Any) -> str:
    return scalar(str(key))


def _comment_lines(texts: Sequence[str], indent: int) -> list[str]:
    pad = " " * indent
    return [f"{pad}# {line}" if line else f"{pad}#" for t in texts for line in t.splitlines()]


def _is_block(value: Any) -> bool:
    return isinstance(value, Mapping | list) and len(value) > 0


def _block(value: Any, path: Path, indent: int, comments: Comments, out: list[str]) -> None:
    if isinstance(value, Mapping):
        _mapping(value, path, indent, comments, out)
    else:
        _sequence(value, path, indent, comments, out)


def _orphans(value: Any, path: Path, indent: int, comments: Comments, out: list[str]) -> None:
    """Comments on children that are not in the output (what was left out), at the end."""
    present = set(value) if isinstance(value, Mapping) else set(range(len(value)))
    for where, texts in comments.items():
        if len(where) == len(path) + 1 and where[: len(path)] == path and where[-1] not in present:
            out.extend(_comment_lines(texts, indent))


def _mapping(value: Mapping[Any, Any], path: Path, indent: int, comments: Comments,
             out: list[str]) -> None:  # fmt: skip
    pad = " " * indent
    for key, item in value.items():
        where = (*path, key)
        out.extend(_comment_lines(comments.get(where, ()), indent))
        if _is_block(item):
            out.append(f"{pad}{_key(key)}:")
            _block(item, where, indent + 2, comments, out)
        elif isinstance(item, str) and "\n" in item:
            out.append(f"{pad}{_key(key)}: {_literal(item, indent + 2)}")
        else:
            out.append(f"{pad}{_key(key)}: {scalar(item)}")
    _orphans(value, path, indent, comments, out)


def _sequence(value: list[Any], path: Path, indent: int, comments: Comments,
              out: list[str]) -> None:  # fmt: skip
    pad = " " * indent
    for i, item in enumerate(value):
        where = (*path, i)
        out.extend(_comment_lines(comments.get(where, ()), indent))
        if isinstance(item, str) and "\n" in item:
            out.append(f"{pad}- {_literal(item, indent + 2)}")
            continue
        if not _is_block(item):
            out.append(f"{pad}- {scalar(item)}")
            continue
        sub: list[str] = []
        _block(item, where, indent + 2, comments, sub)
        first = next(n for n, line in enumerate(sub) if not line.lstrip().startswith("#"))
        sub[first] = f"{pad}- {sub[first][indent + 2:]}"
        out.extend(sub)
    _orphans(value, path, indent, comments, out)


def _literal(text: str, indent: int) -> str:
    if text != text.rstrip("\n") + "\n" or any(line != line.rstrip() for line in text.split("\n")):
        return scalar(text)  # trailing blanks or spaces: a quoted string keeps them exactly
    pad = " " * indent
    body = "\n".join(pad + line if line else "" for line in text.rstrip("\n").split("\n"))
    return "|\n" + body


def dump(value: Mapping[str, Any], comments: Comments | None = None) -> str:
    """One YAML document; comments at `()` go first."""
    comments = comments or {}
    out = _comment_lines(comments.get((), ()), 0)
    _mapping(value, (), 0, comments, out)
    return "\n".join(out) + "\n"
