"""Converted Argo Events manifests running in eventsvc: events sent the way the converter
says (POST /events with Argo's context; a GitHub webhook) fire the converted sensors, and
events the Argo filters reject do not."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from eventsvc.bus.embedded import EmbeddedNats
from eventsvc.convert import argo
from tests.conftest import post_github
from tests.receiver import Receiver

MANIFESTS = """\
apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata: {name: webhook}
spec:
  webhook:
    example: {port: "12000", endpoint: /example, method: POST}
---
apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata: {name: github}
spec:
  github:
    shop:
      repositories: [{owner: acme, names: [shop]}]
      events: [push]
      webhookSecret: {name: github-access, key: secret}
---
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: hello}
spec:
  dependencies:
    - name: msg
      eventSourceName: webhook
      eventName: example
      filters:
        data:
          - {path: body.message, type: string, value: ["^hello"]}
  triggers:
    - template:
        name: forward
        conditions: msg
        http: {url: RECEIVER, method: POST}
---
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata: {name: main-push}
spec:
  dependencies:
    - name: push
      eventSourceName: github
      eventName: shop
      filters:
        data:
          - {path: header.X-GitHub-Event, type: string, value: [push]}
          - {path: body.ref, type: string, value: ["^refs/heads/main$"]}
  triggers:
    - template:
        name: forward
        conditions: push
        http: {url: RECEIVER, method: POST}
"""


def convert_into(tmp_path: Path, url: str) -> Path:
    source = tmp_path / "argo.yaml"
    source.write_text(MANIFESTS.replace("RECEIVER", url))
    result = argo.convert_paths([source])
    assert result.findings == [] and result.problems == []
    sensors = tmp_path / "sensors"
    sensors.mkdir(exist_ok=True)
    for name, text in result.files.items():
        (sensors / name).write_text(text)
    return sensors


async def test_converted_sensors_fire_on_events_sent_as_instructed(
    tmp_path: Path, nats_server: EmbeddedNats, receiver: Receiver,
    start_service: Callable[..., Awaitable[Any]],
) -> None:  # fmt: skip
    convert_into(tmp_path, receiver.url)
    svc = await start_service(nats_url=nats_server.url)
    async with aiohttp.ClientSession() as http:
        for i, message in enumerate(["goodbye", "hello there"]):
            headers = {"ce-specversion": "1.0", "ce-id": f"w-{i}", "ce-type": "webhook",
                       "ce-source": "webhook", "ce-subject": "example",
                       "Content-Type": "application/json"}  # fmt: skip
            async with http.post(svc.url + "/events", data=json.dumps({"message": message}),
                                 headers=headers) as resp:  # fmt: skip
                assert resp.status == 202, await resp.text()
        repo = {"full_name": "acme/shop", "html_url": "https://github.com/acme/shop"}
        for ref in ("refs/heads/dev", "refs/heads/main"):
            resp = await post_github(http, svc.url, "push", {"ref": ref, "repository": repo,
                                                             "after": "abc"})  # fmt: skip
            assert resp.status == 202
        other = {"full_name": "acme/other", "html_url": "https://github.com/acme/other"}
        resp = await post_github(http, svc.url, "push", {"ref": "refs/heads/main",
                                                         "repository": other})  # fmt: skip
        assert resp.status == 202
    got = await receiver.wait_for(2, timeout=60)
    by_type = {e["type"]: e for e in got}
    assert by_type["webhook"]["data"] == {"message": "hello there"}
    assert by_type["com.github.push"]["data"]["ref"] == "refs/heads/main"
    assert by_type["com.github.push"]["source"] == "https://github.com/acme/shop"
    await svc.stop()
    assert len(receiver.received) == 2  # goodbye, dev and acme/other never fired
