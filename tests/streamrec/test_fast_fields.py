"""``EventDecoder.fields`` and ``.event`` (with their hand-written v1 reader, ``_fields_v1``)
against the general decoder on the same messages: valid events, events just past a bound,
and mutated bytes: the same accept/reject and the same fields, every time."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from streamrec.errors import EventError
from streamrec.events import (
    EVENT_TYPES,
    MAX_ID_LENGTH,
    Event,
    EventDecoder,
    Limits,
    _fields_v1,
    encode_avro,
    encode_json,
    new_event,
)

ids = st.one_of(
    st.text(min_size=0, max_size=70),
    st.text(alphabet="abc-0123456789", min_size=1, max_size=40),
    st.sampled_from(["", "x" * 63, "x" * 64, "é" * 31, "é" * 32, "x" * (MAX_ID_LENGTH + 1)]),
)
values = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 120.0, 5.0]),
)
stamps = st.one_of(
    st.integers(0, 2_000_000_000_000),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, -1, 2**63 - 1, 63, 64, 1_700_000_000_000]),
)
contexts = st.one_of(
    st.none(),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
events = st.builds(
    Event,
    event_id=ids,
    user_id=ids,
    item_id=ids,
    type=st.one_of(st.sampled_from(EVENT_TYPES), st.just("play")),
    timestamp=stamps,
    value=values,
    context=contexts,
)


@st.composite
def mutated(draw: st.DrawFn, raw: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "cut", "append", "insert", "none"]))
    if kind == "none" or not raw:
        return raw
    at = draw(st.integers(0, len(raw) - 1))
    if kind == "flip":
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    if kind == "cut":
        return raw[:at]
    if kind == "insert":
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at:]
    return raw + draw(st.binary(min_size=1, max_size=4))


def encoded(e: Event) -> bytes:
    try:
        return encode_avro(e)
    except Exception:  # a value Avro cannot write (a lone surrogate, a long past 64 bits)
        assume(False)
        raise


def outcome(f: object, raw: bytes) -> object:
    try:
        got = f(raw)  # type: ignore[operator]
    except EventError as exc:
        # the same reason, bar the address of fastavro's buffer object in some of them
        return ("rejected", re.sub(r"0x[0-9a-f]+", "0x", exc.reason))
    if isinstance(got, Event):
        got = (got.event_id, got.user_id, got.item_id, got.type, got.value, got.timestamp)
    return ("accepted", tuple(_nan_safe(v) for v in got))


def _nan_safe(v: object) -> object:
    return "nan" if isinstance(v, float) and math.isnan(v) else v


DECODERS = [EventDecoder(), EventDecoder(Limits(message_bytes=120))]


def same(raw: bytes) -> None:
    for d in DECODERS:
        whole = outcome(d, raw)
        assert outcome(d.fields, raw) == whole
        assert outcome(d.event, raw) == whole
        if isinstance(whole, tuple) and whole[0] == "accepted":  # the same context too
            assert d.event(raw).context == d(raw).context


@settings(max_examples=800, deadline=None)
@given(events)
def test_valid_and_invalid_events_decide_alike(e: Event) -> None:
    same(encoded(e))


@settings(max_examples=800, deadline=None)
@given(st.data(), events)
def test_mutated_bytes_decide_alike(data: st.DataObject, e: Event) -> None:
    same(data.draw(mutated(encoded(e))))


@given(st.binary(max_size=64))
def test_any_bytes_decide_alike(raw: bytes) -> None:
    same(raw)
    same(b"\xc3\x01" + encode_avro(new_event("u", "i"))[2:10] + raw)


def test_the_fast_path_reads_the_common_event() -> None:
    # Not a test that cannot fail: the usual v1 event must take the hand-written reader.
    for type_ in EVENT_TYPES:
        for value in (None, 120.0, -3.5):
            e = new_event("user-0000001", "item-000001", type_, value)
            got = _fields_v1(encode_avro(e))
            assert got == (e.event_id, e.user_id, e.item_id, type_, value, e.timestamp)
    with_context = new_event("u", "i", context={"a": "b"})
    assert _fields_v1(encode_avro(with_context)) is None  # the general decoder reads it
    assert EventDecoder().fields(encode_avro(with_context))[:3] == (with_context.event_id, "u", "i")
    assert _fields_v1(encode_json(new_event("u", "i"))) is None  # JSON: the general path


def test_fields_raise_what_the_decoder_raises() -> None:
    with pytest.raises(EventError, match="empty message"):
        EventDecoder().fields(b"")
    with pytest.raises(EventError, match="over the limit"):
        EventDecoder(Limits(message_bytes=10)).fields(encode_avro(new_event("u", "i")))
