"""Claim checks: a message body larger than the NATS server takes (`max_payload`, 1 MB by
default; GitHub sends webhooks up to 25 MB) is stored in the JetStream object store bucket
`eventsvc-bodies`, and the message carries an empty body and the header
`Eventsvc-Claim: eventsvc-bodies/<sha256 of the body>`. Every other header (the CloudEvent's
`ce-*` attributes, `content-type`, `Nats-Msg-Id`) stays on the message, so routing needs
no body; `Bus.body_of` reads the body back. The bucket keeps bodies as long as the EVENTS
stream keeps events (`streams.events.maxAge`). A consumer outside eventsvc reads a claimed
body from that object store by the name after the slash.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

BUCKET = "eventsvc-bodies"
HEADER = "Eventsvc-Claim"
ROOM = 256  # what the claim header and the server's own accounting may add
_NAME = re.compile(r"[0-9a-f]{64}")


def name_of(body: bytes) -> str:
    """Content-addressed: the same body stored twice is one object."""
    return hashlib.sha256(body).hexdigest()


def reference(name: str) -> str:
    return f"{BUCKET}/{name}"


def parse(ref: str) -> str | None:
    """The object name in a claim header; None when it is not one of ours."""
    bucket, _, name = ref.partition("/")
    return name if bucket == BUCKET and _NAME.fullmatch(name) else None


def header_bytes(headers: Mapping[str, str]) -> int:
    """The size of a NATS header block holding `headers` (what counts toward max_payload)."""
    return 12 + sum(len(k) + len(v) + 4 for k, v in headers.items())
