"""What a GitHub (or other) CloudEvent says about a repository, commit and pull request.

Feedback and promotion triggers take repo, sha and PR number from their spec, and
fall back to these when the spec leaves them out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from eventsvc import events, paths, templates
from eventsvc.events import CloudEvent
from eventsvc.github.client import parse_repo

MISSING = paths.MISSING


lookup = paths.lookup  # `data.release.tag_name`, `data.commits.0.id`; MISSING when absent


def event_value(event: CloudEvent, path: str) -> Any:
    """`path` looked up in the event's JSON form: attributes at the top, payload under `data`."""
    return lookup(events.to_dict(event), path)


def _data(event: CloudEvent) -> Mapping[str, Any]:
    data = event.get_data()
    return data if isinstance(data, Mapping) else {}


def repo_of(event: CloudEvent) -> str | None:
    full = lookup(_data(event), "repository.full_name")
    if isinstance(full, str) and "/" in full:
        return full
    source = event.get_source()
    return parse_repo(source) if source and "github" in source else None


def sha_of(event: CloudEvent) -> str | None:
    data = _data(event)
    for path in ("pull_request.head.sha", "check_suite.head_sha", "check_run.head_sha",
                 "workflow_run.head_sha", "deployment.sha", "after", "sha"):  # fmt: skip
        value = lookup(data, path)
        if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{40}", value):
            return value
    return None


def pr_number_of(event: CloudEvent) -> int | None:
    data = _data(event)
    for path in ("pull_request.number", "number"):
        value = lookup(data, path)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    issue = data.get("issue")
    if isinstance(issue, Mapping) and "pull_request" in issue and isinstance(issue.get("number"),
                                                                             int):  # fmt: skip
        return int(issue["number"])
    subject = event.get_subject()
    if subject and subject.isdigit() and ".pull_request" in event.get_type():
        return int(subject)
    return None


def render(template: str, values: Mapping[str, Any], event: CloudEvent | None = None) -> str:
    """`{{ expr }}` over `values` (the trigger's own names: `{{ sensor }}`, `{{ values }}`)
    evaluated; other expressions left as written. The old spelling, `{name}` of `values`
    and `{data.a.b}` (a dotted path into the event's JSON form, when `event` is given),
    is still rendered for one release. One pass: nothing put in is rendered again."""
    doc = events.to_dict(event) if event is not None else None

    def old(name: str) -> str | None:
        if name in values:
            return str(values[name])
        if doc is not None and "." in name:
            value = lookup(doc, name)
            if value is not MISSING and value is not None:
                return str(value)
        return None

    return templates.render(template, values, old)


def event_fields(event: CloudEvent) -> dict[str, str]:
    """Placeholders every feedback and promotion template may use."""
    return {
        "event_id": event.get_id(),
        "event_type": event.get_type(),
        "event_source": event.get_source(),
        "event_subject": event.get_subject() or "",
    }
