"""Watch gateway: changes announced per second with 1,000 watched objects, and its memory.

A child process runs the local Kubernetes API test server (tests/triggers/kubeapi.py)
holding 1,000 Argo CD Applications and, on request, changes their health one after the
other (CHANGES changes, round robin, each a real change of a watched field, interleaved
with as many status heartbeats that must stay silent). This process runs the watch
gateway against it, with an embedded nats-server for JetStream and the KV; the clock
runs from the request until the gateway has announced (JetStream-acknowledged) every
change. Also timed: the first start, which lists the 1,000 objects and records them
silently. Memory is this process's resident set (the gateway, the kubernetes client and
the NATS client; the API server and nats-server are other processes).

Run: `python -m bench.watch` (from the repository root).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from eventsvc import bus as bus_mod
from eventsvc import kube, logs, watches, yamldoc
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.config import load_config
from eventsvc.gateways.watch import WatchGateway
from tests.triggers.kubeapi import KubeApi, build_app, write_kubeconfig

OBJECTS = 1_000
CHANGES = 5_000
AV = "argoproj.io/v1alpha1"
WATCH = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Watch
metadata: {name: bench}
spec:
  group: argoproj.io
  version: v1alpha1
  resource: applications
  namespace: argocd
  labelSelector: eventsvc.dev/environment=true
  fields: [status.health.status, status.sync.status, status.sync.revision]
"""


def application(i: int) -> dict[str, Any]:
    return {"apiVersion": AV, "kind": "Application",
            "metadata": {"name": f"pr-{i}-acme-shop", "namespace": "argocd",
                         "labels": {"eventsvc.dev/environment": "true",
                                    "eventsvc.dev/pull-request": str(i)}},
            "spec": {"destination": {"namespace": f"pr-{i}-acme-shop"}},
            "status": {"health": {"status": "Progressing"},
                       "sync": {"status": "Synced", "revision": "f" * 40},
                       "reconciledAt": "t0"}}  # fmt: skip


# ---------------------------------------------------------------- the API server (child)


async def serve_api() -> None:
    api = KubeApi()
    runner = web.AppRunner(build_app(api), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "argocd"}})
    for i in range(OBJECTS):
        api.seed(application(i))
    api.requests = []
    print(api.url, flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).strip():
        if line != b"go":
            continue
        states = ("Healthy", "Degraded")
        for n in range(CHANGES):
            name = f"pr-{n % OBJECTS}-acme-shop"
            health = {"status": states[(n // OBJECTS) % 2]}
            api.modify(AV, "applications", name, "argocd", {"status": {"health": health}})
            api.modify(AV, "applications", name, "argocd", {"status": {"reconciledAt": str(n)}})
            if n % 50 == 0:
                await asyncio.sleep(0)  # let the watch stream write
        print("done", flush=True)
    await runner.cleanup()


# ---------------------------------------------------------------- the gateway (this process)


async def _finished(stdout: asyncio.StreamReader) -> float:
    """When the API server says it has made every change."""
    await stdout.readline()
    return time.perf_counter()


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set of this process, MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


async def bench() -> None:
    logs.configure(level="warning")
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.watch", "--api-server",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    url = (await child.stdout.readline()).decode().strip()
    with tempfile.TemporaryDirectory() as tmp:
        nats = EmbeddedNats(Path(tmp) / "nats", port=0)
        nats_url = await nats.start()
        config = load_config(environ={}, data_dir=tmp, nats_url=nats_url)
        config = dataclasses.replace(config, sections={"kubernetes": {
            "kubeconfig": str(write_kubeconfig(Path(tmp) / "kubeconfig", url))}})  # fmt: skip
        bus = await bus_mod.connect(nats_url, config)
        await bus.ensure_streams(bus_mod.default_streams(config))
        docs, _ = yamldoc.parse_documents(WATCH, "bench.yaml")
        watch, problems = watches.parse_watch(docs[0])
        assert watch is not None, problems
        before = rss_mib()[0]
        gateway = WatchGateway(bus, lambda: kube.Cluster.connect(config))
        started = time.perf_counter()
        await gateway.start([watch])
        while not gateway.ready():  # noqa: ASYNC110 - the gateway's own state
            await asyncio.sleep(0.01)
        listed = time.perf_counter() - started
        state = gateway.states["bench"]
        try:
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            started = time.perf_counter()
            produced = asyncio.create_task(_finished(child.stdout), name="bench-api-done")
            async with asyncio.timeout(300):
                while state.published < CHANGES:  # noqa: ASYNC110
                    await asyncio.sleep(0.005)
            elapsed = time.perf_counter() - started
            made = await produced - started
            await asyncio.sleep(0.5)
            extra = state.published - CHANGES
        finally:
            await gateway.stop()
            child.stdin.write(b"\n")
            await child.stdin.drain()
            await child.wait()
            await bus.close()
            await nats.stop()
    now, peak = rss_mib()
    print(f"watch gateway, {OBJECTS} watched objects: first start lists and records them "
          f"silently in {listed:.2f} s")  # fmt: skip
    print(f"  {CHANGES} changes (+{CHANGES} silent heartbeats) announced in {elapsed:.2f} s: "
          f"{CHANGES / elapsed:,.0f} changes/s; {extra} announced beyond them (the API "
          f"server made them in {made:.2f} s); reconnects {state.reconnects}, "
          f"relists {state.relists - 1}")  # fmt: skip
    print(f"  memory (RSS of this process): {now:.0f} MiB now, {peak:.0f} MiB peak "
          f"({before:.0f} MiB before the gateway started)")  # fmt: skip


def main() -> None:
    if "--api-server" in sys.argv:
        asyncio.run(serve_api())
    else:
        asyncio.run(bench())


if __name__ == "__main__":
    main()
