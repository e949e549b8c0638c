"""Argo Events dependency filters -> eventsvc filters (context, data, time, exprs).

Argo string values are regular expressions matched anywhere in the text (as eventsvc's
`regex`); numbers compare as floats; a failing or missing path is no match, in both.
A data item eventsvc's `data` cannot say (a negated regex, a header that became an
attribute) is written in CEL; when the groups combine with `or`, every group is one
CEL expression, so the dependency's own event selection (its context) stays ANDed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    return glue.join(f"({p})" if (" || " in p or " && " in p) and not p.startswith("(") else p
                     for p in parts)  # fmt: skip


def convert(flt: Mapping[str, Any], operator: str, se: SourceEvent, src: Path, dst: Path,
            out: Output) -> tuple[dict[str, Any], str | None]:  # fmt: skip
    """(eventsvc filters, filtersLogicalOperator or None) for one dependency."""
    context: dict[str, Any] = dict(se.context)
    result: dict[str, Any] = {}
    groups: list[str] = []  # every group as CEL, for `or`
    extra_cel: list[str] = []  # tests eventsvc's data/context cannot hold, ANDed
    for key in flt:
        if key not in ("data", "exprs", "context", "time", "script", "dataLogicalOperator",
                       "exprLogicalOperator"):  # fmt: skip
            out.not_converted((*src, key), dst, f"filter {key!r} is not known to the converter")
    if flt.get("script"):
        out.not_converted((*src, "script"), dst, "Lua script filters have no eventsvc "
                          "counterpart; rewrite the test as a CEL expression in exprs")  # fmt: skip
    # data
    data_op = str(flt.get("dataLogicalOperator") or "and")
    items: list[dict[str, Any]] = []
    item_cels: list[str] = []
    needs_cel = False
    for i, item in enumerate(_listed(flt, "data", src, dst, out)):
        try:
            plain, cel = data_item(item, se)
        except NotConvertible as e:
            out.not_converted((*src, "data", i), (*dst, "data"), str(e))
            continue
        item_cels.append(cel)
        if plain is None:
            needs_cel = True
        else:
            items.append(plain)
    if item_cels:
        groups.append(_join(item_cels, data_op))
    # exprs
    expr_op = str(flt.get("exprLogicalOperator") or "and")
    exprs: list[str] = []
    for i, ex in enumerate(_listed(flt, "exprs", src, dst, out)):
        try:
            exprs.append(_expr(ex, se))
        except NotConvertible as e:
            out.not_converted((*src, "exprs", i), (*dst, "exprs"), str(e))
    if exprs:
        groups.append(_join(exprs, expr_op))
    # context
    argo_ctx = flt.get("context") or {}
    if not isinstance(argo_ctx, Mapping):
        out.not_converted((*src, "context"), dst, "context must be a mapping")
    ctx_tests: list[str] = []
    for key, value in argo_ctx.items() if isinstance(argo_ctx, Mapping) else ():
        if not value:
            continue
        if se.type in ("github", "calendar") and key in ("type", "source", "subject"):
            if se.implied().get(key) == value:
                out.note((*dst, "context"), f"context.{key} {value!r}: implied by the "
                         "dependency's event source")  # fmt: skip
                continue
            out.not_converted((*src, "context", key), (*dst, "context"),
                              f"{value!r} never matches events of {se.type} event source "
                              f"{se.source!r}, in Argo either")  # fmt: skip
            continue
        ctx_tests.append(f"event.{key} == {celmap.cel_string(str(value))}")
        if key in context and context[key] != value:
            context = {"all": [context, {key: str(value)}]}
        else:
            context[key] = str(value)
    if ctx_tests:
        groups.append(_join(ctx_tests, "and"))
    time = flt.get("time")
    if time is not None and not isinstance(time, Mapping):
        out.not_converted((*src, "time"), dst, "time must be a mapping with start and stop")
    window = _time(time) if isinstance(time, Mapping) else None
    if operator == "or" and len(groups) + (window is not None) > 1:
        if window is not None:
            out.not_converted((*src, "time"), (*dst, "exprs"), "a time window OR-ed with other "
                              "filters has no eventsvc form; the other filters are kept")
        result["exprs"] = [_join(groups, "or")]
        context = dict(se.context)
    else:
        if items and not (needs_cel and data_op == "or"):
            result["data"] = items
            if data_op == "or" and len(items) > 1:
                result["dataLogicalOperator"] = "or"
            if needs_cel:
                extra_cel += [c for c, item in zip(item_cels, _plain_flags(flt, se), strict=False)
                              if not item]  # fmt: skip
        elif item_cels:
            extra_cel.append(_join(item_cels, data_op))
        if exprs and extra_cel:
            result["exprs"] = [_join(exprs, expr_op), *extra_cel]
        elif exprs:
            result["exprs"] = exprs
            if expr_op == "or" and len(exprs) > 1:
                result["exprLogicalOperator"] = "or"
        elif extra_cel:
            result["exprs"] = extra_cel
        if window is not None:
            result["time"] = window
    if context:
        result = {"context": context, **result}
    return result, None


def _listed(flt: Mapping[str, Any], key: str, src: Path, dst: Path, out: Output) -> list[Any]:
    try:
        return listed(flt.get(key), key)
    except NotConvertible as e:
        out.not_converted((*src, key), dst, str(e))
        return []


def _plain_flags(flt: Mapping[str, Any], se: SourceEvent) -> list[bool]:
    flags = []
    data = flt.get("data")
    for item in data if isinstance(data, list) else []:
        try:
            plain, _ = data_item(item, se)
        except NotConvertible:
            continue
        flags.append(plain is not None)
    return flags


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
