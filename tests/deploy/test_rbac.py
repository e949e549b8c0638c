"""Least privilege, proven: the shipped RBAC grants every (group, resource, verb) the
triggers and the shipped watches use, where they use them, and nothing else.

The triggers' needs come from `eventsvc.triggers.rbac`, where the Kubernetes triggers
declare what they call; tests/triggers/test_rbac.py checks those declarations against
every request the triggers send to the test API server. The watch gateway's needs come
from the `kind: Watch` files shipped in sensors/: `list` and `watch` on each watched
resource, in its namespace (everywhere when the Watch names none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eventsvc import watches
from tests.deploy.conftest import OVERLAYS, Obj, find, overlay

SERVICE_ACCOUNT = "eventsvc-sensors"
ANY = "*"
SENSORS = Path(__file__).resolve().parents[2] / "sensors"
WATCH_VERBS = ("list", "watch")  # the gateway lists, then watches from that resourceVersion


@dataclass(frozen=True, slots=True)
class Permission:
    group: str
    resource: str
    verb: str
    namespace: str  # ANY: every namespace, and cluster-scoped objects


def _get(rule: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(rule, Mapping) and name in rule:
            return rule[name]
        if not isinstance(rule, Mapping) and hasattr(rule, name):
            return getattr(rule, name)
    return default


def _many(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def expand(rules: Iterable[Any]) -> set[Permission]:
    """Rules as dicts or objects, with singular or plural field names, as permissions."""
    out = set()
    for rule in rules:
        groups = _many(_get(rule, "apiGroups", "api_groups", "apiGroup", "api_group", "group"))
        resources = _many(_get(rule, "resources", "resource"))
        verbs = _many(_get(rule, "verbs", "verb"))
        namespace = _get(rule, "namespace", default=None) or ANY
        assert groups and resources and verbs, f"incomplete rule: {rule!r}"
        out |= {Permission(g, r, v, namespace) for g in groups for r in resources for v in verbs}
    return out


def watched(directory: Path = SENSORS) -> set[Permission]:
    """What the watch gateway needs for the Watch files shipped in `directory`."""
    found, problems = watches.load_watches([directory])
    assert not problems, problems
    return {Permission(w.group, w.resource, verb, w.namespace or ANY)
            for w in found for verb in WATCH_VERBS}  # fmt: skip


def required() -> tuple[str, set[Permission]]:
    """What the trigger kinds declare they call, next to the code that calls it, and what
    the shipped Watch files make the watch gateway call."""
    from eventsvc.triggers import rbac

    declared = expand(r for rules in rbac.RULES.values() for r in rules)
    return "eventsvc.triggers.rbac.RULES and the Watch files in sensors/", declared | watched()


def granted(objs: tuple[Obj, ...], account: str) -> set[Permission]:
    """What `account` may do, from the (Cluster)Roles its bindings reference."""
    roles: dict[tuple[str, ...], Obj] = {
        ("ClusterRole", r["metadata"]["name"]): r for r in find(objs, "ClusterRole")
    }
    roles |= {("Role", r["metadata"]["name"], r["metadata"]["namespace"]): r
              for r in find(objs, "Role")}  # fmt: skip
    out: set[Permission] = set()
    for binding in find(objs, "ClusterRoleBinding") + find(objs, "RoleBinding"):
        if not any(s["kind"] == "ServiceAccount" and s["name"] == account
                   for s in binding["subjects"]):  # fmt: skip
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace", ANY)
        key = (
            (ref["kind"], ref["name"])
            if ref["kind"] == "ClusterRole"
            else (ref["kind"], ref["name"], scope)
        )
        assert key in roles, f"{binding['kind']}/{binding['metadata']['name']} refers to {key}"
        out |= expand({**rule, "namespace": scope} for rule in roles[key]["rules"])
    return out


def missing(needed: set[Permission], have: set[Permission]) -> set[Permission]:
    def covered(p: Permission) -> bool:
        return any(
            (g.group, g.resource, g.verb) == (p.group, p.resource, p.verb)
            and g.namespace in (ANY, p.namespace)
            for g in have
        )

    return {p for p in needed if not covered(p)}


def _show(perms: Iterable[Permission]) -> str:
    return "\n".join(
        f"  {p.verb} {p.group or 'core'}/{p.resource} in {p.namespace}"
        for p in sorted(perms, key=lambda p: (p.group, p.resource, p.verb, p.namespace))
    )


@pytest.mark.parametrize("name", OVERLAYS)
def test_rbac_grants_everything_the_triggers_use(name: str) -> None:
    source, needed = required()
    lacking = missing(needed, granted(overlay(name), SERVICE_ACCOUNT))
    assert not lacking, (
        f"{source} needs what deploy/base/rbac.yaml does not grant:\n{_show(lacking)}"
    )


@pytest.mark.parametrize("name", OVERLAYS)
def test_rbac_grants_nothing_else(name: str) -> None:
    source, needed = required()
    have = granted(overlay(name), SERVICE_ACCOUNT)
    # a grant is justified only by a requirement of the same scope: a cluster-wide
    # grant for something needed in one namespace is too much
    extra = have - needed
    assert not extra, f"granted but not needed by {source}:\n{_show(extra)}"
    assert not any(ANY in (p.group, p.resource, p.verb) for p in have), "no wildcards"


@pytest.mark.parametrize("name", OVERLAYS)
def test_gateway_has_no_kubernetes_access(name: str) -> None:
    objs = overlay(name)
    assert granted(objs, "eventsvc-gateway") == set()
    (sa,) = [s for s in find(objs, "ServiceAccount") if s["metadata"]["name"] == "eventsvc-gateway"]
    assert sa["automountServiceAccountToken"] is False


def test_the_check_catches_an_ungranted_verb() -> None:
    """A trigger that starts deleting Workflows' pods would fail the test above."""
    have = granted(overlay("production"), SERVICE_ACCOUNT)
    needed = {Permission("", "pods", "delete", "argo"), Permission("argoproj.io", "applications",
                                                                  "get", "team-a")}  # fmt: skip
    assert missing(needed, have) == needed
    assert not missing({Permission("argoproj.io", "applications", "get", "argocd")}, have)


def test_the_shipped_watches_need_list_and_watch_on_applications_and_workflows() -> None:
    assert watched() == {Permission("argoproj.io", resource, verb, namespace)
                         for resource, namespace in (("applications", "argocd"),
                                                     ("workflows", "argo"))
                         for verb in WATCH_VERBS}  # fmt: skip


def test_workflows_are_watched_in_argo_only() -> None:
    """list/watch on workflows come from a Role in `argo`, not from the ClusterRole."""
    have = granted(overlay("production"), SERVICE_ACCOUNT)
    watching = {p for p in have if p.resource == "workflows" and p.verb in WATCH_VERBS}
    assert watching == {Permission("argoproj.io", "workflows", v, "argo") for v in WATCH_VERBS}
    assert missing({Permission("argoproj.io", "workflows", "watch", "team-a")}, have)


def test_a_watch_without_a_namespace_needs_the_verbs_everywhere(tmp_path: Path) -> None:
    (tmp_path / "w.yaml").write_text(
        "apiVersion: eventsvc.dev/v1alpha1\nkind: Watch\nmetadata: {name: wf}\n"
        "spec: {group: argoproj.io, version: v1alpha1, resource: workflows, "
        "fields: [status.phase]}\n"
    )
    needed = watched(tmp_path)
    assert needed == {Permission("argoproj.io", "workflows", v, ANY) for v in WATCH_VERBS}
    # the shipped RBAC does not grant it: such a Watch would fail the test above
    assert missing(needed, granted(overlay("production"), SERVICE_ACCOUNT)) == needed
