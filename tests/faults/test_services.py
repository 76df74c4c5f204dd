"""The fault tests' own services do what the fault tests rely on."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from streamrec.connect import ensure_topics, read_ranges, redis_client
from tests.faults.conftest import OwnServices

pytestmark = pytest.mark.integration


def test_redis_killed_and_restarted_empty_or_not(own: OwnServices) -> None:
    s = own.stack()
    client = redis_client(s)
    client.set(f"{s.redis_prefix}:probe", b"1")
    client.close()
    own.kill_redis()
    own.start_redis()  # no persistence configured or AOF: either way the server answers again
    own.kill_redis()
    own.start_redis(empty=True)
    client = redis_client(s)
    assert client.get(f"{s.redis_prefix}:probe") is None
    assert client.dbsize() == 0
    client.close()


def test_broker_killed_and_restarted_keeps_its_log(own: OwnServices) -> None:
    s = own.stack(topic_events_partitions=1)
    ensure_topics(s)
    p = Producer({**s.kafka_common(), "enable.idempotence": True})
    for n in range(5):
        p.produce(s.topic_events, key=b"u", value=str(n).encode())
    assert p.flush(30) == 0
    own.kill_kafka()
    own.start_kafka()
    got = list(read_ranges(s, s.topic_events, {0: (0, 5)}, "g-probe", 60))
    assert [m.value() for m in got] == [str(n).encode() for n in range(5)]
