"""A local HTTP server following the Kubernetes API conventions the triggers use.

Discovery (`/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`), create / get /
list (label selectors, pagination) / update / patch (merge, JSON, strategic taken
as merge, server-side apply) / delete, for namespaced and cluster-scoped kinds;
`resourceVersion` with 409 on a stale update; `Status` bodies for 403/404/409/422;
namespaces must exist. Tests inject a 403 for a verb on a resource, or any
failure for the next matching requests, and read back every request received.

Watch (`?watch=1`): a chunked stream of JSON lines `{"type": ADDED|MODIFIED|DELETED|
BOOKMARK|ERROR, "object": ...}` from `resourceVersion` on (none or "0": the current
objects as ADDED first), label selectors applied to both sides of a change (an object
leaving the selector is DELETED), bookmarks on request (`allowWatchBookmarks`), and
`timeoutSeconds`. After `compact()`, a watch from an older resourceVersion gets an
ERROR event with a 410 `Expired` Status (or an HTTP 410 with `gone_as_http`). Every
change made through the API or the knobs `seed` / `modify` / `remove` is in the
history; lists answer with the resourceVersion they reflect.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

# (group, version) -> [(kind, plural, namespaced)]
KINDS: dict[tuple[str, str], list[tuple[str, str, bool]]] = {
    ("", "v1"): [
        ("Namespace", "namespaces", False),
        ("ConfigMap", "configmaps", True),
        ("Secret", "secrets", True),
        ("ResourceQuota", "resourcequotas", True),
        ("LimitRange", "limitranges", True),
        ("ServiceAccount", "serviceaccounts", True),
    ],
    ("apps", "v1"): [("Deployment", "deployments", True)],
    ("batch", "v1"): [("Job", "jobs", True)],
    ("argoproj.io", "v1alpha1"): [
        ("Application", "applications", True),
        ("Workflow", "workflows", True),
        ("WorkflowTemplate", "workflowtemplates", True),
        ("ClusterWorkflowTemplate", "clusterworkflowtemplates", False),
    ],
}
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any

    @property
    def verb(self) -> str:
        return _VERBS[self.method]


@dataclass(slots=True)
class Failure:
    method: str
    path_contains: str
    status: int
    times: int
    reason: str = "InternalError"


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One change in the store: resourceVersion, type, key, the object before and after."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: tuple[str, str, str, str]
    old: dict[str, Any] | None
    new: dict[str, Any]


@dataclass(slots=True)
class KubeApi:
    """State and knobs of the fake API server; `url` once started."""

    url: str = ""
    objects: dict[tuple[str, str, str, str], dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)
    forbidden: set[tuple[str, str, str, str | None]] = field(default_factory=set)
    failures: list[Failure] = field(default_factory=list)
    page_size: int = 0  # >0: list answers in pages with a `continue` token
    listeners: list[Callable[[Recorded, int], None]] = field(default_factory=list)
    history: list[WatchEvent] = field(default_factory=list)
    watchers: list[asyncio.Queue[WatchEvent | str | None]] = field(default_factory=list)
    compacted: int = 0  # watches from an older resourceVersion are answered 410
    gone_as_http: bool = False  # 410 as the HTTP status rather than an ERROR event
    rv_now: int = 99
    _rv: itertools.count[int] = field(default_factory=lambda: itertools.count(100))

    # -- knobs -------------------------------------------------------------------------------

    def forbid(self, verb: str, plural: str, group: str = "", namespace: str | None = None) -> None:
        """Answer 403 to `verb` on `plural` (in `namespace`, or anywhere when None)."""
        self.forbidden.add((verb, group, plural, namespace))

    def fail(self, method: str, path_contains: str, status: int, times: int = 1) -> None:
        self.failures.append(Failure(method, path_contains, status, times))

    def seed(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace `obj` directly (an ADDED or MODIFIED in the watch history)."""
        group, version, plural, namespaced = _resolve(obj["apiVersion"], obj["kind"])
        ns = obj["metadata"].get("namespace", "default") if namespaced else ""
        key = (f"{group}/{version}", plural, ns, obj["metadata"]["name"])
        old = self.objects.get(key)
        obj = copy.deepcopy(obj)
        if old is not None:
            obj["metadata"].setdefault("uid", old["metadata"]["uid"])
        stored = self._stamp(obj, ns if namespaced else None)
        self.objects[key] = stored
        self.record("MODIFIED" if old else "ADDED", key, old, stored)
        return stored

    def modify(self, api_version: str, plural: str, name: str, namespace: str,
               patch: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        """Merge-patch a stored object as a controller would (new resourceVersion)."""
        key = (_gv(api_version), plural, namespace, name)
        old = self.objects[key]
        new = _merge(copy.deepcopy(old), patch)
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self.objects[key] = new
        self.record("MODIFIED", key, old, new)
        return new

    def remove(self, api_version: str, plural: str, name: str, namespace: str) -> None:
        key = (_gv(api_version), plural, namespace, name)
        self._removed(key, self.objects.pop(key))

    def compact(self) -> None:
        """Forget the history so far: watches from before now are answered 410 Gone."""
        self.compacted = self.rv_now
        self.history.clear()

    def bookmark(self) -> None:
        """Send a BOOKMARK at the current resourceVersion to watches that asked for them."""
        for q in self.watchers:
            q.put_nowait("BOOKMARK")

    def drop_watches(self) -> None:
        """End every open watch stream (as an API server restart or timeout would)."""
        for q in self.watchers:
            q.put_nowait(None)

    def record(self, type_: str, key: tuple[str, str, str, str], old: dict[str, Any] | None,
               new: dict[str, Any]) -> None:  # fmt: skip
        event = WatchEvent(int(new["metadata"]["resourceVersion"]), type_, key,
                           copy.deepcopy(old), copy.deepcopy(new))  # fmt: skip
        self.history.append(event)
        for q in self.watchers:
            q.put_nowait(event)

    # -- reading back ------------------------------------------------------------------------

    def get(self, api_version: str, plural: str, name: str, namespace: str = "") -> Any:
        return self.objects.get((_gv(api_version), plural, namespace, name))

    def of_kind(self, plural: str) -> list[dict[str, Any]]:
        return [o for (_, p, _, _), o in sorted(self.objects.items()) if p == plural]

    def sent(self, method: str | None = None, contains: str = "") -> list[Recorded]:
        return [r for r in self.requests
                if (method is None or r.method == method) and contains in r.path]  # fmt: skip

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method != "GET"]

    # -- internals ---------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self.rv_now = next(self._rv)
        return self.rv_now

    def _removed(self, key: tuple[str, str, str, str], obj: dict[str, Any]) -> None:
        self.deleted.append(obj)
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        self.record("DELETED", key, obj, gone)

    def _stamp(self, obj: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", secrets.token_hex(8))
        meta.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        meta["resourceVersion"] = str(self._next_rv())
        if namespace:
            meta["namespace"] = namespace
        return obj


def _gv(api_version: str) -> str:
    return api_version if "/" in api_version else f"/{api_version}"


def _resolve(api_version: str, kind: str) -> tuple[str, str, str, bool]:
    group, _, version = api_version.rpartition("/")
    for k, plural, namespaced in KINDS[(group, version)]:
        if k == kind:
            return group, version, plural, namespaced
    raise KeyError(kind)


def _status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}  # fmt: skip
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                idx = len(parent) if last == "-" else int(last)
                if op["op"] == "add":
                    parent.insert(idx, op["value"])
                else:
                    parent[idx] = op["value"]
            else:
                if op["op"] == "replace" and last not in parent:
                    raise ValueError(f"replace of missing path {op['path']}")
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif op["op"] == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return doc


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _invalid(obj: dict[str, Any], kind: str) -> str | None:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    if not name or len(name) > 253 or not _NAME.match(name):
        return f'{kind} "{name}" is invalid: metadata.name: Invalid value: "{name}"'
    if kind == "Namespace" and (len(name) > 63 or "." in name):
        return f'Namespace "{name}" is invalid: metadata.name: must be an RFC 1123 label'
    for value in (meta.get("labels") or {}).values():
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            return (
                f'{kind} "{name}" is invalid: metadata.labels: Invalid value: "{value}": '
                "a valid label must be an empty string or consist of alphanumeric characters"
            )
    return None


def build_app(api: KubeApi) -> web.Application:
    app = web.Application()

    async def handle(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "")
        body: Any = None
        if raw:
            body = yaml.safe_load(raw) if "yaml" in ctype else json.loads(raw)
        api.requests.append(Recorded(request.method, request.path, dict(request.query),
                                     ctype.split(";")[0], body))  # fmt: skip
        for f in api.failures:
            if f.times > 0 and f.method == request.method and f.path_contains in request.path:
                f.times -= 1
                return _status(f.status, f.reason, f"injected failure {f.status}")
        if request.method == "GET" and request.query.get("watch") in ("1", "true"):
            return await _watch(api, request)
        response = _route(api, request, body, ctype)
        for listener in api.listeners:  # after the store changed, before the answer is sent
            listener(api.requests[-1], response.status)
        return response

    async def end_watches(_: web.Application) -> None:
        api.drop_watches()  # open watch streams would hold the server's shutdown

    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_shutdown.append(end_watches)
    return app


def _discovery(path: str) -> web.Response | None:
    if path == "/api":
        return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
    if path == "/apis":
        groups = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                   "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}}
                  for (g, v) in KINDS if g]  # fmt: skip
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    m = re.fullmatch(r"/api/(v1)|/apis/([^/]+)/([^/]+)", path)
    if not m:
        return None
    group, version = ("", "v1") if m.group(1) else (m.group(2), m.group(3))
    if (group, version) not in KINDS:
        return _status(404, "NotFound", "the server could not find the requested resource")
    resources = []
    for kind, plural, namespaced in KINDS[(group, version)]:
        verbs = ["create", "delete", "get", "list", "patch", "update"]
        resources.append({"name": plural, "singularName": kind.lower(), "kind": kind,
                          "namespaced": namespaced, "verbs": verbs})  # fmt: skip
        resources.append({"name": f"{plural}/status", "singularName": "", "kind": kind,
                          "namespaced": namespaced, "verbs": verbs[2:]})  # fmt: skip
    gv = f"{group}/{version}" if group else version
    return web.json_response({"kind": "APIResourceList", "groupVersion": gv,
                              "resources": resources})  # fmt: skip


def _route(api: KubeApi, request: web.Request, body: Any, ctype: str) -> web.Response:
    path = request.path.rstrip("/")
    found = _discovery(path)
    if found is not None:
        return found
    m = re.fullmatch(r"/api/v1/(.+)|/apis/([^/]+)/([^/]+)/(.+)", path)
    if not m:
        return _status(404, "NotFound", "the server could not find the requested resource")
    if m.group(1):
        group, version, rest = "", "v1", m.group(1).split("/")
    else:
        group, version, rest = m.group(2), m.group(3), m.group(4).split("/")
    served = KINDS.get((group, version), [])
    kinds = {plural: (kind, namespaced) for kind, plural, namespaced in served}
    ns = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, rest = rest[1], rest[2:]
    plural, name = rest[0], (rest[1] if len(rest) > 1 else "")
    if plural not in kinds or len(rest) > 2:
        return _status(404, "NotFound", "the server could not find the requested resource")
    kind, namespaced = kinds[plural]
    verb = _VERBS[request.method]
    if not name and verb == "get":
        verb = "list"
    for f_verb, f_group, f_plural, f_ns in api.forbidden:
        if (f_verb, f_group, f_plural) == (verb, group, plural) and f_ns in (None, ns):
            where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
            gname = f"{plural}.{group}" if group else plural
            return _status(403, "Forbidden",
                           f'{gname} "{name}" is forbidden: User "system:serviceaccount:eventsvc:'
                           f'eventsvc" cannot {verb} resource "{plural}" in API group "{group}"'
                           f"{where}", name=name, group=group, kind=plural)  # fmt: skip
    gv = f"{group}/{version}"
    api_version = f"{group}/{version}" if group else version
    if namespaced and ns and (("/v1", "namespaces", "", ns) not in api.objects):
        if verb in ("create",) or (verb == "patch" and "apply" in ctype):
            return _status(404, "NotFound", f'namespaces "{ns}" not found',
                           name=ns, kind="namespaces")  # fmt: skip
    key = (gv, plural, ns, name)
    ctx = _Ctx(api, gv, api_version, kind, plural, ns, namespaced)
    if verb == "list":
        return ctx.list(request.query.get("labelSelector", ""), request.query.get("continue", ""))
    if verb == "get":
        obj = api.objects.get(key)
        return web.json_response(obj) if obj else ctx.not_found(name)
    if verb == "create":
        return ctx.create(body)
    if verb == "update":
        return ctx.update(name, body)
    if verb == "delete":
        return ctx.delete(name)
    return ctx.patch(name, body, ctype, request.query)


@dataclass(slots=True)
class _Ctx:
    api: KubeApi
    gv: str
    api_version: str
    kind: str
    plural: str
    ns: str
    namespaced: bool

    def key(self, name: str) -> tuple[str, str, str, str]:
        return (self.gv, self.plural, self.ns, name)

    def gname(self) -> str:
        group = self.gv.split("/")[0]
        return f"{self.plural}.{group}" if group else self.plural

    def not_found(self, name: str) -> web.Response:
        return _status(404, "NotFound", f'{self.gname()} "{name}" not found',
                       name=name, kind=self.plural)  # fmt: skip

    def list(self, selector: str, token: str) -> web.Response:
        items = [o for (gv, p, ns, _), o in sorted(self.api.objects.items())
                 if gv == self.gv and p == self.plural and (not self.ns or ns == self.ns)
                 and _selector_matches(selector, o["metadata"].get("labels") or {})]  # fmt: skip
        start = int(token) if token else 0
        meta: dict[str, Any] = {"resourceVersion": str(self.api.rv_now)}
        if self.api.page_size:
            if start + self.api.page_size < len(items):
                meta["continue"] = str(start + self.api.page_size)
            items = items[start : start + self.api.page_size]
        return web.json_response({"kind": f"{self.kind}List", "apiVersion": self.api_version,
                                  "metadata": meta, "items": items})  # fmt: skip

    def _store(self, obj: dict[str, Any]) -> web.Response | None:
        problem = _invalid(obj, self.kind)
        if problem:
            return _status(422, "Invalid", problem, name=obj["metadata"].get("name", ""),
                           kind=self.plural)  # fmt: skip
        obj["apiVersion"], obj["kind"] = self.api_version, self.kind
        if self.namespaced:
            obj["metadata"]["namespace"] = self.ns
        else:
            obj["metadata"].pop("namespace", None)
        key = self.key(obj["metadata"]["name"])
        old = self.api.objects.get(key)
        self.api.objects[key] = obj
        obj["metadata"]["resourceVersion"] = str(self.api._next_rv())
        self.api.record("MODIFIED" if old else "ADDED", key, old, obj)
        return None

    def create(self, body: Any) -> web.Response:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name", "")
        if self.key(name) in self.api.objects:
            return _status(409, "AlreadyExists", f'{self.gname()} "{name}" already exists',
                           name=name, kind=self.plural)  # fmt: skip
        self.api._stamp(obj, None)
        return self._store(obj) or web.json_response(obj, status=201)

    def update(self, name: str, body: Any) -> web.Response:
        current = self.api.objects.get(self.key(name))
        if current is None:
            return self.not_found(name)
        sent_rv = (body.get("metadata") or {}).get("resourceVersion")
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            return _status(409, "Conflict",
                           f'Operation cannot be fulfilled on {self.gname()} "{name}": the object '
                           "has been modified; please apply your changes to the latest version "
                           "and try again", name=name, kind=self.plural)  # fmt: skip
        obj = copy.deepcopy(body)
        for k in ("uid", "creationTimestamp"):
            obj["metadata"][k] = current["metadata"][k]
        return self._store(obj) or web.json_response(obj)

    def patch(self, name: str, body: Any, ctype: str, query: Any) -> web.Response:
        current = self.api.objects.get(self.key(name))
        if "apply-patch" in ctype:
            if not query.get("fieldManager"):
                return _status(400, "BadRequest", "PatchOptions.meta.k8s.io: fieldManager: "
                               "Required value: is required for apply patch")  # fmt: skip
            if current is None:
                obj = self.api._stamp(copy.deepcopy(body), None)
                return self._store(obj) or web.json_response(obj, status=201)
            merged = _merge(current, body)
            return self._store(merged) or web.json_response(merged)
        if current is None:
            return self.not_found(name)
        try:
            if "json-patch" in ctype:
                merged = _json_patch(current, body)
            else:  # merge, and strategic taken as merge for the kinds used here
                sent_rv = ((body or {}).get("metadata") or {}).get("resourceVersion")
                if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                    return _status(409, "Conflict", f'{self.gname()} "{name}": the object has '
                                   "been modified", name=name, kind=self.plural)  # fmt: skip
                merged = _merge(current, body)
        except (ValueError, KeyError, IndexError) as e:
            return _status(422, "Invalid", f"the patch cannot be applied: {e}")
        return self._store(merged) or web.json_response(merged)

    def delete(self, name: str) -> web.Response:
        obj = self.api.objects.pop(self.key(name), None)
        if obj is None:
            return self.not_found(name)
        self.api._removed(self.key(name), obj)
        if self.kind == "Namespace":  # the namespace controller, at once
            for key in [k for k in self.api.objects if k[2] == name]:
                self.api._removed(key, self.api.objects.pop(key))
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success",
                                  "details": {"name": name, "kind": self.plural,
                                              "uid": obj["metadata"]["uid"]}})  # fmt: skip


def _watch_target(path: str) -> tuple[str, str, str, str, str] | None:
    """(group/version, apiVersion, kind, plural, namespace) of a collection path."""
    m = re.fullmatch(r"/api/v1/(.+)|/apis/([^/]+)/([^/]+)/(.+)", path.rstrip("/"))
    if not m:
        return None
    group, version, rest = ("", "v1", m.group(1)) if m.group(1) else m.group(2, 3, 4)
    parts = rest.split("/")
    ns = ""
    if parts[0] == "namespaces" and len(parts) == 3:
        ns, parts = parts[1], parts[2:]
    for kind, plural, _ in KINDS.get((group, version), []):
        if parts == [plural]:
            return (
                f"{group}/{version}",
                f"{group}/{version}" if group else version,
                kind,
                plural,
                ns,
            )
    return None


def _seen_as(event: WatchEvent, selector: str) -> str | None:
    """The event type a watch with `selector` sees for `event`, or None."""
    was = event.old is not None and _selector_matches(
        selector, event.old["metadata"].get("labels") or {}
    )
    now = _selector_matches(selector, event.new["metadata"].get("labels") or {})
    if event.type == "DELETED":
        return "DELETED" if was else None
    if event.type == "ADDED" or (now and not was):
        return "ADDED" if now else None
    if was and not now:
        return "DELETED"
    return "MODIFIED" if now else None


async def _watch(api: KubeApi, request: web.Request) -> web.StreamResponse:
    target = _watch_target(request.path)
    if target is None:
        return _status(404, "NotFound", "the server could not find the requested resource")
    gv, api_version, kind, plural, ns = target
    group = gv.split("/")[0]
    for f_verb, f_group, f_plural, f_ns in api.forbidden:
        if (f_verb, f_group, f_plural) == ("watch", group, plural) and f_ns in (None, ns):
            return _status(403, "Forbidden", f'User "system:serviceaccount:eventsvc:eventsvc" '
                           f'cannot watch resource "{plural}" in API group "{group}"')  # fmt: skip
    query = request.query
    since = query.get("resourceVersion", "")
    selector = query.get("labelSelector", "")
    bookmarks = query.get("allowWatchBookmarks") in ("1", "true")
    timeout = float(query.get("timeoutSeconds") or 3600)
    gone = since not in ("", "0") and int(since) < api.compacted
    if gone and api.gone_as_http:
        return _status(410, "Expired", f"too old resource version: {since} ({api.compacted})")

    def line(type_: str, obj: dict[str, Any]) -> bytes:
        return json.dumps({"type": type_, "object": obj}).encode() + b"\n"

    def mine(event: WatchEvent) -> bytes | None:
        egv, eplural, ens, _ = event.key
        if egv != gv or eplural != plural or (ns and ens != ns):
            return None
        seen = _seen_as(event, selector)
        return line(seen, event.new) if seen else None

    queue: asyncio.Queue[WatchEvent | str | None] = asyncio.Queue()
    api.watchers.append(queue)  # before the backlog is read: nothing falls in between
    backlog: list[bytes] = []
    if gone:
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": f"too old resource version: {since} ({api.compacted})",
                  "reason": "Expired", "code": 410}  # fmt: skip
        backlog.append(line("ERROR", status))
    elif since in ("", "0"):
        for (egv, eplural, ens, _), obj in sorted(api.objects.items()):
            if (egv, eplural) == (gv, plural) and (not ns or ens == ns) and _selector_matches(
                    selector, obj["metadata"].get("labels") or {}):  # fmt: skip
                backlog.append(line("ADDED", obj))
    else:
        backlog += [b for e in api.history if e.rv > int(since) and (b := mine(e))]
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        for chunk in backlog:
            await response.write(chunk)
        if gone:
            return response
        async with asyncio.timeout(timeout):
            while (item := await queue.get()) is not None:
                if item == "BOOKMARK":
                    if bookmarks:
                        await response.write(line("BOOKMARK", {
                            "kind": kind, "apiVersion": api_version,
                            "metadata": {"resourceVersion": str(api.rv_now)}}))  # fmt: skip
                elif isinstance(item, WatchEvent) and (chunk := mine(item)):
                    await response.write(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        api.watchers.remove(queue)
    return response


def write_kubeconfig(path: Path, url: str, context: str = "fake") -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "users": [{"name": "eventsvc", "user": {"token": "test-token"}}],
        "contexts": [{"name": context, "context": {"cluster": "fake", "user": "eventsvc"}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(doc))
    return path
