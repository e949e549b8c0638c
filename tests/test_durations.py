from __future__ import annotations

import pytest

from eventsvc.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2), ("1h30m", 5400), ("24h", 86400), ("2d", 172800), (3, 3.0)],
)
def test_parse(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "1h 30m", "-1s", True])
def test_refused(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)  # type: ignore[arg-type]
