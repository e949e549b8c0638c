"""Third-party clients stay behind the module that owns them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "eventsvc"
# client library -> where it may be imported (path prefixes inside the package)
OWNERS = {
    "nats": ("bus/",),
    "kubernetes": ("triggers/kube", "triggers/k8s", "triggers/argo", "triggers/environment"),
}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_clients_are_imported_only_by_their_owners() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        for lib, owners in OWNERS.items():
            if lib in imported_roots(path) and not rel.startswith(owners):
                offenders.append(f"{rel} imports {lib}")
    assert offenders == []
