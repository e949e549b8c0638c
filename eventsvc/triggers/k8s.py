"""`k8s`: create, server-side apply, patch or delete any Kubernetes object.

The object comes inline (`source.resource`) or from a YAML file (`source.file`).
Created and applied objects carry `eventsvc.dev/{sensor,trigger,event-id}` labels,
so a redelivered event finds what it made: a 409 on create of an object with the
same event id is success, and `metadata.generateName` is looked up by those labels
before creating. `policy` waits until a label or a status condition holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from eventsvc import kube
from eventsvc.durations import parse_duration
from eventsvc.errors import PermanentTriggerError
from eventsvc.events import CloudEvent
from eventsvc.triggers.base import Services, TriggerContext, TriggerResult

OPERATIONS = ("create", "apply", "patch", "delete")
_Problems = list[tuple[tuple[str | int, ...], str]]


def load_resource(source: Mapping[str, Any]) -> dict[str, Any]:
    if "resource" in source:
        return dict(source["resource"])
    path = Path(str(source["file"]))
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise PermanentTriggerError(
            f"source.file {str(path)!r} cannot be read ({e.strerror}); "
            "the path is relative to the working directory of eventsvc"
        ) from e
    except yaml.YAMLError as e:
        raise PermanentTriggerError(f"source.file {str(path)!r} is not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise PermanentTriggerError(f"source.file {str(path)!r} must hold one object (a mapping)")
    return doc


def _check_resource(res: Any, operation: str) -> _Problems:
    problems: _Problems = []
    if not isinstance(res, Mapping):
        return problems
    for key in ("apiVersion", "kind"):
        if not isinstance(res.get(key), str) or "{{" in str(res.get(key)):
            problems.append((("source", "resource", key), "required: a plain string"))
    meta: Mapping[str, Any] = res["metadata"] if isinstance(res.get("metadata"), Mapping) else {}
    if not meta.get("name") and not meta.get("generateName"):
        message = "metadata.name is required (or metadata.generateName for create)"
        problems.append((("source", "resource", "metadata"), message))
    elif not meta.get("name") and operation != "create":
        problems.append((("source", "resource", "metadata", "name"),
                         f"operation {operation!r} needs metadata.name; generateName only "
                         "works with create"))  # fmt: skip
    return problems


@dataclass(frozen=True, slots=True)
class Policy:
    """`policy`, parsed once: what must hold on the object, and how long to wait for it."""

    labels: Mapping[str, Any]
    condition: Mapping[str, Any] | None
    timeout: float  # seconds
    interval: float  # seconds
    shown: dict[str, Any]  # the section as written, for messages

    @classmethod
    def of(cls, policy: Mapping[str, Any]) -> Policy:
        timeout = parse_duration(policy.get("timeout", "60s"))
        interval = parse_duration(policy.get("interval", "2s"))
        return cls(policy.get("labels") or {}, policy.get("condition") or None, timeout,
                   interval, dict(policy))  # fmt: skip

    def holds(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if any(labels.get(k) != str(v) for k, v in self.labels.items()):
            return False
        want = self.condition
        if want:
            conditions = (obj.get("status") or {}).get("conditions") or []
            status = str(want.get("status", "True"))
            return any(c.get("type") == want["type"] and str(c.get("status")) == status
                       for c in conditions)  # fmt: skip
        return True


@dataclass(frozen=True, slots=True)
class K8sSpec:
    """The rendered `k8s` section, parsed and checked once (`parse`)."""

    operation: str
    resource: dict[str, Any]  # loaded from source.resource or source.file, checked
    patch: Any  # the patch body as given; None: the resource without apiVersion and kind
    patch_strategy: str
    policy: Policy | None

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> K8sSpec:
        operation = str(spec.get("operation", "create"))
        obj = load_resource(spec["source"])
        problems = _check_resource(obj, operation)
        if problems:
            raise PermanentTriggerError(f"source.resource: {problems[0][1]}")
        policy = Policy.of(spec["policy"]) if spec.get("policy") else None
        return cls(operation, obj, spec.get("patch"), str(spec.get("patchStrategy", "merge")),
                   policy)  # fmt: skip


class K8sTrigger:
    key: ClassVar[str] = "k8s"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["source"],
        "properties": {
            "operation": {"enum": list(OPERATIONS)},
            "source": {
                "type": "object",
                "additionalProperties": False,
                "minProperties": 1,
                "maxProperties": 1,
                "properties": {
                    "resource": {"type": "object"},
                    "file": {"type": "string", "minLength": 1},
                },
            },
            "patchStrategy": {"enum": ["merge", "json", "strategic"]},
            "patch": {"type": ["object", "array"]},
            "policy": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "condition": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["type"],
                        "properties": {"type": {"type": "string"}, "status": {"type": "string"}},
                    },
                    "timeout": {"type": ["string", "number"]},
                    "interval": {"type": ["string", "number"]},
                },
            },
        },
    }

    def __init__(self, services: Services) -> None:
        self.services = services

    @classmethod
    def explain(cls, spec: Mapping[str, Any], first: CloudEvent | None) -> str:
        operation = str(spec.get("operation", "create"))
        source = spec.get("source") or {}
        verb = {"apply": "applies", "patch": "patches"}.get(operation, f"{operation}s")
        if "file" in source:
            return f"{verb} the object in {source['file']} (read when it runs)"
        res = source.get("resource") or {}
        meta = res.get("metadata") or {}
        name = meta.get("name") or f"{meta.get('generateName', '')}<generated>"
        where = f" in namespace {meta['namespace']}" if meta.get("namespace") else ""
        return f"{verb} {res.get('apiVersion')} {res.get('kind')} {name!r}{where}"

    @classmethod
    def check(cls, spec: Mapping[str, Any]) -> _Problems:
        operation = str(spec.get("operation", "create"))
        source = spec.get("source")
        resource = source.get("resource") if isinstance(source, Mapping) else None
        problems = _check_resource(resource, operation)
        if spec.get("patchStrategy") == "json" and not isinstance(spec.get("patch"), list):
            problems.append((("patch",), "patchStrategy json needs `patch`: a list of operations"))
        if ("patch" in spec or "patchStrategy" in spec) and operation != "patch":
            problems.append((("operation",), f"patch fields are set but operation is "
                                             f"{operation!r}; use operation: patch"))  # fmt: skip
        policy = spec.get("policy")
        if isinstance(policy, Mapping):
            for key in ("timeout", "interval"):
                if key in policy:
                    try:
                        parse_duration(policy[key])
                    except ValueError as e:
                        problems.append((("policy", key), str(e)))
            if operation == "delete":
                problems.append((("policy",), "a policy cannot wait on a deleted object"))
        return problems

    async def execute(self, spec: Mapping[str, Any], ctx: TriggerContext) -> TriggerResult:
        parsed = K8sSpec.parse(spec)
        operation, obj = parsed.operation, parsed.resource
        cluster = await self.services.cluster()
        res = await cluster.resource(obj["apiVersion"], obj["kind"])
        eid = kube.event_id(ctx.event_ids)
        if operation in ("create", "apply"):
            obj = kube.with_labels(obj, kube.ownership_labels(ctx.sensor, ctx.trigger, eid),
                                   {kube.ANNOTATION_EVENT_ID: eid})  # fmt: skip
        ns = kube._namespace_of(res, obj)
        if res.namespaced:
            obj["metadata"]["namespace"] = ns
        name = obj["metadata"].get("name")
        detail: dict[str, Any] = {"operation": operation, "apiVersion": obj["apiVersion"],
                                  "kind": obj["kind"], "namespace": ns}  # fmt: skip
        if operation == "delete":
            detail.update(name=name, deleted=await cluster.delete(res, name, ns))
            return TriggerResult(detail=detail)
        if operation == "create":
            result, created = await self._create(cluster, res, obj, ctx, eid)
        elif operation == "apply":
            result, created = await cluster.apply(res, obj), None
        else:
            body = parsed.patch
            if body is None:
                body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
            result, created = await cluster.patch(res, name, body, parsed.patch_strategy, ns), None
        meta = result.get("metadata") or {}
        detail.update(name=meta.get("name"), uid=meta.get("uid"),
                      resourceVersion=meta.get("resourceVersion"))  # fmt: skip
        if created is not None:
            detail["created"] = created
        if parsed.policy is not None:
            await self._wait(cluster, res, detail, parsed.policy)
        return TriggerResult(detail=detail)

    async def _create(
        self,
        cluster: kube.Cluster,
        res: kube.Resource,
        obj: dict[str, Any],
        ctx: TriggerContext,
        eid: str,
    ) -> tuple[dict[str, Any], bool]:
        ns = obj["metadata"].get("namespace")
        labels = kube.ownership_labels(ctx.sensor, ctx.trigger, eid)
        if not obj["metadata"].get("name"):
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            found = await cluster.list(res, ns, selector)
            if found:
                return found[0], False
            return await cluster.create(res, obj), True
        try:
            return await cluster.create(res, obj), True
        except kube.ConflictError as e:
            existing = await cluster.get(res, obj["metadata"]["name"], ns)
            theirs = ((existing.get("metadata") or {}).get("labels") or {}).get(kube.LABEL_EVENT_ID)
            if theirs == labels[kube.LABEL_EVENT_ID]:
                return existing, False  # made by an earlier run for this event
            raise PermanentTriggerError(
                f"{e}; it was not created for this event (its {kube.LABEL_EVENT_ID} label is "
                f"{theirs!r}); derive metadata.name from the event, use metadata.generateName, "
                "or operation: apply"
            ) from e

    async def _wait(
        self,
        cluster: kube.Cluster,
        res: kube.Resource,
        detail: dict[str, Any],
        policy: Policy,
    ) -> None:
        held, last = await kube.wait_for(cluster, res, detail["name"], detail["namespace"],
                                         policy.holds, policy.timeout, policy.interval)  # fmt: skip
        if not held:
            seen: Any = "the object is gone"
            if last is not None:
                labels = (last.get("metadata") or {}).get("labels")
                seen = {"labels": labels, "status": last.get("status")}
            raise PermanentTriggerError(
                f"{detail['kind']} {detail['name']!r}: policy {policy.shown} did not hold "
                f"within {policy.timeout:g}s; last seen: {seen}"
            )
        detail["policy"] = "held"
