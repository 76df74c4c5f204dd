"""The event contract: Avro single-object encoding, fingerprint, JSON, and clear errors."""

from __future__ import annotations

import io
import json

import fastavro
import pytest

from streamrec.errors import EventError
from streamrec.events import (
    EVENT_TYPES,
    MAX_ID_LENGTH,
    SINGLE_OBJECT_MAGIC,
    Limits,
    decode,
    encode_avro,
    encode_json,
    new_event,
    schema_fingerprint,
    schema_text,
)

EMPTY = 0xC15D213AA4D7A795  # CRC-64-AVRO seed, from the Avro specification


def _rabin(data: bytes) -> int:
    """The Avro spec's reference fingerprint algorithm, written out independently."""
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        table.append(fp)
    fp = EMPTY
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_rabin_reference_vector() -> None:
    # Known answer from Avro's own test suite: fingerprint64('"null"').
    assert _rabin(b'"null"') == 7195948357588979594


def test_fingerprint_is_crc64_of_canonical_form_little_endian() -> None:
    canonical = fastavro.schema.to_parsing_canonical_form(json.loads(schema_text()))
    assert canonical.startswith('{"name":"streamrec.Interaction","type":"record"')
    assert schema_fingerprint() == _rabin(canonical.encode()).to_bytes(8, "little")


def test_avro_round_trip_and_header() -> None:
    ev = new_event(
        "u1", "i9", "rating", value=4.5, timestamp=1_700_000_000_123, context={"device": "tv"}
    )
    raw = encode_avro(ev)
    assert raw[:2] == SINGLE_OBJECT_MAGIC
    assert raw[2:10] == schema_fingerprint()
    assert decode(raw) == ev


def test_outside_reader_with_only_the_schema_file_reads_our_bytes() -> None:
    ev = new_event("u1", "i9", "play", value=31.0, timestamp=1_700_000_000_000)
    raw = encode_avro(ev)
    schema = fastavro.parse_schema(json.loads(schema_text()))
    rec = fastavro.schemaless_reader(io.BytesIO(raw[10:]), schema, None)
    assert isinstance(rec, dict)
    assert rec["user_id"] == "u1" and rec["type"] == "play" and rec["value"] == 31.0


def test_json_round_trip_and_iso_timestamp() -> None:
    ev = new_event("u1", "i2", "click", timestamp=1_700_000_000_000)
    assert decode(encode_json(ev)) == ev
    raw = json.dumps(
        {
            "event_id": "e",
            "user_id": "u",
            "item_id": "i",
            "type": "like",
            "timestamp": "2023-11-14T22:13:20Z",
            "value": 3,
        }
    ).encode()
    got = decode(raw)
    assert got.timestamp == 1_700_000_000_000
    assert got.value == 3.0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (b"\x01garbage", "neither Avro"),
        (b"\x00garbage", "no schema_registry_url is set"),  # Confluent framing, no registry
        (b"\x00\x00\x01", "truncated Confluent framing"),
        (b"\xc3\x01\x00\x01\x02\x03\x04\x05\x06\x07rest", "unknown schema fingerprint"),
        (b"\xc3\x01abc", "truncated Avro header"),
        (b"{not json", "invalid JSON"),
        (b"[1,2]", "must be an object"),
        (b'{"user_id":"u","item_id":"i","type":"play","timestamp":1}', "missing field 'event_id'"),
        (b'{"event_id":"e","user_id":"u","item_id":"i","type":"zap","timestamp":1}', "type 'zap'"),
        (b'{"event_id":"e","user_id":"","item_id":"i","type":"play","timestamp":1}', "user_id"),
        (
            b'{"event_id":"e","user_id":"u","item_id":"i","type":"play","timestamp":1,"x":1}',
            "unknown field",
        ),
    ],
)
def test_bad_messages_raise_with_reason_and_keep_raw(raw: bytes, reason: str) -> None:
    with pytest.raises(EventError) as info:
        decode(raw)
    assert reason in info.value.reason
    assert info.value.raw == raw


def test_corrupt_avro_datum() -> None:
    raw = encode_avro(new_event("u", "i", "play", timestamp=5))
    with pytest.raises(EventError, match=r"corrupt Avro datum|must be"):
        decode(raw[:12])


def test_invalid_event_refused_before_encoding() -> None:
    with pytest.raises(EventError, match="type"):
        new_event("u", "i", "teleport")
    assert "rating" in EVENT_TYPES and "skip" in EVENT_TYPES


def _json(**fields: object) -> bytes:
    base: dict[str, object] = {"event_id": "e", "user_id": "u", "item_id": "i", "type": "play",
                               "timestamp": 1}  # fmt: skip
    return json.dumps({**base, **fields}).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 5000 + b"]" * 5000, "invalid JSON: nested too deeply"),
        (_json(context={"a": [[[[]]]]}), "context must map strings to strings"),
        (_json(value=int("9" * 400)), "value must be a finite number or null"),
        (_json().replace(b'"timestamp": 1', b'"timestamp": ' + b"9" * 5000), "invalid JSON"),
        (_json(timestamp=2**63), "timestamp is past the largest Avro long"),
        (_json().replace(b'"u"', b'"\\ud800"'), "user_id is not valid Unicode"),
        (_json().replace(b'"i"', b'"\xff\xfe"'), "invalid JSON: 'utf-8' codec can't decode"),
        (_json(value=float("nan")), "value must be a finite number or null"),
        (_json().replace(b'"timestamp": 1', b'"timestamp": 1, "value": 1e999'), "value must be"),
        (_json(user_id="u" * (MAX_ID_LENGTH + 1)), f"user_id longer than {MAX_ID_LENGTH}"),
        (_json(context={str(k): "v" for k in range(33)}), "context has 33 entries, more than 32"),
        (_json(context={"k": "é" * 2048}), "context holds 4097 bytes, more than 4096"),
        (_json(context={"k": "\ud800"}), "context is not valid Unicode"),
        (b" " * 65_537, "message of 65537 bytes is over the limit of 65536"),
    ],
)
def test_bad_messages_past_a_bound_or_a_parser(raw: bytes, reason: str) -> None:
    with pytest.raises(EventError) as info:
        decode(raw)
    assert reason in info.value.reason
    assert info.value.raw == raw


def test_a_reason_quotes_a_long_bad_value_short() -> None:
    raw = _json(type="x" * 60_000)
    with pytest.raises(EventError) as info:
        decode(raw)
    assert info.value.reason.startswith("type 'xxxxxxxx")
    assert len(info.value.reason) < 200
    many = _json(**{f"f{k}": 1 for k in range(500)})
    with pytest.raises(EventError, match=r"^unknown field\(s\): f0, f1, f10, f100, f101 \.\.\.$"):
        decode(many)


def test_limits_are_the_callers() -> None:
    raw = _json(context={"a": "b", "c": "d"})
    assert decode(raw).context == {"a": "b", "c": "d"}
    with pytest.raises(EventError, match="context has 2 entries, more than 1"):
        decode(raw, Limits(context_entries=1))
    with pytest.raises(EventError, match="context holds 4 bytes, more than 3"):
        decode(raw, Limits(context_bytes=3))
    with pytest.raises(EventError, match=f"message of {len(raw)} bytes is over the limit of 50"):
        decode(raw, Limits(message_bytes=50))


def test_avro_with_bytes_after_the_datum() -> None:
    raw = encode_avro(new_event("u", "i", "play", timestamp=5))
    with pytest.raises(EventError, match="corrupt Avro datum: 2 bytes after it"):
        decode(raw + b"\x00\x00")


def test_producers_check_the_context_bounds_too() -> None:
    with pytest.raises(EventError, match="context has 40 entries"):
        new_event("u", "i", context={str(k): "" for k in range(40)})
