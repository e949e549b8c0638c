"""What a conversion could not carry over: comments in the output, lines on stderr."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsvc import yamldoc

OutPath = tuple[str | int, ...]
NOT_CONVERTED = "eventsvc: not converted: "
NOTE = "eventsvc: "


class NotConvertible(ValueError):
    """Raised by the mapping helpers: the message says why."""


def listed(value: Any, what: str) -> list[Any]:
    """`value` when it is a list (None: empty); NotConvertible otherwise."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise NotConvertible(f"{what} must be a list")
    return value


def mapped(value: Any, what: str) -> Mapping[str, Any]:
    """`value` when it is a mapping (None: empty); NotConvertible otherwise."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise NotConvertible(f"{what} must be a mapping")
    return value


@dataclass(frozen=True, slots=True)
class Finding:
    file: str
    line: int
    field: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.why}"


@dataclass(slots=True)
class Output:
    """Comments for one output document, and the findings of its source document."""

    doc: yamldoc.Document
    comments: dict[OutPath, list[str]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def not_converted(self, src: Sequence[str | int], out: OutPath, why: str) -> None:
        where = yamldoc.field_name(tuple(src))
        self.comments.setdefault(out, []).append(f"{NOT_CONVERTED}{where}: {why}")
        self.findings.append(Finding(self.doc.file, self.doc.line(tuple(src)), where, why))

    def note(self, out: OutPath, text: str) -> None:
        self.comments.setdefault(out, []).append(NOTE + text)

    def unknown(self, value: Mapping[str, Any], known: Sequence[str], src: Sequence[str | int],
                out: OutPath) -> None:  # fmt: skip
        """Every key of `value` the converter does not read is reported, never dropped."""
        for key in value:
            if key not in known:
                self.not_converted((*src, key), out, f"{key!r} has no eventsvc counterpart "
                                   "the converter knows")  # fmt: skip
