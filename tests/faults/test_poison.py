"""Poison messages mid-stream, against the real broker and Redis: the worker lives on.

Every nasty message is dead-lettered with its reason, byte for byte; a user whose event
cannot be applied (a rating so large its confidence overflows, a stored state that is not a
state) keeps their list and state, and is counted and logged; every other list and state ends
equal to one clean pass over the good events alone.
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamrec.artifact import load_model
from streamrec.connect import ensure_topics, redis_client
from streamrec.events import (
    SINGLE_OBJECT_MAGIC,
    Event,
    encode_avro,
    new_event,
    schema_fingerprint,
    schema_text,
)
from streamrec.keys import Keys, read_histories
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from streamrec.worker.loop import Worker
from tests.conftest import wait_for
from tests.worker.test_exactly_once import _assert_same, _snapshot

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def _good(items: tuple[str, ...], n: int, seed: int, start_ms: int) -> list[Event]:
    """``n`` events of 40 users, and three of ``whale``'s."""
    rng = np.random.default_rng(seed)
    types = ["play", "play", "click", "like", "skip", "dislike", "view", "rating"]
    out = [
        new_event(
            f"u{int(rng.integers(40))}",
            items[int(rng.integers(len(items)))],
            types[k % len(types)],
            value=float(rng.integers(1, 6)),
            timestamp=start_ms + k * 1000,
            event_id=f"good-{seed}-{k}",
        )
        for k in range(n)
    ]
    for k in range(3):
        out.append(new_event("whale", items[k], "play", timestamp=start_ms + k,
                             event_id=f"whale-{seed}-{k}"))  # fmt: skip
    return out


def _doc(items: tuple[str, ...], **fields: Any) -> bytes:
    """A JSON event, valid but for ``fields``."""
    base = {"event_id": uuid.uuid4().hex, "user_id": "eve", "item_id": items[0], "type": "play",
            "timestamp": T0}  # fmt: skip
    return json.dumps({**base, **fields}).encode()


def _avro(**fields: Any) -> bytes:
    """An Avro event written with the schema file alone (so it may hold what ours refuses)."""
    record = {"event_id": uuid.uuid4().hex, "user_id": "eve", "item_id": "iiiii", "type": "play",
              "value": None, "timestamp": T0, "context": None, **fields}  # fmt: skip
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC + schema_fingerprint())
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(schema_text())), record)
    return buf.getvalue()


def _nasty(items: tuple[str, ...]) -> dict[bytes, tuple[bytes | None, str]]:
    """key -> (value, what its dead letter's reason says)."""
    deep = b"[" * 5000 + b"]" * 5000
    valid = encode_avro(new_event("eve", items[0], timestamp=T0))
    return {
        b"deep": (deep, "invalid JSON: nested too deeply"),
        b"deep-field": (_doc(items).replace(b'"eve"', deep), "invalid JSON: nested too deeply"),
        b"huge": (os.urandom(1_000_000), "message of 1000000 bytes is over the limit of 65536"),
        b"long-id": (_doc(items, user_id="x" * 100_000), "is over the limit of 65536"),
        b"id-2000": (_doc(items, user_id="x" * 2000), "user_id longer than 512 characters"),
        b"utf8": (_doc(items).replace(b'"eve"', b'"\xff\xfe"'), "invalid JSON: 'utf-8' codec"),
        b"avro-utf8": (_avro().replace(b"iiiii", b"\xff\xfe\xfd\xfc\xfb"), "corrupt Avro datum"),
        b"surrogate": (_doc(items, user_id="\ud800"), "user_id is not valid Unicode"),
        b"ctx-entries": (
            _doc(items, context={str(k): "v" for k in range(100)}),
            "context has 100 entries, more than 32",
        ),
        b"ctx-bytes": (
            _doc(items, context={"k": "v" * 10_000}),
            "context holds 10001 bytes, more than 4096",
        ),
        b"nan-json": (_doc(items, value=float("nan")), "value must be a finite number or null"),
        b"inf-json": (
            _doc(items).replace(b'"type"', b'"value": 1e999, "type"'),
            "value must be a finite number or null",
        ),
        b"nan-avro": (_avro(value=float("nan")), "value must be a finite number or null"),
        b"big-int": (_doc(items, value=10**400), "value must be a finite number or null"),
        b"digits": (
            _doc(items).replace(str(T0).encode(), b"9" * 5000),
            "invalid JSON: Exceeds the limit",
        ),
        b"ts-range": (_doc(items, timestamp=2**64), "timestamp is past the largest Avro long"),
        b"truncated": (valid[:-3], "corrupt Avro datum"),
        b"trailing": (valid + b"\x00", "corrupt Avro datum: 1 bytes after it"),
        b"tombstone": (None, "empty message"),
        b"garbage": (b"\x01\x01 garbage", "neither Avro single-object encoding"),
    }


def _send(s: Settings, events: list[Event], *also: Settings) -> None:
    for target in (s, *also):
        with EventProducer(target) as p:
            for e in events:
                p.send(e)


def _read_all(s: Settings, topic: str, count: int) -> list[Message]:
    c = Consumer({**s.kafka_common(), "group.id": f"read-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest"})  # fmt: skip
    c.subscribe([topic])
    got: list[Message] = []
    try:

        def enough() -> bool:
            got.extend(m for m in c.consume(100, 0.5) if m.error() is None)
            return len(got) >= count

        wait_for(enough, 30)
        got.extend(m for m in c.consume(100, 1.0) if m.error() is None)  # and no more
    finally:
        c.close()
    return got


def _headers(m: Message) -> dict[str, bytes]:
    out = dict(m.headers() or [])
    assert all(isinstance(v, bytes) for v in out.values())
    return {k: v for k, v in out.items() if isinstance(v, bytes)}


def test_poison_mid_stream_is_dead_lettered_and_the_rest_equals_a_clean_pass(
    stack: Callable[..., Settings],
    run_worker: Callable[..., Worker],
    small_model: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = stack(model_path=small_model, batch_max=100)
    ref = stack(model_path=small_model, batch_max=100)  # its own topic: the good events only
    ensure_topics(s)
    ensure_topics(ref)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    items = load_model(small_model).item_ids
    before, during, after = (_good(items, 300, seed, T0 + seed * 10**9) for seed in (1, 2, 3))
    during = [e for e in during if e.user_id != "whale"]  # whale's only event then: the poison

    _send(s, before, ref)
    worker = run_worker(s)
    wait_for(lambda: worker.stats.decoded == len(before), 60)

    def state_of(user: str) -> bytes | None:
        return read_histories(client, keys, [user]).get(user)

    # Its events go to one partition, which this test does not choose: every one holds it.
    mangled = [keys.user("mangled", s.topic_events, p) for p in range(s.topic_events_partitions)]
    whale_state = state_of("whale")
    whale_list = client.get(keys.recs("whale"))
    assert whale_state and whale_list
    for name in mangled:
        client.set(name, b"\x00 not a state")

    # Mid-stream: the nasty messages among good events of other users, in the same batches.
    nasty = _nasty(items)
    raw = Producer({**s.kafka_common(), "message.max.bytes": 2_000_000,
                    "compression.type": "lz4"})  # fmt: skip
    sent = iter(during)
    for key, (value, _) in nasty.items():
        raw.produce(s.topic_events, key=key, value=value)
        for e in (next(sent), next(sent)):
            raw.produce(s.topic_events, key=e.user_id.encode(), value=encode_avro(e))
    # A rating so large its float32 confidence is infinite (the whale's fold-in is NaN), and
    # an event of a user whose stored state cannot be read.
    overflow = new_event("whale", items[5], "rating", value=1e39, timestamp=T0 + 2 * 10**9)
    for e in (overflow, new_event("mangled", items[1], timestamp=T0), *sent):
        raw.produce(s.topic_events, key=e.user_id.encode(), value=encode_avro(e))
    assert raw.flush(30) == 0
    _send(ref, during)
    st = worker.stats
    wait_for(lambda: (st.decoded, st.dead_lettered, st.users_failed)
             == (len(before) + len(during) + 2, len(nasty), 2), 60)  # fmt: skip
    assert state_of("whale") == whale_state  # kept as they were
    assert client.get(keys.recs("whale")) == whale_list
    assert client.mget(mangled) == [b"\x00 not a state"] * len(mangled)
    assert client.get(keys.recs("mangled")) is None

    _send(s, after, ref)  # later good events, the whale's too, are applied
    wait_for(lambda: st.decoded == len(before) + len(during) + 2 + len(after), 60)
    assert worker.metrics.healthy(stale_after_s=5)
    assert state_of("whale") != whale_state

    failed = [r for r in caplog.records if r.levelno == logging.ERROR and "not updated" in r.msg]
    lines = sorted(r.getMessage() for r in failed)
    assert len(lines) == 2
    assert lines[0].startswith("user 'mangled' not updated, list and state kept: stored state:")
    assert lines[1].startswith("user 'whale' not updated, list and state kept: fold-in/top-N:")
    assert all(f"events at {s.topic_events}[" in line for line in lines)

    letters = _read_all(s, s.topic_dlq, len(nasty))
    assert sorted(m.key() or b"" for m in letters) == sorted(nasty)
    for m in letters:
        value, reason = nasty[m.key() or b""]
        headers = _headers(m)
        assert m.value() == value, m.key()  # byte for byte, the 1 MB one too
        assert reason in headers["streamrec.error"].decode(), (m.key(), headers)
        assert headers["streamrec.source"].startswith(f"{s.topic_events}[".encode())
        assert "streamrec.dropped" not in headers

    client.delete(*mangled)  # not JSON: the snapshot reads states as JSON
    reference = Worker(ref)
    reference.run(max_messages=len(before) + len(during) + len(after), duration_s=90)
    assert reference.stats.dead_lettered == 0 and reference.stats.users_failed == 0
    got, want = _snapshot(client, keys), _snapshot(client, Keys(ref.redis_prefix))
    assert "whale/recs" in want and "mangled/state" not in got
    _assert_same(got, want)
    client.close()


def test_a_dead_letter_its_topic_refuses_goes_without_its_value(
    stack: Callable[..., Settings], run_worker: Callable[..., Worker], small_model: Path
) -> None:
    s = stack(model_path=small_model)
    admin = AdminClient(s.kafka_common())
    topic = NewTopic(s.topic_dlq, num_partitions=1, replication_factor=1,
                     config={"max.message.bytes": "20000"})  # fmt: skip
    admin.create_topics([topic])[s.topic_dlq].result(30)
    ensure_topics(s)  # the others; the DLQ stays as created
    big = b"\x01" + os.urandom(30_000)  # neither Avro nor JSON, and incompressible
    item = load_model(small_model).item_ids[0]
    with EventProducer(s) as p:
        p.send_raw(b"big", big)
        p.send_raw(b"small", b"\x01 small")
        p.send(new_event("ann", item, "like"))
    worker = run_worker(s)
    wait_for(lambda: worker.stats.decoded == 1, 60)
    assert worker.stats.dead_lettered == 2

    letters = {m.key(): m for m in _read_all(s, s.topic_dlq, 2)}
    assert set(letters) == {b"big", b"small"}
    assert letters[b"small"].value() == b"\x01 small"
    dropped = letters[b"big"]
    assert dropped.value() is None
    headers = _headers(dropped)
    assert headers["streamrec.dropped"] == b"value of 30001 bytes too large to send"
    assert headers["streamrec.error"].startswith(b"neither Avro")
    assert headers["streamrec.source"].startswith(f"{s.topic_events}[".encode())
    assert redis_client(s).get(Keys(s.redis_prefix).recs("ann")) is not None
