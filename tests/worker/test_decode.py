"""Decode and dead letters: every message keeps its place, failures keep their bytes and say why."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, Message

from streamrec.connect import ensure_topics
from streamrec.events import SINGLE_OBJECT_MAGIC, encode_avro, encode_json, new_event
from streamrec.settings import Settings, load_settings
from streamrec.worker.decode import DeadLetters, decode_batch
from streamrec.worker.errors import DependencyDown, WorkerError
from tests.conftest import wait_for

EVENT = new_event("ann", "i7", "rating", value=4.0, timestamp=1_700_000_000_000, event_id="e1")


def _msg(
    value: bytes | None,
    offset: int,
    key: bytes | None = b"ann",
    topic: str = "events",
    partition: int = 1,
) -> Message:
    """A consumed message as the source hands it out, created at 1_700_000_000_000 + offset ms."""
    return Message(topic=topic, partition=partition, offset=offset, key=key, value=value,
                   timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_000 + offset))  # fmt: skip


def test_every_message_is_decoded_in_order_or_kept_with_its_reason() -> None:
    values: list[bytes | None] = [
        encode_avro(EVENT),
        b"\x01\x01 this is not an event",
        encode_json(EVENT),
        None,
        b'{"event_id": "e2", "user_id": "ann", "item_id": "i7", "type": "jump", "timestamp": 1}',
        SINGLE_OBJECT_MAGIC + b"\x00" * 8 + b"datum",
        b'{"event_id": "e3", "extra": 1}',
    ]
    msgs = [_msg(v, n) for n, v in enumerate(values)]
    got = decode_batch(msgs)
    assert [d.msg for d in got] == msgs  # the raw message itself, for the dead-letter topic
    assert all(d.msg is m for d, m in zip(got, msgs, strict=True))
    assert got[0].event == EVENT and got[0].reason is None
    assert got[2].event == EVENT and got[2].reason is None
    failed = [(n, d.reason) for n, d in enumerate(got) if d.event is None]
    assert [n for n, _ in failed] == [1, 3, 4, 5, 6]
    reasons = dict(failed)
    assert reasons[1] is not None and reasons[1].startswith("neither Avro")
    assert reasons[3] == "empty message"
    assert reasons[4] is not None and "type 'jump' is not one of" in reasons[4]
    assert reasons[5] is not None and reasons[5].startswith("unknown schema fingerprint")
    assert reasons[6] == "unknown field(s): extra"


def test_an_empty_batch() -> None:
    assert decode_batch([]) == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


def test_dead_letters_not_delivered_raise() -> None:
    s = load_settings().model_copy(update={"kafka_bootstrap": f"127.0.0.1:{_closed_port()}"})
    dead = DeadLetters(s, flush_timeout_s=0.3)
    try:
        dead.send([])  # nothing to send: no wait, no error
        junk = [(_msg(b"junk", 3), "neither Avro nor JSON")]
        with pytest.raises(WorkerError, match="1 dead letters undelivered") as caught:
            dead.send(junk)
        # No broker: an outage to wait out (the loop redoes the batch), not a refusal.
        assert isinstance(caught.value, DependencyDown) and caught.value.dependency == "kafka"
        assert f"Kafka at {s.kafka_bootstrap}" in str(caught.value)
        assert len(dead._producer) == 1  # queued, waiting for a broker
        with pytest.raises(DependencyDown):
            dead.send(junk)  # the batch redone: the same dead letter is waited for again,
        assert len(dead._producer) == 1  # not queued twice
    finally:
        dead.close()


@pytest.mark.integration
def test_dead_letters_keep_key_value_and_say_why_and_where_from(
    stack: Callable[..., Settings],
) -> None:
    s = stack()
    ensure_topics(s)
    msgs = [
        _msg(b"\x01\x01 not an event", 41, b"mallory", s.topic_events, 2),
        _msg(None, 7, None, s.topic_events, 0),
        _msg(encode_avro(EVENT), 8, b"ann", s.topic_events, 0),
    ]
    failed = [(d.msg, d.reason or "") for d in decode_batch(msgs) if d.event is None]
    dead = DeadLetters(s)
    try:
        dead.send(failed)
    finally:
        dead.close()

    consumer = Consumer({**s.kafka_common(), "group.id": f"dlq-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([s.topic_dlq])
    got: list[Message] = []
    try:

        def two() -> bool:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
            return len(got) == 2

        wait_for(two, 15)
        assert consumer.poll(1.0) is None  # the decodable message is not dead-lettered
    finally:
        consumer.close()
    by_source = {dict(m.headers() or [])["streamrec.source"]: m for m in got}
    first = by_source[f"{s.topic_events}[2]@41".encode()]
    assert (first.key(), first.value()) == (b"mallory", b"\x01\x01 not an event")
    headers = dict(first.headers() or [])
    assert (
        headers["streamrec.error"]
        == b"neither Avro single-object encoding (C3 01), Confluent Schema Registry framing "
        b"(00 + schema id) nor a JSON object"
    )
    assert headers["streamrec.timestamp"] == b"1700000000041"
    empty = by_source[f"{s.topic_events}[0]@7".encode()]
    assert (empty.key(), empty.value()) == (None, None)
    assert dict(empty.headers() or [])["streamrec.error"] == b"empty message"
    assert dict(empty.headers() or [])["streamrec.timestamp"] == b"1700000000007"
