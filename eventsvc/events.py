"""CloudEvents codecs: the NATS protocol binding (binary and structured) and helpers.

The `cloudevents` 2.x package gives the event type and the JSON format; it has no
NATS binding, so the binding lives here. Binary mode puts every attribute in a
`ce-<name>` header (values percent-encoded like the HTTP binding: space, `"`, `%`
and anything outside printable ASCII) and `datacontenttype` in `content-type`;
structured mode is `content-type: application/cloudevents+json` with the whole
event as the body.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse

from eventsvc.errors import EventsvcError

__all__ = ["CloudEvent", "EventDecodeError"]

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
CE_PREFIX = "ce-"
REQUIRED = ("id", "source", "type", "specversion")
_FORMAT = JSONFormat()
_NEEDS_QUOTING = re.compile(r'[^\x21-\x7e]|["%]')
_JSON_TYPE = re.compile(r"^(application|text)/([a-zA-Z0-9\-.]+\+)?json(;.*)?$")


class EventDecodeError(EventsvcError):
    """A message or request does not hold a valid CloudEvent; the message says why."""


_TOO_DEEP = "JSON nested deeper than can be decoded"


def _quote(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group().encode())


def encode_header_value(value: Any) -> str:
    text = format_time(value) if isinstance(value, datetime) else str(value)
    if _NEEDS_QUOTING.search(text) is None:  # the common case: nothing to escape
        return text
    return _NEEDS_QUOTING.sub(_quote, text)


def format_time(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


_second_prefix: tuple[int, str] = (-1, "")


def format_now() -> str:
    """`format_time(datetime.now(UTC))` for a hot path: the date and time of day are
    formatted once a second, only the microseconds on every call (always 6 digits)."""
    global _second_prefix
    now = time.time()
    second = int(now)
    if second != _second_prefix[0]:
        _second_prefix = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_prefix[1]}.{min(int((now - second) * 1_000_000), 999_999):06d}Z"


def binary_headers(attributes: Mapping[str, Any]) -> dict[str, str]:
    """NATS headers for binary mode from CloudEvent attributes (None values skipped)."""
    headers: dict[str, str] = {}
    for name, value in attributes.items():
        if value is None:
            continue
        if name == "datacontenttype":
            headers["content-type"] = str(value)
        else:
            headers[CE_PREFIX + name] = encode_header_value(value)
    return headers


def encode_data(data: Any, datacontenttype: str | None) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str) and not _JSON_TYPE.match(datacontenttype or "application/json"):
        return data.encode()
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def to_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    attributes = event.get_attributes()
    return binary_headers(attributes), encode_data(
        event.get_data(), attributes.get("datacontenttype")
    )


def to_structured(event: CloudEvent) -> bytes:
    return _FORMAT.write(event)


def is_json(datacontenttype: str | None) -> bool:
    """Whether data of `datacontenttype` is JSON (as it is when none is given)."""
    return _JSON_TYPE.match(datacontenttype or "application/json") is not None


def decode_data(body: bytes, datacontenttype: str | None) -> Any:
    """A binary-mode body as its `datacontenttype` says (JSON decoded)."""
    if not body:
        return None
    if _JSON_TYPE.match(datacontenttype or "application/json"):
        try:
            return json.loads(body)
        except RecursionError as e:
            raise EventDecodeError(_TOO_DEEP) from e
        except ValueError as e:
            raise EventDecodeError(
                f"data is declared {datacontenttype or 'application/json'} but is not JSON: {e}"
            ) from e
    try:
        return body.decode()
    except UnicodeDecodeError:
        return body


_MEDIA_TYPE_CHARS = re.compile(r"[\x20-\x7e]+")


def make_event(attributes: dict[str, Any], data: Any) -> CloudEvent:
    """A v1.0 CloudEvent, or EventDecodeError naming every missing or bad attribute."""
    missing = [name for name in REQUIRED if not attributes.get(name)]
    if missing:
        raise EventDecodeError(f"missing required CloudEvents attributes: {', '.join(missing)}")
    content_type = attributes.get("datacontenttype")
    if content_type is not None and not (
        isinstance(content_type, str) and _MEDIA_TYPE_CHARS.fullmatch(content_type)
    ):  # it travels as a raw header (content-type), not percent-encoded like ce-* values
        raise EventDecodeError(
            f"datacontenttype {content_type!r} is not a media type: use printable ASCII, "
            "e.g. application/json"
        )
    if attributes["specversion"] != "1.0":
        raise EventDecodeError(
            f"specversion {attributes['specversion']!r} is not supported; send 1.0"
        )
    if isinstance(attributes.get("time"), str):
        try:
            attributes["time"] = isoparse(attributes["time"])
        except (ValueError, OverflowError) as e:
            raise EventDecodeError(f"time {attributes['time']!r} is not RFC 3339") from e
    when = attributes.get("time")
    if isinstance(when, datetime) and when.tzinfo is not None:
        try:  # what `format_time` does: a time outside what UTC can hold is no time
            when.astimezone(UTC)
        except (OverflowError, ValueError) as e:
            raise EventDecodeError(
                f"time {format_time(when.replace(tzinfo=None))!r} (UTC offset "
                f"{when.utcoffset()}) is out of range in UTC; send a time between years "
                "0001 and 9999 in UTC"
            ) from e
    try:
        return CloudEvent(attributes, data)
    except (BaseCloudEventException, ValueError, TypeError) as e:
        raise EventDecodeError(f"invalid CloudEvent: {e}") from e


def from_binary(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    attributes: dict[str, Any] = {}
    for key, value in headers.items():
        lower = key.lower()
        if lower.startswith(CE_PREFIX):
            attributes[lower[len(CE_PREFIX) :]] = unquote(value)
        elif lower == "content-type":
            attributes["datacontenttype"] = value
    return make_event(attributes, decode_data(body, attributes.get("datacontenttype")))


def from_structured(body: bytes) -> CloudEvent:
    try:
        doc = json.loads(body)
    except RecursionError as e:
        raise EventDecodeError(_TOO_DEEP) from e
    except ValueError as e:
        raise EventDecodeError(f"structured CloudEvent is not valid JSON: {e}") from e
    return from_dict(doc)


def from_dict(doc: Any) -> CloudEvent:
    """A CloudEvent from its JSON object form (structured mode, one item of a batch)."""
    if not isinstance(doc, dict):
        raise EventDecodeError(
            f"a structured CloudEvent must be a JSON object, got {type(doc).__name__}"
        )
    attributes = {k: v for k, v in doc.items() if k not in ("data", "data_base64")}
    data: Any = doc.get("data")
    if "data_base64" in doc:
        import base64

        if not isinstance(doc["data_base64"], str):
            raise EventDecodeError(
                f"data_base64 must be a string of base64, got {type(doc['data_base64']).__name__}"
            )
        try:
            data = base64.b64decode(doc["data_base64"], validate=True)
        except ValueError as e:
            raise EventDecodeError(f"data_base64 is not valid base64: {e}") from e
    return make_event(attributes, data)


def from_nats(headers: Mapping[str, str] | None, body: bytes) -> CloudEvent:
    """Decode either content mode, as the NATS binding requires of consumers."""
    headers = headers or {}
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if content_type.startswith(STRUCTURED_CONTENT_TYPE):
        return from_structured(body)
    if any(k.lower().startswith(CE_PREFIX) for k in headers):
        return from_binary(headers, body)
    if body.lstrip().startswith(b"{"):
        # structured mode without a content-type: accepted when it parses as one
        return from_structured(body)
    raise EventDecodeError(
        "message is not a CloudEvent: no ce-* headers (binary mode) and no "
        f"content-type {STRUCTURED_CONTENT_TYPE} (structured mode)"
    )


def to_dict(event: CloudEvent) -> dict[str, Any]:
    """The event as a plain JSON-able mapping: attributes plus `data`."""
    doc: dict[str, Any] = {}
    for key, value in event.get_attributes().items():
        doc[key] = format_time(value) if isinstance(value, datetime) else value
    data = event.get_data()
    if isinstance(data, bytes):
        import base64

        doc["data_base64"] = base64.b64encode(data).decode()
    elif data is not None:
        doc["data"] = data
    return doc


def binary_attributes(headers: Mapping[str, str] | None) -> dict[str, Any] | None:
    """The attributes of a binary-mode message from its headers alone (body untouched), as
    `from_nats` would read them; None when the message is not binary mode (structured, or
    not a CloudEvent), so that only a full decode can tell."""
    if not headers:
        return None
    attributes: dict[str, Any] = {}
    for key, value in headers.items():
        lower = key.lower()
        if lower.startswith(CE_PREFIX):
            attributes[lower[len(CE_PREFIX) :]] = unquote(value) if "%" in value else value
        elif lower == "content-type":
            if value.startswith(STRUCTURED_CONTENT_TYPE):
                return None
            attributes["datacontenttype"] = value
    if len(attributes) == ("datacontenttype" in attributes):  # no ce-* header
        return None
    return attributes
