"""The minimal RBAC rules the Kubernetes trigger kinds need, as data.

The deploy manifests ship these (`manifests()`), the README prints them, and a
test checks them against every call the triggers make. Discovery (`/api`,
`/apis/...`) is allowed to every authenticated user by the default
`system:discovery` ClusterRole, so it needs no rule here.

Server-side apply of an object that does not exist yet is authorised as
`patch` AND `create`, so every applied resource lists both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ARGOCD_NAMESPACE = "argocd"  # where the environment trigger's Applications live (configurable)


@dataclass(frozen=True, slots=True)
class Rule:
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    namespace: str | None = None  # None: a ClusterRole rule; else a Role in that namespace

    def as_dict(self) -> dict[str, list[str]]:
        return {"apiGroups": list(self.api_groups), "resources": list(self.resources),
                "verbs": list(self.verbs)}  # fmt: skip

    def allows(self, verb: str, group: str, resource: str, namespace: str | None) -> bool:
        in_scope = self.namespace is None or self.namespace == namespace
        return (in_scope and group in self.api_groups and resource in self.resources
                and verb in self.verbs)  # fmt: skip


RULES: dict[str, tuple[Rule, ...]] = {
    # per PR: Namespace (cluster-scoped) + optional quota/limits inside it, and the
    # Application in the Argo CD namespace; teardown reads, finalises and deletes them
    "environment": (
        Rule(("",), ("namespaces",), ("get", "list", "create", "patch", "delete")),
        Rule(("",), ("resourcequotas", "limitranges"), ("create", "patch")),
        Rule(
            ("argoproj.io",),
            ("applications",),
            ("get", "list", "create", "patch", "update", "delete"),
            ARGOCD_NAMESPACE,
        ),
    ),
    # submit (create; get to recognise its own Workflow after a 409; get for `wait`),
    # suspend / resume / terminate / stop (patch); a Role in each workflow namespace
    "argoWorkflow": (
        Rule(("argoproj.io",), ("workflows",), ("get", "create", "patch")),
    ),
}

# `k8s` acts on whatever the sensor names; these verbs per operation, for that resource
K8S_VERBS: dict[str, tuple[str, ...]] = {
    "create": ("create", "get", "list"),  # get: a 409 is checked; list: generateName lookup
    "apply": ("create", "patch"),
    "patch": ("patch",),
    "delete": ("delete",),
    "policy": ("get",),
}


def k8s_rule(group: str, resource: str, operations: list[str], namespace: str | None = None
             ) -> Rule:  # fmt: skip
    verbs = sorted({v for op in operations for v in K8S_VERBS[op]})
    return Rule((group,), (resource,), tuple(verbs), namespace)


def manifests(
    service_account: str = "eventsvc", namespace: str = "eventsvc"
) -> list[dict[str, Any]]:
    """ClusterRole + Role objects (and their bindings) for `environment` and `argoWorkflow`."""
    subject = {"kind": "ServiceAccount", "name": service_account, "namespace": namespace}
    cluster_rules = [r.as_dict() for rules in RULES.values() for r in rules if r.namespace is None]
    out: list[dict[str, Any]] = [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "eventsvc-triggers"}, "rules": cluster_rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "eventsvc-triggers"}, "subjects": [subject],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "eventsvc-triggers"}},
    ]  # fmt: skip
    by_ns: dict[str, list[dict[str, list[str]]]] = {}
    for rules in RULES.values():
        for r in rules:
            if r.namespace is not None:
                by_ns.setdefault(r.namespace, []).append(r.as_dict())
    for ns, rules_ in sorted(by_ns.items()):
        meta = {"name": "eventsvc-triggers", "namespace": ns}
        out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": meta, "rules": rules_})  # fmt: skip
        out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": meta, "subjects": [subject],
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                "name": "eventsvc-triggers"}})  # fmt: skip
    return out
