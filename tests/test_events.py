from __future__ import annotations

from datetime import UTC, datetime

import pytest

from eventsvc import events, subjects


def _event(**extra: object) -> events.CloudEvent:
    attrs: dict[str, object] = {
        "specversion": "1.0",
        "id": "e-1",
        "type": "com.example.built",
        "source": "https://ci.example/jobs 1",
        "subject": "naïve \"quoted\" 100%",
        "time": datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
        "datacontenttype": "application/json",
        **extra,
    }
    return events.make_event(attrs, {"sha": "abc", "n": 3})


def test_binary_headers_percent_encode_only_what_the_spec_requires() -> None:
    headers, body = events.to_binary(_event())
    assert headers["ce-source"] == "https://ci.example/jobs%201"
    assert headers["ce-subject"] == "na%C3%AFve%20%22quoted%22%20100%25"
    assert headers["ce-time"] == "2026-11-27T10:00:00Z"
    assert headers["content-type"] == "application/json"
    assert body == b'{"sha":"abc","n":3}'


def test_binary_round_trip_keeps_attributes_and_data() -> None:
    original = _event(myext="v 1")
    back = events.from_nats(*events.to_binary(original))
    assert back.get_subject() == original.get_subject()
    assert back.get_source() == original.get_source()
    assert back.get_extension("myext") == "v 1"
    assert back.get_time() == original.get_time()
    assert back.get_data() == {"sha": "abc", "n": 3}


def test_structured_round_trip() -> None:
    original = _event()
    body = events.to_structured(original)
    back = events.from_nats({"content-type": events.STRUCTURED_CONTENT_TYPE}, body)
    assert events.to_dict(back) == events.to_dict(original)


def test_missing_required_attributes_are_named() -> None:
    with pytest.raises(events.EventDecodeError, match="missing required CloudEvents attributes: id, source"):
        events.from_binary({"ce-type": "x", "ce-specversion": "1.0"}, b"")


def test_non_cloudevent_message_is_refused_with_the_reason() -> None:
    with pytest.raises(events.EventDecodeError, match="no ce-\\* headers"):
        events.from_nats({}, b"hello")


def test_token() -> None:
    assert subjects.token("a.b c*>") == "a_b_c__"
    assert subjects.token("") == "_"


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+00:01"])
def test_time_out_of_range_in_utc_is_a_decode_error(when: str) -> None:
    with pytest.raises(events.EventDecodeError, match="out of range in UTC"):
        events.from_binary({"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t",
                            "ce-source": "s", "ce-time": when}, b"")  # fmt: skip


def test_json_nested_too_deep_for_python_is_a_decode_error() -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(events.EventDecodeError, match="nested deeper"):
        events.decode_data(nested, "application/json")
    with pytest.raises(events.EventDecodeError, match="nested deeper"):
        events.from_structured(nested)


@pytest.mark.parametrize("value", [1, None, [], {}])
def test_data_base64_must_be_a_string(value: object) -> None:
    doc = {"specversion": "1.0", "id": "1", "type": "t", "source": "s", "data_base64": value}
    with pytest.raises(events.EventDecodeError, match="data_base64 must be a string"):
        events.from_dict(doc)


@pytest.mark.parametrize(("raw", "too_deep"), [
    (b"[]", False),
    (b"[" * 256 + b"]" * 256, False),
    (b"[" * 257 + b"]" * 257, True),
    (b'{"a":' * 256 + b"1" + b"}" * 256, False),
    (b'{"a":' * 257 + b"1" + b"}" * 257, True),
    (b'["' + b"[" * 1000 + b'"]', False),  # brackets in strings do not count
    (b'["\\"' + b"[" * 1000 + b'\\\\"]', False),
    (b"[" + b"[]," * 1000 + b"[]]", False),  # many brackets, little depth
])  # fmt: skip
def test_json_too_deep(raw: bytes, too_deep: bool) -> None:
    import json

    from eventsvc.gateways.common import json_too_deep

    json.loads(raw)  # only ever asked of valid JSON
    assert json_too_deep(raw) is too_deep
