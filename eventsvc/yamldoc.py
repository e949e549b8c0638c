"""YAML documents with their line numbers, read within bounds (size, aliases, depth), and
JSON Schema validation that reports every problem as `file:line: field: message`. Knows no
kind: `loader.py` dispatches documents to the kinds' parsers.

PyYAML's composer keeps a mark on every node; we convert nodes to plain Python
values and keep a side table from field path to line, so validation can name the
line of the field at fault (or of its parent when the field is missing).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError

from eventsvc.errors import SpecProblem

FieldPath = tuple[str | int, ...]


@dataclass(slots=True)
class Document:
    """One YAML document: its value, the file it came from and a line per field path."""

    value: Any
    file: str
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def line(self, path: FieldPath) -> int:
        """Line of `path`, or of its nearest ancestor that exists."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)

    def problem(self, path: FieldPath, message: str) -> SpecProblem:
        return SpecProblem(self.file, self.line(path), field_name(path), message)


def field_name(path: FieldPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(document)"


def _convert(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    duplicates: list[tuple[FieldPath, int, int]],
    loader: yaml.SafeLoader,
) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_str = str(_scalar(key_node, loader))
            line = key_node.start_mark.line + 1
            if key_str in out:  # YAML would keep the last one silently
                duplicates.append(((*path, key_str), lines[(*path, key_str)], line))
            lines[(*path, key_str)] = line
            out[key_str] = _convert(value_node, (*path, key_str), lines, duplicates, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(item, (*path, i), lines, duplicates, loader)
            for i, item in enumerate(node.value)
        ]  # fmt: skip
    return _scalar(node, loader)


def _scalar(node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    try:
        return loader.construct_object(node, deep=True)
    except ValueError:
        # an unquoted impossible date such as 2026-02-30: keep its text, so the check of
        # the field names it (and its line) and the rest of the file is still checked
        return node.value


# -- bounds: a spec file is small and plain; hostile YAML must not cost seconds or gigabytes

MAX_FILE_BYTES = 1024 * 1024
"""A spec file larger than this is refused unread."""
MAX_DEPTH = 100
"""Mappings and lists nested deeper than this are refused (PyYAML composes recursively)."""
MAX_ALIASES = 100
"""Aliases (`*name`) allowed in one file."""
MAX_ALIAS_NODES = 10_000
"""Values that the aliases of one file may expand to, all together."""


class _LimitError(yaml.YAMLError):
    """A bound was crossed; `line` is where, `message` names the limit and the fix."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts depth and aliases, and sizes what aliases expand to."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._open: set[int] = set()  # collections being composed: an alias to one recurses
        self._expands: dict[int, tuple[int, int]] = {}  # node id -> (values, depth) expanded
        self._aliases = 0
        self._alias_nodes = 0

    def compose_document(self) -> yaml.Node | None:
        self._expands.clear()  # by id: the last document's nodes are gone
        self._open.clear()
        self.anchors = _Anchors(self._open)
        node = super().compose_document()
        self.constructed_objects.clear()
        return node

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # PyYAML's name
        # the scanner checks every open `[`/`{` on every token (quadratic): 20,000 of them
        # took seconds before the composer could count them
        if self.flow_level >= MAX_DEPTH:
            raise _LimitError(self.get_mark().line + 1, f"nested more than {MAX_DEPTH} levels "
                              "deep; flatten the structure")  # fmt: skip
        super().fetch_flow_collection_start(TokenClass)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1 if event.start_mark else 1
        if isinstance(event, yaml.AliasEvent):
            return self._alias(parent, index, event, line)
        collection = isinstance(event, yaml.CollectionStartEvent)
        if collection:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _LimitError(line, f"nested more than {MAX_DEPTH} levels deep; "
                                  "flatten the structure")  # fmt: skip
        try:
            node = super().compose_node(parent, index)
            self._open.discard(id(node))
            return node
        finally:
            if collection:
                self._depth -= 1

    def _alias(self, parent: yaml.Node | None, index: Any, event: yaml.AliasEvent,
               line: int) -> yaml.Node | None:  # fmt: skip
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            raise _LimitError(line, f"more than {MAX_ALIASES} aliases (*name) in one file; "
                              "write the values out instead of aliasing them")  # fmt: skip
        node = super().compose_node(parent, index)  # the anchored node, or ComposerError
        if node is None:  # pragma: no cover - PyYAML returns the node or raises
            return node
        if id(node) in self._open:
            raise _LimitError(line, f"alias *{event.anchor} refers to a value that contains it; "
                              "remove the recursive alias")  # fmt: skip
        values, depth = self._expand(node)
        if self._depth + depth > MAX_DEPTH:
            raise _LimitError(line, f"nested more than {MAX_DEPTH} levels deep once *"
                              f"{event.anchor} is expanded; flatten the structure")  # fmt: skip
        self._alias_nodes += values
        if self._alias_nodes > MAX_ALIAS_NODES:
            raise _LimitError(line, f"aliases expand to more than {MAX_ALIAS_NODES} values in "
                              f"one file (at *{event.anchor}); write the values out or use "
                              "fewer aliases")  # fmt: skip
        return node

    def _expand(self, node: yaml.Node) -> tuple[int, int]:
        """Values and depth `node` expands to (shared nodes count each time they are reached).

        Memoized: every aliased node was sized (and its depth bounded) when it was aliased,
        so the recursion only walks the plain tree, which MAX_DEPTH bounds.
        """
        known = self._expands.get(id(node))
        if known is not None:
            return known
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        values, depth = 1, 0
        for child in children:
            v, d = self._expand(child)
            values += v
            depth = max(depth, d)
        result = (values, depth + 1 if isinstance(node, yaml.CollectionNode) else 0)
        self._expands[id(node)] = result
        return result


class _Anchors(dict[Any, yaml.Node]):
    """The composer's anchor table. PyYAML registers an anchor before composing the
    children, so a collection registered here is open until composed: an alias to it
    from inside is a cycle."""

    def __init__(self, open_nodes: set[int]) -> None:
        super().__init__()
        self._open = open_nodes

    def __setitem__(self, name: Any, node: yaml.Node) -> None:
        if isinstance(node, yaml.CollectionNode):
            self._open.add(id(node))
        super().__setitem__(name, node)


def parse_documents(text: str, file: str) -> tuple[list[Document], list[SpecProblem]]:
    """Every document in `text`; a YAML syntax error becomes a problem with its line.

    Bounded: size, nesting depth and aliases are limited (see MAX_*), each crossing
    is a problem naming the limit, never an exception or a long wait.
    """
    docs: list[Document] = []
    problems: list[SpecProblem] = []
    if len(text) > MAX_FILE_BYTES:
        return [], [_too_large(file, len(text.encode(errors="replace")))]
    loader = _BoundedLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node said there is one
                break
            lines: dict[FieldPath, int] = {}
            duplicates: list[tuple[FieldPath, int, int]] = []
            value = _convert(node, (), lines, duplicates, loader)
            loader.constructed_objects.clear()
            docs.append(Document(value, file, lines))
            problems += [
                SpecProblem(file, line, field_name(path), f"given twice (lines {first} and "
                            f"{line}); YAML would keep only the last: merge them into one")
                for path, first, line in duplicates
            ]  # fmt: skip
    except _LimitError as e:
        return docs, [SpecProblem(file, e.line, "(yaml)", e.message)]
    except yaml.MarkedYAMLError as e:
        return docs, [_syntax_problem(file, text, e)]
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps well below the limit
        return docs, [SpecProblem(file, 1, "(yaml)", "nested too deeply; flatten the structure")]
    finally:
        loader.dispose()
    return docs, problems


def _too_large(file: str, size: int) -> SpecProblem:
    return SpecProblem(
        file,
        1,
        "(file)",
        f"{size / 1024 / 1024:.1f} MiB is larger than the {MAX_FILE_BYTES // 1024 // 1024} MiB "
        "limit for a spec file; split it into several files",
    )


def _syntax_problem(file: str, text: str, e: yaml.MarkedYAMLError) -> SpecProblem:
    marks: list[Any] = [m for m in (e.problem_mark, e.context_mark) if m is not None]
    line = marks[0].line + 1 if marks else 1
    message = str(e.problem or e)
    if e.context and e.context_mark is not None and e.context_mark.line + 1 != line:
        if "end of stream" in message:  # e.g. an unclosed quote: its start is what to fix
            line = e.context_mark.line + 1
        message += f" ({e.context} started on line {e.context_mark.line + 1})"
    lines = text.splitlines()
    source = lines[line - 1] if 0 < line <= len(lines) else ""
    if "\\t" in message or "\t" in source:
        hint = "indent with spaces; YAML does not allow tabs"
    elif "quoted scalar" in str(e.context):
        hint = "close the quote that starts on this line"
    elif "mapping values are not allowed" in message:
        hint = "quote a value that contains ': ', e.g. message: \"note: deployed\""
    elif "{{" in source:
        hint = "quote a value that holds {{ }}, e.g. message: \"#{{ data.number }} opened\""
    else:
        hint = "fix the YAML syntax"
    return SpecProblem(file, line, "(yaml)", f"{message}; {hint}")


def read_documents(path: Path) -> tuple[list[Document], list[SpecProblem]]:
    try:
        with path.open() as f:
            text = f.read(MAX_FILE_BYTES + 1)  # no more: a larger file is refused
            if len(text) > MAX_FILE_BYTES:
                return [], [_too_large(str(path), path.stat().st_size)]
    except (OSError, UnicodeDecodeError) as e:
        return [], [SpecProblem(str(path), 1, "(file)", f"cannot read: {e}")]
    return parse_documents(text, str(path))


def spec_files(paths: Sequence[str | Path]) -> Iterator[Path]:
    """YAML files named directly, or found (recursively, sorted) under directories."""
    for p in map(Path, paths):
        if p.is_dir():
            # hidden entries are skipped: a ConfigMap volume holds every file twice,
            # once more under its `..data` / `..<timestamp>` directories
            yield from sorted(
                f for f in p.rglob("*")
                if f.suffix in (".yaml", ".yml") and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )  # fmt: skip
        else:
            yield p



Stamp = tuple[int, int]  # mtime_ns, size


def file_stamps(directory: Path) -> dict[Path, Stamp]:
    """Modification stamp of every spec file under `directory`: what hot reload compares."""
    out: dict[Path, Stamp] = {}
    for path in spec_files([directory]) if directory.is_dir() else ():
        try:
            st = path.stat()
        except OSError:
            continue
        out[path] = (st.st_mtime_ns, st.st_size)
    return out

_TYPE_NAMES = {
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _expected(schema_type: Any) -> str:
    types = schema_type if isinstance(schema_type, list) else [schema_type]
    return " or ".join(_TYPE_NAMES.get(t, str(t)) for t in types)


def _schema_errors(doc: Document, error: ValidationError) -> Iterator[SpecProblem]:
    path: FieldPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    inst = error.instance
    if error.validator == "required":
        missing = [
            name
            for name in cast(list[str], error.validator_value)
            if isinstance(inst, Mapping) and name not in inst
        ]
        for name in missing:
            # a missing field has no line of its own: point at its parent
            yield SpecProblem(doc.file, doc.line(path), field_name((*path, name)), "required")
    elif error.validator == "additionalProperties" and isinstance(inst, Mapping):
        known = list(schema.get("properties", {}))
        patterns = schema.get("patternProperties", {})
        for name in inst:
            if name in known or any(re.search(p, name) for p in patterns):
                continue
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(known)}"
            yield doc.problem((*path, name), f"unknown field; {hint}")
    elif error.validator == "type":
        templated = (  # `message: {{ x }}` unquoted is a mapping to YAML
            isinstance(inst, dict) and len(inst) == 1 and str(next(iter(inst))).startswith("{")
        )  # fmt: skip
        yield doc.problem(
            path,
            f"expected {_expected(error.validator_value)}, got {_TYPE_NAMES[_json_type(inst)]}"
            + (f" ({inst!r})" if not isinstance(inst, dict | list) else "")
            + ("; quote a value that starts with {{, e.g. \"{{ data.number }}\": YAML reads "
               "an unquoted { as a mapping" if templated else ""),
        )  # fmt: skip
    elif error.validator == "enum":
        choices = ", ".join(map(str, cast(list[Any], error.validator_value)))
        yield doc.problem(path, f"{inst!r} is not one of: {choices}")
    elif error.validator == "const":
        yield doc.problem(path, f"must be {error.validator_value!r}, got {inst!r}")
    elif error.validator == "pattern":
        hint = schema.get("x-hint") or f"must match {error.validator_value}"
        yield doc.problem(path, f"{inst!r}: {hint}")
    elif error.validator in ("anyOf", "oneOf"):
        yield from _branch_errors(doc, error)
    else:
        yield doc.problem(path, error.message)


def _branch_errors(doc: Document, error: ValidationError) -> Iterator[SpecProblem]:
    """For `anyOf` (string-or-mapping and the like) report the branch whose type fits."""
    branches = cast(list[dict[str, Any]], error.validator_value)
    kind = _json_type(error.instance)
    for i, branch in enumerate(branches):
        btype = branch.get("type")
        fits = kind in (btype if isinstance(btype, list) else [btype]) or (
            kind == "integer" and btype == "number"
        )
        if fits:
            sub = [e for e in error.context or () if e.relative_schema_path[0] == i]
            for e in sub:
                yield from _schema_errors(doc, e)
            if sub:
                return
    expected = " or ".join(_expected(b.get("type")) for b in branches if "type" in b)
    if expected:
        yield doc.problem(
            tuple(error.absolute_path),
            f"expected {expected}, got {_TYPE_NAMES[_json_type(error.instance)]}",
        )
    else:
        yield doc.problem(tuple(error.absolute_path), error.message)


def validate_schema(doc: Document, schema: Mapping[str, Any]) -> list[SpecProblem]:
    """Every schema violation in `doc`, in line order, one per field."""
    validator = jsonschema.Draft202012Validator(schema)
    problems: dict[tuple[int, str, str], SpecProblem] = {}
    for error in validator.iter_errors(doc.value):
        for p in _schema_errors(doc, error):
            problems.setdefault((p.line, p.field, p.message), p)
    return sorted(problems.values(), key=lambda p: (p.line, p.field))


API_VERSION = "eventsvc.dev/v1alpha1"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_HINT = "use lowercase letters, digits and '-', starting and ending alphanumeric (RFC 1123)"


def document_schema(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Schema of an eventsvc spec document: apiVersion, kind, metadata (an RFC 1123
    name, labels, annotations) and the kind's own `spec` schema."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": NAME_PATTERN, "x-hint": NAME_HINT},
                    "labels": {"type": "object"},
                    "annotations": {"type": "object"},
                },
                "additionalProperties": False,
            },
            "spec": dict(spec),
        },
    }


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def load_kind(
    paths: Sequence[str | Path],
    kind: str,
    parse: Callable[[Document], tuple[N | None, list[SpecProblem]]],
) -> tuple[list[N], list[SpecProblem]]:
    """Every document of `kind` under `paths`, parsed, and the problems of those documents
    and of YAML syntax. Other kinds are ignored (a broken Sensor does not stop schedules
    or watches from loading); a name declared twice is a problem in the later file."""
    found: list[N] = []
    problems: list[SpecProblem] = []
    where: dict[str, str] = {}
    for path in spec_files(paths):
        if not path.exists():
            continue
        docs, syntax = read_documents(path)
        problems += syntax
        for doc in docs:
            if not isinstance(doc.value, dict) or doc.value.get("kind") != kind:
                continue
            obj, found_problems = parse(doc)
            problems += found_problems
            if obj is None:
                continue
            if obj.name in where:
                problems.append(doc.problem(("metadata", "name"), f"{kind} {obj.name!r} is "
                                            f"already declared in {where[obj.name]}"))  # fmt: skip
                continue
            where[obj.name] = f"{doc.file}:{doc.line(('metadata', 'name'))}"
            found.append(obj)
    return found, problems
