"""Webhook → Argo CD Application created, end to end against the local API server.

A running service (embedded NATS, GitHub gateway, sensor engine, `environment`
trigger) receives 200 signed `pull_request` `opened` webhooks, one at a time, each
for a new PR; the clock stops when the fake Kubernetes API server stores the PR's
Application. Prints p50/p99 latency and the share of it spent outside the
Kubernetes API calls (client-side: thread hand-off + HTTP + server handling).

Run: `python -m bench.k8s` (from the repository root; uses tests/triggers/kubeapi.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web

from eventsvc import kube, logs
from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.config import load_config
from eventsvc.runtime import Service
from tests.conftest import github_headers, pr_payload
from tests.triggers.kubeapi import KubeApi, Recorded, build_app, write_kubeconfig

EVENTS = 200
WARMUP = 5
SENSOR = """\
apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: previews}
spec:
  dependencies:
    - name: pr
      eventSubject: events.github.pull_request
      filters:
        context:
          type: {prefix: com.github.pull_request.}
  triggers:
    - template:
        name: env
        conditions: pr
        environment:
          repoURL: https://github.com/acme/deploy.git
          path: apps/shop/overlays/preview
          image: ghcr.io/acme/shop
          url: https://pr-{{ number }}.preview.example.com
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    logs.configure("console", "warning")
    tmp = Path(tempfile.mkdtemp(prefix="bench-k8s-"))
    api = KubeApi()
    runner = web.AppRunner(build_app(api), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    api.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    for ns in ("default", "argocd"):
        api.seed({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    os.environ["EVENTSVC_KUBECONFIG"] = str(write_kubeconfig(tmp / "kubeconfig", api.url))
    (tmp / "sensors").mkdir()
    (tmp / "sensors" / "previews.yaml").write_text(SENSOR)
    nats = EmbeddedNats(tmp / "nats", port=0)
    await nats.start()
    config = load_config(environ={}, http_host="127.0.0.1", http_port=0, nats_url=nats.url,
                         data_dir=str(tmp / "data"), sensors_dir=str(tmp / "sensors"),
                         github_webhook_secrets=("bench-secret",), log_level="warning")  # fmt: skip
    service = Service(config)
    stop = asyncio.Event()
    task = asyncio.create_task(service.serve(stop), name="service")
    await service.started.wait()
    url = f"http://127.0.0.1:{service.state.http_port}/webhooks/github"

    stored: dict[int, asyncio.Event] = {}

    def on_request(r: Recorded, status: int) -> None:
        if "/applications/pr-" in r.path and status < 300:
            number = int(r.path.rsplit("/", 1)[1].split("-")[1])
            if number in stored:
                stored[number].set()

    api.listeners.append(on_request)
    latencies: list[float] = []
    api_times: list[float] = []
    done: list[float] = []  # until the trigger's last API call returned (0.5 ms polling)
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(1, EVENTS + WARMUP + 1):
                body = json.dumps(pr_payload("opened", number=i)).encode()
                headers = github_headers("pull_request", body, delivery=str(uuid.uuid4()))
                headers["X-Hub-Signature-256"] = _sign(body)
                stored[i] = asyncio.Event()
                cluster = _cluster(service)
                api_before = cluster.api_seconds if cluster else 0.0
                calls_before = cluster.api_calls if cluster else 0
                started = time.perf_counter()
                async with http.post(url, data=body, headers=headers) as resp:
                    assert resp.status == 202, await resp.text()
                await asyncio.wait_for(stored[i].wait(), 30)
                elapsed = time.perf_counter() - started
                cluster = _cluster(service)
                assert cluster is not None
                # the Application apply may still be returning to the client: let it finish
                # (each event makes exactly two calls once discovery is cached)
                while cluster.api_calls < calls_before + 2:  # noqa: ASYNC110 (a counter, no event)
                    await asyncio.sleep(0.0005)
                if i > WARMUP:
                    latencies.append(elapsed)
                    done.append(time.perf_counter() - started)
                    api_times.append(cluster.api_seconds - api_before)
    finally:
        stop.set()
        await task
        await nats.stop()
        await runner.cleanup()
    total, in_api = sum(done), sum(api_times)
    print(f"webhook -> Application stored, {len(latencies)} PR events, one at a time "
          f"({WARMUP} warm-up events not counted)")  # fmt: skip
    print(f"  p50 {pct(latencies, 0.50) * 1000:7.2f} ms")
    print(f"  p99 {pct(latencies, 0.99) * 1000:7.2f} ms")
    print(f"  mean {statistics.fmean(latencies) * 1000:6.2f} ms, max {max(latencies) * 1000:.2f} ms")
    print(f"  Kubernetes API calls: {statistics.fmean(api_times) * 1000:.2f} ms per event "
          f"(2 server-side applies: Namespace, Application)")  # fmt: skip
    print(f"  webhook -> trigger's last API call returned: p50 {pct(done, 0.5) * 1000:.2f} ms")
    print(f"  share of that outside the API calls: {max(0.0, 1 - in_api / total) * 100:.1f} %"
          " (gateway, JetStream, consumer fetch, engine, building the objects)")


def _sign(body: bytes) -> str:
    import hashlib
    import hmac

    return "sha256=" + hmac.new(b"bench-secret", body, hashlib.sha256).hexdigest()


def _cluster(service: Service) -> kube.Cluster | None:
    services = service._services
    return services._cluster if services is not None else None


if __name__ == "__main__":
    asyncio.run(main())
