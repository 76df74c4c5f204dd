"""Reading fixed offset ranges of a topic, against the real broker."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from streamrec.connect import ensure_topics, read_ranges
from streamrec.settings import Settings


def _produce(settings: Settings, topic: str, per_partition: int, partitions: int) -> None:
    p = Producer(settings.kafka_common())
    for part in range(partitions):
        for n in range(per_partition):
            p.produce(topic, key=f"{part}-{n}".encode(), value=b"v", partition=part)
    assert p.flush(30) == 0


@pytest.mark.integration
def test_reads_exactly_the_ranges(stack: Callable[..., Settings]) -> None:
    s = stack()
    topic = s.topic_events
    ensure_topics(s, {topic: 3})
    _produce(s, topic, 10, 3)
    ranges = {0: (0, 10), 1: (3, 7), 2: (5, 5)}  # partition 2: empty, never waited for
    got = sorted(
        (m.partition(), m.offset(), m.key())
        for m in read_ranges(s, topic, ranges, f"g-{uuid.uuid4().hex}", 30)
    )
    want = [(0, n, f"0-{n}".encode()) for n in range(10)]
    want += [(1, n, f"1-{n}".encode()) for n in range(3, 7)]
    assert got == want
    assert list(read_ranges(s, topic, {}, "unused", 30)) == []


@pytest.mark.integration
def test_a_range_past_the_last_message_ends_at_the_log_end(stack: Callable[..., Settings]) -> None:
    """A transaction's commit marker takes an offset no consumer ever sees: the watermark
    is one past the last message, and the read must end there, not wait out its timeout."""
    s = stack()
    topic = s.topic_events
    ensure_topics(s, {topic: 1})
    p = Producer({**s.kafka_common(), "transactional.id": f"tx-{uuid.uuid4().hex}"})
    p.init_transactions(30)
    p.begin_transaction()
    for n in range(5):
        p.produce(topic, key=str(n).encode(), value=b"v", partition=0)
    p.commit_transaction(30)
    started = time.monotonic()
    # offsets 0-4 hold the messages, 5 the commit marker; the high watermark is 6.
    keys = [m.key() for m in read_ranges(s, topic, {0: (0, 6)}, f"g-{uuid.uuid4().hex}", 20)]
    assert keys == [str(n).encode() for n in range(5)]
    assert time.monotonic() - started < 15


def _retention_ms(s: Settings, topic: str) -> int:
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient(s.kafka_common())  # kept alive until the answer is in
    res = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    return int(next(iter(res.values())).result(timeout=30)["retention.ms"].value)


@pytest.mark.integration
def test_the_events_topic_keeps_events_as_long_as_the_setting_says(
    stack: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    s = stack(topic_events_retention_s=3 * 86_400)
    ensure_topics(s)
    assert _retention_ms(s, s.topic_events) == 3 * 86_400_000
    forever = stack(topic_events_retention_s=-1)
    ensure_topics(forever)
    assert _retention_ms(forever, forever.topic_events) == -1
    # An existing topic is left as it is, and one that keeps less than the setting is logged.
    longer = s.model_copy(update={"topic_events_retention_s": 10 * 86_400})
    with caplog.at_level(logging.WARNING, logger="streamrec.connect"):
        assert ensure_topics(longer) == []
    assert f"topic {s.topic_events} keeps events for 3.0 days" in caplog.text
    assert _retention_ms(s, s.topic_events) == 3 * 86_400_000
