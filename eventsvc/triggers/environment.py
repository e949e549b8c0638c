"""`environment`: an on-demand environment per pull request, through Argo CD.

On `opened`, `reopened`, `synchronize`, `ready_for_review` and `labeled` it
server-side applies a Namespace and an Argo CD `Application` that deploys the
deployment repository's path with the PR's image (tag = head sha) as a Kustomize
image override or a Helm parameter. On `closed`, or when a required label is
removed (or an excluded one added), it deletes the Application — carrying Argo
CD's resources finalizer, so Argo CD prunes what it deployed — then the Namespace.

Names are `pr-<number>-<owner>-<repo>` (RFC 1123, ≤ 63, hash-shortened), stable
per PR, so every event for a PR converges on the same objects and a re-fired
event changes nothing. The PR's `updated_at` is kept as an annotation, so
`mode: sweep` (from a Schedule) can delete stale environments from the
Kubernetes API alone. The PR comes from the event (a GitHub `pull_request`
webhook body) unless `pullRequest` gives its fields explicitly.

The result detail says what a follow-up (a PR comment, a commit status) needs:
`action` (created, updated, deleted, skipped), `url`, `repository` (owner/repo),
`pullRequest` (number), `headSha`, `namespace`, `application`, `reason`.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from eventsvc import kube, templates
from eventsvc.durations import parse_duration
from eventsvc.errors import EventsvcError, PermanentTriggerError
from eventsvc.events import CloudEvent
from eventsvc.triggers.base import Services, TriggerContext, TriggerResult

ARGO_API = "argoproj.io/v1alpha1"
FINALIZER = "resources-finalizer.argocd.argoproj.io"
LABEL_ENV = "eventsvc.dev/environment"
LABEL_REPO = "eventsvc.dev/repository"
LABEL_PR = "eventsvc.dev/pull-request"
ANN_REPO = "eventsvc.dev/repository"
ANN_UPDATED = "eventsvc.dev/pr-updated-at"
ANN_SHA = "eventsvc.dev/head-sha"
ANN_URL = "eventsvc.dev/url"
ENSURE_ACTIONS = ("opened", "reopened", "synchronize", "ready_for_review", "labeled")
URL_FIELDS = ("number", "namespace", "repository", "owner", "repo", "sha", "short_sha")
_Problems = list[tuple[tuple[str | int, ...], str]]


@dataclass(frozen=True, slots=True)
class PullRequest:
    number: int
    repository: str  # owner/name
    action: str
    head_sha: str
    base: str
    draft: bool
    labels: tuple[str, ...]
    label: str | None  # the label added or removed, for labeled / unlabeled
    updated_at: str

    @classmethod
    def of(cls, data: Any, given: Mapping[str, Any], event_time: str) -> PullRequest:
        """From a pull_request webhook body, with explicitly `given` fields on top."""
        body = data if isinstance(data, Mapping) else {}
        pr = body.get("pull_request") or {}
        fields: dict[str, Any] = {
            "number": pr.get("number", body.get("number")),
            "repository": (body.get("repository") or {}).get("full_name"),
            "action": body.get("action"),
            "headSha": (pr.get("head") or {}).get("sha"),
            "baseBranch": (pr.get("base") or {}).get("ref"),
            "draft": pr.get("draft", False),
            "labels": [lb.get("name") for lb in pr.get("labels") or [] if isinstance(lb, dict)],
            "label": (body.get("label") or {}).get("name"),
            "updatedAt": pr.get("updated_at") or event_time,
        }
        fields.update(given)
        missing = [k for k in ("number", "repository", "action") if not fields.get(k)]
        if missing:
            raise PermanentTriggerError(
                f"the event is not a pull_request webhook: {', '.join(missing)} missing; filter "
                "the dependency on type prefix com.github.pull_request. or set pullRequest fields"
            )
        return cls(int(fields["number"]), str(fields["repository"]), str(fields["action"]),
                   str(fields.get("headSha") or ""), str(fields.get("baseBranch") or ""),
                   bool(fields.get("draft")), tuple(str(x) for x in fields.get("labels") or ()),
                   fields.get("label"), str(fields["updatedAt"]))  # fmt: skip


def environment_name(number: int, repository: str, prefix: str = "pr") -> str:
    """`pr-7-acme-shop`: an RFC 1123 label, ≤ 63, the same for every event of the PR."""
    slug = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", repository.lower())).strip("-")
    name = f"{prefix}-{number}-{slug}".strip("-")
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(repository.encode()).hexdigest()[:6]
    head = f"{prefix}-{number}-"
    return f"{head}{slug[: 63 - len(head) - 7].rstrip('-')}-{digest}"


def decide(pr: PullRequest, gates: Mapping[str, Any]) -> tuple[str, str]:
    """("ensure" | "teardown" | "skip", why) for this PR event under these gates."""
    required = set(gates.get("requiredLabels", ()))
    excluded = set(gates.get("excludedLabels", ()))
    skip_drafts = bool(gates.get("skipDrafts", True))
    if pr.action == "closed":
        return "teardown", "pull request closed"
    if pr.action == "unlabeled" and pr.label in required:
        return "teardown", f"required label {pr.label!r} removed"
    if pr.action == "labeled" and pr.label in excluded:
        return "teardown", f"excluded label {pr.label!r} added"
    if pr.action == "converted_to_draft" and skip_drafts:
        return "teardown", "converted to draft"
    if pr.action not in ENSURE_ACTIONS:
        return "skip", f"action {pr.action!r} does not change the environment"
    bases = gates.get("baseBranches")
    if bases and pr.base not in bases:
        return "skip", f"base branch {pr.base!r} is not one of {', '.join(bases)}"
    if pr.draft and skip_drafts:
        return "skip", "draft pull request"
    missing = sorted(required - set(pr.labels))
    if missing:
        return "skip", f"required label(s) missing: {', '.join(missing)}"
    present = sorted(excluded & set(pr.labels))
    if present:
        return "skip", f"excluded label(s) present: {', '.join(present)}"
    return "ensure", pr.action


def expired(updated_at: str | None, now: datetime, ttl: timedelta) -> bool:
    """True when `updated_at` (RFC 3339) is older than `ttl` before `now`; unknown → False."""
    if not updated_at:
        return False
    try:
        when = datetime.fromisoformat(updated_at.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return now - when > ttl


def _url_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def _check_url(url: str) -> _Problems:
    """Names `url` reads that an environment does not offer, in either spelling."""
    unknown = sorted(templates.names_read(url) - set(URL_FIELDS) - {"data", "event", "events"})
    for piece in templates.split_template(url):
        try:
            if isinstance(piece, str):
                unknown += [f for f in _url_fields(piece) if f not in URL_FIELDS]
        except ValueError as e:
            unknown.append(f"({e})")
    if not unknown:
        return []
    known = ", ".join("{{ " + f + " }}" for f in URL_FIELDS)
    return [(("url",), f"unknown placeholder(s) {', '.join(unknown)}; use {known}")]


@dataclass(frozen=True, slots=True)
class EnvironmentSpec:
    """The rendered section in `mode: pr`, parsed once (`parse`): the PR's environment."""

    pull_request: Mapping[str, Any]  # fields given explicitly, over the event's
    gates: Mapping[str, Any]
    name_prefix: str
    argocd: str  # Argo CD's namespace
    url: str | None  # template of the environment's URL
    repo_url: Any
    path: Any
    target_revision: Any
    project: Any
    image: Any
    image_tag: Any  # empty: the PR's head sha
    helm: Mapping[str, Any] | None
    destination_server: Any
    sync_policy: Any
    extras: tuple[tuple[str, Any], ...]  # (kind, spec) of a ResourceQuota / LimitRange given

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> EnvironmentSpec:
        extras = tuple((kind, spec[key]) for kind, key in (("ResourceQuota", "resourceQuota"),
                                                           ("LimitRange", "limitRange"))
                       if key in spec)  # fmt: skip
        return cls(spec.get("pullRequest", {}), spec.get("gates", {}),
                   spec.get("namePrefix", "pr"), str(spec.get("argocdNamespace", "argocd")),
                   str(spec["url"]) if spec.get("url") else None, spec["repoURL"], spec["path"],
                   spec.get("targetRevision", "HEAD"), spec.get("project", "default"),
                   spec["image"], spec.get("imageTag"), spec.get("helm"),
                   spec.get("destinationServer", "https://kubernetes.default.svc"),
                   spec.get("syncPolicy", {"automated": {"prune": True, "selfHeal": True}}),
                   extras)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """The rendered section in `mode: sweep`, parsed once (`parse`)."""

    ttl: timedelta
    shown_ttl: Any  # as written, for the result
    argocd: str
    repository: str | None  # owner/name: only this repository's environments

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> SweepSpec:
        ttl = timedelta(seconds=parse_duration(spec["ttl"]))
        argocd = str(spec.get("argocdNamespace", "argocd"))
        return cls(ttl, spec["ttl"], argocd, spec.get("repository") or None)


class EnvironmentTrigger:
    key: ClassVar[str] = "environment"
    schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "mode": {"enum": ["pr", "sweep"]},
            "repoURL": {"type": "string", "minLength": 1},
            "path": {"type": "string", "minLength": 1},
            "targetRevision": {"type": "string"},
            "project": {"type": "string"},
            "image": {"type": "string", "minLength": 1},
            "imageTag": {"type": "string"},
            "helm": {
                "type": "object",
                "additionalProperties": False,
                "required": ["imageTagParameter"],
                "properties": {
                    "imageTagParameter": {"type": "string"},
                    "imageRepositoryParameter": {"type": "string"},
                    "valueFiles": {"type": "array", "items": {"type": "string"}},
                },
            },
            "argocdNamespace": {"type": "string", "minLength": 1},
            "destinationServer": {"type": "string", "minLength": 1},
            "namePrefix": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?$"},
            "url": {"type": "string", templates.NAMES_MARK: list(URL_FIELDS)},
            "gates": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "skipDrafts": {"type": "boolean"},
                    "requiredLabels": {"type": "array", "items": {"type": "string"}},
                    "excludedLabels": {"type": "array", "items": {"type": "string"}},
                    "baseBranches": {"type": "array", "items": {"type": "string"}},
                },
            },
            "resourceQuota": {"type": "object"},
            "limitRange": {"type": "object"},
            "syncPolicy": {"type": "object"},
            "ttl": {"type": ["string", "number"]},
            "repository": {"type": "string"},
            "pullRequest": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "number": {"type": ["integer", "string"]},
                    "repository": {"type": "string"},
                    "action": {"type": "string"},
                    "headSha": {"type": "string"},
                    "baseBranch": {"type": "string"},
                    "draft": {"type": ["boolean", "string"]},
                    "labels": {"type": "array", "items": {"type": "string"}},
                    "label": {"type": "string"},
                    "updatedAt": {"type": "string"},
                },
            },
        },
    }

    def __init__(self, services: Services) -> None:
        self.services = services

    @classmethod
    def explain(cls, spec: Mapping[str, Any], first: CloudEvent | None) -> str | None:
        """What it decides from the event alone before acting (no cluster needed): its
        gates, so a draft PR shows up as skipped, not just as firing."""
        if spec.get("mode", "pr") != "pr":
            return "removes the environments whose pull request is closed or stale"
        if first is None:
            return None
        when = first.get_attributes().get("time")
        try:
            pr = PullRequest.of(first.get_data(), spec.get("pullRequest", {}), str(when or ""))
        except EventsvcError as e:
            return f"fails: {e}"
        verdict, why = decide(pr, spec.get("gates", {}))
        action = {"ensure": "creates or updates", "teardown": "deletes", "skip": "skips"}[verdict]
        return f"{action} the environment of PR #{pr.number} ({why})"

    @classmethod
    def check(cls, spec: Mapping[str, Any]) -> _Problems:
        problems: _Problems = []
        if spec.get("mode", "pr") == "pr":
            for key in ("repoURL", "path", "image"):
                if key not in spec:
                    problems.append(((key,), "required when mode is pr"))
        elif "ttl" not in spec:
            problems.append((("ttl",), "required when mode is sweep, e.g. ttl: 72h"))
        if "ttl" in spec:
            try:
                parse_duration(spec["ttl"])
            except ValueError as e:
                problems.append((("ttl",), str(e)))
        url = spec.get("url")
        if isinstance(url, str):
            problems += _check_url(url)
        return problems

    async def execute(self, spec: Mapping[str, Any], ctx: TriggerContext) -> TriggerResult:
        if spec.get("mode", "pr") == "sweep":
            cluster = await self.services.cluster()
            return await self._sweep(cluster, SweepSpec.parse(spec), datetime.now(UTC))
        parsed = EnvironmentSpec.parse(spec)
        event = ctx.first
        when = event.get_attributes().get("time")
        event_time = when.isoformat() if isinstance(when, datetime) else str(when or "")
        pr = PullRequest.of(event.get_data(), parsed.pull_request, event_time)
        verdict, why = decide(pr, parsed.gates)
        name = environment_name(pr.number, pr.repository, parsed.name_prefix)
        argocd = parsed.argocd
        url = self.url(parsed, pr, name)
        detail: dict[str, Any] = {"namespace": name, "application": name,
                                  "pullRequest": pr.number, "repository": pr.repository,
                                  "headSha": pr.head_sha, "url": url,
                                  "reason": why}  # fmt: skip
        if verdict == "skip":  # decided before any cluster access: a skip needs none
            return TriggerResult(outcome="skipped", detail={**detail, "action": "skipped"})
        cluster = await self.services.cluster()
        if verdict == "teardown":
            gone = await teardown(cluster, name, name, argocd)
            return TriggerResult(detail={**detail, "action": "deleted", **gone})
        app_res = await cluster.resource(ARGO_API, "Application")
        existing = await cluster.get_or_none(app_res, name, argocd)
        await self._ensure(cluster, parsed, ctx, pr, name, argocd, url)
        if existing is not None:  # the sha it ran: an update at the same sha deploys nothing new
            annotations = (existing.get("metadata") or {}).get("annotations") or {}
            detail["previousHeadSha"] = str(annotations.get(ANN_SHA, ""))
        return TriggerResult(detail={**detail, "image": self.image(parsed, pr),
                                     "action": "updated" if existing else "created"})  # fmt: skip

    # -- building ----------------------------------------------------------------------------

    @staticmethod
    def image(spec: EnvironmentSpec, pr: PullRequest) -> str:
        return f"{spec.image}:{spec.image_tag or pr.head_sha}"

    @staticmethod
    def url(spec: EnvironmentSpec, pr: PullRequest, name: str) -> str | None:
        template = spec.url
        if not template:
            return None
        owner, _, repo = pr.repository.partition("/")
        names = {"number": pr.number, "namespace": name, "repository": pr.repository,
                 "owner": owner, "repo": repo, "sha": pr.head_sha, "short_sha": pr.head_sha[:7]}
        return templates.render(template, names,
                                lambda n: str(names[n]) if n in names else None)  # fmt: skip

    @staticmethod
    def metadata(pr: PullRequest, name: str, url: str | None, extra: Mapping[str, str],
                 namespace: str | None = None) -> dict[str, Any]:  # fmt: skip
        annotations = {ANN_REPO: pr.repository, ANN_UPDATED: pr.updated_at, ANN_SHA: pr.head_sha}
        if url:
            annotations[ANN_URL] = url
        labels = {**extra, LABEL_ENV: "true", LABEL_REPO: kube.label_value(
            pr.repository.replace("/", ".")), LABEL_PR: str(pr.number)}  # fmt: skip
        meta: dict[str, Any] = {"name": name, "labels": labels, "annotations": annotations}
        if namespace:
            meta["namespace"] = namespace
        return meta

    def application(
        self, spec: EnvironmentSpec, pr: PullRequest, name: str, argocd: str,
        meta: dict[str, Any],
    ) -> dict[str, Any]:  # fmt: skip
        source: dict[str, Any] = {"repoURL": spec.repo_url, "path": spec.path,
                                  "targetRevision": spec.target_revision}  # fmt: skip
        helm = spec.helm
        tag = spec.image_tag or pr.head_sha
        if helm:
            params = [{"name": helm["imageTagParameter"], "value": tag}]
            if helm.get("imageRepositoryParameter"):
                params.insert(0, {"name": helm["imageRepositoryParameter"], "value": spec.image})
            source["helm"] = {"parameters": params}
            if helm.get("valueFiles"):
                source["helm"]["valueFiles"] = list(helm["valueFiles"])
        else:
            source["kustomize"] = {"images": [self.image(spec, pr)]}
        return {
            "apiVersion": ARGO_API,
            "kind": "Application",
            "metadata": {**meta, "namespace": argocd, "finalizers": [FINALIZER]},
            "spec": {
                "project": spec.project,
                "source": source,
                "destination": {
                    "server": spec.destination_server,
                    "namespace": name,
                },
                "syncPolicy": spec.sync_policy,
            },
        }

    async def _ensure(
        self, cluster: kube.Cluster, spec: EnvironmentSpec, ctx: TriggerContext,
        pr: PullRequest, name: str, argocd: str, url: str | None,
    ) -> None:  # fmt: skip
        owner = kube.ownership_labels(ctx.sensor, ctx.trigger, kube.event_id(ctx.event_ids))
        ns_res = await cluster.resource("v1", "Namespace")
        await cluster.apply(ns_res, {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": self.metadata(pr, name, url, owner)})  # fmt: skip
        for kind, body in spec.extras:
            res = await cluster.resource("v1", kind)
            meta = self.metadata(pr, "environment", url, owner, namespace=name)
            await cluster.apply(res, {"apiVersion": "v1", "kind": kind, "metadata": meta,
                                      "spec": body})  # fmt: skip
        app_res = await cluster.resource(ARGO_API, "Application")
        meta = self.metadata(pr, name, url, owner)
        await cluster.apply(app_res, self.application(spec, pr, name, argocd, meta))

    # -- sweeping ----------------------------------------------------------------------------

    async def _sweep(
        self, cluster: kube.Cluster, spec: SweepSpec, now: datetime
    ) -> TriggerResult:
        ttl, argocd = spec.ttl, spec.argocd
        selector = f"{LABEL_ENV}=true"
        if spec.repository:
            selector += f",{LABEL_REPO}={kube.label_value(spec.repository.replace('/', '.'))}"
        app_res = await cluster.resource(ARGO_API, "Application")
        ns_res = await cluster.resource("v1", "Namespace")
        apps = await cluster.list(app_res, argocd, selector)
        namespaces = await cluster.list(ns_res, None, selector)
        targets: dict[str, str] = {}  # namespace -> application
        for obj in apps:
            updated = (obj["metadata"].get("annotations") or {}).get(ANN_UPDATED)
            dest = ((obj.get("spec") or {}).get("destination") or {}).get("namespace")
            if expired(updated, now, ttl):
                targets[dest or obj["metadata"]["name"]] = obj["metadata"]["name"]
        for obj in namespaces:
            updated = (obj["metadata"].get("annotations") or {}).get(ANN_UPDATED)
            if expired(updated, now, ttl):
                targets.setdefault(obj["metadata"]["name"], obj["metadata"]["name"])
        for namespace, app in sorted(targets.items()):
            await teardown(cluster, app, namespace, argocd)
        kept = len({o["metadata"]["name"] for o in namespaces} - set(targets))
        return TriggerResult(detail={"action": "sweep", "deleted": sorted(targets),
                                     "kept": kept, "ttl": spec.shown_ttl})  # fmt: skip


async def teardown(
    cluster: kube.Cluster, application: str, namespace: str, argocd: str
) -> dict[str, Any]:
    """Delete the Application (finalizer first, so Argo CD prunes), then the Namespace."""
    app_res = await cluster.resource(ARGO_API, "Application")
    ns_res = await cluster.resource("v1", "Namespace")
    app = await cluster.get_or_none(app_res, application, argocd)
    deleted_app = False
    if app is not None:
        if FINALIZER not in (app["metadata"].get("finalizers") or []):

            def add_finalizer(obj: dict[str, Any]) -> bool:
                finalizers = obj["metadata"].setdefault("finalizers", [])
                if FINALIZER in finalizers:
                    return False
                finalizers.append(FINALIZER)
                return True

            await cluster.update(app_res, application, add_finalizer, argocd)
        deleted_app = await cluster.delete(app_res, application, argocd, propagation="Foreground")
    ns = await cluster.get_or_none(ns_res, namespace)
    deleted_ns = False
    if ns is not None:
        if (ns["metadata"].get("labels") or {}).get(LABEL_ENV) != "true":
            raise PermanentTriggerError(
                f"namespace {namespace!r} exists but has no {LABEL_ENV}=true label, so eventsvc "
                "did not create it; refusing to delete it. Delete it by hand if it is unused"
            )
        deleted_ns = await cluster.delete(ns_res, namespace)
    return {"deleted": {"application": deleted_app, "namespace": deleted_ns}}
