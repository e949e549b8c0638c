"""Dotted paths into JSON-like documents: `pull_request.head.sha`, `commits.0.id`.

One implementation for every part that reads a value out of an event or a result;
sensor filters add `*` wildcards and escaped dots on top of `step`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What `lookup` returns for a path that is not there (None is a value)."""


def step(node: Any, part: str) -> Any:
    """`node[part]` for a mapping key or a list index (negative allowed), else MISSING."""
    if isinstance(node, Mapping):
        return node.get(part, MISSING)
    if isinstance(node, list) and part.lstrip("-").isdigit():
        idx = int(part)
        return node[idx] if -len(node) <= idx < len(node) else MISSING
    return MISSING


def lookup(doc: Any, path: str) -> Any:
    """Value at dotted `path` in `doc`, or MISSING."""
    node = doc
    for part in path.split("."):
        node = step(node, part)
        if node is MISSING:
            return MISSING
    return node
