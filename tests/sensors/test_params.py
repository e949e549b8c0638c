"""Parameters and `{{ expr }}` rendering: typed leaves, no structure from data, clear errors."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web

from eventsvc import events, yamldoc
from eventsvc.errors import PermanentTriggerError
from eventsvc.events import CloudEvent
from eventsvc.sensors import params
from eventsvc.sensors.model import SensorSpec, TriggerSpec, parse_sensor
from tests.conftest import pr_payload, write_sensor


def pr_event(**data: Any) -> CloudEvent:
    payload = pr_payload(**data)
    return events.make_event({"specversion": "1.0", "id": "delivery-1", "subject": "7",
                              "type": "com.github.pull_request.opened",
                              "source": "https://github.com/acme/shop"}, payload)  # fmt: skip


def build_event() -> CloudEvent:
    return events.make_event({"specversion": "1.0", "id": "build-9", "source": "https://ci",
                              "type": "com.example.image.built"},
                             {"image": "shop", "tag": "abc123", "ok": True})  # fmt: skip


def trigger(section: str, parameters: str = "", deps: str = "[{name: pr}]") -> TriggerSpec:
    text = f"""apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: s}}
spec:
  dependencies: {deps}
  triggers:
    - template:
        name: t
        http: {section}
      parameters: {parameters or "[]"}
"""
    docs, _ = yamldoc.parse_documents(text, "s.yaml")
    spec, problems = parse_sensor(docs[0])
    assert isinstance(spec, SensorSpec), problems
    return spec.triggers[0]


def test_whole_leaf_keeps_type_and_mixed_leaf_is_text() -> None:
    t = trigger("""
          url: "https://deploy/{{ data.repository.name }}/{{ data.number }}"
          headers: {X-Pr: "{{ data.number }}"}""")
    section = params.render(t, {"pr": pr_event()})
    assert section["url"] == "https://deploy/shop/7"
    assert section["headers"] == {"X-Pr": 7}


def test_typed_values_from_expressions() -> None:
    t = trigger("""{url: "https://x", headers: {a: "{{ data.pull_request.draft }}",
                 b: "{{ data.pull_request.head }}", c: "{{ event.subject }}",
                 d: "{{ [data.number, 1.5] }}", e: "n={{ data.pull_request.draft }}"}}""")
    h = params.render(t, {"pr": pr_event()})["headers"]
    assert h["a"] is False
    assert h["b"] == {"ref": "feature/checkout", "sha": "0123456789abcdef0123456789abcdef01234567"}
    assert h["c"] == "7"
    assert h["d"] == [7, 1.5]
    assert h["e"] == "n=false"


def test_event_data_cannot_change_structure() -> None:
    hostile = "x\"}\nheaders: {evil: 1}\n{{ data.number }}"
    t = trigger('{url: "https://x/{{ data.pull_request.title }}", headers: {'
                'X-Title: "t: {{ data.pull_request.title }}"}}')
    section = params.render(t, {"pr": pr_event(**{"pull_request": {"title": hostile}})})
    # the text, verbatim, not re-rendered (and, in a URL, one percent-encoded value)
    assert section == {"url": "https://x/" + quote(hostile, safe=""),
                       "headers": {"X-Title": "t: " + hostile}}  # fmt: skip


def test_missing_key_names_the_key_and_the_event() -> None:
    t = trigger('{url: "https://x/{{ data.pull_request.nope }}"}')
    with pytest.raises(PermanentTriggerError, match=r"url: .*nope.*delivery-1"):
        params.render(t, {"pr": pr_event()})


def test_foreign_braces_stay() -> None:
    t = trigger('{url: "https://x", headers: {a: "{{workflow.name}}-{{ data.number }}"}}')
    assert params.render(t, {"pr": pr_event()})["headers"] == {"a": "{{workflow.name}}-7"}


PARAMETERS = [
    ("{src: {dependencyName: pr, dataKey: number}, dest: headers.n}", {"n": 7}),
    ("{src: {dependencyName: pr, dataKey: pull_request.labels}, dest: headers.l}", {"l": []}),
    ("{src: {dependencyName: pr, contextKey: subject}, dest: headers.s}", {"s": "7"}),
    ("{src: {dependencyName: pr, expr: 'data.number * 2'}, dest: headers.x}", {"x": 14}),
    ("{src: {dependencyName: pr, dataKey: nope, value: dflt}, dest: headers.d}", {"d": "dflt"}),
    ("{src: {dependencyName: pr, value: 42}, dest: headers.c}", {"c": 42}),
    ("{src: {dependencyName: pr, dataKey: number}, dest: headers.p, operation: append}",
     {"p": "pr-7"}),
    ("{src: {dependencyName: pr, dataKey: number}, dest: headers.p, operation: prepend}",
     {"p": "7pr-"}),
    ("{src: {dependencyName: pr, dataKey: number}, dest: headers.p}", {"p": 7}),
]


@pytest.mark.parametrize(("param", "expected"), PARAMETERS)
def test_parameters(param: str, expected: dict[str, Any]) -> None:
    t = trigger('{url: "https://x", headers: {p: "pr-"}}', f"[{param}]")
    assert params.render(t, {"pr": pr_event()})["headers"] == {"p": "pr-", **expected}


def test_parameter_missing_key_without_default() -> None:
    t = trigger('{url: "https://x"}', "[{src: {dependencyName: pr, dataKey: pull_request.nope}, "
                                      "dest: headers.x}]")  # fmt: skip
    with pytest.raises(PermanentTriggerError,
                       match=r"parameters\[0\]: key 'pull_request.nope' is missing in event "
                             r"delivery-1 \(dependency 'pr'\)"):  # fmt: skip
        params.render(t, {"pr": pr_event()})


def test_multi_dependency_events() -> None:
    t = trigger(
        '{url: "https://x/{{ events.build.data.image }}:{{ events.build.data.tag }}",'
        ' headers: {pr: "{{ events.pr.data.number }}", first: "{{ event.type }}"}}',
        "[{src: {dependencyName: build, dataKey: tag}, dest: headers.tag}]",
        deps="[{name: pr}, {name: build}]",
    )
    section = params.render(t, {"pr": pr_event(), "build": build_event()})
    assert section["url"] == "https://x/shop:abc123"
    assert section["headers"] == {"pr": 7, "first": "com.github.pull_request.opened",
                                  "tag": "abc123"}  # fmt: skip


def test_render_returns_a_fresh_tree() -> None:
    t = trigger('{url: "https://x", headers: {a: b}}',
                "[{src: {dependencyName: pr, value: v}, dest: headers.c}]")  # fmt: skip
    params.render(t, {"pr": pr_event()})
    assert params.render(t, {"pr": pr_event()})["headers"] == {"a": "b", "c": "v"}
    assert t.spec["headers"] == {"a": "b"}


SENSOR = """apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: render}
spec:
  dependencies:
    - name: pr
      eventSubject: events.github.pull_request
      filters:
        exprs: ["!data.pull_request.draft"]
  triggers:
    - template:
        name: call
        http:
          url: "http://127.0.0.1:PORT/deploy/{{ data.repository.name }}/{{ data.number }}"
          headers: {X-Sha: "x"}
      parameters:
        - src: {dependencyName: pr, dataKey: pull_request.head.sha}
          dest: headers.X-Sha
"""


async def test_engine_renders_before_execute(
    tmp_path: Path, start_service: Any, nats_server: Any, bus: Any
) -> None:
    seen: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await seen.put((request.path, request.headers.get("X-Sha", "")))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/deploy/{repo}/{n}", hook)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        write_sensor(tmp_path / "sensors", "render", SENSOR.replace("PORT", str(port)))
        await start_service(nats_url=nats_server.url)
        event = events.make_event({"specversion": "1.0", "id": "d-12", "source": "https://x",
                                   "type": "com.github.pull_request.opened"},
                                  pr_payload(number=12))  # fmt: skip
        headers, body = events.to_binary(event)
        await bus.publish("events.github.pull_request", body, headers, msg_id="d-12")
        path, sha = await asyncio.wait_for(seen.get(), 20)
        assert path == "/deploy/shop/12"
        assert sha == "0123456789abcdef0123456789abcdef01234567"
    finally:
        await runner.cleanup()
