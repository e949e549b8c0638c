"""NATS subjects: every rule about them, and every subject eventsvc builds, in one place.

The streams and what they hold:

| stream  | subjects                    | written by                              |
|---------|-----------------------------|-----------------------------------------|
| EVENTS  | `events.<origin>.<kind>...` | gateways, other services                |
| RESULTS | `results.<sensor>.<trigger>`| a trigger run, one result each          |
| DLQ     | `dlq.<sensor>`              | a run that failed for good              |
| WORK    | `work.<sensor>`             | the dispatcher: one hand-off per match  |

A token built from free text (a sensor or trigger name, a GitHub event name, a
CloudEvent type) goes through `token`, so data never adds or removes a level.
"""

from __future__ import annotations

import re

EVENTS = "EVENTS"
RESULTS = "RESULTS"
DLQ = "DLQ"
WORK = "WORK"

ROOTS = {"events": EVENTS, "results": RESULTS}
"""The first token of a sensor's `eventSubject` → the stream it is read from."""

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


def token(text: str) -> str:
    """A NATS subject token from free text: no dots, spaces, wildcards or empties."""
    return _UNSAFE.sub("_", text) or "_"


def matches(pattern: str, subject: str) -> bool:
    """NATS wildcard match: `*` one token, `>` the rest (one token at least)."""
    pat, sub = pattern.split("."), subject.split(".")
    for i, tok in enumerate(pat):
        if tok == ">":
            return len(sub) > i
        if i >= len(sub) or (tok != "*" and tok != sub[i]):
            return False
    return len(pat) == len(sub)


def covers(wide: str, narrow: str) -> bool:
    """Every subject `narrow` matches, `wide` matches too."""
    pw, pn = wide.split("."), narrow.split(".")
    for i, tok in enumerate(pw):
        if tok == ">":
            return len(pn) > i
        if i >= len(pn) or pn[i] == ">" or (tok != "*" and tok != pn[i]):
            return False
    return len(pw) == len(pn)


def literal_prefix(pattern: str) -> tuple[str, bool]:
    """The text every subject `pattern` matches starts with, and whether the pattern is
    that text exactly (no wildcard): `events.github.>` → (`events.github.`, False)."""
    tokens = pattern.split(".")
    for i, tok in enumerate(tokens):
        if tok in ("*", ">"):
            return ".".join(tokens[:i]) + ".", False
    return pattern, True


def stream_of(subject: str) -> str:
    """The stream a sensor reads `subject` (a validated `eventSubject`) from."""
    return ROOTS[subject.split(".", 1)[0]]


def github(event: str) -> str:
    return f"events.github.{token(event)}"


def k8s(watch: str) -> str:
    """Where the watch gateway publishes the changes seen by Watch `watch`."""
    return f"events.k8s.{token(watch)}"


def result(sensor: str, trigger: str) -> str:
    return f"results.{token(sensor)}.{token(trigger)}"


def dlq(sensor: str) -> str:
    return f"dlq.{token(sensor)}"


def work(sensor: str) -> str:
    """The hand-off subject of one sensor (sensor names are RFC 1123 labels)."""
    return f"work.{token(sensor)}"
