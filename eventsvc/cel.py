"""CEL expressions (cel-python), compiled once, evaluated over lazily converted event data.

cel-python wants its own value types; converting a whole GitHub payload costs
milliseconds, so mappings are wrapped and converted one key at a time, when an
expression reads that key. Evaluation uses `CompiledRunner` (transpiled to Python),
about five times faster than the default interpreter.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from string import Template
from textwrap import dedent
from typing import Any

import celpy
import lark
from celpy import celtypes
from celpy.celparser import CELParseError
from celpy.evaluation import Phase1Transpiler, Phase2Transpiler, Transpiler, TranspilerTree

# celpy logs every evaluation error at ERROR ("Internal error") and every transpiled
# program at INFO; we report evaluation errors ourselves, with the sensor's context.
logging.getLogger("celpy").setLevel(logging.CRITICAL)

# cel-python 0.5's transpiler makes `has(e.f)` a Python bool, which its own `? :`
# and `!` reject ("no such overload"): `has(data.x) ? data.x : ''` always failed.
# The same statements, but the answer is a CEL bool.
_HAS = Template(
    dedent("""\
    # ident_arg has:
    ex_${n}_h = lambda activation: ${exprlist}
    ex_${n} = lambda activation: celpy.celtypes.BoolType(not isinstance(\
celpy.evaluation.result(activation, ex_${n}_h), CELEvalError))
    """)
)


class _Phase1(Phase1Transpiler):
    def ident_arg(self, tree: TranspilerTree) -> None:
        super().ident_arg(tree)
        name = tree.children[0]
        if isinstance(name, lark.Token) and name.value == "has" and tree.checked_exception:
            tree.checked_exception = (_HAS, tree.checked_exception[1])


class _Transpiler(Transpiler):
    def transpile(self) -> None:  # Transpiler.transpile, with _Phase1
        _Phase1(self).visit(self.ast)
        phase_2 = Phase2Transpiler(self)
        phase_2.visit(self.ast)
        self.source_text = "\n".join(phase_2.statements(self.ast))
        self.executable_code = compile(self.source_text, "<string>", "exec")


class _Runner(celpy.CompiledRunner):
    def __init__(
        self,
        environment: celpy.Environment,
        ast: TranspilerTree,
        functions: dict[str, Any] | None = None,
    ) -> None:
        celpy.Runner.__init__(self, environment, ast, functions)
        self.tp = _Transpiler(ast=ast, activation=self.new_activation())
        self.tp.transpile()


# -- string functions ---------------------------------------------------------------------
# What CEL's own strings extension offers (cel-go `ext.Strings`), for the rendering work
# templates do: `data.ref.substring(11)`, `data.repo.lowerAscii()`, `data.title.trim()`.
# celpy's transpiler calls a function by its module path, which it executes in the
# globals of celpy.evaluation; `eventsvc` is put there so the path resolves.


def lower_ascii(text: Any) -> celtypes.StringType:
    return celtypes.StringType(_text(text, "lowerAscii").translate(_LOWER))


def upper_ascii(text: Any) -> celtypes.StringType:
    return celtypes.StringType(_text(text, "upperAscii").translate(_UPPER))


def substring(text: Any, start: Any, end: Any = None) -> celtypes.StringType:
    value = _text(text, "substring")
    first = _index(start, "substring")
    last = len(value) if end is None else _index(end, "substring")
    if not 0 <= first <= last <= len(value):
        raise ValueError(f"substring({first}, {last}) is out of range for a string of "
                         f"length {len(value)}")  # fmt: skip
    return celtypes.StringType(value[first:last])


def trim(text: Any) -> celtypes.StringType:
    return celtypes.StringType(_text(text, "trim").strip())


def replace(text: Any, old: Any, new: Any, count: Any = None) -> celtypes.StringType:
    limit = -1 if count is None else _index(count, "replace", allow_negative=True)
    value = _text(text, "replace")
    return celtypes.StringType(value.replace(_text(old, "replace"), _text(new, "replace"), limit))


def split(text: Any, separator: Any) -> celtypes.ListType:
    sep = _text(separator, "split")
    if not sep:
        raise ValueError("split: the separator is empty")
    return celtypes.ListType([celtypes.StringType(p) for p in _text(text, "split").split(sep)])


def join(items: Any, separator: Any = "") -> celtypes.StringType:
    if not isinstance(items, list):
        raise ValueError(f"join: expected a list, got {type(items).__name__}")
    parts = [_text(i, "join") for i in items]
    return celtypes.StringType(_text(separator, "join").join(parts))


def _text(value: Any, function: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{function}: expected a string, got {type(value).__name__}")
    return str(value)


def _index(value: Any, function: str, allow_negative: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{function}: expected an integer, got {type(value).__name__}")
    if int(value) < 0 and not allow_negative:
        raise ValueError(f"{function}: {int(value)} is negative")
    return int(value)


_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
FUNCTIONS: dict[str, Any] = {
    "lowerAscii": lower_ascii, "upperAscii": upper_ascii, "substring": substring,
    "trim": trim, "replace": replace, "split": split, "join": join,
}  # fmt: skip
"""CEL functions beyond the standard ones, callable as methods (`s.trim()`) or globally."""
celpy.evaluation.result.__globals__.setdefault("eventsvc", sys.modules["eventsvc"])


# celpy raises the interpreter's recursion limit when an Environment is made; on
# CPython 3.11 that upsets `ast.parse` elsewhere (SystemError "AST constructor
# recursion depth mismatch"), so the limit is put back at once.
_LIMIT = sys.getrecursionlimit()
_ENV = celpy.Environment(runner_class=_Runner)
sys.setrecursionlimit(_LIMIT)
_COMPILING = threading.Lock()  # celpy's parser keeps the text on itself; reload compiles in
# a thread (sensor reload), so one compilation at a time
ROOTS = frozenset({"data", "event", "events"})
_MACROS = frozenset({"exists", "all", "exists_one", "map", "filter"})


class CelSyntaxError(ValueError):
    """The text is not a CEL expression; the message points at the column."""


class CelEvalError(ValueError):
    """The expression failed on this event (missing key, wrong type, ...)."""


class Program:
    """One compiled CEL expression."""

    __slots__ = ("event_refs", "names", "runner", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        given: object = text  # YAML may hand over anything
        if not isinstance(given, str):  # the parser would print its state dump on stdout
            hint = (" (Argo Events' {expr, fields} form: write the expression itself over data, "
                    "or run eventsvc convert argo-events)") if isinstance(given, dict) else ""
            raise CelSyntaxError(f"expected a CEL expression as a string{hint}")
        with _COMPILING:
            self._compile(text)

    def _compile(self, text: str) -> None:
        try:
            ast = _ENV.compile(text)
        except CELParseError as e:
            raise CelSyntaxError(_parse_message(text, e)) from e
        except lark.exceptions.LarkError as e:  # pragma: no cover - parser internals
            raise CelSyntaxError(f"not a CEL expression: {e}") from e
        self.names = free_names(ast)
        """Root identifiers the expression reads (`data`, `event`, ...)."""
        self.event_refs = root_members(ast, "events")
        """`build` for every `events.build` the expression reads."""
        try:
            self.runner = _ENV.program(ast, functions=FUNCTIONS)
        except Exception as e:  # transpiling can reject what parsing allowed
            raise CelSyntaxError(f"cannot compile: {e}") from e

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        """The result as a plain Python value; CelEvalError when the expression fails."""
        try:
            value = self.runner.evaluate(dict(activation))
        except Exception as e:  # celpy raises CELEvalError, and sometimes plain errors
            raise CelEvalError(eval_reason(e)) from e
        return to_python(value)


def _parse_message(text: str, e: CELParseError) -> str:
    column = getattr(e, "column", None)
    where = f" at column {column}" if column else ""
    return f"CEL syntax error{where} in {text!r}"


def eval_reason(e: BaseException) -> str:
    """The innermost useful message of a celpy error (they nest their causes in args)."""
    text = str(e)
    found = re.findall(r"no such member in mapping: \\*'([^'\\]+)", text)
    if found:
        return f"no such key {found[0]!r}"
    found = re.findall(r"'([a-z][^'\\]{3,80})'", text)
    if found:
        return str(found[-1] if found[-1] != "evaluation error" else found[0])
    return text[:200]


def free_names(ast: lark.Tree[Any]) -> frozenset[str]:
    """Identifiers read from the activation, less those bound by macros (`l` in `exists(l, ..)`)."""
    idents: set[str] = set()
    bound: set[str] = set()
    for node in ast.iter_subtrees():
        if node.data == "ident" and node.children:
            idents.add(str(node.children[0]))
        elif node.data == "member_dot_arg" and len(node.children) >= 3:
            method, args = node.children[1], node.children[2]
            if str(method) in _MACROS and isinstance(args, lark.Tree) and args.children:
                first = args.children[0]
                bound.update(
                    str(t.children[0])
                    for t in first.iter_subtrees()
                    if isinstance(t, lark.Tree) and t.data == "ident" and t.children
                )
    return frozenset(idents - bound)


def root_members(ast: lark.Tree[Any], root: str) -> frozenset[str]:
    """`x` for every `root.x` in the expression (`events.build.data` gives `build`)."""
    out: set[str] = set()
    for node in ast.iter_subtrees():
        if node.data != "member_dot" or len(node.children) < 2:
            continue
        inner = node.children[0]
        while isinstance(inner, lark.Tree) and len(inner.children) == 1 and inner.data in (
            "member", "primary"
        ):
            inner = inner.children[0]
        if isinstance(inner, lark.Tree) and inner.data == "ident":
            if str(inner.children[0]) == root:
                out.add(str(node.children[1]))
    return frozenset(out)


# -- values -------------------------------------------------------------------------------


class LazyMap(celtypes.MapType):
    """A CEL map over a JSON object whose values are converted on first access."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        dict.__init__(self, raw)  # type: ignore[misc]

    def _convert(self, key: Any) -> Any:
        value = dict.__getitem__(self, key)
        if not _is_cel(value):
            value = to_cel(value)
            dict.__setitem__(self, key, value)
        return value

    def __getitem__(self, key: Any) -> Any:
        if not celtypes.MapType.valid_key_type(key):
            raise TypeError(f"unsupported key type: {type(key)}")
        return self._convert(key)

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:
            return self[key]
        if default is not None:
            return default
        raise KeyError(key)

    def values(self) -> Any:
        return [self._convert(k) for k in dict.keys(self)]

    def items(self) -> Any:
        return [(k, self._convert(k)) for k in dict.keys(self)]

    def __iter__(self) -> Iterator[Any]:
        return (celtypes.StringType(k) if isinstance(k, str) else k for k in dict.__iter__(self))


_CEL_TYPES = (
    celtypes.BoolType,
    celtypes.IntType,
    celtypes.UintType,
    celtypes.DoubleType,
    celtypes.StringType,
    celtypes.BytesType,
    celtypes.ListType,
    celtypes.MapType,
    celtypes.NullType,
    celtypes.TimestampType,
    celtypes.DurationType,
)


def _is_cel(value: Any) -> bool:
    return value is None or isinstance(value, _CEL_TYPES)


def to_cel(value: Any) -> Any:
    """A CEL value for a JSON-like value; mappings stay lazy, lists are shallow."""
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    if isinstance(value, Mapping):
        return LazyMap(value)
    if isinstance(value, list | tuple):
        return celtypes.ListType([to_cel(v) for v in value])
    if isinstance(value, bytes):
        return celtypes.BytesType(value)
    if isinstance(value, dt.datetime):
        return celtypes.TimestampType(value)
    if value is None:
        return None
    return celtypes.StringType(str(value))


def to_python(value: Any) -> Any:
    """Plain JSON-able Python values from CEL results (bool before int: BoolType is an int)."""
    if isinstance(value, bool | celtypes.BoolType):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, LazyMap):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, Mapping):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_python(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if value is None or isinstance(value, celtypes.NullType):
        return None
    return str(value)


def format_value(value: Any) -> str:
    """How a value reads when interpolated into a longer string."""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)
