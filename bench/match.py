"""In-process matching of realistic GitHub CloudEvents against 10, 100 and 1000 sensors.

Run: `python -m bench.match`. The sensors are what a GitOps organisation writes:
per repository, a preview on pull requests to main, a clean-up on merge, a deploy
on push to main, a release hook and a label-triggered deploy (the label sensor of
every other repository also carries a CEL expression: a tenth of all sensors).
Every sensor has context and data filters. Events are full-size webhook payloads
(repository objects of ~90 fields, as GitHub sends them) from the repositories
the sensors watch, over a realistic mix of event types. Each event is decoded into
its filter view once and matched with `Matcher`, as the dispatcher does.
Targets: >= 20,000 events/s at 1000 sensors; us/event at 1000 <= 3x at 10.
"""

from __future__ import annotations

import random
import time
from typing import Any

from eventsvc import events, yamldoc
from eventsvc.config import load_config
from eventsvc.events import CloudEvent
from eventsvc.gateways import github
from eventsvc.sensors import filters
from eventsvc.sensors.compiled import CompiledSensor
from eventsvc.sensors.matcher import Matcher
from eventsvc.sensors.model import parse_sensor

SIZES = (10, 100, 1000)
EVENTS = 20_000
ORG = "acme"
CONFIG = load_config(environ={})

TEMPLATES = [
    ("preview", "events.github.pull_request", """
        context: {{type: {{prefix: com.github.pull_request.}}, source: "{url}"}}
        data:
          - {{path: pull_request.base.ref, value: [main]}}
          - {{path: action, value: [opened, reopened, synchronize]}}"""),
    ("cleanup", "events.github.pull_request", """
        context: {{type: com.github.pull_request.closed, source: "{url}"}}
        data: [{{path: pull_request.merged, value: true}}]"""),
    ("deploy-main", "events.github.push", """
        context: {{type: com.github.push, source: "{url}"}}
        data: [{{path: ref, value: refs/heads/main}}]"""),
    ("release", "events.github.release", """
        context: {{type: com.github.release.published, source: "{url}"}}
        data: [{{path: release.prerelease, value: false}}]"""),
    ("label-deploy", "events.github.pull_request", """
        context: {{type: com.github.pull_request.labeled, source: "{url}"}}
        data: [{{path: label.name, regex: "^deploy(/.*)?$"}}]{cel}"""),
]
CEL = """
        exprs: ["!data.pull_request.draft && data.pull_request.labels.exists(l, l.name == 'ok')"]"""


def sensor_text(repo: str, kind: str, subject: str, filters_yaml: str, cel: bool) -> str:
    url = f"https://github.com/{ORG}/{repo}"
    body = filters_yaml.format(url=url, cel=CEL if cel else "")
    return f"""apiVersion: eventsvc.dev/v1alpha1
kind: Sensor
metadata: {{name: {repo}-{kind}}}
spec:
  dependencies:
    - name: e
      eventSubject: {subject}
      filters:{body}
  triggers:
    - template: {{name: t, log: {{message: "{{{{ event.type }}}}"}}}}
"""


def build_sensors(n: int) -> tuple[list[CompiledSensor], list[str]]:
    repos = [f"repo-{i:04d}" for i in range(max(1, n // len(TEMPLATES)))]
    out: list[CompiledSensor] = []
    for r, repo in enumerate(repos):
        for kind, subject, body in TEMPLATES:
            if len(out) == n:
                break
            text = sensor_text(repo, kind, subject, body, kind == "label-deploy" and r % 2 == 0)
            docs, _ = yamldoc.parse_documents(text, f"{repo}-{kind}.yaml")
            spec, problems = parse_sensor(docs[0])
            assert spec is not None, problems
            out.append(CompiledSensor(spec, CONFIG))
    return out, repos


def repository(repo: str) -> dict[str, Any]:
    url = f"https://github.com/{ORG}/{repo}"
    api = f"https://api.github.com/repos/{ORG}/{repo}"
    doc: dict[str, Any] = {
        "id": random.randint(1, 10**9), "name": repo, "full_name": f"{ORG}/{repo}",
        "private": True, "html_url": url, "clone_url": url + ".git", "default_branch": "main",
        "owner": {"login": ORG, "id": 1, "type": "Organization", "html_url": "https://github.com/acme"},
    }  # fmt: skip
    for i in range(80):  # the *_url fields, counts and flags GitHub sends
        doc[f"field_{i}_url"] = f"{api}/things{i}{{/id}}"
    return doc


def payload(kind: str, repo: str, rng: random.Random) -> tuple[str, dict[str, Any]]:
    repo_doc = repository(repo)
    sender = {"login": f"dev{rng.randint(1, 50)}", "id": 7, "type": "User"}
    if kind in ("push",):
        ref = rng.choice(["refs/heads/main", "refs/heads/feature/x"])
        return "push", {"ref": ref, "after": "f" * 40, "repository": repo_doc, "sender": sender,
                        "commits": [{"id": "a" * 40, "message": "change"}] * 3}  # fmt: skip
    if kind == "release":
        return "release", {"action": rng.choice(["published", "created"]), "repository": repo_doc,
                           "release": {"tag_name": "v1.2.3", "prerelease": rng.random() < 0.2},
                           "sender": sender}  # fmt: skip
    if kind == "issue_comment":
        return "issue_comment", {"action": "created", "issue": {"number": 3},
                                 "repository": repo_doc, "comment": {"body": "lgtm"},
                                 "sender": sender}  # fmt: skip
    action = rng.choice(["opened", "synchronize", "synchronize", "closed", "labeled", "edited"])
    labels = [{"name": rng.choice(["ok", "bug", "deploy"])} for _ in range(rng.randint(0, 3))]
    pr = {"number": rng.randint(1, 999), "draft": rng.random() < 0.1, "merged": action == "closed",
          "title": "Change things", "labels": labels,
          "head": {"ref": "feature/x", "sha": "b" * 40, "repo": repo_doc},
          "base": {"ref": rng.choice(["main", "main", "release"]), "repo": repo_doc}}  # fmt: skip
    doc = {"action": action, "number": pr["number"], "pull_request": pr, "repository": repo_doc,
           "sender": sender}  # fmt: skip
    if action == "labeled":
        doc["label"] = {"name": rng.choice(["deploy", "deploy/staging", "bug"])}
    return "pull_request", doc


def build_events(repos: list[str], count: int) -> list[tuple[str, CloudEvent]]:
    rng = random.Random(42)
    mix = ["pull_request"] * 6 + ["push"] * 3 + ["release", "issue_comment"]
    out = []
    for i in range(count):
        name, doc = payload(rng.choice(mix), rng.choice(repos), rng)
        attrs = {"specversion": "1.0", "id": f"d-{i}", "source": github.event_source(doc),
                 "type": github.event_type(name, doc), "subject": github.event_subject(name, doc),
                 "datacontenttype": "application/json", "githubevent": name}  # fmt: skip
        event = events.make_event({k: v for k, v in attrs.items() if v is not None}, doc)
        out.append((f"events.github.{name}", event))
    return out


def measure(n: int) -> tuple[float, float, float]:
    sensors, repos = build_sensors(n)
    matcher = Matcher(sensors)
    stream = build_events(repos, EVENTS)
    for subject, event in stream[:500]:  # warm up
        matcher.match(subject, filters.EventView.of(event))
    matched = candidates = 0
    started = time.perf_counter()
    for subject, event in stream:
        view = filters.EventView.of(event)
        matched += len(matcher.match(subject, view))
    elapsed = time.perf_counter() - started
    for subject, event in stream[:2000]:
        candidates += len(matcher.candidates(subject, filters.EventView.of(event)))
    return elapsed / len(stream) * 1e6, matched / len(stream), candidates / 2000


def main() -> None:
    print(f"bench.match: {EVENTS} GitHub CloudEvents per size, in-process Matcher")
    print(f"{'sensors':>8} {'events/s':>10} {'us/event':>9} {'candidates/event':>17} "
          f"{'matches/event':>14}")  # fmt: skip
    results = {}
    for n in SIZES:
        us, matches, cands = measure(n)
        results[n] = us
        print(f"{n:>8} {1e6 / us:>10,.0f} {us:>9.1f} {cands:>17.2f} {matches:>14.2f}")
    ratio = results[SIZES[-1]] / results[SIZES[0]]
    rate = 1e6 / results[SIZES[-1]]
    print(f"us/event {SIZES[-1]} vs {SIZES[0]} sensors: {ratio:.2f}x (target <= 3x); "
          f"{rate:,.0f} events/s at {SIZES[-1]} (target >= 20,000)")


if __name__ == "__main__":
    main()
