"""YAML spec files with line numbers, and JSON Schema validation that reports
every problem as `file:line: field: message`.

PyYAML's composer keeps a mark on every node; we convert nodes to plain Python
values and keep a side table from field path to line, so validation can name the
line of the field at fault (or of its parent when the field is missing).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

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
) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_str = str(_scalar(key_node))
            line = key_node.start_mark.line + 1
            if key_str in out:  # YAML would keep the last one silently
                duplicates.append(((*path, key_str), lines[(*path, key_str)], line))
            lines[(*path, key_str)] = line
            out[key_str] = _convert(value_node, (*path, key_str), lines, duplicates)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(item, (*path, i), lines, duplicates) for i, item in enumerate(node.value)
        ]  # fmt: skip
    return _scalar(node)


_CONSTRUCTOR = yaml.SafeLoader("")


def _scalar(node: yaml.Node) -> Any:
    try:
        return _CONSTRUCTOR.construct_object(node, deep=True)
    except ValueError:
        # an unquoted impossible date such as 2026-02-30: keep its text, so the check of
        # the field names it (and its line) and the rest of the file is still checked
        return node.value


def parse_documents(text: str, file: str) -> tuple[list[Document], list[SpecProblem]]:
    """Every document in `text`; a YAML syntax error becomes a problem with its line."""
    docs: list[Document] = []
    problems: list[SpecProblem] = []
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            lines: dict[FieldPath, int] = {}
            duplicates: list[tuple[FieldPath, int, int]] = []
            docs.append(Document(_convert(node, (), lines, duplicates), file, lines))
            problems += [
                SpecProblem(file, line, field_name(path), f"given twice (lines {first} and "
                            f"{line}); YAML would keep only the last: merge them into one")
                for path, first, line in duplicates
            ]  # fmt: skip
    except yaml.MarkedYAMLError as e:
        return docs, [_syntax_problem(file, text, e)]
    return docs, problems


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
        text = path.read_text()
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
