"""Argo Events triggers -> eventsvc triggers: k8s, argoWorkflow, http, log; parameters,
retryStrategy, rateLimit, policy and dlqTrigger.

An Argo parameter's `dest` is relative to the object the kind sends (the resource of a
k8s or argoWorkflow trigger); eventsvc's is relative to the kind's section, so each
kind maps the path (`metadata.name` -> `source.resource.metadata.name`). Go templates
become `{{ CEL }}`: a template that is one action becomes `src.expr`; one mixing text
and actions is written in place at `dest`, as eventsvc renders `{{ }}` leaves itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from eventsvc.convert import celmap
from eventsvc.convert.report import NotConvertible, Output, listed
from eventsvc.convert.sources import SourceEvent, rfc1123

Path = tuple[str | int, ...]
DestMap = Callable[[tuple[str, ...]], tuple[str, ...]]
_PATCH = {"application/merge-patch+json": "merge", "application/json-patch+json": "json",
          "application/strategic-merge-patch+json": "strategic", "merge": "merge",
          "json": "json", "strategic": "strategic"}  # fmt: skip
_UNSUPPORTED_KINDS = {
    "awsLambda": "AWS Lambda", "azureEventHubs": "Azure Event Hubs",
    "azureServiceBus": "Azure Service Bus", "kafka": "Kafka", "custom": "custom (gRPC)",
    "openWhisk": "OpenWhisk", "pulsar": "Pulsar", "slack": "Slack", "email": "email",
    "nats": "external NATS", "argoRollouts": "Argo Rollouts",
}  # fmt: skip
_UNSUPPORTED_SOURCES = {"s3": "S3", "git": "git", "url": "URL", "configmap": "ConfigMap"}
_READ = {  # the keys each kind converts or reports itself
    "k8s": ("operation", "source", "patchStrategy", "liveObject"),
    "argoWorkflow": ("operation", "source", "args"),
    "http": ("url", "method", "headers", "timeout", "secureHeaders", "basicAuth", "tls",
             "payload"),
    "log": ("intervalSeconds",),
}  # fmt: skip


@dataclass(slots=True)
class Scope:
    """What a trigger's parameters can read."""

    deps: dict[str, SourceEvent]
    available: frozenset[str]  # dependencies that can be in a firing of this trigger
    resets: list[tuple[Path, Any]] = field(default_factory=list)


@dataclass(slots=True)
class _Kind:
    key: str
    section: dict[str, Any]
    dest: DestMap  # a kind-relative Argo path -> eventsvc's kind-relative path
    resource_prefix: tuple[str, ...] = ()  # where the kind's template-level dests point


def convert_trigger(item: Mapping[str, Any], src: Path, dst: Path, out: Output,
                    scope: Scope, *, dlq: bool = False) -> dict[str, Any] | None:  # fmt: skip
    tpl = item.get("template")
    if not isinstance(tpl, Mapping):
        out.not_converted((*src, "template"), dst, "a trigger needs a template")
        return None
    name = str(tpl.get("name", "trigger"))
    tname = rfc1123(name)
    new_tpl: dict[str, Any] = {"name": tname}
    if tname != name:
        out.note((*dst, "template", "name"), f"renamed from {name!r} (RFC 1123)")
    if isinstance(tpl.get("conditions"), str) and not dlq:
        new_tpl["conditions"] = tpl["conditions"]
    if tpl.get("conditionsReset"):
        scope.resets.append(((*src, "template", "conditionsReset"), tpl["conditionsReset"]))
    kind = _kind(tpl, (*src, "template"), (*dst, "template"), out)
    if kind is None:
        return None
    out.unknown(tpl, ("name", "conditions", "conditionsReset", kind.key), (*src, "template"),
                (*dst, "template"))  # fmt: skip
    out.unknown(tpl[kind.key], (*_READ[kind.key], "parameters"), (*src, "template", kind.key),
                (*dst, "template", kind.key))  # fmt: skip
    new_tpl[kind.key] = kind.section
    result: dict[str, Any] = {"template": new_tpl}
    params: list[dict[str, Any]] = []
    tsrc: Path = (*src, "template", kind.key)
    tdst: Path = (*dst, "template", kind.key)
    for i, p in enumerate(_params(tpl[kind.key], tsrc, dst, out)):
        _parameter(p, (*tsrc, "parameters", i), (*dst, "parameters"), out, scope, kind,
                   kind.resource_prefix, params)  # fmt: skip
    for i, p in enumerate(_params(item, src, dst, out)):
        _parameter(p, (*src, "parameters", i), (*dst, "parameters"), out, scope, kind,
                   None, params)  # fmt: skip
    for key in ("payload",):
        if tpl[kind.key].get(key):
            why = ("eventsvc's http trigger sends the matched event as a structured CloudEvent; "
                   "it builds no custom body") if kind.key == "http" else "not converted"
            out.not_converted((*tsrc, key), tdst, why)
    if params:
        result["parameters"] = params
    _delivery(item, src, dst, out, scope, result, kind, dlq)
    return result


def _params(spec: Mapping[str, Any], src: Path, dst: Path, out: Output) -> list[Any]:
    try:
        return listed(spec.get("parameters"), "parameters")
    except NotConvertible as e:
        out.not_converted((*src, "parameters"), dst, str(e))
        return []


def _kind(tpl: Mapping[str, Any], src: Path, dst: Path, out: Output) -> _Kind | None:
    for key, label in _UNSUPPORTED_KINDS.items():
        if key in tpl:
            out.not_converted((*src, key), dst, f"eventsvc has no {label} trigger; "
                              "an http trigger to a small bridge, or a nats trigger onto "
                              "eventsvc's bus, can take its place")  # fmt: skip
            return None
    for key, fn in _KINDS.items():
        if isinstance(tpl.get(key), Mapping):
            return fn(tpl[key], (*src, key), (*dst, key), out)
    out.not_converted(src, dst, "no trigger kind the converter knows (k8s, argoWorkflow, "
                      "http, log)")  # fmt: skip
    return None


def _source_resource(spec: Mapping[str, Any], src: Path, dst: Path,
                     out: Output) -> dict[str, Any] | None:  # fmt: skip
    source = spec.get("source")
    if not isinstance(source, Mapping):
        out.not_converted((*src, "source"), dst, "source is required")
        return None
    for key, label in _UNSUPPORTED_SOURCES.items():
        if key in source:
            out.not_converted((*src, "source", key), dst, f"{label} trigger sources are not "
                              "read by eventsvc; put the object inline under "
                              "source.resource")  # fmt: skip
            return None
    if isinstance(source.get("resource"), Mapping):
        return dict(source["resource"])
    if isinstance(source.get("inline"), str):
        try:
            loaded = yaml.safe_load(source["inline"])
        except yaml.YAMLError:
            loaded = None
        if isinstance(loaded, Mapping):
            return dict(loaded)
        out.not_converted((*src, "source", "inline"), dst, "inline is not a YAML mapping")
        return None
    if isinstance(source.get("file"), Mapping) and source["file"].get("path"):
        return {"$file": str(source["file"]["path"])}
    out.not_converted((*src, "source"), dst, "no resource, inline or file source")
    return None


def _k8s(spec: Mapping[str, Any], src: Path, dst: Path, out: Output) -> _Kind | None:
    op = str(spec.get("operation") or "create")
    section: dict[str, Any] = {}
    if op == "update":
        section["operation"] = "apply"
        out.note((*dst, "operation"), "update -> apply (server-side apply: fields not in the "
                 "resource are kept, not removed)")  # fmt: skip
    elif op in ("create", "patch", "delete"):
        if op != "create":
            section["operation"] = op
    else:
        out.not_converted((*src, "operation"), dst, f"operation {op!r} is not one of create, "
                          "update, patch, delete")  # fmt: skip
        return None
    res = _source_resource(spec, src, dst, out)
    if res is None:
        return None
    section["source"] = {"file": res["$file"]} if "$file" in res else {"resource": res}
    if op == "patch":
        strategy = _PATCH.get(str(spec.get("patchStrategy") or "application/merge-patch+json"))
        if strategy is None:
            out.not_converted((*src, "patchStrategy"), dst, f"{spec['patchStrategy']!r} is not "
                              "a merge, JSON or strategic merge patch")  # fmt: skip
        elif strategy != "merge":
            section["patchStrategy"] = strategy
            if strategy == "json":
                out.not_converted((*src, "patchStrategy"), dst, "a JSON patch needs its "
                                  "operations under k8s.patch; write them there")  # fmt: skip
    if spec.get("liveObject"):
        out.not_converted((*src, "liveObject"), dst, "eventsvc sends the resource as written; "
                          "it does not read the live object first")  # fmt: skip

    def dest(parts: tuple[str, ...]) -> tuple[str, ...]:
        if parts[:2] == ("source", "resource") and len(parts) > 2:
            return parts
        raise NotConvertible(f"dest {'.'.join(parts)!r} is outside k8s.source.resource")

    return _Kind("k8s", section, dest, ("source", "resource"))


def _argo_workflow(spec: Mapping[str, Any], src: Path, dst: Path, out: Output) -> _Kind | None:
    op = str(spec.get("operation") or "submit")
    if op in ("resubmit", "retry"):
        out.not_converted((*src, "operation"), dst, f"{op} is not an eventsvc argoWorkflow "
                          "operation (submit, suspend, resume, terminate, stop)")  # fmt: skip
        return None
    if op not in ("submit", "suspend", "resume", "terminate", "stop"):
        out.not_converted((*src, "operation"), dst, f"unknown operation {op!r}")
        return None
    res = _source_resource(spec, src, dst, out)
    if res is None:
        return None
    if "$file" in res:
        out.not_converted((*src, "source", "file"), dst, "eventsvc's argoWorkflow takes the "
                          "Workflow inline (workflow:), not from a file")  # fmt: skip
        return None
    if spec.get("args"):
        out.not_converted((*src, "args"), dst, "argo CLI arguments have no counterpart; "
                          "set the same fields on the Workflow")  # fmt: skip
    section: dict[str, Any] = {}
    if op != "submit":
        section["operation"] = op
        meta = res.get("metadata") or {}
        section["name"] = str(meta.get("name") or "")
        if meta.get("namespace"):
            section["namespace"] = str(meta["namespace"])
    else:
        if res.get("kind", "Workflow") != "Workflow":
            out.not_converted((*src, "source", "resource", "kind"), dst, f"{res.get('kind')!r}:"
                              " argoWorkflow submits a Workflow")  # fmt: skip
            return None
        section["workflow"] = res
    names: dict[tuple[str, ...], tuple[str, ...]] = {("metadata", "name"): ("name",),
                                                     ("metadata", "namespace"): ("namespace",)}

    def dest(parts: tuple[str, ...]) -> tuple[str, ...]:
        if parts[:2] != ("source", "resource") or len(parts) < 3:
            raise NotConvertible(f"dest {'.'.join(parts)!r} is outside the Workflow")
        if op == "submit":
            return ("workflow", *parts[2:])
        if parts[2:] in names:
            return names[parts[2:]]
        raise NotConvertible(f"{op} takes the Workflow's name and namespace only")

    return _Kind("argoWorkflow", section, dest, ("source", "resource"))


def _http(spec: Mapping[str, Any], src: Path, dst: Path, out: Output) -> _Kind | None:
    section: dict[str, Any] = {"url": str(spec.get("url") or "")}
    out.note(dst, "the body is the matched event as a structured CloudEvent (its data under "
             "\"data\"), with an Idempotency-Key header")  # fmt: skip
    if spec.get("method"):
        section["method"] = str(spec["method"]).upper()
    headers = spec.get("headers")
    if isinstance(headers, Mapping) and headers:
        section["headers"] = {str(k): str(v) for k, v in headers.items()}
    if spec.get("timeout"):
        section["timeout"] = f"{spec['timeout']}s"
    for i, h in enumerate(spec.get("secureHeaders") or []):
        ref = (h.get("valueFrom") or {}) if isinstance(h, Mapping) else {}
        secret = ref.get("secretKeyRef") or ref.get("configMapKeyRef") or {}
        out.not_converted((*src, "secureHeaders", i), (*dst, "headers"),
                          f"header {h.get('name')!r} from Secret {secret.get('name')!r} key "
                          f"{secret.get('key')!r}: eventsvc http headers are plain text with no "
                          "secret references; a header with a credential cannot be converted")
    for key in ("basicAuth", "tls"):
        if spec.get(key):
            out.not_converted((*src, key), dst, f"{key} is not supported by eventsvc's http "
                              "trigger")  # fmt: skip

    def dest(parts: tuple[str, ...]) -> tuple[str, ...]:
        if parts[0] in ("url", "method", "headers", "timeout"):
            return parts
        raise NotConvertible(f"dest {'.'.join(parts)!r} is not a field of eventsvc's http "
                             "trigger")  # fmt: skip

    return _Kind("http", section, dest)


def _log(spec: Mapping[str, Any], src: Path, dst: Path, out: Output) -> _Kind | None:
    if spec.get("intervalSeconds"):
        out.note(dst, "intervalSeconds dropped: eventsvc logs every run")

    def dest(parts: tuple[str, ...]) -> tuple[str, ...]:
        raise NotConvertible("log triggers take no parameters")

    return _Kind("log", {"includeData": True}, dest)


_KINDS: dict[str, Callable[[Mapping[str, Any], Path, Path, Output], _Kind | None]] = {
    "k8s": _k8s, "argoWorkflow": _argo_workflow, "http": _http, "log": _log,
}  # fmt: skip


# -- parameters ---------------------------------------------------------------------------


def _dest_parts(dest: Any) -> tuple[str, ...]:
    if not isinstance(dest, str) or not dest:
        raise NotConvertible("dest is required")
    return celmap.split_gjson(dest)


def _dest_text(parts: tuple[str, ...]) -> str:
    return ".".join(p.replace(".", "\\.") for p in parts)


def _parameter(p: Any, src: Path, dst: Path, out: Output, scope: Scope, kind: _Kind,
               prefix: tuple[str, ...] | None, params: list[dict[str, Any]]) -> None:  # fmt: skip
    """Append the eventsvc parameter for Argo parameter `p` (or write it in place)."""
    try:
        if not isinstance(p, Mapping) or not isinstance(p.get("src"), Mapping):
            raise NotConvertible("a parameter needs src and dest")
        parts = _dest_parts(p.get("dest"))
        if prefix is None:  # trigger-level: relative to the template, e.g. k8s.source...
            if parts[0] != kind.key:
                raise NotConvertible(f"dest {p.get('dest')!r} is not inside {kind.key}")
            parts = parts[1:]
        else:
            parts = (*prefix, *parts)
        where = kind.dest(parts)
        new = _source(p["src"], scope, where, kind, str(p.get("operation") or "overwrite"))
    except NotConvertible as e:
        out.not_converted(src, dst, str(e))
        return
    if new is not None:
        new["dest"] = _dest_text(where)
        if p.get("operation") and p["operation"] != "overwrite":
            new["operation"] = str(p["operation"])
        params.append(new)


_ORDER = ("contextTemplate", "contextKey", "dataTemplate", "dataKey")


def _source(src: Mapping[str, Any], scope: Scope, where: tuple[str, ...], kind: _Kind,
            operation: str) -> dict[str, Any] | None:  # fmt: skip
    dep = str(src.get("dependencyName") or "")
    if dep not in scope.deps:
        raise NotConvertible(f"dependency {dep!r} is not declared")
    se = scope.deps[dep]
    new: dict[str, Any] = {"dependencyName": dep}
    given = next((k for k in _ORDER if src.get(k)), None)
    default = src.get("value")
    if given is None:
        if default is None:
            raise NotConvertible("give dataKey, dataTemplate, contextKey, contextTemplate or value")
        new["value"] = default
        return {"src": new}
    if given == "dataKey":
        ref = se.ref(celmap.split_gjson(str(src["dataKey"])))
        if ref.attribute is not None:
            new["contextKey"] = ref.attribute
        elif ref.path:
            new["dataKey"] = ref.dotted()
        else:
            new["expr"] = "data"
    elif given == "contextKey":
        new["contextKey"] = str(src["contextKey"]).lower()
    else:
        pieces = celmap.template_pieces(str(src[given]), _term(given, se, ""))
        if len(pieces) == 1 and isinstance(pieces[0], tuple):
            new["expr"] = pieces[0][0]
        else:
            root = "" if len(scope.available) <= 1 else celmap.Ref(attribute=dep).cel("events")
            pieces = celmap.template_pieces(str(src[given]), _term(given, se, root))
            _in_place(kind.section, where, pieces, default, operation)
            return None
    if default is not None:
        new["value"] = default
    return {"src": new}


def _term(given: str, se: SourceEvent, root: str) -> Callable[[str], str]:
    def term(word: str) -> str:
        if word != ".Input" and not word.startswith(".Input."):
            raise NotConvertible(f"{word!r}: templates read .Input")
        rest = word[len(".Input."):] if word != ".Input" else ""
        if given == "contextTemplate":
            if not rest or "." in rest:
                raise NotConvertible(f"{word!r}: the context has plain attributes only")
            return celmap.Ref(attribute=rest.lower()).cel(root)
        if not rest:
            raise NotConvertible(".Input (the whole Argo event data) has no eventsvc form; "
                                 "use .Input.body")  # fmt: skip
        return se.ref(tuple(rest.split("."))).cel(root)

    return term


def _in_place(section: dict[str, Any], where: tuple[str, ...], pieces: list[str | tuple[str]],
              default: Any, operation: str) -> None:  # fmt: skip
    text = ""
    for piece in pieces:
        if isinstance(piece, str):
            text += piece
        elif default is not None and "?" not in piece[0]:
            text += f"{{{{ has({piece[0]}) ? {piece[0]} : {celmap.cel_string(str(default))} }}}}"
        else:
            text += f"{{{{ {piece[0]} }}}}"
    node: Any = section
    for part in where[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node.setdefault(part, {})
        else:
            raise NotConvertible(f"dest {'.'.join(where)!r} goes through a value that is not "
                                 "a mapping")  # fmt: skip
    last = where[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        old = node[int(last)]
    elif isinstance(node, dict):
        old = node.get(last)
    else:
        raise NotConvertible(f"dest {'.'.join(where)!r} cannot be set")
    if old is not None and operation in ("append", "prepend"):
        text = f"{old}{text}" if operation == "append" else f"{text}{old}"
    if isinstance(node, list):
        node[int(last)] = text
    else:
        node[last] = text


# -- delivery ------------------------------------------------------------------------------


def _seconds(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value / 1e9:g}s"  # an integer duration is nanoseconds in Argo
    text = str(value)
    return f"{int(text) / 1e9:g}s" if text.isdigit() else text


def _amount(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise NotConvertible(f"{value!r} is not a number") from None


def _delivery(item: Mapping[str, Any], src: Path, dst: Path, out: Output, scope: Scope,
              result: dict[str, Any], kind: _Kind, dlq: bool) -> None:  # fmt: skip
    for key in item:
        if key not in ("template", "parameters", "retryStrategy", "rateLimit", "policy",
                       "dlqTrigger", "atLeastOnce"):  # fmt: skip
            out.not_converted((*src, key), dst, f"{key!r} is not known to the converter")
    extra = [k for k in ("retryStrategy", "rateLimit", "policy", "dlqTrigger") if item.get(k)]
    if dlq and extra:
        for key in extra:
            out.not_converted((*src, key), dst, "a dead-letter trigger runs once, as written")
        return
    if item.get("atLeastOnce") is not None:
        out.note(dst, "atLeastOnce: eventsvc always delivers at least once (acknowledged "
                 "after the triggers finished)")  # fmt: skip
    retry = item.get("retryStrategy")
    if isinstance(retry, Mapping):
        try:
            new: dict[str, Any] = {}
            if "steps" in retry:
                new["steps"] = max(1, int(retry["steps"]))
            if "duration" in retry:
                new["duration"] = _seconds(retry["duration"])
            if "factor" in retry:
                new["factor"] = max(1.0, _amount(retry["factor"]))
            if "jitter" in retry:
                new["jitter"] = min(1.0, _amount(retry["jitter"]))
            result["retryStrategy"] = new
        except (NotConvertible, ValueError, TypeError) as e:
            out.not_converted((*src, "retryStrategy"), dst, str(e))
    rate = item.get("rateLimit")
    if isinstance(rate, Mapping):
        unit = str(rate.get("unit") or "Second")
        try:
            if unit not in ("Second", "Minute", "Hour"):
                raise ValueError(f"unit {unit!r} is not Second, Minute or Hour")
            result["rateLimit"] = {"requestsPerUnit": int(rate.get("requestsPerUnit") or 1),
                                   "unit": unit}  # fmt: skip
        except (ValueError, TypeError) as e:
            out.not_converted((*src, "rateLimit"), dst, str(e))
    policy = item.get("policy")
    if isinstance(policy, Mapping):
        _policy(policy, (*src, "policy"), dst, out, kind)
    dlq_item = item.get("dlqTrigger")
    if isinstance(dlq_item, Mapping):
        converted = convert_trigger(dlq_item, (*src, "dlqTrigger"), (*dst, "dlqTrigger"), out,
                                    scope, dlq=True)  # fmt: skip
        if converted is not None:
            result["dlqTrigger"] = converted


def _policy(policy: Mapping[str, Any], src: Path, dst: Path, out: Output, kind: _Kind) -> None:
    k8s = policy.get("k8s")
    if isinstance(k8s, Mapping):
        if kind.key != "k8s":
            out.not_converted((*src, "k8s"), dst, "a k8s policy applies to k8s triggers only")
        else:
            new: dict[str, Any] = {}
            if k8s.get("labels"):
                new["labels"] = {str(k): str(v) for k, v in k8s["labels"].items()}
            backoff = k8s.get("backoff") or {}
            if backoff:
                try:
                    first = float(_seconds(backoff.get("duration", "1s")).rstrip("s"))
                except ValueError:
                    first = 1.0
                factor = _amount(backoff.get("factor", 1)) or 1.0
                steps = int(backoff.get("steps", 1) or 1)
                total = sum(first * factor**i for i in range(steps))
                new["timeout"] = f"{total:g}s"
            kind.section["policy"] = new
            if k8s.get("errorOnBackoffTimeout") is False:
                out.not_converted((*src, "k8s", "errorOnBackoffTimeout"), dst, "eventsvc fails "
                                  "the run when the policy times out")  # fmt: skip
    status = policy.get("status")
    if isinstance(status, Mapping):
        allow = [s for s in status.get("allow") or [] if isinstance(s, int)]
        if allow and all(200 <= s < 300 for s in allow):
            out.note(dst, "policy.status: eventsvc counts every 2xx as success")
        else:
            out.not_converted((*src, "status", "allow"), dst, "eventsvc's http trigger counts "
                              "2xx as success and retries 5xx, 408, 425 and 429")  # fmt: skip
