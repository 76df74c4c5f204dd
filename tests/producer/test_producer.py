"""EventProducer against the real broker: key = user_id, decodable values, delivery report."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer

from streamrec.connect import ensure_topics
from streamrec.errors import EventError
from streamrec.events import Event, decode, new_event
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("fmt", ["avro", "json"])
def test_events_arrive_keyed_by_user(stack: Callable[..., Settings], fmt: str) -> None:
    s = stack()
    ensure_topics(s)
    sent = [new_event(f"user-{n % 3}", f"item-{n}", "click") for n in range(9)]
    with EventProducer(s, fmt=fmt) as p:  # type: ignore[arg-type]
        for e in sent:
            p.send(e)
    assert p.delivered == 9 and not p.failed

    c = Consumer(
        {**s.kafka_common(), "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
    )
    c.subscribe([s.topic_events])
    got: list[tuple[bytes | None, Event, int | None]] = []
    try:

        def more() -> bool:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append((m.key(), decode(m.value()), m.partition()))
            return len(got) == 9

        wait_for(more, timeout_s=20)
    finally:
        c.close()
    assert {e for _, e, _ in got} == set(sent)
    for key, event, _ in got:
        assert key == event.user_id.encode()
    partitions: dict[bytes | None, int | None] = {}
    for key, _, part in got:  # one user, one partition: per-user order is kept
        assert partitions.setdefault(key, part) == part


def test_invalid_event_is_refused_before_sending(stack: Callable[..., Settings]) -> None:
    s = stack()
    with EventProducer(s) as p, pytest.raises(EventError, match="user_id"):
        p.send(Event("e1", "", "i", "play", 1))
    assert p.sent == 0
