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

from collections.abc import Iterator, Mapping
from typing import Any

from eventsvc import specfile, subjects
from eventsvc.errors import SpecProblem
from eventsvc.sensors import conditions

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


def check(doc: specfile.Document) -> list[SpecProblem]:
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
        path: specfile.FieldPath = ("spec", "dependencies", index)
        if "eventSubject" in dep:
            path = (*path, "eventSubject")
        out.append(_warning(doc.problem(path, (
            f"warning: dependency {name!r} filters on events from {root}> but reads "
            f"{subject!r}, where any publisher may send an event of that type; its triggers act "
            f"on the cluster or GitHub: set eventSubject under {root} (e.g. {root}push)"))))
    return out


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
