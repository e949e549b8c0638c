"""The watch gateway: Kubernetes objects added, changed (in a Watch's `fields`) or deleted
become CloudEvents on `events.k8s.<watch>`.

Per Watch, one task lists and watches the resource. What was last announced for each
object (its watched fields and their fingerprint) and the last resourceVersion seen
live in the JetStream KV bucket `eventsvc_watch`:

- `<watch>.o.<uid>`: `{ns, name, rv, fields, fp}`, written with compare-and-set after
  announcing. Two replicas watching the same resource announce a change under the same
  `Nats-Msg-Id` `<watch>:<uid>:<rv>` (`<watch>:<uid>:deleted` for deletions), so
  JetStream stores it once; the compare-and-set keeps the recorded state consistent.
- `<watch>.rv`: where to resume. A restart watches from there: changes made while
  eventsvc was down arrive as watch events and are announced once, old states are
  not announced again (their fingerprints are stored). When the API server answers
  410 Gone (the history was compacted) the gateway relists and announces only the
  differences from the stored fingerprints, including deletions.

The first start of a Watch (no stored resourceVersion) records the existing objects
silently: only what happens afterwards is announced. A status heartbeat (a new
resourceVersion, same watched fields) is silent. Connection failures are retried
with a doubling backoff; each watch's state is exposed for readiness.

An event is published before its state is recorded in KV: a process that dies between
the two announces the change again after its restart, with the same `Nats-Msg-Id`, which
JetStream drops within its duplicate window (`streams.duplicateWindow`, 24 h).

Reload: the gateway polls the sensors directory (file names, mtimes and sizes) and
replaces its watches when Watch files change; a change with problems is logged and the
running set kept. An added Watch starts (silently recording what exists, or resuming
from its KV state when it ran before); a removed one stops (its KV state is kept, so
adding it back resumes). A changed Watch restarts: when its resource or namespace
changed its KV state is forgotten and it starts afresh; otherwise it relists and
announces what entered or left its selection, while objects recorded under another
list of `fields` are recorded again silently. The cluster is connected to when the
first Watch starts, so a service without Watch files needs no cluster.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventsvc import dirwatch, events, kube, logs, metrics, subjects, watches
from eventsvc.bus import Bus, KeyValueStore
from eventsvc.dirwatch import DirectoryWatcher
from eventsvc.errors import (
    BusError,
    ConfigError,
    EventsvcError,
)
from eventsvc.watches import Change, Watch

log = logs.get("eventsvc.gateways.watch")
GATEWAY = "watch"
KV_BUCKET = "eventsvc_watch"
EVENT_TYPE_PREFIX = "dev.eventsvc.k8s."
PAGE = 500  # objects per list page
RV_STORE_EVERY = 1.0  # seconds between writes of the resume point
_PUBLISHED = metrics.EVENTS_PUBLISHED.labels(GATEWAY, "false")
_DUPLICATE = metrics.EVENTS_PUBLISHED.labels(GATEWAY, "true")


@dataclass(slots=True)
class WatchState:
    """What readiness and tests see of one watch."""

    watching: bool = False
    resource_version: str | None = None
    reconnects: int = 0
    relists: int = 0
    published: int = 0
    last_error: str | None = None


# ---------------------------------------------------------------- events


def event_message(
    watch: Watch, change: Change, obj: dict[str, Any], diff: dict[str, Any], source: str
) -> tuple[str, dict[str, str], bytes]:
    """(subject, binary-mode headers, body) announcing `change` of `obj`."""
    meta = obj.get("metadata") or {}
    uid = str(meta.get("uid", ""))
    rv = "deleted" if change is Change.DELETED else str(meta.get("resourceVersion", ""))
    ident = watches.event_id(watch.name, uid, rv)
    ns, name = meta.get("namespace"), str(meta.get("name", ""))
    headers = events.binary_headers({
        "specversion": "1.0",
        "id": ident,
        "type": EVENT_TYPE_PREFIX + change.value,
        "source": source,
        "subject": f"{ns}/{name}" if ns else name,
        "time": events.format_now(),
        "datacontenttype": "application/json",
    })  # fmt: skip
    headers["Nats-Msg-Id"] = ident
    body = {"object": _slim(obj), "changes": diff}
    return subjects.k8s(watch.name), headers, json.dumps(body, separators=(",", ":")).encode()


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without `metadata.managedFields` (bulky, of no use to a sensor)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def _encode(obj: dict[str, Any], values: dict[str, Any]) -> bytes:
    meta = obj.get("metadata") or {}
    return json.dumps({"ns": meta.get("namespace"), "name": meta.get("name"),
                       "rv": meta.get("resourceVersion"), "fields": values,
                       "fp": watches.fingerprint(values)}).encode()  # fmt: skip


# ---------------------------------------------------------------- one watch


class _Runner:
    """Lists and watches one resource; decides what to announce against the KV."""

    def __init__(self, watch: Watch, cluster: kube.Cluster, bus: Bus, kv: KeyValueStore,
                 state: WatchState, max_backoff: float, relist: bool = False) -> None:  # fmt: skip
        self.watch, self.cluster, self.bus, self.kv, self.state = watch, cluster, bus, kv, state
        self.relist_first = relist  # the Watch changed: compare everything with the KV
        self.res = kube.Resource(watch.api_version, "", watch.resource, namespaced=True)
        self.source = str(cluster.api.configuration.host)
        self.max_backoff = max_backoff
        self.seen: dict[str, str] = {}  # uid -> fingerprint last handled by this replica
        self._rv_stored_at = 0.0
        self._rv_stored: str | None = None

    def _key(self, uid: str) -> str:
        return f"{self.watch.name}.o.{uid}"

    async def run(self) -> None:
        attempt = 0
        rv: str | None = None
        resumed: bool | None = None  # None: the KV not read yet
        while True:
            try:
                if resumed is None:
                    stored = await self.kv.get(f"{self.watch.name}.rv")
                    rv, resumed = (stored[0].decode() if stored else None), stored is not None
                    if self.relist_first:
                        rv = None
                if rv is None:  # first start: record silently; later: announce differences
                    rv = await self.relist(announce=bool(resumed))
                    resumed = True
                rv = await self.follow(rv)  # returns when the server ends the watch
                attempt = 0
            except kube.Gone:
                log.info("watch history expired; relisting", watch=self.watch.name)
                rv = None
            except (EventsvcError, OSError) as e:
                attempt += 1
                self.state.last_error = str(e)
                self.state.reconnects += 1
                delay = watches.backoff(attempt, cap=self.max_backoff)
                log.warning("watch interrupted; reconnecting", watch=self.watch.name,
                            error=str(e), retry_in=delay)  # fmt: skip
                await asyncio.sleep(delay * random.uniform(0.8, 1.0))
            finally:
                self.state.watching = False

    def _query(self) -> list[tuple[str, str]]:
        sel = self.watch.label_selector
        return [("labelSelector", sel)] if sel else []

    async def relist(self, announce: bool) -> str:
        """List everything, announce what differs from the KV; the list's resourceVersion."""
        self.state.relists += 1
        ns = self.watch.namespace
        query = [*self._query(), ("limit", str(PAGE))]
        listed: set[str] = set()
        while True:
            doc = await self.cluster.request(kube.Call("list", self.res, ns), "GET",
                                             self.res.path(ns), query)  # fmt: skip
            for obj in doc.get("items") or []:
                listed.add(str(obj["metadata"]["uid"]))
                await self.observe(obj, announce)
            meta = doc.get("metadata") or {}
            if not meta.get("continue"):
                rv = str(meta.get("resourceVersion", ""))
                break
            query = [q for q in query if q[0] != "continue"] + [("continue", meta["continue"])]
        prefix = f"{self.watch.name}.o."
        for key in await self.kv.keys():
            if key.startswith(prefix) and key[len(prefix) :] not in listed:
                await self.gone(key[len(prefix) :], None, announce)
        await self.store_rv(rv, force=True)
        return rv

    async def follow(self, rv: str | None) -> str | None:
        """Watch from `rv` until the server ends the stream; the last resourceVersion."""
        query = [*self._query(), ("watch", "1"), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", str(kube.WATCH_TIMEOUT))]  # fmt: skip
        if rv:
            query.append(("resourceVersion", rv))
        ns = self.watch.namespace
        call = kube.Call("watch", self.res, ns)
        stream = kube.WatchStream(self.cluster, call, self.res.path(ns), query)
        self.state.watching = True
        async for event in stream.events():
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise kube.Gone(str(obj.get("message", "410 Gone")))
                raise EventsvcError(f"watch error: {obj.get('message', obj)}")
            if kind in ("ADDED", "MODIFIED"):
                await self.observe(obj, announce=True)
            elif kind == "DELETED":
                await self.gone(str(obj["metadata"]["uid"]), obj, announce=True)
            rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv or "")
            await self.store_rv(rv)
        await self.store_rv(rv or "", force=True)
        return rv

    async def observe(self, obj: dict[str, Any], announce: bool) -> None:
        """An object as it is now: announce it when its watched fields differ from the KV."""
        meta = obj["metadata"]
        uid, rv = str(meta["uid"]), str(meta.get("resourceVersion", ""))
        values = watches.field_values(obj, self.watch.fields)
        fp = watches.fingerprint(values)
        if self.seen.get(uid) == fp:
            return  # a heartbeat: nothing watched changed since this replica last looked
        key = self._key(uid)
        for _ in range(10):
            entry = await self.kv.get(key)
            old = json.loads(entry[0]) if entry else None
            if old is not None and (old.get("fp") == fp or not watches.newer(rv, old.get("rv"))):
                break  # already announced, or a state older than the one stored
            before = old.get("fields") if old else None
            change = watches.classify(before, values)
            if isinstance(before, dict) and set(before) != set(values):
                change = None  # recorded under another list of fields: a new baseline
            if announce and change is not None:
                # announced before it is recorded: a crash in between announces it again
                # after the restart, under the same Nats-Msg-Id, which JetStream drops
                await self.publish(change, obj, watches.changes(before or {}, values))
            won = (await self.kv.create(key, _encode(obj, values)) if entry is None
                   else await self.kv.update(key, _encode(obj, values), entry[1]))  # fmt: skip
            if not won:
                continue  # another replica wrote first: look again (its event had our id)
            break
        self.seen[uid] = fp

    async def gone(self, uid: str, obj: dict[str, Any] | None, announce: bool) -> None:
        """The object is deleted: announce it once, whoever deletes its KV entry first."""
        self.seen.pop(uid, None)
        key = self._key(uid)
        entry = await self.kv.get(key)
        if entry is None:
            return
        old = json.loads(entry[0])
        if obj is None:  # found missing on a relist: what we knew of it
            obj = {"apiVersion": self.watch.api_version, "metadata": {
                "name": old.get("name"), "namespace": old.get("ns"), "uid": uid}}  # fmt: skip
            if not old.get("ns"):
                obj["metadata"].pop("namespace")
        if announce:  # first, then forgotten: a crash in between announces it again (same id)
            await self.publish(Change.DELETED, obj, watches.changes(old.get("fields"), None))
        await self.kv.delete(key, last=entry[1])

    async def publish(self, change: Change, obj: dict[str, Any], diff: dict[str, Any]) -> None:
        subject, headers, body = event_message(self.watch, change, obj, diff, self.source)
        attempt = 0
        while True:
            try:
                ack = await self.bus.publish(subject, body, headers)
            except BusError as e:
                attempt += 1
                log.warning("watch event not published; retrying", watch=self.watch.name,
                            id=headers["Nats-Msg-Id"], error=str(e))  # fmt: skip
                await asyncio.sleep(watches.backoff(attempt, cap=self.max_backoff))
                continue
            (_DUPLICATE if ack.duplicate else _PUBLISHED).inc()
            self.state.published += not ack.duplicate
            log.info("watch event", watch=self.watch.name, change=change.value,
                     subject=headers.get("ce-subject"), fields=sorted(diff))  # fmt: skip
            return

    async def store_rv(self, rv: str, force: bool = False) -> None:
        self.state.resource_version = rv or self.state.resource_version
        now = asyncio.get_running_loop().time()
        if not rv or rv == self._rv_stored or (not force and now - self._rv_stored_at
                                                < RV_STORE_EVERY):  # fmt: skip
            return
        await self.kv.put(f"{self.watch.name}.rv", rv.encode())
        self._rv_stored, self._rv_stored_at = rv, now


# ---------------------------------------------------------------- gateway


class WatchGateway:
    def __init__(
        self,
        bus: Bus,
        connect: Callable[[], Awaitable[kube.Cluster]],
        *,
        kv_bucket: str = KV_BUCKET,
        max_backoff: float = 30.0,
        sensors_dir: str | Path | None = None,
        poll_interval: float = 2.0,
        required: bool = True,
        watcher: DirectoryWatcher | None = None,
    ) -> None:
        """`required`: no Kubernetes access is a start-up error (the watch component was
        asked for by name). Otherwise (a plain `eventsvc run` on a laptop, whose example
        sensors include Watch files) the Watches stay idle with one warning saying how to
        give the service access, and the rest of the service runs."""
        self.bus = bus
        self.required = required
        self.idle_reason: str | None = None
        self._connect = connect
        self._bucket = kv_bucket
        self._max_backoff = max_backoff
        self._sensors_dir = Path(sensors_dir) if sensors_dir else None
        self._poll_interval = poll_interval
        self._watcher = watcher
        self._own_watcher: DirectoryWatcher | None = None
        self._kv: KeyValueStore | None = None
        self._cluster: kube.Cluster | None = None
        self._watches: dict[str, Watch] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._reloading = False  # the initial set is running: later ones are reloads
        self.states: dict[str, WatchState] = {}

    @property
    def watches(self) -> list[Watch]:
        return list(self._watches.values())

    async def start(self, initial: Sequence[Watch]) -> None:
        self._kv = await self.bus.kv(self._bucket)
        await self.replace_watches(initial)
        self._reloading = True
        if self._sensors_dir is not None:
            self._own_watcher = dirwatch.follow(
                self._watcher, self._sensors_dir, self._poll_interval, "watches",
                self._files_changed)
        log.info("watch gateway started", watches=sorted(self._tasks))

    async def replace_watches(self, new: Sequence[Watch]) -> None:
        """Run exactly `new` from now on: added ones start, removed ones stop, changed ones
        restart (see the module's notes on what a changed Watch announces)."""
        wanted = {w.name: w for w in new}
        for name in [n for n in self._watches if n not in wanted]:
            await self._stop_one(name)
            log.info("watch removed", watch=name)
        for name, watch in wanted.items():
            running = self._watches.get(name)
            if running is not None and running.same_as(watch):
                continue
            relist = running is not None
            if running is not None:
                await self._stop_one(name)
                if _identity(running) != _identity(watch):
                    await self._forget(name)
                    relist = False
                log.info("watch changed", watch=name)
            elif self._reloading:  # not the initial set
                log.info("watch added", watch=name)
            await self._start_one(watch, relist)

    async def _start_one(self, watch: Watch, relist: bool) -> None:
        assert self._kv is not None
        if self._cluster is None:  # the first Watch: connect now
            try:
                self._cluster = await self._connect()
            except ConfigError as e:
                if self.required:
                    raise
                if self.idle_reason is None:
                    log.warning("watches idle: no Kubernetes access", error=str(e),
                                watches=sorted({watch.name, *self._watches}))  # fmt: skip
                self.idle_reason = str(e)
                return
            self.idle_reason = None
        state = self.states[watch.name] = WatchState()
        runner = _Runner(watch, self._cluster, self.bus, self._kv, state, self._max_backoff,
                         relist)  # fmt: skip
        self._watches[watch.name] = watch
        self._tasks[watch.name] = asyncio.create_task(runner.run(), name=f"watch-{watch.name}")

    async def _stop_one(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        self._watches.pop(name, None)
        self.states.pop(name, None)
        if task is not None:
            task.cancel()
            (result,) = await asyncio.gather(task, return_exceptions=True)
            if isinstance(result, Exception):
                log.error("watch task failed", watch=name, error=f"{type(result).__name__}: "
                          f"{result}")  # fmt: skip

    async def _forget(self, name: str) -> None:
        """Drop a Watch's KV state: it watches something else now."""
        assert self._kv is not None
        prefix = f"{name}."
        for key in await self._kv.keys():
            if key.startswith(prefix):
                await self._kv.delete(key)

    async def stop(self) -> None:
        if self._own_watcher is not None:
            await self._own_watcher.stop()
            self._own_watcher = None
        for name in list(self._tasks):
            await self._stop_one(name)
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        log.info("watch gateway stopped")

    def failed(self) -> BaseException | None:
        for task in self._tasks.values():
            if task.done() and not task.cancelled() and task.exception() is not None:
                return task.exception()
        return None

    def ready(self) -> bool:
        """Every watch has an open stream (reported by /readyz)."""
        return all(s.watching for s in self.states.values())

    # ------------------------------------------------------------ reload

    async def _files_changed(self) -> bool:
        """The directory watcher's callback: settled unless the Watches could not be
        (re)started (no cluster yet, ...), which is tried again at the next poll. Invalid
        files are logged and wait for their next change."""
        found = await self._read()
        return found is None or await self._replace(found)

    async def reload(self) -> bool:
        """Re-read Watch files from the sensors directory; False (and logs) when invalid."""
        found = await self._read()
        return found is not None and await self._replace(found)

    async def _read(self) -> list[Watch] | None:
        assert self._sensors_dir is not None
        found, problems = await asyncio.to_thread(watches.load_watches, [self._sensors_dir])
        for p in problems:
            log.error("watch file invalid; keeping the running watches", problem=str(p))
        return None if problems else found

    async def _replace(self, found: list[Watch]) -> bool:
        try:
            await self.replace_watches(found)
        except (EventsvcError, OSError) as e:  # e.g. no cluster configured for a first Watch
            log.error("watches not reloaded; trying again at the next poll", error=str(e))
            return False
        return True


def _identity(watch: Watch) -> tuple[str, str, str, str | None]:
    return (watch.group, watch.version, watch.resource, watch.namespace)
