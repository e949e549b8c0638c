"""The hand-off from the dispatcher to one sensor: a copy of the event on `work.<sensor>`
(stream WORK), with where it came from and what it matched in `Eventsvc-*` headers.

`Nats-Msg-Id` is `<stream>:<stream sequence>:<sensor>`, so an event the dispatcher reads
again (its ack was lost, or it crashed between hand-off and ack) is handed off once.
An event too large to copy with these headers under the server's `max_payload` is handed
off by reference (`Eventsvc-Ref`): the worker reads it from its stream by sequence. A body
stored apart (`bus.claims`) is not copied at all: the claim header travels with the copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from eventsvc import subjects
from eventsvc.bus import claims

STREAM = "Eventsvc-Stream"
SEQ = "Eventsvc-Seq"
SUBJECT = "Eventsvc-Subject"
DEPS = "Eventsvc-Deps"
REV = "Eventsvc-Rev"
REF = "Eventsvc-Ref"
_OURS = ("eventsvc-", "nats-")  # never copied from the event: ours to set
_OVERHEAD = 16  # "NATS/1.0\r\n" and the blank line that ends a header block


@dataclass(frozen=True, slots=True)
class HandOff:
    """One matched event for one sensor."""

    sensor: str
    stream: str  # where the event is stored: EVENTS or RESULTS
    seq: int  # its sequence there: the order and identity of the event
    subject: str  # the subject it was published on
    deps: frozenset[str]  # the dependencies it satisfied ...
    rev: str  # ... under this revision of the sensor
    ref: bool = False  # the body is not copied: read it from `stream` at `seq`

    @property
    def msg_id(self) -> str:
        return f"{self.stream}:{self.seq}:{self.sensor}"

    @property
    def work_subject(self) -> str:
        return subjects.work(self.sensor)

    def headers(self) -> dict[str, str]:
        out = {STREAM: self.stream, SEQ: str(self.seq), SUBJECT: self.subject,
               DEPS: ",".join(sorted(self.deps)), REV: self.rev}  # fmt: skip
        if self.ref:
            out[REF] = "1"
        return out

    def message(
        self, headers: Mapping[str, str], body: bytes, max_payload: int
    ) -> tuple[dict[str, str], bytes, HandOff]:
        """The work message: the event's own headers and body plus ours, or a reference when
        the copy would not fit in `max_payload`."""
        copied = {k: v for k, v in headers.items()
                  if k == claims.HEADER or not k.lower().startswith(_OURS)}  # fmt: skip
        out = {**copied, **self.headers()}
        size = len(body) + _OVERHEAD + sum(len(k) + len(v) + 4 for k, v in out.items())
        if size + 64 <= max_payload:  # 64: the Nats-Msg-Id header
            return out, body, self
        ref = HandOff(self.sensor, self.stream, self.seq, self.subject, self.deps, self.rev, True)
        return ref.headers(), b"", ref


def parse(sensor: str, headers: Mapping[str, str]) -> HandOff | None:
    """The hand-off a work message carries; None when its headers are not ours."""
    try:
        deps = headers[DEPS]
        return HandOff(sensor, headers[STREAM], int(headers[SEQ]), headers[SUBJECT],
                       frozenset(d for d in deps.split(",") if d), headers[REV],
                       headers.get(REF) == "1")  # fmt: skip
    except (KeyError, ValueError):
        return None
