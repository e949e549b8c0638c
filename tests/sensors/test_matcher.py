"""The sensor index agrees with matching every sensor one by one, and narrows the work."""

from __future__ import annotations

import itertools

from eventsvc import yamldoc
from eventsvc.config import load_config
from eventsvc.sensors import filters
from eventsvc.sensors.compiled import CompiledSensor
from eventsvc.sensors.matcher import Matcher
from eventsvc.sensors.model import SensorSpec, parse_sensor

REPOS = ["shop", "cart", "infra", "docs", "api"]
ACTIONS = ["opened", "closed", "labeled"]


def sensor(name: str, dependencies: str) -> SensorSpec:
    text = f"""apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: {name}}}
spec:
  dependencies:
{dependencies}
  triggers:
    - template: {{name: t, log: {{}}}}
"""
    docs, problems = yamldoc.parse_documents(text, f"{name}.yaml")
    assert not problems
    spec, problems = parse_sensor(docs[0])
    assert spec is not None, problems
    return spec


def sensors() -> list[CompiledSensor]:
    out = []
    for repo, action in itertools.product(REPOS, ACTIONS):
        out.append(sensor(f"{repo}-{action}", f"""\
    - name: pr
      eventSubject: events.github.pull_request
      filters:
        context:
          type: com.github.pull_request.{action}
          source: https://github.com/acme/{repo}
        data: [{{path: pull_request.base.ref, value: main}}]"""))
    out.append(sensor("any-pr", """\
    - name: pr
      filters: {context: {type: {prefix: com.github.pull_request.}}}"""))
    out.append(sensor("either", """\
    - name: pr
      filtersLogicalOperator: or
      filters:
        context: {subject: "9"}
        data: [{path: action, value: closed}]"""))
    out.append(sensor("labels", """\
    - name: pr
      filters:
        context:
          any: [{exact: {type: com.github.pull_request.labeled}},
                {exact: {type: com.github.issues.labeled}}]
        exprs: ["data.label.name == 'deploy'"]
    - name: push
      eventSubject: events.github.push
      filters: {context: {type: com.github.push}}"""))
    out.append(sensor("unfiltered", "    - name: any"))
    config = load_config(environ={})
    return [CompiledSensor(s, config) for s in out]


def events() -> list[tuple[str, filters.EventView]]:
    out = []
    for repo, action, base, subject in itertools.product(
        [*REPOS, "other"], [*ACTIONS, "synchronize"], ["main", "dev"], ["7", "9"]
    ):
        attrs = {"id": "1", "type": f"com.github.pull_request.{action}", "subject": subject,
                 "source": f"https://github.com/acme/{repo}"}  # fmt: skip
        data = {"action": action, "pull_request": {"base": {"ref": base}},
                "label": {"name": "deploy"}}  # fmt: skip
        out.append(("events.github.pull_request", filters.EventView(attrs, data)))
    out.append(("events.github.push", filters.EventView(
        {"id": "2", "type": "com.github.push", "source": "https://github.com/acme/shop"}, {}
    )))  # fmt: skip
    return out


def test_index_agrees_with_matching_each_sensor() -> None:
    compiled = sensors()
    matcher = Matcher(compiled)
    for subject, view in events():
        expected = {}
        for i, s in enumerate(compiled):
            matched, _ = s.match(subject, view)
            if matched:
                expected[i] = matched
        assert matcher.match(subject, view) == expected, view.attributes


def test_index_only_evaluates_relevant_sensors() -> None:
    matcher = Matcher(sensors())
    view = filters.EventView(
        {"id": "1", "type": "com.github.pull_request.opened", "source": "https://github.com/acme/shop"},
        {},
    )
    names = sorted(f"{matcher.sensors[e.sensor].name}.{e.dependency}"
                   for e in matcher.candidates("events.github.pull_request", view))  # fmt: skip
    # filed by repository (rarer than the action here), the prefix sensor, the unindexables
    assert names == ["any-pr.pr", "either.pr", "shop-closed.pr", "shop-labeled.pr",
                     "shop-opened.pr", "unfiltered.any"]  # fmt: skip


def test_a_dependency_with_only_a_subject_is_filed_by_its_subject() -> None:
    compiled = [
        sensor("pushes", "    - {name: push, eventSubject: events.github.push}"),
        sensor("github", "    - {name: gh, eventSubject: events.github.>}"),
        sensor("anything", "    - {name: any}"),
    ]
    matcher = Matcher([CompiledSensor(s, load_config(environ={})) for s in compiled])
    view = filters.EventView({"id": "1", "type": "t", "source": "s"}, {})

    def names(subject: str) -> list[str]:
        return sorted(matcher.sensors[e.sensor].name for e in matcher.candidates(subject, view))

    assert names("events.github.push") == ["anything", "github", "pushes"]
    assert names("events.github.pull_request") == ["anything", "github"]
    assert names("events.ci.build") == ["anything"]
    assert [matcher.sensors[e.sensor].name for e in matcher.unindexed] == ["anything"]


def test_firing_lists_sensors_and_triggers() -> None:
    matcher = Matcher(sensors())
    view = filters.EventView(
        {"id": "1", "type": "com.github.push", "source": "https://github.com/acme/shop"}, {}
    )
    fired = {s.name: sorted(m) for s, m, _ in matcher.firing("events.github.push", view)}
    # `labels` needs both dependencies; a push alone satisfies only one of them
    assert fired == {"unfiltered": ["any"]}
