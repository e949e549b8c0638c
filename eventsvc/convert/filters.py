"""Argo Events dependency filters -> eventsvc filters (context, data, time, exprs).

Argo string values are regular expressions matched anywhere in the text (as eventsvc's
`regex`); numbers compare as floats; a failing or missing path is no match, in both.
A data item eventsvc's `data` cannot say (a negated regex, a header that became an
attribute) is written in CEL; when the groups combine with `or`, every group is one
CEL expression, so the dependency's own event selection (its context) stays ANDed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsvc.convert import celmap
from eventsvc.convert.celmap import Ref
from eventsvc.convert.report import NotConvertible, Output, listed, mapped
from eventsvc.convert.sources import SourceEvent

Path = tuple[str | int, ...]
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_NUMBER_OPS = {"", "=", "!=", "<", "<=", ">", ">="}


def _bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    if str(text) in _TRUE:
        return True
    if str(text) in _FALSE:
        return False
    raise NotConvertible(f"{text!r} is not a boolean")


def _float(text: Any) -> float | int:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise NotConvertible(f"{text!r} is not a number") from None
    return int(value) if value.is_integer() else value


def _ref(path: Any, se: SourceEvent) -> Ref:
    if not isinstance(path, str):
        raise NotConvertible("path is required")
    return se.ref(celmap.split_gjson(path))


def data_item(item: Mapping[str, Any], se: SourceEvent) -> tuple[dict[str, Any] | None, str]:
    """(eventsvc data item or None, the same test in CEL)."""
    item = mapped(item, "a data filter")
    if item.get("template"):
        raise NotConvertible("a data filter template (Go template over the value) is not "
                             "converted; write the test as a CEL expression in exprs")  # fmt: skip
    ref = _ref(item.get("path"), se)
    kind = str(item.get("type") or "string")
    op = str(item.get("comparator") or "")
    values = [str(v) if not isinstance(v, bool | int | float) else v
              for v in item.get("value") or []]  # fmt: skip
    if not values:
        raise NotConvertible("a data filter needs at least one value")
    cel_ref = ref.cel()
    path = ref.dotted() if ref.attribute is None and ref.path else None
    if kind == "string":
        if op not in ("", "=", "!="):
            raise NotConvertible(f"comparator {op!r} does not compare strings")
        neg = "!" if op == "!=" else ""
        cel = " || ".join(f"{neg}string({cel_ref}).matches({celmap.cel_string(str(v))})"
                          for v in values)  # fmt: skip
        regex: Any = [str(v) for v in values]
        plain = {"path": path, "regex": regex[0] if len(regex) == 1 else regex}
        return (plain if path and not neg else None), _paren(cel, len(values))
    if kind == "number":
        if op not in _NUMBER_OPS:
            raise NotConvertible(f"unknown comparator {op!r}")
        nums = [_float(v) for v in values]
        cel_op = "==" if op in ("", "=") else op
        cel = " || ".join(f"double({cel_ref}) {cel_op} {float(n)!r}" for n in nums)
        item_out: dict[str, Any] = {"path": path, "type": "number",
                                    "value": nums[0] if len(nums) == 1 else nums}  # fmt: skip
        if op not in ("", "="):
            item_out["comparator"] = op
        ok = path is not None and (op != "!=" or len(nums) == 1)
        return (item_out if ok else None), _paren(cel, len(nums))
    if kind == "bool":
        flags = [_bool(v) for v in values]
        cel = " || ".join(f"{cel_ref} == {str(b).lower()}" for b in flags)
        out = {"path": path, "type": "bool", "value": flags[0] if len(flags) == 1 else flags}
        return (out if path else None), _paren(cel, len(flags))
    raise NotConvertible(f"type {kind!r} is not string, number or bool")


def _paren(cel: str, n: int) -> str:
    return f"({cel})" if n > 1 else cel


def _join(parts: Sequence[str], op: str) -> str:
    if len(parts) == 1:
        return parts[0]
    glue = " || " if op == "or" else " && "
    return glue.join(f"({p})" if " || " in p or " && " in p else p for p in parts)


_KNOWN = ("data", "exprs", "context", "time", "script", "dataLogicalOperator",
          "exprLogicalOperator")  # fmt: skip


@dataclass(slots=True)
class _Groups:
    """Argo's filter groups, converted: each also as CEL, for `filtersLogicalOperator: or`."""

    items: list[tuple[dict[str, Any] | None, str]] = field(default_factory=list)
    data_op: str = "and"
    exprs: list[str] = field(default_factory=list)
    expr_op: str = "and"
    context: dict[str, Any] = field(default_factory=dict)  # the selection, plus Argo's
    context_cel: list[str] = field(default_factory=list)
    window: dict[str, Any] | None = None

    def as_cel(self) -> list[str]:
        groups = []
        if self.items:
            groups.append(_join([cel for _, cel in self.items], self.data_op))
        if self.exprs:
            groups.append(_join(self.exprs, self.expr_op))
        if self.context_cel:
            groups.append(_join(self.context_cel, "and"))
        return groups


def convert(flt: Mapping[str, Any], operator: str, se: SourceEvent, src: Path, dst: Path,
            out: Output) -> dict[str, Any]:  # fmt: skip
    """eventsvc's `filters` for one dependency; the groups always combine with `and` there."""
    for key in flt:
        if key not in _KNOWN:
            out.not_converted((*src, key), dst, f"filter {key!r} is not known to the converter")
    if flt.get("script"):
        out.not_converted((*src, "script"), dst, "Lua script filters have no eventsvc "
                          "counterpart; rewrite the test as a CEL expression in exprs")  # fmt: skip
    g = _Groups(data_op=str(flt.get("dataLogicalOperator") or "and"),
                expr_op=str(flt.get("exprLogicalOperator") or "and"), context=dict(se.context))
    for i, item in enumerate(_listed(flt, "data", src, dst, out)):
        try:
            g.items.append(data_item(item, se))
        except NotConvertible as e:
            out.not_converted((*src, "data", i), (*dst, "data"), str(e))
    for i, ex in enumerate(_listed(flt, "exprs", src, dst, out)):
        try:
            g.exprs.append(_expr(ex, se))
        except NotConvertible as e:
            out.not_converted((*src, "exprs", i), (*dst, "exprs"), str(e))
    _context(flt.get("context"), se, g, src, dst, out)
    time = flt.get("time")
    if time is not None and not isinstance(time, Mapping):
        out.not_converted((*src, "time"), dst, "time must be a mapping with start and stop")
    g.window = _time(time) if isinstance(time, Mapping) else None
    cels = g.as_cel()
    if operator == "or" and len(cels) + (g.window is not None) > 1:
        if g.window is not None:
            out.not_converted((*src, "time"), (*dst, "exprs"), "a time window OR-ed with other "
                              "filters has no eventsvc form; the other filters are kept")
        # one expression for Argo's groups; the dependency's own selection stays ANDed
        result: dict[str, Any] = {"exprs": [_join(cels, "or")]}
        return {"context": dict(se.context), **result} if se.context else result
    return _all_of(g)


def _context(argo: Any, se: SourceEvent, g: _Groups, src: Path, dst: Path, out: Output) -> None:
    if argo is not None and not isinstance(argo, Mapping):
        out.not_converted((*src, "context"), dst, "context must be a mapping")
        return
    for key, value in (argo or {}).items():
        if not value:
            continue
        if se.type in ("github", "calendar") and key in ("type", "source", "subject"):
            if se.implied().get(key) == value:
                out.note((*dst, "context"), f"context.{key} {value!r}: implied by the "
                         "dependency's event source")  # fmt: skip
            else:
                out.not_converted((*src, "context", key), (*dst, "context"),
                                  f"{value!r} never matches events of {se.type} event source "
                                  f"{se.source!r}, in Argo either")  # fmt: skip
            continue
        g.context_cel.append(f"event.{key} == {celmap.cel_string(str(value))}")
        if key in g.context and g.context[key] != value:
            g.context = {"all": [g.context, {key: str(value)}]}
        else:
            g.context[key] = str(value)


def _all_of(g: _Groups) -> dict[str, Any]:
    """The groups ANDed, as eventsvc does: data items it can say stay `data`; the rest CEL."""
    result: dict[str, Any] = {"context": g.context} if g.context else {}
    plain = [item for item, _ in g.items if item is not None]
    rest = [cel for item, cel in g.items if item is None]
    extra: list[str] = []
    if rest and g.data_op == "or":
        extra.append(_join([cel for _, cel in g.items], "or"))
    elif plain:
        result["data"] = plain
        if g.data_op == "or" and len(plain) > 1:
            result["dataLogicalOperator"] = "or"
        extra += rest
    else:
        extra += rest
    if g.exprs and extra:
        result["exprs"] = [_join(g.exprs, g.expr_op), *extra]
    elif g.exprs:
        result["exprs"] = g.exprs
        if g.expr_op == "or" and len(g.exprs) > 1:
            result["exprLogicalOperator"] = "or"
    elif extra:
        result["exprs"] = extra
    if g.window is not None:
        result["time"] = g.window
    return result


def _listed(flt: Mapping[str, Any], key: str, src: Path, dst: Path, out: Output) -> list[Any]:
    try:
        return listed(flt.get(key), key)
    except NotConvertible as e:
        out.not_converted((*src, key), dst, str(e))
        return []


def _expr(ex: Any, se: SourceEvent) -> str:
    if isinstance(ex, str):
        raise NotConvertible("an expression needs its fields: {expr, fields}")
    if not isinstance(ex, Mapping) or not isinstance(ex.get("expr"), str):
        raise NotConvertible("expected {expr, fields}")
    fields: dict[str, str] = {}
    for f in ex.get("fields") or []:
        if isinstance(f, Mapping) and isinstance(f.get("name"), str):
            fields[f["name"]] = _ref(f.get("path"), se).cel()
    return celmap.expr_to_cel(ex["expr"], fields)


def _time(time: Mapping[str, Any]) -> dict[str, Any] | None:
    start = str(time.get("start") or "00:00:00")
    stop = str(time.get("stop") or "00:00:00")
    if start == stop:
        return None  # the whole day
    out = {"start": start, "stop": stop}
    if time.get("timezone"):
        out["timezone"] = str(time["timezone"])
    return out
