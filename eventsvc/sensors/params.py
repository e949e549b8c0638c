"""Trigger parameters: `{{ expr }}` in the template's string leaves, then Argo-style `parameters`.

Both work on the parsed tree, never on YAML text, so event data can change values
but never the template's structure. A leaf that is exactly one `{{ expr }}` keeps
the value's type (a number stays a number, a mapping stays a mapping); a leaf that
mixes text and expressions becomes a string.

Expressions are CEL over `data` and `event` (the first event of the firing, its
attributes plus `data`) and `events.<dependency>` (every event of the firing).
`{{ ... }}` whose names are none of these (Argo Workflows' `{{workflow.name}}`,
`{{inputs.parameters.x}}`) is not ours and stays as written. In a field its kind renders
again with names of its own (`{{ number }}`; see eventsvc/templates.py) those expressions are
left for the kind, and every value put in is protected from that second pass.

Compiled once per trigger (`plan`); `render(trigger, events)` is what the engine calls.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from eventsvc import cel, templates
from eventsvc.errors import PermanentTriggerError, SpecProblem
from eventsvc.events import CloudEvent
from eventsvc.sensors import filters
from eventsvc.triggers.base import URL_MARK

if TYPE_CHECKING:
    from eventsvc.sensors.model import TriggerSpec
    from eventsvc.yamldoc import Document

Problem = tuple[tuple[str | int, ...], str]
Renderer = Callable[["Scope"], Any]
_NO_DEFAULT: Any = object()
_OURS = re.compile(r"(?<![\w.])(data|event|events)\b")
SOURCES = ("dataKey", "contextKey", "expr")


class Scope:
    """The events of one firing, with their CEL views made once and shared."""

    def __init__(self, events: Mapping[str, CloudEvent]) -> None:
        self.events = events
        self.views = {dep: filters.EventView.of(e) for dep, e in events.items()}
        self._activation: dict[str, Any] | None = None

    @property
    def first_id(self) -> str:
        return next((e.get_id() for e in self.events.values()), "(no event)")

    def activation(self, dep: str | None = None) -> dict[str, Any]:
        """`data`/`event` of `dep` (default: the first event), `events` of all."""
        if self._activation is None:
            self._activation = {
                "events": cel.LazyMap({d: v.activation()["event"] for d, v in self.views.items()})
            }
        view = self.views.get(dep) if dep else next(iter(self.views.values()), None)
        if view is None:
            return {**self._activation, "data": None, "event": cel.LazyMap({})}
        return {**view.activation(), **self._activation}


# -- interpolation ------------------------------------------------------------------------


def _compile_expr(
    expr: str, declared: frozenset[str]
) -> tuple[cel.Program | None, str | None]:
    """(program, None) for ours, (None, None) for someone else's, (None, problem) for a bad one."""
    try:
        program = cel.Program(expr.strip())
    except cel.CelSyntaxError as e:
        return None, (str(e) if _OURS.search(expr) else None)
    if program.names - cel.ROOTS:
        return None, None
    unknown = sorted(program.event_refs - declared)
    if unknown:
        return None, (f"{{{{{expr}}}}} reads events.{unknown[0]}, but dependency "
                      f"{unknown[0]!r} is not declared in spec.dependencies")  # fmt: skip
    return program, None


_MEMBER_PATH = re.compile(r"(data|event|events)(\.[A-Za-z_][A-Za-z0-9_]*)+")


def _guard(text: str) -> str:
    """The `has()` guard for a plain member path (`data.a.b`), else the general shape."""
    text = text.strip()
    if _MEMBER_PATH.fullmatch(text):
        return f"has({text}) ? {text} : ''"
    return "has(data.x) ? data.x : ''"


def _field(path: Sequence[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def encode_url_value(value: str) -> str:
    """A rendered value placed into a URL: every reserved character percent-encoded, so
    event data stays one value (`../admin`, `x&admin=true`, `#` or `@` change nothing)."""
    return quote(value, safe="")


def _runner(path: tuple[str | int, ...]) -> Callable[[cel.Program, Scope], Any]:
    where = _field(path)

    def run(program: cel.Program, scope: Scope) -> Any:
        try:
            return program.evaluate(scope.activation())
        except cel.CelEvalError as e:
            raise PermanentTriggerError(
                f"{where}: {{{{ {program.text} }}}} failed on event {scope.first_id}: {e}; "
                f"fix the expression or guard it, e.g. {_guard(program.text)}"
            ) from e

    return run


def _pieces(
    text: str,
    path: tuple[str | int, ...],
    declared: frozenset[str],
    problems: list[Problem],
    foreign: Callable[[str], str | None] = lambda expr: None,
) -> list[str | cel.Program]:
    """`text` as literal pieces and compiled programs; an expression that is not ours stays
    as written, unless `foreign` has a problem with it."""
    pieces: list[str | cel.Program] = []
    for piece in templates.split_template(text):
        if isinstance(piece, str):
            pieces.append(piece)
            continue
        program, problem = _compile_expr(piece[0], declared)
        problem = problem or (None if program else foreign(piece[0]))
        if problem:
            problems.append((path, problem))
        pieces.append(program if program else "{{" + piece[0] + "}}")
    return pieces


def _compile_string(
    text: str,
    path: tuple[str | int, ...],
    declared: frozenset[str],
    problems: list[Problem],
    encode: Callable[[str], str] | None = None,
) -> Renderer:
    pieces = _pieces(text, path, declared, problems)
    run = _runner(path)
    if len(pieces) == 1 and isinstance(pieces[0], cel.Program):
        only = pieces[0]
        return lambda scope: run(only, scope)
    if not any(isinstance(p, cel.Program) for p in pieces):
        return lambda scope: text
    parts = tuple(pieces)
    if encode is not None:  # a URL with values in it: each value is one encoded piece
        return lambda scope: "".join(
            p if isinstance(p, str) else encode(cel.format_value(run(p, scope))) for p in parts
        )
    return lambda scope: "".join(
        p if isinstance(p, str) else cel.format_value(run(p, scope)) for p in parts
    )


def url_fields(kind_schema: Mapping[str, Any] | None) -> frozenset[str]:
    """The top-level fields of a kind that are URLs (`URL_MARK` in its schema)."""
    props = (kind_schema or {}).get("properties", {})
    return frozenset(k for k, v in props.items() if isinstance(v, Mapping) and v.get(URL_MARK))


Late = Mapping[tuple[str | int, ...], frozenset[str]]
"""Fields their kind renders again (`templates.NAMES_MARK`): path -> the kind's own names."""


def compile_template(
    value: Any,
    declared: frozenset[str],
    path: tuple[str | int, ...] = (),
    urls: frozenset[str] = frozenset(),
    late: Late | None = None,
) -> tuple[Renderer, list[Problem]]:
    """A function building a fresh copy of `value` with its `{{ }}` leaves evaluated;
    `urls`: the keys of `value` (a mapping) that are URLs; `late`: paths (from `path` on)
    of the fields the kind renders again."""
    problems: list[Problem] = []
    marks = {(*path, *k): v for k, v in (late or {}).items()}
    if isinstance(value, Mapping) and urls:
        items = [(k, _compile_node(v, (*path, k), declared, problems, marks,
                                   encode_url_value if k in urls else None))
                 for k, v in value.items()]  # fmt: skip
        return (lambda scope: {k: r(scope) for k, r in items}), problems
    return _compile_node(value, path, declared, problems, marks), problems


def _compile_node(
    value: Any,
    path: tuple[str | int, ...],
    declared: frozenset[str],
    problems: list[Problem],
    late: Late,
    encode: Callable[[str], str] | None = None,
) -> Renderer:
    if isinstance(value, Mapping):
        items = [(k, _compile_node(v, (*path, k), declared, problems, late))
                 for k, v in value.items()]  # fmt: skip
        return lambda scope: {k: r(scope) for k, r in items}
    if isinstance(value, list):
        subs = [_compile_node(v, (*path, i), declared, problems, late)
                for i, v in enumerate(value)]  # fmt: skip
        return lambda scope: [r(scope) for r in subs]
    if isinstance(value, str) and "{{" in value and path in late:
        return _compile_late(value, path, declared, problems, late[path])
    if isinstance(value, str) and "{{" in value:
        return _compile_string(value, path, declared, problems, encode)
    return lambda scope: value


def _compile_late(
    text: str,
    path: tuple[str | int, ...],
    declared: frozenset[str],
    problems: list[Problem],
    names: frozenset[str],
) -> Renderer:
    """A field its kind renders again with its own `names`: expressions over the events are
    evaluated here, those over `names` are left for the kind, and every value put in is
    protected, so the kind never reads event data as a template."""
    pieces = _pieces(text, path, declared, problems, lambda expr: _mixed(expr, names))
    if not any(isinstance(p, cel.Program) for p in pieces):
        return lambda scope: text
    run = _runner(path)
    if len(pieces) == 1:
        only = pieces[0]
        assert isinstance(only, cel.Program)
        return lambda scope: protected(run(only, scope))
    parts = tuple(pieces)
    texts = ("", *(p if isinstance(p, str) else "" for p in parts), "")
    # a value that could complete a `{name}` with the text around it is always protected
    force = tuple(templates.joins(texts[i], texts[i + 2]) for i in range(len(parts)))
    return lambda scope: "".join(
        p if isinstance(p, str) else protected(run(p, scope), text=True, force=force[i])
        for i, p in enumerate(parts)
    )


def protected(value: Any, text: bool = False, force: bool = False) -> Any:
    """A value placed into a field its kind renders again: numbers, booleans and null stay
    what they are (unless `text`); anything else becomes text, protected."""
    if value is None or isinstance(value, bool | int | float):
        return cel.format_value(value) if text else value
    return templates.protect(cel.format_value(value), force)


def _mixed(expr: str, names: frozenset[str]) -> str | None:
    try:
        program = cel.Program(expr.strip())
    except cel.CelSyntaxError:
        return None
    own, roots = program.names & names, program.names & cel.ROOTS
    if own and roots and program.names <= names | cel.ROOTS:
        return (f"{{{{{expr}}}}} reads the event ({', '.join(sorted(roots))}) and this "
                f"field's own names ({', '.join(sorted(own))}), which are known only when "
                "the trigger runs; write two expressions, e.g. {{ data.x }} {{ "
                f"{sorted(own)[0]} }}}}")  # fmt: skip
    return None


def old_spelling(doc: Document) -> list[SpecProblem]:
    """Warnings for `{name}` placeholders of the spelling before `{{ }}` in the fields whose
    kind still renders it (for one release), each naming the new spelling. `doc` has passed
    the schema."""
    from eventsvc.triggers import REGISTRY

    out: list[SpecProblem] = []
    for index, item in enumerate(doc.value["spec"]["triggers"]):
        dlq = item.get("dlqTrigger")
        tpls: list[tuple[tuple[str | int, ...], Any]] = [
            (("spec", "triggers", index, "template"), item["template"])
        ]
        if isinstance(dlq, Mapping) and isinstance(dlq.get("template"), Mapping):
            tpls.append((("spec", "triggers", index, "dlqTrigger", "template"), dlq["template"]))
        for where, tpl in tpls:
            for kind in (k for k in tpl if k in REGISTRY):
                for rel, names in templates.late_fields(REGISTRY[kind].schema).items():
                    text = _at(tpl[kind], rel)
                    if not isinstance(text, str):
                        continue
                    for name in templates.old_placeholders(text, names):
                        found = doc.problem((*where, kind, *rel), (
                            f"warning: '{{{name}}}' is the old placeholder syntax; write "
                            f"'{templates.new_spelling(name)}'"))  # fmt: skip
                        out.append(SpecProblem(found.file, found.line, found.field,
                                               found.message, "warning"))  # fmt: skip
    return out


def _at(section: Any, path: Sequence[str | int]) -> Any:
    for part in path:
        if not isinstance(section, Mapping):
            return None
        section = section.get(part)
    return section


# -- parameters -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parameter:
    index: int
    dependency: str
    source: str  # dataKey | contextKey | expr | value
    key: str
    default: Any
    dest: tuple[str, ...]
    operation: str
    parts: tuple[str, ...] = ()
    program: cel.Program | None = None

    def resolve(self, scope: Scope) -> Any:
        event = scope.events.get(self.dependency)
        if self.source == "value":
            return copy.deepcopy(self.default)
        if event is None:
            return self._missing(f"dependency {self.dependency!r} has no event in this firing",
                                 scope.first_id)  # fmt: skip
        view = scope.views[self.dependency]
        if self.source == "dataKey":
            found = filters.resolve(view.data, self.parts)
            if found:
                return copy.deepcopy(found if filters._WILD in self.parts else found[0])
            return self._missing(f"key {self.key!r} is missing", event.get_id())
        if self.source == "contextKey":
            if self.key in view.attributes:
                return view.attributes[self.key]
            return self._missing(f"attribute {self.key!r} is missing", event.get_id())
        assert self.program is not None
        try:
            return self.program.evaluate(scope.activation(self.dependency))
        except cel.CelEvalError as e:
            return self._missing(f"expr {self.key!r} failed ({e})", event.get_id())

    def _missing(self, what: str, event_id: str) -> Any:
        if self.default is not _NO_DEFAULT:
            return copy.deepcopy(self.default)
        raise PermanentTriggerError(
            f"parameters[{self.index}]: {what} in event {event_id} "
            f"(dependency {self.dependency!r}); fix src.{self.source} or give src.value "
            "as a default"
        )


def _dest_parts(dest: str) -> tuple[str, ...]:
    return tuple(filters.split_path(dest))


def compile_parameters(
    items: Sequence[Mapping[str, Any]],
    declared: frozenset[str],
    available: frozenset[str],
    kind_schema: Mapping[str, Any] | None = None,
) -> tuple[list[Parameter], list[Problem]]:
    """Parameters, and problems (path inside the trigger item) for lint.

    `available`: dependencies whose events can be part of this trigger's firing.
    """
    out: list[Parameter] = []
    problems: list[Problem] = []
    for i, item in enumerate(items):
        param, found = _compile_parameter(i, item, declared, available, kind_schema)
        problems += [(("parameters", i, *p), m) for p, m in found]
        if param is not None:
            out.append(param)
    return out, problems


def _compile_parameter(
    i: int,
    item: Mapping[str, Any],
    declared: frozenset[str],
    available: frozenset[str],
    kind_schema: Mapping[str, Any] | None,
) -> tuple[Parameter | None, list[Problem]]:
    src = item["src"]
    dep = src["dependencyName"]
    problems: list[Problem] = []
    if dep not in declared:
        problems.append((("src", "dependencyName"),
                         f"dependency {dep!r} is not declared in spec.dependencies"))  # fmt: skip
    elif dep not in available:
        problems.append((("src", "dependencyName"),
                         f"dependency {dep!r} is not in this trigger's conditions, so its event "
                         "is never part of a firing; add it to conditions"))  # fmt: skip
    given = [k for k in SOURCES if k in src]
    if len(given) > 1:
        problems.append((("src", given[1]), f"give one of {', '.join(SOURCES)}; found "
                                            f"{' and '.join(given)}"))  # fmt: skip
    if not given and "value" not in src:
        problems.append((("src",), f"give one of {', '.join(SOURCES)}, or a constant value"))
    source = given[0] if given else "value"
    key = str(src.get(source, ""))
    parts: tuple[str, ...] = ()
    program = None
    try:
        if source == "dataKey":
            parts = tuple(filters.split_path(key))
        elif source == "expr":
            program, problem = _compile_expr(key, declared)
            if program is None:
                problem = problem or (f"unknown name(s) in {key!r}; an expression can read "
                                      "'data', 'event' and 'events'")  # fmt: skip
                problems.append((("src", "expr"), problem))
    except ValueError as e:
        problems.append((("src", source), str(e)))
    try:
        dest = _dest_parts(item["dest"])
    except ValueError as e:
        problems.append((("dest",), str(e)))
        dest = ()
    if dest and kind_schema is not None and kind_schema.get("additionalProperties") is False:
        known = list(kind_schema.get("properties", {}))
        if dest[0] not in known:
            problems.append((("dest",), f"{dest[0]!r} is not a field of this trigger kind; "
                                        f"dest is relative to its section (known: "
                                        f"{', '.join(known)})"))  # fmt: skip
    if problems:
        return None, problems
    default = src["value"] if "value" in src else _NO_DEFAULT
    operation = item.get("operation", "overwrite")
    return Parameter(i, dep, source, key, default, dest, operation, parts, program), []


def _combine(existing: Any, value: Any, operation: str) -> Any:
    if operation == "overwrite" or existing is filters._MISSING or existing is None:
        return value
    if isinstance(existing, list):
        return [*existing, value] if operation == "append" else [value, *existing]
    left, right = cel.format_value(existing), cel.format_value(value)
    return left + right if operation == "append" else right + left


def apply(section: dict[str, Any], param: Parameter, value: Any) -> None:
    """Set `value` at `param.dest` in `section`, making the mappings on the way."""
    node: Any = section
    for depth, part in enumerate(param.dest):
        last = depth == len(param.dest) - 1
        if isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(
            node
        ):
            if last:
                node[int(part)] = _combine(node[int(part)], value, param.operation)
                return
            node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = _combine(node.get(part, filters._MISSING), value, param.operation)
                return
            node = node.setdefault(part, {})
        else:
            raise PermanentTriggerError(
                f"parameters[{param.index}]: dest {'.'.join(param.dest)!r} goes through "
                f"{'.'.join(param.dest[:depth]) or 'the section'}, which is not a mapping or "
                "has no such list index; fix dest"
            )


# -- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    template: Renderer
    parameters: tuple[Parameter, ...]
    urls: frozenset[str] = frozenset()
    late: frozenset[tuple[str | int, ...]] = frozenset()

    def value_of(self, param: Parameter, scope: Scope) -> Any:
        """A parameter's value; one appended or prepended to a URL field is encoded, one put
        into a field its kind renders again is protected."""
        value = param.resolve(scope)
        if param.operation != "overwrite" and len(param.dest) == 1 and param.dest[0] in self.urls:
            return encode_url_value(cel.format_value(value))
        if param.dest in self.late:
            return protected(value, text=param.operation != "overwrite")
        return value


def compile_plan(
    item: Mapping[str, Any],
    kind: str,
    declared: frozenset[str],
    available: frozenset[str],
    kind_schema: Mapping[str, Any] | None = None,
) -> tuple[Plan | None, list[Problem]]:
    """The plan for one trigger item (`{template, parameters}`), or its problems."""
    base: tuple[str | int, ...] = ("template", kind)
    urls = url_fields(kind_schema)
    late = templates.late_fields(kind_schema)
    renderer, problems = compile_template(item["template"][kind], declared, base, urls, late)
    params, found = compile_parameters(item.get("parameters") or [], declared, available,
                                       kind_schema)  # fmt: skip
    problems += found
    if problems:
        return None, problems
    return Plan(renderer, tuple(params), urls, frozenset(late)), []


def render(trigger: TriggerSpec, events: Mapping[str, CloudEvent]) -> dict[str, Any]:
    """The trigger's kind section, with this firing's events rendered in."""
    plan = trigger.plan
    if plan is None:
        from eventsvc.triggers import REGISTRY

        declared = frozenset(events)
        kind = REGISTRY.get(trigger.kind)
        plan, problems = compile_plan(trigger.raw, trigger.kind, declared, declared,
                                      kind.schema if kind else None)  # fmt: skip
        if plan is None:
            raise PermanentTriggerError("; ".join(f"{_field(p)}: {m}" for p, m in problems))
    scope = Scope(events)
    section: dict[str, Any] = plan.template(scope)
    for param in plan.parameters:
        apply(section, param, plan.value_of(param, scope))
    return section
