"""Where an event may come from, and the lint warning for sensors that act on what anyone
could have sent.

The subject is the trust boundary: `events.github.>` is published only by the GitHub
gateway, `events.cron.>` only by the cron gateway, `events.k8s.>` only by the watch
gateway, `events.http.>` only by `POST /events`; other services publish under subtrees
of their own (`events.ci.>`, ...), with NATS permissions that say so
(`deploy/nats/nats-server.conf`). A dependency whose filters claim an origin (`type:
com.github.push`) but whose `eventSubject` is wider than that origin's subtree also takes
an event of that type forged by any publisher. For a sensor that only logs this is
harmless; for one whose trigger acts on the cluster or on GitHub it is a hole, so lint
warns and names the subject to use.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from eventsvc import subjects, templates, yamldoc
from eventsvc.errors import SpecProblem
from eventsvc.sensors import conditions, params

ACTING = frozenset({"k8s", "argoWorkflow", "environment", "promotion", "githubStatus",
                    "githubComment"})  # fmt: skip
"""Trigger kinds with effects on the cluster or on GitHub."""

ORIGINS: tuple[tuple[str, str, str], ...] = (
    ("type", "com.github.", "events.github."),
    ("source", "https://github.com/", "events.github."),
    ("type", "dev.eventsvc.schedule.", "events.cron."),
    ("type", "dev.eventsvc.k8s.", "events.k8s."),
)
"""(attribute, value prefix it claims, the only subtree such events are published on)."""


def check(doc: yamldoc.Document) -> list[SpecProblem]:
    """Warnings for dependencies of acting triggers whose subject is wider than the origin
    their context filters claim. `doc` has passed the schema."""
    spec = doc.value["spec"]
    deps = {d["name"]: (i, d) for i, d in enumerate(spec["dependencies"])}
    acting: set[str] = set()
    for item in spec["triggers"]:
        tpl = item["template"]
        if any(kind in tpl for kind in ACTING):
            acting |= _used(tpl, frozenset(deps))
    out: list[SpecProblem] = []
    for name in sorted(acting):
        index, dep = deps[name]
        subject = dep.get("eventSubject", "events.>")
        root = _claimed_root(dep.get("filters", {}).get("context"))
        if root is None or subjects.literal_prefix(subject)[0].startswith(root):
            continue
        path: yamldoc.FieldPath = ("spec", "dependencies", index)
        if "eventSubject" in dep:
            path = (*path, "eventSubject")
        out.append(_warning(doc.problem(path, (
            f"warning: dependency {name!r} filters on events from {root}> but reads "
            f"{subject!r}, where any publisher may send an event of that type; its triggers act "
            f"on the cluster or GitHub: set eventSubject under {root} (e.g. {root}push)"))))
    return out


_AUTHORITY_CLOSED = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*[/?#]")

DESTINATIONS = {
    ("http", "url"): "the host of http.url",
    ("promotion", "repo"): "the repository of promotion.repo",
}
"""Fields that say where a trigger sends its request (and, for promotion, its credentials)."""


def destinations(doc: yamldoc.Document) -> list[SpecProblem]:
    """Warnings for triggers whose destination (an http URL's scheme or host, a promotion's
    repository) is rendered from event data: whoever sends a matching event chooses where the
    request goes. Values in an URL's path or query are encoded and stay values."""
    out: list[SpecProblem] = []
    for index, item in enumerate(doc.value["spec"]["triggers"]):
        tpl = item["template"]
        for (kind, field), what in DESTINATIONS.items():
            section = tpl.get(kind)
            if not isinstance(section, Mapping):
                continue
            path: yamldoc.FieldPath = ("spec", "triggers", index, "template", kind, field)
            value = section.get(field)
            if isinstance(value, str) and _from_event(value, kind == "http"):
                out.append(_warning(doc.problem(path, _destination_message(what, field))))
            for p, param in enumerate(item.get("parameters") or []):
                if isinstance(param, Mapping) and param.get("dest") == field and isinstance(
                    param.get("src"), Mapping
                ) and any(k in param["src"] for k in params.SOURCES):
                    where: yamldoc.FieldPath = ("spec", "triggers", index, "parameters", p,
                                                 "dest")  # fmt: skip
                    out.append(_warning(doc.problem(where, _destination_message(what, field))))
    return out


def _from_event(text: str, url: bool) -> bool:
    pieces = templates.split_template(text)
    first = next((i for i, piece in enumerate(pieces) if isinstance(piece, tuple)), None)
    if first is None:
        return False
    if not url:
        return True
    literal = "".join(p for p in pieces[:first] if isinstance(p, str))
    return _AUTHORITY_CLOSED.match(literal) is None


def _destination_message(what: str, field: str) -> str:
    return (f"warning: {what} comes from event data: whoever sends a matching event chooses "
            f"where this trigger's request goes; write the destination literally and put "
            f"event values after it (in the path or query, where they are encoded), or set "
            f"{field} from a filtered, trusted dependency only")  # fmt: skip


def _warning(problem: SpecProblem) -> SpecProblem:
    return SpecProblem(problem.file, problem.line, problem.field, problem.message, "warning")


def _used(tpl: Mapping[str, Any], declared: frozenset[str]) -> frozenset[str]:
    if isinstance(tpl.get("conditions"), str):
        try:
            return conditions.parse(tpl["conditions"])[1] & declared
        except conditions.ConditionSyntaxError:
            return declared
    return declared


def _claimed_root(context: Any) -> str | None:
    """The subtree the context filters' claimed origin is published on, if they claim one
    that every matching event must have (a plain or `exact`/`prefix` value, not in `any`)."""
    if not isinstance(context, Mapping):
        return None
    for attr, value in _required(context):
        for want, prefix, root in ORIGINS:
            if attr == want and value.startswith(prefix):
                return root
    return None


def _required(context: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for key, value in context.items():
        if key == "all" and isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping):
                    yield from _required(item)
        elif isinstance(value, str):
            yield key, value
        elif isinstance(value, Mapping):
            for op in ("exact", "prefix"):
                if isinstance(value.get(op), str):
                    yield key, value[op]
