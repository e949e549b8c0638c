"""Key expressions for `correlate` and `concurrency.key`, compiled once at load.

A key is written like a CEL expression over `data` and the event's attributes:
`data.pull_request.head.sha`, `data.labels[0].name`, `subject`. Such member
paths are evaluated here directly (fast, no library). Anything else is a CEL
expression and needs the optional `cel-python` package. The result is turned
into a string; a missing value yields None (the event has no key).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

from eventsvc import cel
from eventsvc.events import CloudEvent

KeyFn = Callable[[CloudEvent], str | None]
_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(-?\d+)\]|\[\"([^\"]*)\"\]|\['([^']*)'\]")
_ROOT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ATTRIBUTE = re.compile(r"^[a-z0-9]{1,20}$")


class KeyExpressionError(ValueError):
    pass


def _parse_path(text: str) -> tuple[str, list[str | int]] | None:
    """(root, segments) when `text` is a plain member path, else None."""
    m = _ROOT.match(text)
    if not m:
        return None
    pos, parts = m.end(), []
    while pos < len(text):
        seg = _SEGMENT.match(text, pos)
        if not seg:
            return None
        name, index, dq, sq = seg.groups()
        parts.append(int(index) if index is not None else (name or dq or sq or ""))
        pos = seg.end()
    return m.group(), parts


def _walk(node: Any, parts: list[str | int]) -> Any:
    for part in parts:
        if isinstance(node, Mapping) and isinstance(part, str):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and -len(node) <= part < len(node):
            node = node[part]
        elif isinstance(node, Mapping) and isinstance(part, int):
            node = node.get(str(part))
        else:
            return None
        if node is None:
            return None
    return node


def as_key(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return format(value, "g") if isinstance(value, float) else str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def compile_key(text: str) -> KeyFn:
    """A function from event to key; raises KeyExpressionError with the fix in the message."""
    text = text.strip()
    path = _parse_path(text)
    if path is not None:
        root, parts = path
        if root == "data":
            return lambda ev: as_key(_walk(ev.get_data(), parts))
        if _ATTRIBUTE.match(root) and not parts:
            return lambda ev: as_key(ev.get_attributes().get(root))
        if not _ATTRIBUTE.match(root):
            raise KeyExpressionError(
                f"{text!r}: unknown name {root!r}; event data is under 'data' "
                f"(write 'data.{text}') and attributes are lowercase (id, type, subject, ...)"
            )
        raise KeyExpressionError(
            f"{text!r}: attribute {root!r} is a string and has no fields; "
            f"write {root!r} alone, or 'data.<path>' for event data"
        )
    return _compile_cel(text)


def _compile_cel(text: str) -> KeyFn:
    try:
        program = cel.Program(text)
    except cel.CelSyntaxError as e:  # one line, as every lint problem
        raise KeyExpressionError(str(e)) from e

    def evaluate(ev: CloudEvent) -> str | None:
        activation: dict[str, Any] = {
            k: cel.to_cel(str(v)) for k, v in ev.get_attributes().items() if v is not None
        }
        activation["data"] = cel.to_cel(cast(Any, ev.get_data()))
        try:
            return as_key(program.evaluate(activation))
        except cel.CelEvalError:
            return None

    return evaluate


def first_key(fn: KeyFn, events: Mapping[str, CloudEvent]) -> str | None:
    """The key of the first event (by dependency order) that has one."""
    for ev in events.values():
        key = fn(ev)
        if key is not None:
            return key
    return None
