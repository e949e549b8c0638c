"""The Kubernetes client: config, discovery, calls, watches, errors.

Used by the Kubernetes trigger kinds (through `Services.cluster()`, one `Cluster` per
process) and by the watch gateway; it knows nothing of either. Built from the config
section `kubernetes` {kubeconfig, context, inCluster} with `EVENTSVC_KUBECONFIG`
and `EVENTSVC_KUBE_CONTEXT` on top. With neither set it uses the in-cluster
service account when running in a pod, else the default kubeconfig.

Every call goes through `Cluster.request`, which runs the blocking client in a
thread and maps failures in ONE place (`map_error`): 401/403 permanent with the
missing RBAC rule, 404/409 as `NotFoundError`/`ConflictError` for callers that
expect them, 422 permanent with the server's message, 429/5xx/network retryable. Errors
are `ExternalError`s (retryable or not); a trigger run maps them to its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from prometheus_client import Histogram

from eventsvc.config import Config
from eventsvc.errors import (
    ConfigError,
    ExternalError,
    RetryableExternalError,
    retry_after_seconds,
)

FIELD_MANAGER = "eventsvc"
LABEL_SENSOR = "eventsvc.dev/sensor"
LABEL_TRIGGER = "eventsvc.dev/trigger"
LABEL_EVENT_ID = "eventsvc.dev/event-id"
ANNOTATION_EVENT_ID = "eventsvc.dev/event-id"
PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}
_CONFLICT_RETRIES = 5
# kept here, not in eventsvc.metrics, so the Kubernetes part stays in its own modules
KUBE_REQUESTS = Histogram(
    "eventsvc_kubernetes_request_duration_seconds",
    "Kubernetes API calls made by triggers, by verb, resource and status code.",
    ["verb", "resource", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


class NotFoundError(ExternalError):
    """404: the object (or its namespace, or its API) does not exist."""


class ConflictError(ExternalError):
    """409: already exists, or a stale resourceVersion."""


@dataclass(frozen=True, slots=True)
class Resource:
    """A served resource type, as discovery describes it."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


@dataclass(frozen=True, slots=True)
class Call:
    """What was asked, for error messages: verb, resource, namespace, name."""

    verb: str
    resource: Resource
    namespace: str | None = None
    name: str | None = None

    def describe(self) -> str:
        what = f"{self.resource.plural}"
        if self.resource.group:
            what += f".{self.resource.group}"
        if self.name:
            what += f" {self.name!r}"
        where = f" in namespace {self.namespace!r}" if self.namespace else ""
        return f"{self.verb} {what}{where}"


def rbac_rule(call: Call) -> str:
    """The rule a Role (namespaced) or ClusterRole (cluster-scoped) needs, as flow YAML."""
    res = call.resource
    holder = (
        f"a Role in namespace {call.namespace!r}"
        if res.namespaced and call.namespace
        else "a ClusterRole"
    )
    return (
        f'{{apiGroups: ["{res.group}"], resources: ["{res.plural}"], verbs: ["{call.verb}"]}}'
        f" in {holder}"
    )


def _status_message(body: str | None) -> str:
    if not body:
        return "(empty body)"
    try:
        doc = json.loads(body)
    except ValueError:
        return body[:300]
    if isinstance(doc, dict) and doc.get("message"):
        return str(doc["message"])
    return body[:300]


def map_error(error: BaseException, call: Call) -> Exception:
    """The one place a client failure becomes a trigger error (raise the result `from error`)."""
    if isinstance(error, ApiException):
        status = int(error.status or 0)
        message = _status_message(error.body)
        where = call.describe()
        if status in (401, 403):
            fix = (
                "the credentials were refused; check the kubeconfig or service account token"
                if status == 401
                else f"grant the rule {rbac_rule(call)} to eventsvc's service account"
            )
            return ExternalError(f"{where}: {status} {message}; {fix}")
        if status == 404:
            return NotFoundError(f"{where}: not found ({message})")
        if status == 409:
            return ConflictError(f"{where}: conflict ({message})")
        if status in (400, 422):
            return ExternalError(f"{where}: rejected by the API server: {message}")
        if status == 429 or status >= 500 or status == 0:
            retry_after = (error.headers or {}).get("Retry-After")
            delay = retry_after_seconds(retry_after)
            return RetryableExternalError(f"{where}: {status or 'error'} {message}", delay=delay)
        return ExternalError(f"{where}: {status} {message}")
    if isinstance(error, urllib3.exceptions.HTTPError | OSError | TimeoutError):
        return RetryableExternalError(
            f"{call.describe()}: API server unreachable: {type(error).__name__}: {error}"
        )
    return RetryableExternalError(f"{call.describe()}: {type(error).__name__}: {error}")


def label_value(text: str) -> str:
    """A valid label value (≤ 63, alphanumeric ends) derived from free text, stable for it."""
    if len(text) <= 63 and _LABEL_VALUE.match(text):
        return text
    import hashlib

    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)
    if len(cleaned) > 63:
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        cleaned = f"{cleaned[:52]}-{digest}"
    cleaned = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)
    return cleaned or "x"


def settings(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    section = dict(config.section("kubernetes"))
    if env.get("EVENTSVC_KUBECONFIG"):
        section["kubeconfig"] = env["EVENTSVC_KUBECONFIG"]
    if env.get("EVENTSVC_KUBE_CONTEXT"):
        section["context"] = env["EVENTSVC_KUBE_CONTEXT"]
    return section


def _load_configuration(section: Mapping[str, Any]) -> k8s_client.Configuration:
    configuration = k8s_client.Configuration()
    in_cluster = section.get("inCluster")
    if in_cluster is None:
        in_cluster = not section.get("kubeconfig") and "KUBERNETES_SERVICE_HOST" in os.environ
    try:
        if in_cluster:
            k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=section.get("kubeconfig"),
                context=section.get("context"),
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError) as e:
        how = "in-cluster" if in_cluster else (
            f"kubeconfig {section['kubeconfig']!r}" if section.get("kubeconfig")
            else "the default kubeconfig, $KUBECONFIG or ~/.kube/config"
        )  # fmt: skip
        reason = str(e).rstrip(". ")
        raise ConfigError(
            f"Kubernetes access ({how}) cannot be set up: {reason}. Set kubernetes.kubeconfig / "
            "EVENTSVC_KUBECONFIG (and kubernetes.context), or kubernetes.inCluster: true"
        ) from e
    return configuration


class Cluster:
    """An `ApiClient` plus discovery; every method is async and never blocks the loop."""

    def __init__(self, api: k8s_client.ApiClient, timeout: tuple[float, float] = (5.0, 30.0)):
        self.api = api
        self.timeout = timeout
        self._resources: dict[str, dict[str, Resource]] = {}
        self._discovery_lock = asyncio.Lock()
        self.api_seconds = 0.0  # time spent waiting on the API server (for benchmarks)
        self.api_calls = 0

    @classmethod
    async def connect(cls, config: Config) -> Cluster:
        section = settings(config)
        configuration = await asyncio.to_thread(_load_configuration, section)
        return cls(k8s_client.ApiClient(configuration))

    def close(self) -> None:
        self.api.close()  # type: ignore[no-untyped-call]

    # -- low level ---------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        body: Any,
        content_type: str,
    ) -> Any:
        request = self.api.param_serialize(
            method,
            path,
            query_params=query or None,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=self.timeout)
        data = response.read()  # type: ignore[no-untyped-call]
        text = data.decode("utf-8", errors="replace") if data else ""
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return json.loads(text) if text else {}

    async def request(
        self,
        call: Call,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        started = time.perf_counter()
        code = "error"
        try:
            result = await asyncio.to_thread(
                self._send, method, path, query or [], body, content_type
            )
            code = "2xx"
            return result
        except ApiException as e:
            code = str(e.status)
            raise map_error(e, call) from e
        except Exception as e:
            raise map_error(e, call) from e
        finally:
            elapsed = time.perf_counter() - started
            self.api_seconds += elapsed
            self.api_calls += 1
            KUBE_REQUESTS.labels(call.verb, call.resource.plural, code).observe(elapsed)

    # -- discovery ---------------------------------------------------------------------------

    async def resource(self, api_version: str, kind: str) -> Resource:
        """The resource serving `kind` in `api_version`, from discovery (cached)."""
        served = self._resources.get(api_version)
        if served is None:
            async with self._discovery_lock:
                served = self._resources.get(api_version)
                if served is None:
                    served = await self._discover(api_version)
                    self._resources[api_version] = served
        if kind not in served:
            raise ExternalError(
                f"kind {kind!r} is not served in apiVersion {api_version!r} "
                f"(served: {', '.join(sorted(served)) or 'none'}); fix the kind or install its CRD"
            )
        return served[kind]

    async def _discover(self, api_version: str) -> dict[str, Resource]:
        path = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        probe = Resource(api_version, "", "(discovery)", False)
        try:
            doc = await self.request(Call("get", probe), "GET", path)
        except NotFoundError as e:
            raise ExternalError(
                f"apiVersion {api_version!r} is not served by the cluster; "
                "fix the apiVersion or install the CRD that defines it"
            ) from e
        out: dict[str, Resource] = {}
        for item in doc.get("resources", []):
            if "/" in item.get("name", ""):
                continue  # subresources such as status, scale
            out[item["kind"]] = Resource(api_version, item["kind"], item["name"],
                                         bool(item.get("namespaced")))  # fmt: skip
        return out

    # -- verbs -------------------------------------------------------------------------------

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = namespace if res.namespaced else None
        return dict(await self.request(Call("get", res, ns, name), "GET", res.path(ns, name)))

    async def get_or_none(
        self, res: Resource, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        try:
            return await self.get(res, name, namespace)
        except NotFoundError:
            return None

    async def list(
        self, res: Resource, namespace: str | None = None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        ns = namespace if res.namespaced else None
        query = [("labelSelector", label_selector)] if label_selector else []
        items: list[dict[str, Any]] = []
        while True:
            doc = await self.request(Call("list", res, ns), "GET", res.path(ns), query)
            items.extend(doc.get("items") or [])
            token = (doc.get("metadata") or {}).get("continue")
            if not token:
                return items
            query = [q for q in query if q[0] != "continue"] + [("continue", token)]

    async def create(self, res: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
        ns = _namespace_of(res, body)
        name = (body.get("metadata") or {}).get("name")
        call = Call("create", res, ns, name)
        return dict(await self.request(call, "POST", res.path(ns), body=dict(body)))

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Any,
        strategy: str = "merge",
        namespace: str | None = None,
    ) -> dict[str, Any]:
        ns = namespace if res.namespaced else None
        return dict(await self.request(Call("patch", res, ns, name), "PATCH",
                                       res.path(ns, name), body=patch,
                                       content_type=PATCH_TYPES[strategy]))  # fmt: skip

    async def apply(self, res: Resource, body: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as field manager `eventsvc`, taking over conflicting fields."""
        ns = _namespace_of(res, body)
        name = body["metadata"]["name"]
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        doc = json.dumps(dict(body))  # JSON is YAML: sent as application/apply-patch+yaml
        call = Call("patch", res, ns, name)
        path = res.path(ns, name)
        return dict(
            await self.request(call, "PATCH", path, query, doc, content_type=PATCH_TYPES["apply"])
        )

    async def update(
        self,
        res: Resource,
        name: str,
        change: Any,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """Read, change (a function editing the object in place), PUT with its resourceVersion;
        on 409 read again and retry, so a concurrent writer is never overwritten blindly."""
        ns = namespace if res.namespaced else None
        for attempt in range(_CONFLICT_RETRIES):
            obj = await self.get(res, name, ns)
            if change(obj) is False:
                return obj  # nothing to change
            try:
                return dict(await self.request(Call("update", res, ns, name), "PUT",
                                               res.path(ns, name), body=obj))  # fmt: skip
            except ConflictError:
                if attempt == _CONFLICT_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        propagation: str | None = "Background",
    ) -> bool:
        """Delete; False when it was already gone."""
        ns = namespace if res.namespaced else None
        query = [("propagationPolicy", propagation)] if propagation else []
        try:
            await self.request(Call("delete", res, ns, name), "DELETE", res.path(ns, name), query)
        except NotFoundError:
            return False
        return True


def _namespace_of(res: Resource, body: Mapping[str, Any]) -> str | None:
    if not res.namespaced:
        return None
    return str((body.get("metadata") or {}).get("namespace") or "default")


def ownership_labels(sensor: str, trigger: str, event_id: str) -> dict[str, str]:
    return {
        LABEL_SENSOR: label_value(sensor),
        LABEL_TRIGGER: label_value(trigger),
        LABEL_EVENT_ID: label_value(event_id),
    }


def with_labels(
    obj: Mapping[str, Any],
    labels: Mapping[str, str],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A copy of `obj` with labels (and annotations) added to its metadata."""
    out = json.loads(json.dumps(obj))
    meta = out.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels}
    if annotations:
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    return dict(out)


def event_id(ctx_event_ids: list[str]) -> str:
    return ",".join(sorted(set(ctx_event_ids)))


async def wait_for(
    cluster: Cluster,
    res: Resource,
    name: str,
    namespace: str | None,
    done: Callable[[dict[str, Any]], bool],
    within: float,
    interval: float,
) -> tuple[bool, dict[str, Any] | None]:
    """Poll the object until `done(obj)` holds or `within` seconds pass: (held, last seen)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: dict[str, Any] | None = None
    while True:
        last = await cluster.get_or_none(res, name, namespace)
        if last is not None and done(last):
            return True, last
        if loop.time() >= deadline:
            return False, last
        await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))


# ---------------------------------------------------------------- watches

WATCH_TIMEOUT = 300  # seconds the API server keeps one watch open (it then ends cleanly)


class Gone(ExternalError):
    """410: the resourceVersion to resume from is too old; relist."""


class WatchStream:
    """One open watch request, read line by line in a thread; `close` unblocks it."""

    def __init__(self, cluster: Cluster, call: Call, path: str,
                 query: list[tuple[str, str]]) -> None:  # fmt: skip
        self._cluster, self._call, self._path, self._query = cluster, call, path, query
        self._response: Any = None
        self._closed = threading.Event()

    def _open(self) -> Any:
        api = self._cluster.api
        request = api.param_serialize("GET", self._path, query_params=self._query,
                                      header_params={"Accept": "application/json"},
                                      auth_settings=["BearerToken"])  # fmt: skip
        response = api.call_api(*request, _request_timeout=(5.0, WATCH_TIMEOUT + 30.0))
        if not 200 <= response.status <= 299:
            text = response.read().decode("utf-8", errors="replace")  # type: ignore[no-untyped-call]
            what = f"{self._call.describe()}: {response.status} {text[:300]}"
            if response.status == 410:
                raise Gone(what)
            if response.status in (401, 403):
                raise ExternalError(
                    f"{what}; grant the rule {rbac_rule(self._call)} to eventsvc's "
                    "service account (or check its credentials)"
                )
            raise RetryableExternalError(what)
        return response

    def _pump(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        buffer = b""
        try:
            for chunk in self._response.response.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in filter(None, (x.strip() for x in lines)):
                    loop.call_soon_threadsafe(queue.put_nowait, json.loads(line))
        except Exception as e:
            if not self._closed.is_set():
                loop.call_soon_threadsafe(queue.put_nowait, e)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        try:
            self._response = await asyncio.to_thread(self._open)
        except (Gone, ExternalError):
            raise
        except Exception as e:
            raise map_error(e, self._call) from e
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        pump = asyncio.create_task(asyncio.to_thread(self._pump, loop, queue), name="watch-read")
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise map_error(item, self._call) from item
                yield item
        finally:
            self.close()
            with contextlib.suppress(Exception):
                await pump

    def close(self) -> None:
        self._closed.set()
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.response.shutdown()
            with contextlib.suppress(Exception):
                self._response.response.release_conn()
