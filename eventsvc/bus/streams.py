"""The streams eventsvc owns, reconciled (created or updated) at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from eventsvc.config import Config
from eventsvc.subjects import DLQ, EVENTS, RESULTS, WORK

__all__ = ["DLQ", "EVENTS", "RESULTS", "WORK", "StreamSpec", "default_streams"]

MAX_SENSORS = 4_000
"""WORK holds a consumer per sensor: the stream says how many it may have (nats-server
2.15 allows 1000 per stream unless the stream sets its own limit)."""
WORK_DUPLICATE_WINDOW = 300.0
"""A hand-off repeated within this window (a dispatcher's ack lost, its event redelivered
after the dispatch ack wait) is dropped by JetStream; a later repeat is recognised by the
run ledger. Short, because the server keeps every message id of the window in memory."""


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age: float = 0.0  # seconds, 0 = unlimited
    max_bytes: int = -1
    max_msgs: int = -1
    duplicate_window: float = 120.0
    replicas: int = 1
    work_queue: bool = False  # a message is removed once acknowledged
    max_consumers: int = 0  # 0: the server's default (1000 per stream since nats-server 2.15)


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
        StreamSpec(
            WORK,
            ("work.>",),
            max_age=config.events_max_age,
            duplicate_window=WORK_DUPLICATE_WINDOW,
            replicas=config.stream_replicas,
            work_queue=True,
            max_consumers=MAX_SENSORS,
        ),
    )
