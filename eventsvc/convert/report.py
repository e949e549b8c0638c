"""What a conversion could not carry over: comments in the output, lines on stderr."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from eventsvc import specfile

OutPath = tuple[str | int, ...]
NOT_CONVERTED = "eventsvc: not converted: "
NOTE = "eventsvc: "


class NotConvertible(ValueError):
    """Raised by the mapping helpers: the message says why."""


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

    doc: specfile.Document
    comments: dict[OutPath, list[str]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    def not_converted(self, src: Sequence[str | int], out: OutPath, why: str) -> None:
        where = specfile.field_name(tuple(src))
        self.comments.setdefault(out, []).append(f"{NOT_CONVERTED}{where}: {why}")
        self.findings.append(Finding(self.doc.file, self.doc.line(tuple(src)), where, why))

    def note(self, out: OutPath, text: str) -> None:
        self.comments.setdefault(out, []).append(NOTE + text)
