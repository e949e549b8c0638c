"""Event data rendered into an `http` trigger stays data: a value placed into the URL is
percent-encoded (no new path segment, query parameter or fragment), a header value cannot
start a new header, and a rendered URL that is not http(s) with a host is refused. Lint warns
when the destination itself comes from event data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from eventsvc import events, yamldoc
from eventsvc.config import Config
from eventsvc.errors import PermanentTriggerError
from eventsvc.events import CloudEvent
from eventsvc.sensors import params
from eventsvc.sensors.model import SensorSpec, TriggerSpec, parse_sensor
from eventsvc.triggers.base import Services, TriggerContext
from eventsvc.triggers.http import HttpTrigger


class Recorder:
    def __init__(self) -> None:
        self.seen: list[web.Request] = []
        self.url = ""


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        rec.seen.append(request)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield rec
    await runner.cleanup()


def _doc(section: str, parameters: str = "[]") -> yamldoc.Document:
    text = f"""apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: s}}
spec:
  dependencies: [{{name: e}}]
  triggers:
    - template:
        name: t
        http: {section}
      parameters: {parameters}
"""
    docs, problems = yamldoc.parse_documents(text, "s.yaml")
    assert not problems
    return docs[0]


def _trigger(section: str, parameters: str = "[]") -> tuple[TriggerSpec, list[Any]]:
    spec, problems = parse_sensor(_doc(section, parameters))
    assert isinstance(spec, SensorSpec), problems
    return spec.triggers[0], problems


def _event(**data: Any) -> CloudEvent:
    return events.make_event({"specversion": "1.0", "id": "e-1", "type": "com.example.t",
                              "source": "https://ci.example/x"}, data)  # fmt: skip


async def _fire(trigger: TriggerSpec, event: CloudEvent) -> Any:
    section = params.render(trigger, {"e": event})
    services = Services(Config())
    try:
        ctx = TriggerContext("s", "t", {"e": event}, run_key="k")
        return await HttpTrigger(services).execute(section, ctx)
    finally:
        await services.close()


@pytest.mark.parametrize("branch", ["%2e%2e/%2e%2e/admin", "../../admin", "a/b?x=1#frag",
                                    "x@evil.example", "\u00e9t\u00e9 space"])
async def test_a_value_in_the_path_stays_one_segment(recorder: Recorder, branch: str) -> None:
    trigger, _ = _trigger(f'{{url: "{recorder.url}/deploy/{{{{ data.branch }}}}/go"}}')
    await _fire(trigger, _event(branch=branch))
    [request] = recorder.seen
    assert request.path == f"/deploy/{branch}/go"  # decoded once: the value, whole
    assert request.raw_path.count("/") == 3
    assert not request.query


async def test_a_value_in_the_query_stays_one_parameter(recorder: Recorder) -> None:
    trigger, _ = _trigger(f'{{url: "{recorder.url}/hook?title={{{{ data.title }}}}&n=1"}}')
    await _fire(trigger, _event(title="x&admin=true#y"))
    [request] = recorder.seen
    assert dict(request.query) == {"title": "x&admin=true#y", "n": "1"}


async def test_a_whole_url_template_is_the_authors_explicit_choice(recorder: Recorder) -> None:
    trigger, warnings = _trigger('{url: "{{ data.callback }}"}')
    await _fire(trigger, _event(callback=recorder.url + "/cb/a?b=c"))
    [request] = recorder.seen
    assert request.path == "/cb/a" and dict(request.query) == {"b": "c"}
    assert any("comes from event data" in w.message for w in warnings)


@pytest.mark.parametrize("callback", ["file:///etc/passwd", "javascript:alert(1)", "//host/x",
                                      "http:///nohost"])
async def test_a_rendered_url_that_is_not_http_is_refused(callback: str) -> None:
    trigger, _ = _trigger('{url: "{{ data.callback }}"}')
    with pytest.raises(PermanentTriggerError, match="not an http"):
        await _fire(trigger, _event(callback=callback))


async def test_a_header_value_cannot_start_a_new_header(recorder: Recorder) -> None:
    trigger, _ = _trigger(f'{{url: "{recorder.url}/h", headers: {{X-Title: "{{{{ data.t }}}}"}}}}')
    with pytest.raises(PermanentTriggerError, match="control character"):
        await _fire(trigger, _event(t="ok\r\nX-Admin: true"))
    assert recorder.seen == []
    await _fire(trigger, _event(t="fine title"))
    assert recorder.seen[0].headers["X-Title"] == "fine title"


async def test_a_parameter_appended_to_the_url_is_encoded(recorder: Recorder) -> None:
    trigger, _ = _trigger(
        f'{{url: "{recorder.url}/by-branch/"}}',
        "[{src: {dependencyName: e, dataKey: branch}, dest: url, operation: append}]",
    )
    await _fire(trigger, _event(branch="../admin?x=1"))
    [request] = recorder.seen
    assert request.path == "/by-branch/../admin?x=1" and not request.query


@pytest.mark.parametrize("section, parameters, warned", [
    ('{url: "https://hooks.example/{{ data.x }}"}', "[]", False),
    ('{url: "https://hooks.example?q={{ data.x }}"}', "[]", False),
    ('{url: "https://{{ data.host }}/hook"}', "[]", True),
    ('{url: "https://hooks.{{ data.host }}/hook"}', "[]", True),
    ('{url: "{{ data.url }}"}', "[]", True),
    ('{url: "https://hooks.example/x"}',
     "[{src: {dependencyName: e, dataKey: url}, dest: url}]", True),
])  # fmt: skip
def test_lint_warns_when_the_destination_comes_from_event_data(
    section: str, parameters: str, warned: bool
) -> None:
    _, warnings = _trigger(section, parameters)
    found = [w for w in warnings if "comes from event data" in w.message]
    assert bool(found) == warned, warnings
    assert all(w.severity == "warning" for w in found)


async def test_a_retry_after_in_other_digits_is_ignored_not_a_crash(recorder: Recorder) -> None:
    from eventsvc.errors import TemporaryTriggerError

    async def busy(request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Retry-After": "\u00b2"}, text="busy")

    app = web.Application()
    app.router.add_post("/busy", busy)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/busy"
        trigger, _ = _trigger(f'{{url: "{url}"}}')
        with pytest.raises(TemporaryTriggerError) as caught:
            await _fire(trigger, _event())
        assert caught.value.delay is None
    finally:
        await runner.cleanup()
