"""The one template language: `{{ expr }}`, a CEL expression, in a string.

Two stages render it. The engine (sensors/params.py), before a trigger kind runs,
evaluates the expressions over the firing's events (`data`, `event`, `events`) and
leaves the others as written. A kind that has names of its own (`number` of an
environment, `values` and `changes` of a promotion, `sensor` of a status) marks those
fields in its schema with `NAMES_MARK` and renders what is left with `render` at
execute time. Event data placed into such a field by the first stage is `protect`ed,
so the second stage never reads it as a template: data stays data.

The spelling before this one, `{name}` and `{data.a.b}`, is still rendered in marked
fields (`old` in `render`) for one release; `old_placeholders` finds it for lint.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from eventsvc import cel
from eventsvc.errors import PermanentTriggerError

NAMES_MARK = "x-eventsvc-names"
"""In a trigger kind's schema, marks a string field the kind renders again at execute time;
the value lists the names (`["number", "namespace"]`) an expression there may read."""

OLD_PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_.\-]*)\}(?!\})")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_template(text: str) -> list[str | tuple[str]]:
    """Literal text and `(expr,)` pieces; quotes inside `{{ }}` may hold `}}`."""
    out: list[str | tuple[str]] = []
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            break
        end, quote, i = -1, "", start + 2
        while i < len(text) - 1:
            ch = text[i]
            if quote:
                if ch == "\\":
                    i += 1
                elif ch == quote:
                    quote = ""
            elif ch in "'\"":
                quote = ch
            elif text.startswith("}}", i):
                end = i
                break
            i += 1
        if end < 0:
            break
        if start > pos:
            out.append(text[pos:start])
        out.append((text[start + 2 : end],))
        pos = end + 2
    if pos < len(text):
        out.append(text[pos:])
    return out


# -- fields a kind renders itself ---------------------------------------------------------


def late_fields(schema: Mapping[str, Any] | None) -> dict[tuple[str | int, ...], frozenset[str]]:
    """Path inside the kind's section -> names, for every field marked with `NAMES_MARK`."""
    return dict(_marked(schema or {}, ()))


def _marked(
    schema: Mapping[str, Any], path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], frozenset[str]]]:
    if NAMES_MARK in schema:
        yield path, frozenset(schema[NAMES_MARK])
    for key, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, Mapping):
            yield from _marked(sub, (*path, key))


def protect(value: str, force: bool = False) -> str:
    """`value` (event data) as it is placed into a field rendered again later: text with a
    brace (or any text, with `force`) becomes one quoted `{{ "..." }}` piece, which renders
    back to itself, so it is never read as a template."""
    if force or "{" in value or "}" in value:
        return "{{ " + json.dumps(value, ensure_ascii=False) + " }}"
    return value


_OPEN = re.compile(r"\{[A-Za-z0-9_.\-]*$")
_CLOSE = re.compile(r"^[A-Za-z0-9_.\-]*\}")


def joins(before: str, after: str) -> bool:
    """Whether a value put between the template texts `before` and `after` could make a
    `{name}` of the old spelling with them (`{data.` + `action` + `}`): then it is
    `protect`ed whatever it holds."""
    return bool(_OPEN.search(before) or _CLOSE.match(after))


# -- rendering at execute time ------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _program(expr: str) -> cel.Program | None:
    try:
        return cel.Program(expr.strip())
    except cel.CelSyntaxError:
        return None


def _quoted(expr: str) -> str | None:
    """The text of a `protect`ed piece (a JSON string literal), read without CEL."""
    expr = expr.strip()
    if len(expr) < 2 or expr[0] != '"' or expr[-1] != '"':
        return None
    try:
        value = json.loads(expr)
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def render(
    text: str,
    names: Mapping[str, Any],
    old: Callable[[str], str | None] | None = None,
) -> str:
    """`text` with every `{{ expr }}` that reads only `names` evaluated; other expressions
    are left as written. `old(name)`: the value of a `{name}` of the old spelling in the
    literal text, or None to leave it. One pass: a value put in is never rendered again."""
    out: list[str] = []
    for piece in split_template(text):
        if isinstance(piece, str):
            out.append(_render_old(piece, old) if old is not None else piece)
            continue
        expr = piece[0]
        quoted = _quoted(expr)
        if quoted is not None:
            out.append(quoted)
            continue
        program = _program(expr)
        if program is None or not program.names <= names.keys():
            out.append("{{" + expr + "}}")
            continue
        try:
            value = program.evaluate({n: cel.to_cel(names[n]) for n in program.names})
        except cel.CelEvalError as e:
            raise PermanentTriggerError(
                f"{{{{ {program.text} }}}} failed: {e}; the names here are "
                f"{', '.join(sorted(names))}"
            ) from e
        out.append(cel.format_value(value))
    return "".join(out)


def _render_old(text: str, old: Callable[[str], str | None]) -> str:
    def one(m: re.Match[str]) -> str:
        found = old(m.group(1))
        return m.group(0) if found is None else found

    return OLD_PLACEHOLDER.sub(one, text)


def names_read(text: str) -> frozenset[str]:
    """The names the expressions of `text` read (expressions that are not CEL read none)."""
    found: set[str] = set()
    for piece in split_template(text):
        program = None if isinstance(piece, str) else _program(piece[0])
        if program is not None:
            found |= program.names
    return frozenset(found)


# -- the old spelling, for lint -----------------------------------------------------------


def old_placeholders(text: str, names: frozenset[str]) -> list[str]:
    """`name` of every `{name}` of the old spelling in the literal text that a field with
    these `names` renders: one of the names, or a dotted path (`data.release.tag_name`)."""
    found: list[str] = []
    for piece in split_template(text):
        if isinstance(piece, str):
            found += [n for n in OLD_PLACEHOLDER.findall(piece) if n in names or "." in n]
    return found


def new_spelling(name: str) -> str:
    """`{{ number }}` for `number`, `{{ data.commits[0].id }}` for `data.commits.0.id`."""
    head, *rest = name.split(".")
    expr = head
    for part in rest:
        if part.isdigit():
            expr += f"[{part}]"
        elif _IDENT.fullmatch(part):
            expr += f".{part}"
        else:
            expr += f"[{json.dumps(part)}]"
    return "{{ " + expr + " }}"
