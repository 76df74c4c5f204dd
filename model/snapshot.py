"""Read a time window of the events topic (the source of truth) up to a fixed snapshot.

The snapshot is the end offset of every partition when reading starts: everything before it
is in the training data, everything at or after it is what workers must re-fold once the new
model is live. Undecodable messages are counted and skipped (the worker dead-letters them).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamrec.connect import read_ranges
from streamrec.errors import EventError, InfraError
from streamrec.events import Event, decode
from streamrec.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """Events in the window and the per-partition end offsets they stop at."""

    topic: str
    since_ms: int
    offsets: dict[int, int]
    events: list[Event] = field(default_factory=list)
    undecodable: int = 0


def read_window(settings: Settings, since_ms: int, timeout_s: float = 300.0) -> Snapshot:
    """All decodable events published at or after ``since_ms`` (message time) up to now."""
    topic = settings.topic_events
    # Metadata from one consumer, the messages from ``read_ranges``' own.
    consumer = Consumer({**settings.kafka_common(), "group.id": "streamrec-retrain"})
    try:
        try:
            meta = consumer.list_topics(topic, timeout=settings.kafka_timeout_s)
        except KafkaException as exc:
            raise InfraError(
                f"Kafka at {settings.kafka_bootstrap} does not answer within "
                f"{settings.kafka_timeout_s:g} s ({exc.args[0].str()})"
            ) from None
        if topic not in meta.topics or meta.topics[topic].error is not None:
            raise InfraError(f"topic {topic} does not exist")
        parts = sorted(meta.topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                for p in parts}  # fmt: skip
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in parts], timeout=30
        )
    finally:
        consumer.close()
    snap = Snapshot(topic=topic, since_ms=since_ms, offsets=dict(ends))
    # offset -1: no message at or after since_ms in this partition.
    todo = {tp.partition: (tp.offset if tp.offset >= 0 else ends[tp.partition], ends[tp.partition])
            for tp in starts}  # fmt: skip
    group = f"streamrec-retrain-{uuid.uuid4().hex[:12]}"  # reads, never commits
    for msg in read_ranges(settings, topic, todo, group, timeout_s):
        try:
            snap.events.append(decode(msg.value(), settings.event_limits))
        except EventError:
            snap.undecodable += 1
    log.info("read %d events (%d undecodable) from %s since %d, snapshot %s",
             len(snap.events), snap.undecodable, topic, since_ms, snap.offsets)  # fmt: skip
    return snap
