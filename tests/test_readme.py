"""The README's first example is what a new user runs: keep it true."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_first_sensor_shown_is_the_shipped_file() -> None:
    shown = re.search(r"```yaml\n(apiVersion.*?)```", README, re.S)
    assert shown is not None
    shipped = (REPO / "sensors" / "pr-main.yaml").read_text()
    assert shipped.endswith(shown.group(1))


def test_the_curl_payload_fires_the_first_sensor(tmp_path: Path) -> None:
    body = re.search(r"^BODY='(.*)'$", README, re.M)
    assert body is not None
    event = tmp_path / "pr.json"
    event.write_text(body.group(1))
    result = subprocess.run(
        [sys.executable, "-m", "eventsvc", "test", "sensors/pr-main.yaml", "--event", str(event),
         "--github-event", "pull_request", "--expect-fire", "log-pr"],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pull request #7 to main: Add checkout, by dev" in result.stdout
    assert "pull request #7 to main: Add checkout, by dev" in README
