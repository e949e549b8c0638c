"""Prometheus metrics, named `eventsvc_*` with units in the name.

prometheus-client is the reference implementation of the exposition format;
one module-level set of metrics serves every part of the process.
"""

from __future__ import annotations

import functools

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

EVENTS_RECEIVED = Counter(
    "eventsvc_events_received_total", "Events received by a gateway.", ["gateway"]
)
EVENTS_REJECTED = Counter(
    "eventsvc_events_rejected_total", "Requests refused by a gateway.", ["gateway", "reason"]
)
EVENTS_PUBLISHED = Counter(
    "eventsvc_events_published_total",
    "Events stored by JetStream (duplicates counted apart).",
    ["gateway", "duplicate"],
)
PUBLISH_SECONDS = Histogram(
    "eventsvc_publish_duration_seconds",
    "Time from publish to JetStream acknowledgement.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS_MATCHED = Counter(
    "eventsvc_sensor_events_matched_total", "Events that matched a sensor.", ["sensor"]
)
EVENTS_DISPATCHED = Counter(
    "eventsvc_dispatch_events_total", "Events the dispatcher read and routed.", ["stream"]
)
DISPATCH_PENDING = Gauge(
    "eventsvc_dispatch_pending",
    "Events stored and not yet routed by the dispatcher, as last seen by this replica.",
    ["stream"],
)
SENSOR_PENDING = Gauge(
    "eventsvc_sensor_pending",
    "Events handed off to a sensor and not yet finished, as last seen by this replica.",
    ["sensor"],
)
TRIGGER_RUNS = Counter(
    "eventsvc_trigger_runs_total", "Trigger runs by outcome.", ["sensor", "trigger", "outcome"]
)
CRON_LATENESS_SECONDS = Histogram(
    "eventsvc_cron_tick_lateness_seconds",
    "Cron ticks: time from the scheduled instant to publishing (jitter included).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300),
)
TRIGGER_SECONDS = Histogram(
    "eventsvc_trigger_duration_seconds",
    "Trigger run duration.",
    ["sensor", "trigger"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60),
)


@functools.cache
def published(gateway: str, duplicate: bool) -> Counter:
    """The labelled child, looked up once: `.labels()` costs more than `.inc()` on a hot path."""
    return EVENTS_PUBLISHED.labels(gateway, str(duplicate).lower())


@functools.cache
def matched(sensor: str) -> Counter:
    return EVENTS_MATCHED.labels(sensor)


@functools.cache
def received(gateway: str) -> Counter:
    return EVENTS_RECEIVED.labels(gateway)


def exposition() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
