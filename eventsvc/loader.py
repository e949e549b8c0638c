"""Loading the sensors directory: every YAML document under the given paths (read by
`yamldoc.py`), dispatched by `kind` to its parser (Sensor: `sensors/model.py`, Schedule:
`schedules.py`, Watch: `watches.py`).

Kinds register a parser here; a file with mistakes yields every problem it holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eventsvc import schedules, watches, yamldoc
from eventsvc.errors import SpecProblem
from eventsvc.sensors import model as sensor_model

Parser = Callable[[yamldoc.Document], tuple[Any | None, list[SpecProblem]]]
KINDS: dict[str, Parser] = {"Sensor": sensor_model.parse_sensor}
KINDS["Schedule"] = schedules.parse_schedule
KINDS["Watch"] = watches.parse_watch


@dataclass(slots=True)
class Loaded:
    """What a set of files declared, by kind, and every problem found."""

    by_kind: dict[str, list[Any]] = field(default_factory=dict)
    problems: list[SpecProblem] = field(default_factory=list)
    warnings: list[SpecProblem] = field(default_factory=list)  # reported; nothing refused
    files: list[Path] = field(default_factory=list)

    @property
    def sensors(self) -> list[sensor_model.SensorSpec]:
        return self.by_kind.get("Sensor", [])


def load_paths(paths: Sequence[str | Path]) -> Loaded:
    loaded = Loaded()
    names: dict[tuple[str, str], str] = {}
    for path in yamldoc.spec_files(paths):
        loaded.files.append(path)
        if not path.exists():
            loaded.problems.append(
                SpecProblem(str(path), 1, "(file)", "no such file or directory; check the path")
            )
            continue
        docs, problems = yamldoc.read_documents(path)
        loaded.problems.extend(problems)
        for doc in docs:
            _load_doc(doc, loaded, names)
    return loaded


def _load_doc(doc: yamldoc.Document, loaded: Loaded, names: dict[tuple[str, str], str]) -> None:
    if doc.value is None:  # an empty document between `---` separators
        return
    if not isinstance(doc.value, dict):
        loaded.problems.append(doc.problem((), "expected a mapping with apiVersion and kind"))
        return
    kind = doc.value.get("kind")
    if str(doc.value.get("apiVersion", "")).startswith("argoproj.io/") and kind in (
        "Sensor", "EventSource"
    ):  # one line, not a problem per Argo field
        loaded.problems.append(doc.problem(("apiVersion",), f"an Argo Events {kind}, not an "
                                           f"eventsvc file; convert it with: eventsvc convert "
                                           f"argo-events {doc.file} -o DIR"))  # fmt: skip
        return
    parser = KINDS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        loaded.problems.append(
            doc.problem(("kind",), f"{kind!r} is not a known kind; use one of: {', '.join(KINDS)}")
        )
        return
    obj, found = parser(doc)
    loaded.warnings.extend(p for p in found if p.severity == "warning")
    loaded.problems.extend(p for p in found if p.severity != "warning")
    if obj is None:
        return
    name = str(getattr(obj, "name", ""))
    assert isinstance(kind, str)
    where = names.get((kind, name))
    if where:
        loaded.problems.append(
            doc.problem(("metadata", "name"), f"{kind} {name!r} is already declared in {where}")
        )
        return
    names[(kind, name)] = f"{doc.file}:{doc.line(('metadata', 'name'))}"
    loaded.by_kind.setdefault(kind, []).append(obj)
