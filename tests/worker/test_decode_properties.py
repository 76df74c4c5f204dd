"""The decoder is total: whatever a message holds, an event or a reason, never an exception.

Properties over arbitrary bytes, recursive and deeply nested JSON, valid Avro events with bits
flipped, bytes cut or inserted, numbers past every range, invalid UTF-8 and lone surrogates;
and the same over the other schema paths: a newer writer version known by its fingerprint
(resolved into the reader schema) and the Confluent registry framing (``00`` + schema id).
Each example goes through ``_outcome``, which lets nothing but ``EventError`` pass and checks
what a dead letter needs of it (the raw bytes kept, a one-line UTF-8 reason) and what the
worker needs of an accepted event (ids and context a Redis key and an encoder can take).
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import TIMESTAMP_CREATE_TIME, Message
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.errors import EventError
from streamrec.events import (
    EVENT_TYPES,
    LIMITS,
    MAX_ID_LENGTH,
    SINGLE_OBJECT_MAGIC,
    Event,
    EventDecoder,
    Limits,
    SchemaSet,
    avro_fingerprint,
    decode,
    encode_avro,
    encode_json,
    schema_fingerprint,
)
from streamrec.worker.decode import decode_batch
from tests.streamrec.evolution import v1, v2, write_version

#: Modest counts: the whole module runs in a few seconds. No example database on disk.
FEW = settings(max_examples=60, deadline=None, database=None)
SOME = settings(max_examples=150, deadline=None, database=None)

HEADER = SINGLE_OBJECT_MAGIC + schema_fingerprint()


def _outcome(
    raw: bytes | None, limits: Limits = LIMITS, decoder: EventDecoder | None = None
) -> Event | str:
    """``decode(raw)`` (or ``decoder(raw)``): the event, or the reason. Any other exception
    fails the test."""
    try:
        event = decoder(raw) if decoder is not None else decode(raw, limits)
    except EventError as exc:
        assert exc.raw == raw, "a dead letter must keep the raw bytes"
        reason = exc.reason
        assert reason and "\n" not in reason and len(reason) <= 300, reason
        reason.encode("utf-8")  # strict: the reason goes into a Kafka header
        return reason
    assert isinstance(event, Event)
    for name in ("event_id", "user_id", "item_id"):
        v = getattr(event, name)
        assert 0 < len(v) <= MAX_ID_LENGTH
        v.encode("utf-8")  # strict: ids become Redis keys and Kafka keys
    assert event.type in EVENT_TYPES
    assert 0 <= event.timestamp < 2**63
    assert event.value is None or math.isfinite(event.value)
    if event.context is not None:
        assert len(event.context) <= limits.context_entries
        size = sum(len(k.encode()) + len(v.encode()) for k, v in event.context.items())
        assert size <= limits.context_bytes
    assert decode(encode_avro(event)) == event  # what was accepted can be written again
    return event


# --- valid events --------------------------------------------------------------------------

_text = st.characters(exclude_categories=["Cs"])  # any code point UTF-8 can write
ids = st.text(_text, min_size=1, max_size=40)
contexts = st.none() | st.dictionaries(
    st.text(_text, max_size=12), st.text(_text, max_size=40), max_size=8
)
events = st.builds(
    Event,
    event_id=ids,
    user_id=ids,
    item_id=ids,
    type=st.sampled_from(EVENT_TYPES),
    timestamp=st.integers(0, 2**63 - 1),
    value=st.none() | st.floats(allow_nan=False, allow_infinity=False),
    context=contexts,
)


@SOME
@given(events)
def test_every_valid_event_round_trips_in_both_encodings(event: Event) -> None:
    assert _outcome(encode_avro(event)) == event
    assert _outcome(encode_json(event)) == event


# --- arbitrary bytes -----------------------------------------------------------------------


@SOME
@given(st.binary(max_size=600))
def test_arbitrary_bytes(raw: bytes) -> None:
    _outcome(raw)


@SOME
@given(st.sampled_from([HEADER, b"{", b"[", b" \n{", SINGLE_OBJECT_MAGIC]), st.binary(max_size=400))
def test_arbitrary_bytes_behind_each_format_marker(head: bytes, rest: bytes) -> None:
    _outcome(head + rest)


@FEW
@given(st.binary(min_size=101, max_size=2000))
def test_a_message_over_the_size_bound_is_refused_unread(raw: bytes) -> None:
    reason = _outcome(raw, Limits(message_bytes=100))
    assert reason == f"message of {len(raw)} bytes is over the limit of 100"


def test_no_value_at_all() -> None:
    assert _outcome(None) == "empty message"
    assert decode_batch([_msg(None), _msg(b"\xff" * 3)])[0].reason == "empty message"


# --- JSON ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


@SOME
@given(json_values)
def test_any_json_document(doc: Any) -> None:
    _outcome(json.dumps(doc).encode())


@SOME
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "event_id": json_values,
            "user_id": json_values,
            "item_id": json_values,
            "type": json_values | st.sampled_from(EVENT_TYPES),
            "value": json_values,
            "timestamp": json_values,
            "context": json_values,
        },
    )
)
def test_an_object_with_the_event_fields_holding_anything(doc: dict[str, Any]) -> None:
    _outcome(json.dumps(doc).encode())


@FEW
@given(st.integers(1, 30_000), st.sampled_from(["[", '{"a":', '{"context":']))
def test_deep_nesting(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    raw = (opener * depth + "1" + closer * depth).encode()
    reason = _outcome(raw, Limits(message_bytes=1 << 20))
    assert isinstance(reason, str)
    if depth > 5000:
        assert reason == "invalid JSON: nested too deeply"


@FEW
@given(st.integers(1, 30_000), st.sampled_from(["event_id", "value", "timestamp", "context"]))
def test_deep_nesting_inside_an_event_field(depth: int, field: str) -> None:
    fields = {"event_id": '"e"', "user_id": '"u"', "item_id": '"i"', "type": '"play"',
              "timestamp": "1"}  # fmt: skip
    fields[field] = "[" * depth + "]" * depth
    raw = ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()
    assert isinstance(_outcome(raw, Limits(message_bytes=1 << 20)), str)


_numbers = st.one_of(
    st.text("0123456789", min_size=1, max_size=6000),  # past int's 4300-digit string limit
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-9, 9), st.integers(-(10**6), 10**6)),
    st.builds(lambda d: f"-{d}", st.text("0123456789", min_size=300, max_size=400)),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1" + "0" * 309]),
    st.just("9" * 5000),
)


@SOME
@given(_numbers, st.sampled_from(["value", "timestamp"]))
def test_numbers_past_every_range(number: str, field: str) -> None:
    fields = {"event_id": '"e"', "user_id": '"u"', "item_id": '"i"', "type": '"rating"',
              "timestamp": "1", "value": "4"}  # fmt: skip
    fields[field] = number
    raw = ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()
    got = _outcome(raw)
    if isinstance(got, Event):  # accepted: then it is in range, exactly as written
        if field == "value":
            assert got.value == float(number)
        else:
            assert got.timestamp == int(number)


@SOME
@given(
    st.sampled_from(["event_id", "user_id", "item_id", "ctx-key", "ctx-value"]),
    st.lists(st.integers(0xD800, 0xDFFF), min_size=1, max_size=3),
    st.text(_text, max_size=5),
)
def test_lone_surrogate_escapes_are_refused(where: str, codes: list[int], around: str) -> None:
    bad = around + "".join(chr(c) for c in codes) + around
    text = json.dumps(bad)  # writes \udXXX escapes: valid JSON, not writable as UTF-8
    fields = {"event_id": '"e"', "user_id": '"u"', "item_id": '"i"', "type": '"play"',
              "timestamp": "1"}  # fmt: skip
    if where.startswith("ctx"):
        fields["context"] = f'{{{text}:"v"}}' if where == "ctx-key" else f'{{"k":{text}}}'
    else:
        fields[where] = text
    raw = ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()
    got = _outcome(raw)
    try:  # json pairs a high and a low escape into one astral character: that one is valid
        json.loads(text).encode("utf-8")
        writable = True
    except UnicodeEncodeError:
        writable = False
    assert isinstance(got, Event) == writable
    if not writable:
        assert isinstance(got, str) and "lone surrogate" in got


@SOME
@given(events, st.binary(min_size=1, max_size=4))
def test_invalid_utf8_inside_a_json_string(event: Event, junk: bytes) -> None:
    raw = encode_json(event).replace(b'"user_id":"', b'"user_id":"' + junk, 1)
    got = _outcome(raw)
    try:
        junk.decode("utf-8")
    except UnicodeDecodeError:
        assert isinstance(got, str) and got.startswith("invalid JSON")


# --- Avro ----------------------------------------------------------------------------------


@SOME
@given(events, st.data())
def test_valid_avro_with_bits_flipped(event: Event, data: st.DataObject) -> None:
    raw = bytearray(encode_avro(event))
    bits = data.draw(st.lists(st.integers(0, 8 * len(raw) - 1), min_size=1, max_size=6))
    for bit in bits:
        raw[bit // 8] ^= 1 << (bit % 8)
    _outcome(bytes(raw))


@SOME
@given(events, st.data())
def test_valid_avro_cut_short_or_with_bytes_inserted(event: Event, data: st.DataObject) -> None:
    raw = encode_avro(event)
    cut = data.draw(st.integers(0, len(raw) - 1))
    got = _outcome(raw[:cut])
    assert isinstance(got, str)  # no prefix of a datum is a whole one
    at = data.draw(st.integers(len(HEADER), len(raw)))
    _outcome(raw[:at] + data.draw(st.binary(min_size=1, max_size=20)) + raw[at:])


def _long(n: int) -> bytes:
    """Avro's zigzag varint."""
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _string(raw: bytes) -> bytes:
    return _long(len(raw)) + raw


@SOME
@given(st.binary(min_size=1, max_size=12), st.integers(0, 2))
def test_avro_strings_that_are_not_utf8(junk: bytes, field: int) -> None:
    strings = [b"e", b"u", b"i"]
    strings[field] = junk
    datum = b"".join(map(_string, strings)) + _long(0) + _long(0) + _long(1) + _long(0)
    got = _outcome(HEADER + datum)
    try:
        ok = bool(junk.decode("utf-8"))
    except UnicodeDecodeError:
        ok = False
    assert isinstance(got, Event) == ok


@FEW
@given(st.integers(-(2**63), 2**63 - 1), st.integers(-(2**63), 2**63 - 1))
def test_avro_lengths_and_counts_past_the_data(length: int, count: int) -> None:
    # A string length, then a context map block count, claiming far more than the bytes hold.
    _outcome(HEADER + _long(length) + b"abc")
    datum = b"".join(map(_string, [b"e", b"u", b"i"])) + _long(0) + _long(0) + _long(1)
    _outcome(HEADER + datum + _long(1) + _long(count) + b"\x02k\x02v")


# --- other schema versions and the registry framing --------------------------------------

_V2 = v2()
_V2_PARSED = fastavro.parse_schema(v2())


def _evolved_decoder() -> EventDecoder:
    """Knows v2 (in an extra directory) and a registry holding v1 as id 1 and v2 as id 2."""
    directory = Path(tempfile.mkdtemp(prefix="schemas-"))
    write_version(directory, 2, _V2)
    texts = {1: json.dumps(v1()), 2: json.dumps(_V2)}

    def lookup(schema_id: int) -> str:
        if schema_id not in texts:
            raise EventError(f"schema id {schema_id} is not in the registry")
        return texts[schema_id]

    return EventDecoder(schemas=SchemaSet.load([directory]), registry=lookup)


EVOLVED = _evolved_decoder()
V2_HEADER = SINGLE_OBJECT_MAGIC + avro_fingerprint(_V2)
FRAMES = [b"\x00" + i.to_bytes(4, "big") for i in (1, 2, 3, 2**32 - 1)]


def _v2_datum(event: Event, session: str | None) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, _V2_PARSED, {**event.to_record(), "session_id": session})
    return buf.getvalue()


@SOME
@given(events, st.none() | st.text(_text, max_size=30))
def test_a_newer_version_reads_as_the_same_event_by_fingerprint_and_by_id(
    event: Event, session: str | None
) -> None:
    datum = _v2_datum(event, session)
    assert _outcome(V2_HEADER + datum, decoder=EVOLVED) == event
    assert _outcome(FRAMES[1] + datum, decoder=EVOLVED) == event
    assert _outcome(FRAMES[0] + encode_avro(event)[len(HEADER) :], decoder=EVOLVED) == event
    assert isinstance(_outcome(V2_HEADER + datum), str)  # unknown to the package alone


@SOME
@given(st.sampled_from([V2_HEADER, *FRAMES, b"\x00", b"\x00\x00"]), st.binary(max_size=400))
def test_arbitrary_bytes_behind_the_new_markers(head: bytes, rest: bytes) -> None:
    _outcome(head + rest, decoder=EVOLVED)
    _outcome(head + rest)  # no registry: the framing is a dead letter, never an exception


@SOME
@given(events, st.none() | st.text(_text, max_size=30), st.data())
def test_newer_version_with_bits_flipped_or_cut(
    event: Event, session: str | None, data: st.DataObject
) -> None:
    head = data.draw(st.sampled_from([V2_HEADER, FRAMES[1]]))
    raw = bytearray(head + _v2_datum(event, session))
    bits = data.draw(st.lists(st.integers(0, 8 * len(raw) - 1), min_size=1, max_size=6))
    for bit in bits:
        raw[bit // 8] ^= 1 << (bit % 8)
    _outcome(bytes(raw), decoder=EVOLVED)
    whole = head + _v2_datum(event, session)
    got = _outcome(whole[: data.draw(st.integers(0, len(whole) - 1))], decoder=EVOLVED)
    # A cut datum is a reason, except where only the field the reader skips was cut
    # (fastavro skips a writer-only field without checking it is whole): the same event.
    assert isinstance(got, str) or got == event


# --- the batch -----------------------------------------------------------------------------


def _msg(value: bytes | None, offset: int = 0) -> Message:
    return Message(topic="events", partition=0, offset=offset, key=b"k", value=value,
                   timestamp=(TIMESTAMP_CREATE_TIME, 1))  # fmt: skip


@FEW
@given(st.lists(st.none() | st.binary(max_size=200) | events.map(encode_avro), max_size=20))
def test_a_batch_of_anything_keeps_every_message_in_order(values: list[bytes | None]) -> None:
    msgs = [_msg(v, n) for n, v in enumerate(values)]
    got = decode_batch(msgs)
    assert [d.msg for d in got] == msgs
    for d in got:
        assert (d.event is None) != (d.reason is None)
