"""`argoWorkflow`: submit an Argo Workflow, or suspend / resume / terminate / stop one.

Everything goes through the Kubernetes API (the Workflow custom resource), no CLI.
A submitted Workflow gets a name derived from sensor, trigger and event id, so a
redelivered event finds the Workflow it already submitted instead of submitting a
second one. Parameters are static (`value`, rendered by the engine's templating)
or read from the event (`valueFrom.path`, e.g. `data.after`). `wait` polls
`status.phase` and puts it in the result.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from eventsvc import events, kube, paths
from eventsvc.durations import parse_duration
from eventsvc.errors import PermanentTriggerError
from eventsvc.triggers.base import Services, TriggerContext, TriggerResult

API_VERSION = "argoproj.io/v1alpha1"
OPERATIONS = ("submit", "suspend", "resume", "terminate", "stop")
SOURCES = ("workflow", "workflowTemplateRef", "clusterWorkflowTemplateRef")
DONE_PHASES = ("Succeeded", "Failed", "Error")
# how each operation changes a running Workflow (what `argo suspend` etc. patch)
PATCHES: dict[str, dict[str, Any]] = {
    "suspend": {"spec": {"suspend": True}},
    "resume": {"spec": {"suspend": None}},
    "terminate": {"spec": {"shutdown": "Terminate"}},
    "stop": {"spec": {"shutdown": "Stop"}},
}
_Problems = list[tuple[tuple[str | int, ...], str]]
_REF = {"type": "object", "additionalProperties": False, "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1}}}  # fmt: skip
_PARAM = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "value": {"type": ["string", "number", "boolean"]},
        "valueFrom": {
            "type": "object",
            "additionalProperties": False,
            "required": ["path"],
            "properties": {
                "path": {"type": "string", "minLength": 1},
                "dependency": {"type": "string"},
                "default": {"type": "string"},
            },
        },
    },
}


def event_value(doc: Any, path: str) -> Any:
    """`data.pull_request.head.sha` inside an event as `events.to_dict` shows it; None if absent."""
    value = paths.lookup(doc, path)
    return None if value is paths.MISSING else value


def resolve_parameters(
    params: Sequence[Mapping[str, Any]], ctx: TriggerContext
) -> list[dict[str, str]]:
    out = []
    for p in params:
        if "valueFrom" in p:
            src = p["valueFrom"]
            event = ctx.events.get(src.get("dependency", ""), ctx.first)
            value = event_value(events.to_dict(event), src["path"])
            if value is None:
                if "default" not in src:
                    raise PermanentTriggerError(
                        f"parameter {p['name']!r}: valueFrom.path {src['path']!r} is not in event "
                        f"{event.get_id()!r}; fix the path or give valueFrom.default"
                    )
                value = src["default"]
        else:
            value = p.get("value", "")
        out.append({"name": p["name"], "value": _text(value)})
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def workflow_name(base: str, sensor: str, trigger: str, event_id: str) -> str:
    """`<base>-<10 hex>`: the same for the same event, an RFC 1123 label (≤ 63)."""
    digest = hashlib.sha256(f"{sensor}\0{trigger}\0{event_id}".encode()).hexdigest()[:10]
    base = re.sub(r"[^a-z0-9-]", "-", base.lower()).strip("-")[:52].rstrip("-") or "wf"
    return f"{base}-{digest}"


@dataclass(frozen=True, slots=True)
class Wait:
    """`wait`, parsed once: the phases to wait for and how long."""

    phases: tuple[str, ...]
    given: tuple[str, ...]  # the phases the section names; a Failed or Error not named fails
    timeout: float  # seconds
    interval: float  # seconds

    @classmethod
    def of(cls, wait: Mapping[str, Any]) -> Wait:
        return cls(tuple(wait.get("phases", DONE_PHASES)), tuple(wait.get("phases", ())),
                   parse_duration(wait.get("timeout", "10m")),
                   parse_duration(wait.get("interval", "5s")))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ArgoSpec:
    """The rendered `argoWorkflow` section, parsed and checked once (`parse`)."""

    operation: str
    namespace: str | None  # None: the workflow's own, else "default"
    name: str | None
    workflow: Mapping[str, Any] | None
    template: tuple[str, str] | None  # (workflowTemplateRef or clusterWorkflowTemplateRef, name)
    parameters: tuple[Mapping[str, Any], ...]
    service_account: Any  # None: not given
    labels: Mapping[str, str]
    wait: Wait | None

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> ArgoSpec:
        problems = ArgoWorkflowTrigger.check(spec)
        if problems:
            raise PermanentTriggerError(problems[0][1])
        ref_key = next((s for s in SOURCES[1:] if s in spec), None)
        return cls(
            str(spec.get("operation", "submit")),
            str(spec["namespace"]) if "namespace" in spec else None,
            str(spec["name"]) if "name" in spec else None,
            spec.get("workflow"),
            (ref_key, spec[ref_key]["name"]) if ref_key else None,
            tuple(spec.get("arguments", {}).get("parameters", [])),
            spec.get("serviceAccountName"),
            spec.get("labels", {}),
            Wait.of(spec["wait"]) if "wait" in spec else None,
        )


class ArgoWorkflowTrigger:
    key: ClassVar[str] = "argoWorkflow"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "operation": {"enum": list(OPERATIONS)},
            "namespace": {"type": "string", "minLength": 1},
            "name": {"type": "string", "minLength": 1},
            "workflow": {"type": "object"},
            "workflowTemplateRef": _REF,
            "clusterWorkflowTemplateRef": _REF,
            "arguments": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"parameters": {"type": "array", "items": _PARAM}},
            },
            "serviceAccountName": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "wait": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "phases": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                    "timeout": {"type": ["string", "number"]},
                    "interval": {"type": ["string", "number"]},
                },
            },
        },
    }

    def __init__(self, services: Services) -> None:
        self.services = services

    @classmethod
    def explain(cls, spec: Mapping[str, Any], first: events.CloudEvent | None) -> str:
        operation = str(spec.get("operation", "submit"))
        namespace = spec.get("namespace") or (spec.get("workflow") or {}).get(
            "metadata", {}).get("namespace") or "argo"
        if operation != "submit":
            return f"{operation}s Workflow {spec.get('name')!r} in namespace {namespace}"
        ref = spec.get("workflowTemplateRef") or spec.get("clusterWorkflowTemplateRef")
        what = f"from template {ref.get('name')!r}" if isinstance(ref, Mapping) else "inline"
        params = [p.get("name") for p in (spec.get("arguments") or {}).get("parameters", [])
                  if isinstance(p, Mapping)]  # fmt: skip
        with_params = f" with parameters {', '.join(map(str, params))}" if params else ""
        return f"submits a Workflow {what} in namespace {namespace}{with_params}"

    @classmethod
    def check(cls, spec: Mapping[str, Any]) -> _Problems:
        problems: _Problems = []
        operation = spec.get("operation", "submit")
        sources = [s for s in SOURCES if s in spec]
        if operation == "submit" and len(sources) != 1:
            problems.append(((), f"submit needs exactly one of {', '.join(SOURCES)}; "
                                 f"found {', '.join(sources) or 'none'}"))  # fmt: skip
        if operation != "submit":
            if "name" not in spec:
                problems.append((("name",), f"operation {operation!r} needs the workflow's name"))
            for s in sources:
                problems.append(((s,), f"operation {operation!r} acts on an existing workflow; "
                                       f"remove {s}"))  # fmt: skip
        wf = spec.get("workflow")
        if isinstance(wf, Mapping) and wf.get("kind", "Workflow") != "Workflow":
            problems.append((("workflow", "kind"), f"{wf.get('kind')!r}: must be Workflow"))
        wait = spec.get("wait")
        if isinstance(wait, Mapping):
            for key in ("timeout", "interval"):
                if key in wait:
                    try:
                        parse_duration(wait[key])
                    except ValueError as e:
                        problems.append((("wait", key), str(e)))
        return problems

    async def execute(self, spec: Mapping[str, Any], ctx: TriggerContext) -> TriggerResult:
        parsed = ArgoSpec.parse(spec)
        cluster = await self.services.cluster()
        res = await cluster.resource(API_VERSION, "Workflow")
        operation = parsed.operation
        if operation == "submit":
            detail = await self._submit(cluster, res, parsed, ctx)
        else:
            ns = "default" if parsed.namespace is None else parsed.namespace
            name = str(parsed.name)
            await cluster.patch(res, name, PATCHES[operation], "merge", ns)
            detail = {"operation": operation, "namespace": ns, "name": name}
        if parsed.wait is not None:
            detail["phase"] = await self._wait(cluster, res, detail, parsed.wait)
        return TriggerResult(detail=detail)

    def build(self, spec: ArgoSpec, ctx: TriggerContext) -> dict[str, Any]:
        """The Workflow object a submit sends."""
        eid = kube.event_id(ctx.event_ids)
        if spec.workflow is not None:
            wf = kube.with_labels(spec.workflow, {})
            wf.setdefault("apiVersion", API_VERSION)
            wf.setdefault("kind", "Workflow")
            wf.setdefault("spec", {})
        else:
            assert spec.template is not None  # parse checked: one source for a submit
            ref_key, ref_name = spec.template
            ref: dict[str, Any] = {"name": ref_name}
            if ref_key == "clusterWorkflowTemplateRef":
                ref["clusterScope"] = True
            wf = {"apiVersion": API_VERSION, "kind": "Workflow", "metadata": {},
                  "spec": {"workflowTemplateRef": ref}}  # fmt: skip
        meta = wf["metadata"]
        if spec.namespace is not None or not meta.get("namespace"):
            meta["namespace"] = "default" if spec.namespace is None else spec.namespace
        if spec.name is not None:
            meta["name"] = spec.name
        elif not meta.get("name"):
            base = meta.get("generateName") or (spec.template[1] if spec.template else "workflow")
            meta["name"] = workflow_name(base, ctx.sensor, ctx.trigger, eid)
        meta.pop("generateName", None)
        labels = {**spec.labels, **kube.ownership_labels(ctx.sensor, ctx.trigger, eid)}
        wf = kube.with_labels(wf, labels, {kube.ANNOTATION_EVENT_ID: eid})
        params = resolve_parameters(spec.parameters, ctx)
        if params:
            args = wf["spec"].setdefault("arguments", {})
            given = {p["name"]: p for p in args.get("parameters", [])}
            given.update({p["name"]: p for p in params})
            args["parameters"] = list(given.values())
        if spec.service_account is not None:
            wf["spec"]["serviceAccountName"] = spec.service_account
        return wf

    async def _submit(
        self, cluster: kube.Cluster, res: kube.Resource, spec: ArgoSpec,
        ctx: TriggerContext,
    ) -> dict[str, Any]:  # fmt: skip
        wf = self.build(spec, ctx)
        meta = wf["metadata"]
        detail: dict[str, Any] = {"operation": "submit", "namespace": meta["namespace"],
                                  "name": meta["name"]}  # fmt: skip
        try:
            created = await cluster.create(res, wf)
            detail.update(submitted=True, uid=created["metadata"].get("uid"))
        except kube.ConflictError as e:
            existing = await cluster.get(res, meta["name"], meta["namespace"])
            theirs = (existing["metadata"].get("labels") or {}).get(kube.LABEL_EVENT_ID)
            if theirs != meta["labels"][kube.LABEL_EVENT_ID]:
                raise PermanentTriggerError(
                    f"{e}; it was not submitted for this event ({kube.LABEL_EVENT_ID}={theirs!r})"
                    "; drop `name` so eventsvc derives one from the event"
                ) from e
            detail.update(submitted=False, uid=existing["metadata"].get("uid"))
        return detail

    async def _wait(
        self, cluster: kube.Cluster, res: kube.Resource, detail: Mapping[str, Any],
        wait: Wait,
    ) -> str | None:  # fmt: skip
        phases, timeout, interval = wait.phases, wait.timeout, wait.interval
        held, last = await kube.wait_for(
            cluster, res, detail["name"], detail["namespace"],
            lambda o: (o.get("status") or {}).get("phase") in phases, timeout, interval,
        )  # fmt: skip
        status = (last or {}).get("status") or {}
        phase = status.get("phase")
        if not held:
            raise PermanentTriggerError(
                f"workflow {detail['name']!r} did not reach {'/'.join(phases)} within "
                f"{timeout:g}s; last phase {phase!r}, message {status.get('message')!r}"
            )
        if phase in ("Failed", "Error") and phase not in wait.given:
            raise PermanentTriggerError(
                f"workflow {detail['name']!r} ended {phase}: {status.get('message') or '-'}"
            )
        return str(phase) if phase is not None else None
