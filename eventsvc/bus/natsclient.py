"""nats-py's client, kept connected and made cheaper to publish through: the one module
that uses nats-py's internals (the pull fast path in client.py aside).

**Kept connected.** nats-server answers a protocol violation (a subject past its control
line, a message past `max_payload`, a slow consumer, an authorization change) with `-ERR`
and closes the connection. nats-py then closes the *client* for good: every later publish
fails and nothing reconnects, so one bad message would cut the service off its bus until
restarted. Here such an error is treated like a lost connection: logged, and the client
reconnects (with its subscriptions), as it does when the socket drops. During the first
connect the error still ends `connect()` (wrong credentials must fail start-up), and a
permissions violation, which the server does not close the connection for, stays an
error callback.

**Publishing.** `publish_fast` is `JetStreamContext.publish` on the client's own request
inbox, for less CPU per message (see its docstring); `encode_headers` writes a header block
exactly as nats-py does.

The contract is tested against a real nats-server (tests/bus/test_client.py): if a nats-py
release renames these internals, `fast_publish_supported` turns false and nats-py's own
path is used, and the reconnect test fails rather than the service going deaf.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping

import nats.errors
import nats.js.errors
from nats import errors
from nats.aio.client import Client as _NatsPyClient
from nats.aio.msg import Msg
from nats.js import api
from nats.protocol.command import hpub_cmd
from nats.protocol.parser import PERMISSIONS_ERR

from eventsvc import logs

log = logs.get("eventsvc.bus")

_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SUBJECT = re.compile(r"[^\s.]+(\.[^\s.]+)*")
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
# what the publish fast path uses of the client; without any of it, nats-py's own path
_REQUEST_INTERNALS = (
    "_resp_sub_prefix", "_resp_map", "_init_request_sub", "_nuid", "_send_command",
    "_flush_queue", "_flush_pending", "stats",
)  # fmt: skip


def encode_headers(headers: Mapping[str, str], known: set[str]) -> bytes:
    """A NATS header block exactly as nats-py writes one (keys checked, values trimmed,
    CR/LF made spaces, empty keys skipped), at a fraction of its CPU: keys already seen
    valid (`known`) are not checked again, and the block is encoded once."""
    parts = ["NATS/1.0\r\n"]
    for key, value in headers.items():
        if key not in known:
            key = key.strip()
            if not key:
                continue
            if not _HEADER_KEY.fullmatch(key):
                raise nats.errors.BadHeaderError(key)
            if len(known) < 4096:
                known.add(key)
        if "\r" in value or "\n" in value:
            value = value.translate(_NEWLINES)
        parts.append(f"{key}: {value.strip()}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode()


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(TimeoutError("no JetStream acknowledgement in time"))


class NatsClient(_NatsPyClient):
    def __init__(self) -> None:
        super().__init__()
        self._header_keys: set[str] = set()
        self._subjects: set[str] = set()

    async def _process_err(self, err_msg: str) -> None:
        if not self.is_connected or PERMISSIONS_ERR in err_msg:
            await super()._process_err(err_msg)
            return
        reason = err_msg.strip().strip("'")
        log.warning("nats server closed the connection; reconnecting", error=reason[:200])
        await self._process_op_err(errors.Error(f"nats: {reason}"))

    @property
    def fast_publish_supported(self) -> bool:
        return all(hasattr(self, a) for a in _REQUEST_INTERNALS)

    async def publish_fast(
        self, subject: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> tuple[str, int, bool]:
        """`JetStreamContext.publish` on the client's own request inbox, for less CPU per
        message: the header block encoded in one go (nats-py checks and encodes each header
        on every message), no random bytes per request, the ack parsed for what we use.
        The same semantics: the message is stored when this returns, as (stream, sequence,
        duplicate); timeouts, no responders and JetStream errors raise what nats-py's path
        raises."""
        if subject not in self._subjects:
            if not _SUBJECT.fullmatch(subject):
                raise nats.errors.BadSubjectError
            if len(self._subjects) < 4096:
                self._subjects.add(subject)
        if self.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        if len(body) > self.max_payload:
            raise nats.errors.MaxPayloadError
        if not self._resp_sub_prefix:
            await self._init_request_sub()
        assert self._resp_sub_prefix is not None
        token = self._nuid.next()
        key = token.decode()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._resp_map[key] = future
        # a bare timer rather than asyncio.timeout/wait_for: the same expiry for less work
        timer = loop.call_at(loop.time() + timeout, _expire, future)
        try:
            hdr = encode_headers(headers, self._header_keys)
            reply = (self._resp_sub_prefix + token).decode()
            await self._send_command(hpub_cmd(subject, reply, hdr, body))
            self.stats["out_msgs"] += 1
            self.stats["out_bytes"] += len(body)
            if self._flush_queue is not None and self._flush_queue.empty():
                await self._flush_pending()
            msg = await future
        finally:
            timer.cancel()
            self._resp_map.pop(key, None)
        if msg.headers and msg.headers.get(api.Header.STATUS) == "503":
            raise nats.js.errors.NoStreamResponseError
        resp = json.loads(msg.data)
        if "error" in resp:
            raise nats.js.errors.APIError.from_error(resp["error"])
        return str(resp["stream"]), int(resp["seq"]), bool(resp.get("duplicate"))
