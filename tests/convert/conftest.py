"""`cli.main` configures structlog with the captured stderr of the moment: every test here
puts the previous configuration back, so later tests do not log to a closed file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def keep_log_config() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
