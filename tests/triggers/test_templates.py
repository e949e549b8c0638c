"""One template language: `{{ expr }}` everywhere, with each kind's own names as variables.

The engine renders the event's expressions first; a kind renders what is left with its own
names (`number`, `values`, `sensor`, ...) when it runs. Event data put in by the first stage
is never read as a template by the second, in either spelling. The old `{name}` spelling
still renders, and lint names the new one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from eventsvc import events, templates, yamldoc
from eventsvc.config import load_config
from eventsvc.errors import PermanentTriggerError, SpecProblem
from eventsvc.events import CloudEvent
from eventsvc.github import ghevents
from eventsvc.github.client import GitHubClient, GitHubSettings
from eventsvc.sensors import params
from eventsvc.sensors.model import SensorSpec, TriggerSpec, parse_sensor
from eventsvc.triggers import REGISTRY, Services, TriggerContext
from eventsvc.triggers.promotion import PromotionTrigger
from tests.conftest import pr_payload
from tests.github import fakegithub
from tests.github.fakegithub import FakeGitHub
from tests.triggers.test_promotion import REPO, deploy, fake, make_trigger, release

__all__ = ["deploy", "fake", "make_trigger"]  # fixtures shared with test_promotion
SHA = "0123456789abcdef0123456789abcdef01234567"
HOSTILE = ["{{ data.pull_request.html_url }}", "{number}", "{{ number }}", "{data.action}",
           '{{ "x" }}', "}}{{", "{", "}", "action", "number"]  # fmt: skip


def sensor(kind: str, section: str, parameters: str = "[]") -> tuple[TriggerSpec, list[Any]]:
    text = f"""apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: previews}}
spec:
  dependencies: [{{name: pr, eventSubject: events.github.pull_request,
                   filters: {{context: {{type: {{prefix: com.github.}}}}}}}}]
  triggers:
    - template:
        name: report
        {kind}: {section}
      parameters: {parameters}
"""
    docs, _ = yamldoc.parse_documents(text, "s.yaml")
    spec, found = parse_sensor(docs[0])
    assert isinstance(spec, SensorSpec), found
    return spec.triggers[0], found


def lint(kind: str, section: str) -> list[SpecProblem]:
    text = f"""apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: previews}}
spec:
  dependencies: [{{name: pr, eventSubject: events.github.pull_request,
                   filters: {{context: {{type: {{prefix: com.github.}}}}}}}}]
  triggers:
    - template:
        name: report
        {kind}: {section}
"""
    docs, _ = yamldoc.parse_documents(text, "s.yaml")
    return parse_sensor(docs[0])[1]


def pr_event(title: str = "Add checkout", **extra: Any) -> CloudEvent:
    payload = pr_payload(**extra)
    payload["pull_request"]["title"] = title
    return events.make_event(
        {"specversion": "1.0", "id": "d1", "type": "com.github.pull_request.opened",
         "source": "https://github.com/acme/shop", "subject": "7",
         "datacontenttype": "application/json"}, payload)  # fmt: skip


async def fire(trigger: TriggerSpec, services: Services, event: CloudEvent) -> Any:
    """What the engine does: render the events in, then let the kind run."""
    section = params.render(trigger, {"pr": event})
    ctx = TriggerContext("previews", trigger.name, {"pr": event})
    return await REGISTRY[trigger.kind](services).execute(section, ctx)


@pytest.fixture
async def github(fake: FakeGitHub) -> AsyncIterator[Services]:
    services = Services(load_config(environ={}))
    services.github = GitHubClient(GitHubSettings(api_url=fake.url,
                                                            token=fakegithub.PAT))  # fmt: skip
    yield services
    await services.close()


# -- the shared pieces ---------------------------------------------------------------------


def test_render_evaluates_only_expressions_over_the_given_names() -> None:
    names = {"number": 7, "values": "1.5.0, 2.0.0"}
    text = "#{{ number }} {{ values.split(', ')[0] }} {{ data.x }} {{inputs.parameters.x}}"
    assert templates.render(text, names) == "#7 1.5.0 {{ data.x }} {{inputs.parameters.x}}"


def test_render_is_one_pass_and_old_spelling_is_opt_in() -> None:
    names = {"number": "{number}", "values": "{{ number }}"}
    text = "{{ values }} {{ number }} {number}"
    assert templates.render(text, names) == "{{ number }} {number} {number}"
    old = templates.render(text, names, lambda n: str(names[n]) if n in names else None)
    assert old == "{{ number }} {number} {number}"  # the old `{number}` gave "{number}": data


def test_a_failing_expression_names_what_it_can_read() -> None:
    with pytest.raises(PermanentTriggerError, match=r"\{\{ number \+ 'x' \}\} failed.*number"):
        templates.render("{{ number + 'x' }}", {"number": 7})


@pytest.mark.parametrize("value", [*HOSTILE, 'a "quoted\\" {x}\n line', "plain"])
def test_protected_data_renders_back_to_itself(value: str) -> None:
    protected = templates.protect(value)
    assert templates.render(protected, {"number": 7}, lambda n: "OLD") == value
    assert protected == value or protected.startswith('{{ "')


@pytest.mark.parametrize(("old", "new"), [
    ("number", "{{ number }}"), ("data.release.html_url", "{{ data.release.html_url }}"),
    ("data.commits.0.id", "{{ data.commits[0].id }}"), ("data.a-b", '{{ data["a-b"] }}'),
])  # fmt: skip
def test_new_spelling(old: str, new: str) -> None:
    assert templates.new_spelling(old) == new


def test_ghevents_render_takes_both_spellings() -> None:
    event = pr_event()
    out = ghevents.render("{{ sensor }}/{trigger} {data.pull_request.title} {other}",
                          {"sensor": "s", "trigger": "t"}, event)  # fmt: skip
    assert out == "s/t Add checkout {other}"


# -- githubStatus and githubComment ---------------------------------------------------------


async def test_status_and_comment_read_their_names(fake: FakeGitHub, github: Services) -> None:
    status, found = sensor("githubStatus", """
          state: success
          context: "ci/{{ sensor }}-{{ trigger }}"
          description: "#{{ number }} {{ data.pull_request.title }} ({{ event_type }})"
          targetUrl: "https://pr-{{ number }}.preview.example/{{ sha.substring(0, 7) }}" """)
    assert found == []
    await fire(status, github, pr_event())
    [sent] = fake.statuses
    assert sent["context"] == "ci/previews-report"
    assert sent["description"] == "#7 Add checkout (com.github.pull_request.opened)"
    assert sent["target_url"] == f"https://pr-7.preview.example/{SHA[:7]}"
    comment, found = sensor("githubComment", """
          body: "{{ repo }}#{{ number }}: {{ data.pull_request.title }} (event {{ event_id }})" """)
    assert found == []
    await fire(comment, github, pr_event())
    [made] = fake.comments["acme/shop#7"]
    assert made["body"].startswith("acme/shop#7: Add checkout (event d1)")


@pytest.mark.parametrize("title", HOSTILE)
async def test_event_data_in_a_comment_stays_data(
    title: str, fake: FakeGitHub, github: Services
) -> None:
    comment, _ = sensor("githubComment", """
          body: "{number} {{ number }}: {{ data.pull_request.title }}
            {data.{{ data.pull_request.title }}} {{ number }}{{ data.pull_request.title }}}"
    """)
    await fire(comment, github, pr_event(title))
    [made] = fake.comments["acme/shop#7"]
    assert made["body"].split("\n\n")[0] == f"7 7: {title} {{data.{title}}} 7{title}}}"


async def test_event_data_set_by_a_parameter_stays_data(
    fake: FakeGitHub, github: Services
) -> None:
    comment, _ = sensor("githubComment", '{body: "x"}', """
        - {src: {dependencyName: pr, dataKey: pull_request.title}, dest: body}""")
    await fire(comment, github, pr_event("{number} {{ number }}"))
    [made] = fake.comments["acme/shop#7"]
    assert made["body"].split("\n\n")[0] == "{number} {{ number }}"


async def test_old_spelling_still_renders_and_lint_warns(
    fake: FakeGitHub, github: Services
) -> None:
    section = """
          sha: "{data.pull_request.head.sha}"
          state: pending
          description: "#{number} {data.pull_request.title}" """
    status, found = sensor("githubStatus", section)
    assert [(p.field, p.message, p.severity) for p in found] == [
        ("spec.triggers[0].template.githubStatus.sha", "warning: '{data.pull_request.head.sha}' "
         "is the old placeholder syntax; write '{{ data.pull_request.head.sha }}'", "warning"),
        ("spec.triggers[0].template.githubStatus.description", "warning: '{number}' is the old "
         "placeholder syntax; write '{{ number }}'", "warning"),
        ("spec.triggers[0].template.githubStatus.description", "warning: "
         "'{data.pull_request.title}' is the old placeholder syntax; write "
         "'{{ data.pull_request.title }}'", "warning"),
    ]  # fmt: skip
    await fire(status, github, pr_event())
    assert fake.statuses[0]["description"] == "#7 Add checkout"
    assert fake.statuses[0]["sha"] == SHA


def test_lint_warns_in_a_dead_letter_trigger_too() -> None:
    text = """apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: s}
spec:
  dependencies: [{name: pr}]
  triggers:
    - template: {name: t, log: {message: x}}
      dlqTrigger:
        template: {name: alert, githubComment: {body: "failed for {sensor}"}}
"""
    docs, _ = yamldoc.parse_documents(text, "s.yaml")
    [warning] = parse_sensor(docs[0])[1]
    assert warning.field == "spec.triggers[0].dlqTrigger.template.githubComment.body"
    assert warning.message.endswith("write '{{ sensor }}'")


def test_lint_leaves_other_braces_alone() -> None:
    found = lint("githubComment", """
          body: 'JSON {"a": 1}, {unknown}, {{ data.x }}, {{ number }}, `{{workflow.name}}`' """)
    assert found == []


def test_an_expression_cannot_read_the_event_and_the_kinds_names_at_once() -> None:
    text = """apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {name: s}
spec:
  dependencies: [{name: pr}]
  triggers:
    - template:
        name: t
        log: {message: x}
    - template:
        name: report
        githubComment: {body: "{{ data.number + number }}"}
"""
    docs, _ = yamldoc.parse_documents(text, "s.yaml")
    spec, found = parse_sensor(docs[0])
    assert spec is None
    [problem] = found
    assert problem.field == "spec.triggers[1].template.githubComment.body"
    assert "reads the event (data) and this field's own names (number)" in problem.message


# -- environment ----------------------------------------------------------------------------

ENV = """
          repoURL: https://github.com/acme/deploy.git
          path: apps/shop
          image: ghcr.io/acme/shop
          gates: {requiredLabels: [preview]}
          url: %s"""


async def environment_url(url: str, title: str = "Add checkout") -> tuple[str, list[Any]]:
    """The URL an environment reports (the event lacks the label, so no cluster is asked)."""
    trigger, found = sensor("environment", ENV % url)
    services = Services(load_config(environ={}))
    try:
        result = await fire(trigger, services, pr_event(title))
    finally:
        await services.close()
    assert result.outcome == "skipped"
    return result.detail["url"], found


async def test_environment_url_reads_its_names() -> None:
    url, found = await environment_url('"https://pr-{{ number }}-{{ short_sha }}.{{ '
                                       'data.repository.name }}.{{ owner }}.example.com/'
                                       '{{ namespace }}?r={{ repository }}"')  # fmt: skip
    assert found == []
    assert url == "https://pr-7-0123456.shop.acme.example.com/pr-7-acme-shop?r=acme/shop"


@pytest.mark.parametrize("title", HOSTILE)
async def test_event_data_in_an_environment_url_stays_data(title: str) -> None:
    url, _ = await environment_url('"https://x.example.com/?t={{ data.pull_request.title }}'
                                   '&n={{ number }}"', title)  # fmt: skip
    assert url == f"https://x.example.com/?t={title}&n=7"


async def test_environment_url_old_spelling_renders_and_warns() -> None:
    url, found = await environment_url("https://pr-{number}.{owner}.example.com")
    assert url == "https://pr-7.acme.example.com"
    assert [(p.field, p.message) for p in found] == [
        ("spec.triggers[0].template.environment.url",
         "warning: '{number}' is the old placeholder syntax; write '{{ number }}'"),
        ("spec.triggers[0].template.environment.url",
         "warning: '{owner}' is the old placeholder syntax; write '{{ owner }}'")]  # fmt: skip


def test_environment_url_names_are_checked() -> None:
    from eventsvc.triggers.environment import EnvironmentTrigger

    spec = {"repoURL": "r", "path": "p", "image": "i"}
    for url in ("https://pr-{{ numbr }}.example.com", "https://pr-{numbr}.example.com"):
        [(where, message)] = EnvironmentTrigger.check({**spec, "url": url})
        assert where == ("url",) and message.startswith("unknown placeholder(s) numbr; use "
                                                        "{{ number }}, {{ namespace }}")  # fmt: skip
    assert EnvironmentTrigger.check({**spec, "url": "https://{{ data.x }}-{{ sha }}.x"}) == []


# -- promotion ------------------------------------------------------------------------------


async def test_promotion_texts_read_their_names(
    fake: FakeGitHub, deploy: tuple[Path, str], make_trigger: Callable[[], PromotionTrigger]
) -> None:
    bare, url = deploy
    text = f"""apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: promote}}
spec:
  dependencies: [{{name: release}}]
  triggers:
    - template:
        name: stage
        promotion:
          repo: {url}
          githubRepo: {REPO}
          branch: main
          environment: staging
          app: shop
          edits:
            - file: overlays/staging/kustomization.yaml
              image: {{name: ghcr.io/acme/shop, newTagFrom: data.release.tag_name}}
          commit: {{message: "{{{{ app }}}} {{{{ values }}}} ({{{{ data.release.name }}}})"}}
          pullRequest:
            title: "{{{{ environment }}}}: {{{{ values }}}} {{{{ data.release.name }}}}"
            body: "{{{{ changes }}}} old {{changes}} {{data.release.tag_name}}"
"""
    docs, _ = yamldoc.parse_documents(text, "s.yaml")
    spec, found = parse_sensor(docs[0])
    assert isinstance(spec, SensorSpec), found
    assert [p.message for p in found] == [
        "warning: '{changes}' is the old placeholder syntax; write '{{ changes }}'",
        "warning: '{data.release.tag_name}' is the old placeholder syntax; write "
        "'{{ data.release.tag_name }}'"]  # fmt: skip
    event = release("1.5.0")
    event.get_data()["release"]["name"] = "{values} {{ values }}"  # a stranger's text
    trig = spec.triggers[0]
    section = params.render(trig, {"release": event})
    await make_trigger().execute(section, TriggerContext("promote", "stage", {"release": event}))
    [pull] = fake.pulls[REPO]
    assert pull["title"] == "staging: 1.5.0 {values} {{ values }}"
    change = "`images[ghcr.io/acme/shop].newTag` 1.4.0 → **1.5.0**"
    assert change in pull["body"].split(" old ")[0]
    assert pull["body"].split(" old ")[1].startswith(f"- `overlays/staging/kustomization.yaml`: "
                                                     f"{change} 1.5.0")  # fmt: skip
    from tests.github.deployrepo import git

    subject = git(bare, "log", "-1", "--format=%s", "eventsvc/promote/staging/shop").strip()
    assert subject == "shop 1.5.0 ({values} {{ values }})"


def test_shipped_sensors_lint_without_warnings() -> None:
    from eventsvc import loader

    loaded = loader.load_paths([Path(__file__).parents[2] / "sensors"])
    assert (loaded.problems, loaded.warnings) == ([], [])
