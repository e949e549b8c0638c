"""Third-party clients stay behind the module that owns them."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "eventsvc"
# client library -> where it may be imported (path prefixes inside the package)
OWNERS = {
    "nats": ("bus/",),
    "kubernetes": ("kube/",),
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


def _eventsvc_parts(path: Path) -> set[str]:
    """The first names under `eventsvc.` that a module imports (`bus`, `sensors`, ...)."""
    parts: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = node.module.split(".")
            if names[0] != "eventsvc":
                continue
            if len(names) > 1:
                parts.add(names[1])
            else:
                parts |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == "eventsvc" and len(names) > 1:
                    parts.add(names[1])
    return parts


# Layers point one way: spec <- bus/gateways/sensors/triggers <- runtime <- cli. What a part
# may not import:
FORBIDDEN = {
    "bus/": {"sensors", "triggers", "gateways", "github", "loader", "runtime", "cli"},
    "github/": {"sensors", "gateways", "triggers", "loader", "runtime", "cli"},
    "triggers/": {"sensors", "gateways", "loader", "runtime", "cli"},
    "sensors/": {"gateways", "runtime", "cli"},
    "gateways/": {"sensors", "triggers", "runtime", "cli"},
    "kube/": {"sensors", "triggers", "gateways", "github", "bus", "loader", "runtime", "cli"},
}
# Known exceptions, each with the change that removes it. None left: a new one needs a reason.
KNOWN: dict[tuple[str, str], str] = {}


def test_layers_point_one_way() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        for prefix, forbidden in FORBIDDEN.items():
            if not rel.startswith(prefix):
                continue
            for part in sorted(_eventsvc_parts(path) & forbidden):
                if (rel, part) not in KNOWN:
                    offenders.append(f"{rel} imports eventsvc.{part}")
    assert offenders == []
    stale = [k for k in KNOWN if k[1] not in _eventsvc_parts(PACKAGE / k[0])]
    assert stale == [], "an exception no longer needed: remove it from KNOWN"
