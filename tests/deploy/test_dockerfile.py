"""The image recipe: hadolint finds nothing, and the properties a cluster relies on hold
(no Docker engine here, so the image itself is not built)."""

from __future__ import annotations

import re
import subprocess

from tests.deploy.conftest import ROOT, tool

DOCKERFILE = ROOT / "Dockerfile"
# ignores allowed in the Dockerfile, each explained next to it
ALLOWED_IGNORES = {"DL3008"}  # apt versions unpinned: Debian drops superseded versions


def _stages() -> list[list[str]]:
    """Instructions (continuation lines joined) grouped by FROM."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_hadolint_finds_nothing() -> None:
    proc = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")
    ignores = set(re.findall(r"hadolint ignore=([\w,]+)", DOCKERFILE.read_text()))
    assert {i for group in ignores for i in group.split(",")} <= ALLOWED_IGNORES


def test_base_image_is_pinned_by_exact_tag() -> None:
    (arg,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", arg), arg


def test_final_stage_is_small_and_unprivileged() -> None:
    stages = _stages()
    assert len(stages) >= 2, "multi-stage: build in one stage, run from another"
    final = "\n".join(stages[-1])
    assert re.search(r"^USER 10001(:10001)?$", final, re.MULTILINE), "numeric non-root user"
    assert 'ENTRYPOINT ["eventsvc"]' in final
    assert re.search(r"apt-get install .*\bgit\b", final), "git is needed for promotions"
    for build_tool in ("gcc", "build-essential", "python3-dev", "pip install"):
        assert build_tool not in final, f"{build_tool} belongs in the build stage"
    assert "rm -rf /var/lib/apt/lists/*" in final
    assert "COPY --from=build /opt/eventsvc /opt/eventsvc" in final


def test_image_sets_no_eventsvc_settings() -> None:
    """EVENTSVC_* variables beat the config file: an image default would hide the ConfigMap."""
    env = [line for stage in _stages() for line in stage if line.upper().startswith("ENV ")]
    assert not [line for line in env if "EVENTSVC_" in line]


def test_build_context_is_whitelisted() -> None:
    lines = [
        line for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]  # fmt: skip
    assert lines[0] == "*", "ignore everything, then allow what the image needs"
    assert {"!pyproject.toml", "!eventsvc/"} <= set(lines)
