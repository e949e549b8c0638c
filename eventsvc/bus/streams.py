"""The streams eventsvc owns, reconciled (created or updated) at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from eventsvc.config import Config

EVENTS = "EVENTS"
RESULTS = "RESULTS"
DLQ = "DLQ"


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age: float = 0.0  # seconds, 0 = unlimited
    max_bytes: int = -1
    max_msgs: int = -1
    duplicate_window: float = 120.0
    replicas: int = 1


def default_streams(config: Config) -> tuple[StreamSpec, ...]:
    return (
        StreamSpec(
            EVENTS,
            ("events.>",),
            max_age=config.events_max_age,
            max_bytes=config.events_max_bytes,
            max_msgs=config.events_max_msgs,
            duplicate_window=config.duplicate_window,
            replicas=config.stream_replicas,
        ),
        StreamSpec(RESULTS, ("results.>",), max_age=7 * 86400, replicas=config.stream_replicas),
        StreamSpec(DLQ, ("dlq.>",), max_age=30 * 86400, replicas=config.stream_replicas),
    )
