"""NATS connection, stream reconciliation, publishing, pull consumers and KV.

Every nats-py exception is turned into `BusError` / `BusUnavailableError` here,
so no other part of eventsvc needs to know the client library.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from eventsvc import logs
from eventsvc.bus import claims
from eventsvc.bus.natsclient import NatsClient
from eventsvc.bus.streams import StreamSpec
from eventsvc.config import Config
from eventsvc.errors import BusError, BusUnavailableError, ClaimGoneError

log = logs.get("eventsvc.bus")
T = TypeVar("T")
_UNAVAILABLE = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.NoServersError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    TimeoutError,
    ConnectionError,
    OSError,
)


async def _guard(what: str, op: Awaitable[T]) -> T:
    """Await `op`, translating client exceptions into bus errors that say what failed."""
    try:
        return await op
    except _UNAVAILABLE as e:
        raise BusUnavailableError(f"{what}: NATS unavailable ({type(e).__name__}: {e})") from e
    except nats.errors.Error as e:
        raise BusError(f"{what}: {type(e).__name__}: {e}") from e


@dataclass(frozen=True, slots=True)
class StreamState:
    messages: int
    first_seq: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class ConsumerState:
    name: str
    ack_floor: int  # every stream sequence up to this one is acknowledged
    pending: int  # not yet delivered plus delivered and not acknowledged


START_NEW = "new"
START_ALL = "all"
StartAt = str | int
"""Where a consumer created now starts: `START_NEW`, `START_ALL` or a stream sequence."""


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A durable pull consumer with explicit acks."""

    stream: str
    durable: str
    subjects: tuple[str, ...]
    ack_wait: float
    max_deliver: int
    max_ack_pending: int = 1000
    start: StartAt = START_NEW


@dataclass(frozen=True, slots=True)
class PublishAck:
    stream: str
    seq: int
    duplicate: bool


class Delivery:
    """One message handed out by a pull consumer."""

    __slots__ = ("_msg",)

    def __init__(self, msg: Msg) -> None:
        self._msg = msg

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def headers(self) -> Mapping[str, str]:
        return self._msg.headers or {}

    @property
    def data(self) -> bytes:
        return self._msg.data

    @property
    def num_delivered(self) -> int:
        return int(self._msg.metadata.num_delivered or 1)

    @property
    def stream_seq(self) -> int:
        return int(self._msg.metadata.sequence.stream)

    @property
    def stored_at(self) -> datetime | None:
        """When the stream stored the message."""
        return self._msg.metadata.timestamp

    @property
    def num_pending(self) -> int:
        """Messages the consumer still had to deliver when it handed out this one."""
        return int(self._msg.metadata.num_pending or 0)

    async def ack(self) -> None:
        await _guard("ack", self._msg.ack_sync(timeout=5))

    async def ack_nowait(self) -> None:
        """Acknowledge without waiting for the server to confirm: for a message whose
        redelivery (should the ack be lost) is harmless, e.g. one a consumer ignores."""
        await _guard("ack", self._msg.ack())

    async def nak(self, delay: float | None = None) -> None:
        await _guard("nak", self._msg.nak(delay=delay))

    async def term(self) -> None:
        await _guard("term", self._msg.term())

    async def in_progress(self) -> None:
        await _guard("in_progress", self._msg.in_progress())


_PULL_INTERNALS = ("_nc", "_sub", "_nms", "_deliver")
_PULL_DONE = {"404", "408", "409"}  # this pull request delivers nothing more
_RECHECK = 2.0  # a waiting fetch looks for a reconnect or a silent server this often
_HEARTBEAT = 5.0  # a long standing request asks the server for a sign of life this often


class PullConsumer:
    """A bound pull consumer. `fetch` keeps one pull request standing for the messages the
    caller can take, and returns as soon as any arrived: an idle consumer costs the server
    one request per `timeout`, a busy one a request per `batch` messages, and a message is
    never held back waiting for a batch to fill (what nats-py's `fetch` does)."""

    def __init__(self, sub: JetStreamContext.PullSubscription, name: str) -> None:
        self._sub = sub
        self.name = name
        self._fast = all(hasattr(sub, a) for a in _PULL_INTERNALS) and hasattr(
            getattr(sub, "_sub", None), "_pending_queue"
        )
        self._credit = 0  # messages the standing request may still deliver
        self._until = 0.0  # loop time its server-side expiry ends
        self._session = -1  # the connection it was made on: a reconnect loses it
        self._heard = 0.0  # loop time of the last message or status for the request
        self._beat = 0.0  # the heartbeat asked for (0: none)

    async def fetch(self, batch: int, timeout: float) -> list[Delivery]:
        """Up to `batch` messages; an empty list when none arrived within `timeout`."""
        try:
            if self._fast:
                msgs = await self._pull(batch, timeout)
            else:
                msgs = await self._sub.fetch(batch=batch, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            return []
        except _UNAVAILABLE as e:
            self._credit = 0
            raise BusUnavailableError(f"fetch from {self.name}: NATS unavailable: {e}") from e
        except nats.errors.Error as e:
            self._credit = 0
            raise BusError(f"fetch from {self.name}: {type(e).__name__}: {e}") from e
        return [Delivery(m) for m in msgs]

    async def _pull(self, batch: int, timeout: float) -> list[Msg]:
        sub: Any = self._sub
        inbox = sub._sub
        if inbox._conn.is_closed:
            raise nats.errors.ConnectionClosedError
        loop = asyncio.get_running_loop()
        session = sub._nc.stats.get("reconnects", 0)
        if self._credit <= 0 or loop.time() >= self._until or session != self._session:
            expires = max(0.05, timeout - 0.05)  # the server's 408 comes before we give up
            ask: dict[str, int] = {"batch": batch, "expires": int(expires * 1e9)}
            # a long request hears a heartbeat: when the consumer's leader dies in a cluster
            # the request dies with it, silently, and is asked again after two missed beats
            self._beat = _HEARTBEAT if expires > 4 * _HEARTBEAT else 0.0
            if self._beat:
                ask["idle_heartbeat"] = int(self._beat * 1e9)
            await sub._nc.publish(sub._nms, json.dumps(ask).encode(), reply=sub._deliver)
            self._credit, self._until, self._session = batch, loop.time() + expires, session
            self._heard = loop.time()
        queue: asyncio.Queue[Msg] = inbox._pending_queue
        msgs: list[Msg] = []
        deadline = loop.time() + timeout
        while not msgs and self._credit > 0:
            wait = min(deadline - loop.time(), _RECHECK)
            if wait <= 0:
                break
            try:  # in slices: a reconnect loses the standing request; ask again at once
                async with asyncio.timeout(wait):
                    msg = await queue.get()
            except TimeoutError:
                if sub._nc.stats.get("reconnects", 0) != self._session:
                    self._credit = 0
                elif self._beat and loop.time() - self._heard > 2 * self._beat + _RECHECK:
                    self._credit = 0  # the server forgot the request (a leader change)
                continue
            self._heard = loop.time()
            self._take(inbox, msg, msgs)
        while len(msgs) < batch and self._credit > 0 and not queue.empty():
            self._take(inbox, queue.get_nowait(), msgs)
        return msgs

    def _take(self, inbox: Any, msg: Msg, into: list[Msg]) -> None:
        inbox._pending_size -= len(msg.data)
        inbox._pending_queue.task_done()
        status = msg.headers.get(api.Header.STATUS) if msg.headers and not msg.data else None
        if status is None:
            self._credit -= 1
            into.append(msg)
        elif status in _PULL_DONE:
            self._credit = 0
        # anything else (100: idle heartbeat) says nothing about this request

    async def close(self) -> None:
        try:
            await self._sub.unsubscribe()
        except nats.errors.Error as e:
            log.debug("unsubscribe failed", consumer=self.name, error=str(e))


class KeyValueStore:
    """A JetStream KV bucket with the few operations eventsvc needs."""

    def __init__(self, kv: KeyValue, bucket: str) -> None:
        self._kv = kv
        self.bucket = bucket

    async def replicas(self) -> int:
        """How many copies the bucket keeps (the stream behind it)."""
        status = await _guard(f"kv status {self.bucket}", self._kv.status())
        return int(status.stream_info.config.num_replicas or 1)

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """(value, revision), or None when the key is absent or deleted."""
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(f"kv get {self.bucket}/{key}", e) from e
        return (entry.value or b""), int(entry.revision or 0)

    async def put(self, key: str, value: bytes) -> int:
        return await _guard(f"kv put {self.bucket}/{key}", self._kv.put(key, value))

    async def create(self, key: str, value: bytes) -> bool:
        """Store `value` only when `key` is absent; False when it exists already."""
        for _ in range(3):
            try:
                await self._kv.create(key, value)
            except nats.js.errors.KeyWrongLastSequenceError:
                return False
            except nats.js.errors.KeyNotFoundError:
                # the client found an old entry, then it expired (bucket TTL) before the
                # client's second look: the key is absent now, so try again
                continue
            except (nats.errors.Error, TimeoutError) as e:
                raise _translate(f"kv create {self.bucket}/{key}", e) from e
            return True
        raise BusError(f"kv create {self.bucket}/{key}: the key kept changing; try again")

    async def update(self, key: str, value: bytes, last: int) -> bool:
        """Compare-and-set on revision `last`; False when someone else wrote first."""
        try:
            await self._kv.update(key, value, last=last)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(f"kv update {self.bucket}/{key}", e) from e
        return True

    async def delete(self, key: str, last: int | None = None) -> bool:
        """Delete `key`; with `last`, only when its revision is still `last` (compare-and-
        delete): False when someone else wrote first."""
        try:
            await self._kv.delete(key, last=last)
        except nats.js.errors.APIError as e:
            if last and e.err_code in (10071, 10164):  # wrong last sequence
                return False
            raise _translate(f"kv delete {self.bucket}/{key}", e) from e
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(f"kv delete {self.bucket}/{key}", e) from e
        return True

    async def keys(self) -> list[str]:
        try:
            return list(await self._kv.keys())
        except nats.js.errors.NoKeysError:
            return []
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(f"kv keys {self.bucket}", e) from e


class Subscription:
    """A core NATS subscription read one message at a time. A reader that falls more than
    its `pending` messages behind loses the excess (the server's slow-consumer rule)."""

    def __init__(self, sub: Any, subject: str) -> None:
        self._sub = sub
        self.subject = subject

    async def next(self, timeout: float) -> tuple[str, Mapping[str, str], bytes] | None:
        """(subject, headers, body) of the next message; None when none came in `timeout`."""
        try:
            msg = await self._sub.next_msg(timeout=timeout)
        except nats.errors.TimeoutError:
            return None
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(f"subscription {self.subject}", e) from e
        return msg.subject, msg.headers or {}, msg.data

    async def close(self) -> None:
        try:
            await self._sub.unsubscribe()
        except nats.errors.Error as e:
            log.debug("unsubscribe failed", subject=self.subject, error=str(e))


def _translate(what: str, e: BaseException) -> BusError:
    if isinstance(e, _UNAVAILABLE):
        return BusUnavailableError(f"{what}: NATS unavailable ({type(e).__name__}: {e})")
    return BusError(f"{what}: {type(e).__name__}: {e}")


class Bus:
    """A connected NATS client with JetStream."""

    def __init__(
        self,
        nc: NatsClient,
        url: str,
        publish_timeout: float = 5.0,
        replicas: int = 1,
        claims_ttl: float = 0.0,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=publish_timeout)
        self.url = url
        self.publish_timeout = publish_timeout
        self.replicas = replicas  # for the KV buckets this process creates
        self.claims_ttl = claims_ttl  # how long bodies stored apart are kept (0: forever)
        self._claim_store: ObjectStore | None = None
        self.streams_ready = False
        self._fast_publish = nc.fast_publish_supported

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    async def ensure_streams(self, specs: tuple[StreamSpec, ...]) -> None:
        for spec in specs:
            await self.ensure_stream(spec)
        self.streams_ready = True

    async def ensure_stream(self, spec: StreamSpec) -> None:
        config = api.StreamConfig(
            name=spec.name,
            subjects=list(spec.subjects),
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=spec.max_age or None,
            max_bytes=spec.max_bytes,
            max_msgs=spec.max_msgs,
            duplicate_window=spec.duplicate_window,
            num_replicas=spec.replicas,
        )
        if spec.work_queue:
            config.retention = api.RetentionPolicy.WORK_QUEUE
        if spec.max_consumers:
            config.max_consumers = spec.max_consumers
        what = f"reconcile stream {spec.name}"
        try:
            await self._js.stream_info(spec.name)
        except nats.js.errors.NotFoundError:
            await _guard(what, self._js.add_stream(config))
            log.info("stream created", stream=spec.name, subjects=list(spec.subjects))
            return
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(what, e) from e
        await _guard(what, self._js.update_stream(config))

    async def publish(
        self,
        subject: str,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        msg_id: str | None = None,
    ) -> PublishAck:
        """Store a message in JetStream and wait for the ack; refuses at once when offline.
        A message larger than the server takes is stored by claim check (`claims`)."""
        if not self.connected:
            raise BusUnavailableError(f"publish to {subject}: not connected to NATS at "
                                      f"{logs.redact_url(self.url)}")  # fmt: skip
        hdrs = dict(headers or {})
        if msg_id:
            hdrs["Nats-Msg-Id"] = msg_id
        if len(body) > self._nc.max_payload - claims.header_bytes(hdrs) - claims.ROOM:
            body = await self._check_in(subject, body, hdrs)
        if self._fast_publish and hdrs:
            try:  # what `_guard` does, without one more coroutine per event
                stream, seq, duplicate = await self._nc.publish_fast(
                    subject, body, hdrs, self.publish_timeout
                )
                return PublishAck(stream, seq, duplicate)
            except _UNAVAILABLE as e:
                raise BusUnavailableError(
                    f"publish to {subject}: NATS unavailable ({type(e).__name__}: {e})"
                ) from e
            except nats.errors.Error as e:
                raise BusError(f"publish to {subject}: {type(e).__name__}: {e}") from e
        ack = await _guard(
            f"publish to {subject}",
            self._js.publish(subject, body, timeout=self.publish_timeout, headers=hdrs or None),
        )
        return PublishAck(ack.stream, int(ack.seq), bool(ack.duplicate))

    async def _check_in(self, subject: str, body: bytes, headers: dict[str, str]) -> bytes:
        """Store `body` in the claims bucket and name it in `headers`; the message's body."""
        name = claims.name_of(body)
        store = await self._claims()
        await _guard(f"publish to {subject}: store the {len(body)}-byte body",
                     store.put(name, body))  # fmt: skip
        headers[claims.HEADER] = claims.reference(name)
        return b""

    async def _claims(self) -> ObjectStore:
        if self._claim_store is None:
            try:
                self._claim_store = await self._js.object_store(claims.BUCKET)
            except nats.js.errors.BucketNotFoundError:
                create = self._js.create_object_store(
                    claims.BUCKET, ttl=self.claims_ttl or None, replicas=self.replicas
                )
                self._claim_store = await _guard(f"create object store {claims.BUCKET}", create)
            except (nats.errors.Error, TimeoutError) as e:
                raise _translate(f"open object store {claims.BUCKET}", e) from e
        return self._claim_store

    async def body_of(self, headers: Mapping[str, str], body: bytes) -> bytes:
        """A message's body, read from the claims bucket when it was stored there."""
        ref = headers.get(claims.HEADER)
        if ref is None:
            return body
        name = claims.parse(ref)
        if name is None:
            raise ClaimGoneError(f"{claims.HEADER} {ref[:80]!r} names no stored body")
        store = await self._claims()
        try:
            result = await store.get(name)
        except nats.js.errors.ObjectNotFoundError as e:
            raise ClaimGoneError(
                f"the body stored apart as {name} is gone (older than the claims bucket's "
                "max age, which follows streams.events.maxAge)"
            ) from e
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(f"read the body stored as {name}", e) from e
        return bytes(result.data or b"")

    async def pull_consumer(self, spec: ConsumerSpec) -> PullConsumer:
        """Create or update the durable consumer `spec` and bind a pull subscription."""
        await self.ensure_consumer(spec)
        return await self.bind_consumer(spec.stream, spec.durable)

    async def bind_consumer(self, stream: str, durable: str) -> PullConsumer:
        """A pull subscription on the existing durable consumer `durable`."""
        what = f"consumer {stream}/{durable}"
        sub = await _guard(what, self._js.pull_subscribe_bind(durable=durable, stream=stream))
        return PullConsumer(sub, durable)

    async def ensure_consumer(self, spec: ConsumerSpec) -> bool:
        """Create the durable consumer, starting at `spec.start`, or update one that exists
        (where it is in the stream does not change). True when it was created."""
        config = _consumer_config(spec)
        what = f"consumer {spec.stream}/{spec.durable}"
        try:
            info = await self._js.consumer_info(spec.stream, spec.durable)
        except nats.js.errors.NotFoundError:
            await _guard(what, self._js.add_consumer(spec.stream, config))
            return True
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(what, e) from e
        # where it starts cannot change on an existing consumer: keep what it has
        config.deliver_policy = info.config.deliver_policy
        config.opt_start_seq = info.config.opt_start_seq
        await _guard(what, self._js.add_consumer(spec.stream, config))
        return False

    async def delete_consumer(self, stream: str, durable: str) -> None:
        try:
            await self._js.delete_consumer(stream, durable)
        except nats.js.errors.NotFoundError:
            return
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(f"delete consumer {stream}/{durable}", e) from e

    async def kv(self, bucket: str, ttl: float | None = None, history: int = 1) -> KeyValueStore:
        """The KV bucket `bucket`, created when missing."""
        try:
            kv = await self._js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            kv = await _guard(
                f"create kv {bucket}",
                self._js.create_key_value(  # direct: reads skip the JSON/base64 API
                    bucket=bucket, ttl=ttl, history=history, replicas=self.replicas, direct=True
                ),
            )
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(f"open kv {bucket}", e) from e
        return KeyValueStore(kv, bucket)

    async def stream_messages(self, stream: str, subject: str | None = None) -> list[Delivery]:
        """Every message currently in `stream` (optionally one subject), for tools and tests."""
        return [item async for item in self.read_stream(stream, subject)]

    async def read_stream(
        self, stream: str, subject: str | None = None, follow: bool = False, start: int = 0
    ) -> AsyncGenerator[Delivery, None]:
        """Every message in `stream` (optionally one subject filter), oldest first (from
        sequence `start` when given); with `follow`, keep waiting for new ones until the
        caller stops iterating."""
        config = api.ConsumerConfig(ack_policy=api.AckPolicy.NONE,
                                    deliver_policy=api.DeliverPolicy.ALL)  # fmt: skip
        if start > 0:
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start
        sub = await _guard(
            f"read {stream}", self._js.pull_subscribe(subject or ">", stream=stream, config=config)
        )
        consumer = PullConsumer(sub, stream)
        try:
            while True:
                batch = await consumer.fetch(256, timeout=1.0 if follow else 0.5)
                if not batch and not follow:
                    return
                for item in batch:
                    yield item
        finally:
            await consumer.close()

    async def consumer_backlog(self, stream: str, durable: str) -> int:
        """Messages the consumer has not finished: not yet delivered plus delivered unacked."""
        what = f"consumer {stream}/{durable}"
        info = await _guard(what, self._js.consumer_info(stream, durable))
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def consumer_states(self, stream: str) -> list[ConsumerState]:
        """Every consumer on `stream`, with how far it got."""
        out: list[ConsumerState] = []
        while True:  # the server answers 256 at a time
            page = await _guard(f"list consumers of {stream}",
                                self._js.consumers_info(stream, offset=len(out)))  # fmt: skip
            out += [_consumer_state(info) for info in page]
            if not page:
                return out

    async def stream_state(self, stream: str) -> StreamState:
        info = await _guard(f"stream {stream}", self._js.stream_info(stream))
        state = info.state
        return StreamState(int(state.messages), int(state.first_seq), int(state.last_seq))

    async def purge(self, stream: str, subject: str) -> None:
        """Remove every message on `subject` from `stream`."""
        await _guard(f"purge {subject} from {stream}",
                     self._js.purge_stream(stream, subject=subject))  # fmt: skip

    async def get_message(self, stream: str, seq: int) -> tuple[Mapping[str, str], bytes] | None:
        """The headers and body of the message at `seq` in `stream`; None when it is gone."""
        try:
            raw = await self._js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            return None
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(f"get message {seq} of {stream}", e) from e
        # the stream API's header parser may hand back header objects: values are text here
        return {k: str(v) for k, v in (raw.headers or {}).items()}, raw.data or b""

    async def last_seq(self, stream: str, subject: str) -> int:
        """The sequence of the newest message of `stream` on `subject` (wildcards allowed);
        0 when there is none."""
        try:
            raw = await self._js.get_msg(stream, subject=subject)
        except nats.js.errors.NotFoundError:
            return 0
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(f"last message on {subject} in {stream}", e) from e
        return int(raw.seq or 0)

    async def delete_message(self, stream: str, seq: int) -> bool:
        """Remove the message at `seq` from `stream`; False when it was gone already."""
        try:
            await self._js.delete_msg(stream, seq)
        except nats.js.errors.NotFoundError:
            return False
        except nats.js.errors.APIError as e:
            if e.err_code in (10043, 10057):  # sequence not found, or delete failed (past
                return False  # the end): no message at `seq`
            raise _translate(f"delete message {seq} of {stream}", e) from e
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(f"delete message {seq} of {stream}", e) from e
        return True

    async def subscribe(self, subject: str, pending: int = 1024) -> Subscription:
        """Every message published on `subject` from now on (core NATS, no replay): the
        server knows of the subscription when this returns. Close it when done."""
        sub = await _guard(f"subscribe {subject}",
                           self._nc.subscribe(subject, pending_msgs_limit=pending))  # fmt: skip
        flush = self._nc.flush(timeout=max(1, round(self.publish_timeout)))
        await _guard(f"subscribe {subject}", flush)
        return Subscription(sub, subject)

    @property
    def max_payload(self) -> int:
        """The largest message (headers included) the server takes."""
        return int(self._nc.max_payload)

    async def consumer_exists(self, stream: str, durable: str) -> bool:
        try:
            await self._js.consumer_info(stream, durable)
        except nats.js.errors.NotFoundError:
            return False
        except (nats.errors.Error, TimeoutError) as e:
            raise _translate(f"consumer {stream}/{durable}", e) from e
        return True

    async def close(self) -> None:
        if self._nc.is_closed:
            return
        try:
            await asyncio.wait_for(self._nc.drain(), 5)
        except (nats.errors.Error, TimeoutError) as e:
            log.debug("drain failed, closing", error=str(e))
            await self._nc.close()


def _consumer_config(spec: ConsumerSpec) -> api.ConsumerConfig:
    config = api.ConsumerConfig(
        durable_name=spec.durable,
        name=spec.durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.NEW,
        ack_wait=spec.ack_wait,
        max_deliver=spec.max_deliver,
        max_ack_pending=spec.max_ack_pending,
    )
    if spec.start == START_ALL:
        config.deliver_policy = api.DeliverPolicy.ALL
    elif isinstance(spec.start, int):
        config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = spec.start
    if len(spec.subjects) == 1:
        config.filter_subject = spec.subjects[0]
    else:
        config.filter_subjects = list(spec.subjects)
    return config


def _consumer_state(info: api.ConsumerInfo) -> ConsumerState:
    floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
    pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
    return ConsumerState(str(info.name), int(floor or 0), pending)


def _tls_context(config: Config) -> ssl.SSLContext | None:
    if not (config.nats_tls_ca or config.nats_tls_cert):
        return None
    ctx = ssl.create_default_context(cafile=config.nats_tls_ca)
    if config.nats_tls_cert:
        ctx.load_cert_chain(config.nats_tls_cert, config.nats_tls_key)
    return ctx


async def connect(
    url: str,
    config: Config,
    *,
    connect_timeout: float = 5.0,
    on_state: Callable[[str], None] | None = None,
    initial_attempts: int = 3,
) -> Bus:
    """Connect to `url` with reconnect forever and the configured auth and TLS."""
    shown = logs.redact_url(url)  # the URL may hold a password: never log it

    async def disconnected() -> None:
        if nc.is_closed or nc.is_draining:
            return  # our own close, not an outage
        log.warning("nats disconnected", url=shown)
        if on_state:
            on_state("disconnected")

    async def reconnected() -> None:
        log.info("nats reconnected", url=shown)
        if on_state:
            on_state("reconnected")

    async def error(e: Exception) -> None:
        log.debug("nats client error", url=shown, error=logs.redact_url(str(e)))

    options: dict[str, Any] = {
        "servers": [u.strip() for u in url.split(",")],
        "connect_timeout": connect_timeout,
        "allow_reconnect": True,
        # bounded for the first connection (nats-py would retry it forever), then unbounded
        "max_reconnect_attempts": initial_attempts,
        "reconnect_time_wait": 0.5,
        "disconnected_cb": disconnected,
        "reconnected_cb": reconnected,
        "error_cb": error,
        "user": config.nats_user,
        "password": config.nats_password,
        "token": config.nats_token,
        "user_credentials": config.nats_creds_file,
        "tls": _tls_context(config),
        "name": "eventsvc",
    }
    options = {k: v for k, v in options.items() if v is not None}
    nc = NatsClient()
    try:
        await nc.connect(**options)
    except (nats.errors.Error, OSError, TimeoutError) as e:
        raise BusUnavailableError(
            f"cannot connect to NATS at {shown} ({type(e).__name__}: {logs.redact_url(str(e))}); "
            "check EVENTSVC_NATS_URL and credentials, or unset it to use the embedded server"
        ) from e
    nc.options["max_reconnect_attempts"] = -1
    return Bus(nc, url, publish_timeout=config.publish_timeout, replicas=config.stream_replicas,
               claims_ttl=config.events_max_age)  # fmt: skip
