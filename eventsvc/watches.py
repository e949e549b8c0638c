"""`kind: Watch` specs and the pure logic of the watch gateway.

A Watch names a Kubernetes resource (group, version, plural), optionally a namespace
and a label selector, and the `fields` whose changes are worth an event. Nothing
here talks to the cluster or the bus: reading fields from an object, fingerprinting
them, diffing two states and deciding what an observation means are pure functions,
tested without a server.

Field paths are dotted (`status.health.status`); a missing field reads as null.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from eventsvc import yamldoc
from eventsvc.errors import SpecProblem

KIND = "Watch"
_DNS = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
_PLURAL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_VERSION = r"^v[0-9]+((alpha|beta)[0-9]+)?$"
_FIELD = r"^[A-Za-z0-9_$@/-]+(\.[A-Za-z0-9_$@/-]+)*$"
SCHEMA: dict[str, Any] = yamldoc.document_schema(KIND, {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "resource", "fields"],
    "properties": {
        "group": {"type": "string", "pattern": r"^$|" + _DNS,
                  "x-hint": "an API group such as 'argoproj.io'; '' for the core group"},
        "version": {"type": "string", "pattern": _VERSION,
                    "x-hint": "an API version such as 'v1' or 'v1alpha1'"},
        "resource": {"type": "string", "pattern": _PLURAL,
                     "x-hint": "the lowercase plural, e.g. 'applications', 'workflows'"},
        "namespace": {"type": "string", "pattern": yamldoc.NAME_PATTERN,
                  "x-hint": yamldoc.NAME_HINT},
        "labelSelector": {"type": "string"},
        "fields": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "pattern": _FIELD,
                      "x-hint": "a dotted path such as 'status.health.status'"},
        },
    },
})  # fmt: skip
_TOP_LEVEL = ("metadata", "spec", "status", "data", "type")


class Change(StrEnum):
    ADDED = "added"
    CHANGED = "changed"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True, eq=False)
class Watch:
    name: str
    file: str
    group: str
    version: str
    resource: str
    namespace: str | None  # None: all namespaces (or a cluster-scoped resource)
    label_selector: str | None
    fields: tuple[str, ...]
    raw: Mapping[str, Any]

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def same_as(self, other: Watch) -> bool:
        return self.raw == other.raw


# ---------------------------------------------------------------- pure logic


def field_value(obj: Any, path: str) -> Any:
    """The value at dotted `path` in `obj`, or None when any step is missing."""
    current = obj
    for step in path.split("."):
        if isinstance(current, Mapping) and step in current:
            current = current[step]
        elif isinstance(current, list) and step.isdigit() and int(step) < len(current):
            current = current[int(step)]
        else:
            return None
    return current


def field_values(obj: Any, fields: Sequence[str]) -> dict[str, Any]:
    return {f: field_value(obj, f) for f in fields}


def fingerprint(values: Mapping[str, Any]) -> str:
    """A short stable digest of the watched fields' values."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, Any]:
    """`{field: {from, to}}` for every field whose value differs (None stands for absent)."""
    old, new = old or {}, new or {}
    out: dict[str, Any] = {}
    for f in sorted(set(old) | set(new)):
        before, after = old.get(f), new.get(f)
        if before != after:
            out[f] = {"from": before, "to": after}
    return out


def classify(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> Change | None:
    """What going from the stored fields `old` to the observed `new` means; None: nothing.

    None on either side means the object is unknown (old) or gone (new).
    """
    if old is None and new is None:
        return None
    if old is None:
        return Change.ADDED
    if new is None:
        return Change.DELETED
    return Change.CHANGED if changes(old, new) else None


def newer(rv: str, than: str | None) -> bool:
    """Whether resourceVersion `rv` is not older than `than`. Versions are opaque to
    clients; in practice they are etcd revisions, compared as integers when they parse."""
    if not than:
        return True
    try:
        return int(rv) >= int(than)
    except ValueError:
        return True


def backoff(attempt: int, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds to wait before reconnect number `attempt` (1, 2, ...): doubling, capped."""
    return float(min(cap, base * 2 ** max(attempt - 1, 0)))


def event_id(watch: str, uid: str, resource_version: str) -> str:
    return f"{watch}:{uid}:{resource_version}"


# ---------------------------------------------------------------- spec parsing


def parse_watch(doc: yamldoc.Document) -> tuple[Watch | None, list[SpecProblem]]:
    problems = yamldoc.validate_schema(doc, SCHEMA)
    spec = doc.value.get("spec") if isinstance(doc.value, dict) else None
    if isinstance(spec, dict):
        problems += _check_spec(doc, spec)
    if problems:
        return None, sorted(set(problems), key=lambda p: (p.line, p.field))
    assert isinstance(spec, dict)
    return Watch(
        name=doc.value["metadata"]["name"],
        file=doc.file,
        group=spec.get("group", ""),
        version=spec["version"],
        resource=spec["resource"],
        namespace=spec.get("namespace"),
        label_selector=spec.get("labelSelector") or None,
        fields=tuple(spec["fields"]),
        raw=doc.value,
    ), []


def _check_spec(doc: yamldoc.Document, spec: Mapping[str, Any]) -> list[SpecProblem]:
    """Meaning the schema cannot check."""
    problems: list[SpecProblem] = []
    fields = spec.get("fields")
    seen: set[str] = set()
    for i, f in enumerate(fields if isinstance(fields, list) else []):
        if not isinstance(f, str):
            continue
        if f in seen:
            problems.append(doc.problem(("spec", "fields", i), f"{f!r} is listed twice"))
        seen.add(f)
        top = f.split(".")[0]
        if top not in _TOP_LEVEL:
            close = difflib.get_close_matches(top, _TOP_LEVEL, n=1, cutoff=0.6)
            if close:
                problems.append(doc.problem(("spec", "fields", i),
                                            f"{f!r} starts with {top!r}; did you mean "
                                            f"{close[0]!r}?"))  # fmt: skip
    selector = spec.get("labelSelector")
    if isinstance(selector, str) and selector.strip():
        for term in selector.split(","):
            if not term.strip() or term.count("=") > 2 or " " in term.strip():
                problems.append(doc.problem(("spec", "labelSelector"), (
                    f"{selector!r} is not a label selector; write terms such as "
                    "'app=web,tier!=cache,eventsvc.dev/managed' separated by commas"
                )))  # fmt: skip
                break
    return problems


# ---------------------------------------------------------------- files


def load_watches(paths: Sequence[str | Path]) -> tuple[list[Watch], list[SpecProblem]]:
    """Every Watch under `paths`, and the problems of Watch documents and YAML syntax."""
    return yamldoc.load_kind(paths, KIND, parse_watch)
