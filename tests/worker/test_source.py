"""The source against the real broker: bounded polls, commits, and commits sent again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamrec.connect import ensure_topics
from streamrec.events import new_event
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from streamrec.worker.source import Assigned, Source
from tests.conftest import committed_total, wait_for


class _RefuseFirstCommit:
    """The real consumer, except that its first commit is answered the way the broker answers
    one sent in the middle of a rebalance (ILLEGAL_GENERATION), and not applied."""

    def __init__(self, consumer: Consumer, report: Callable[..., None]) -> None:
        self._consumer, self._report, self.refused = consumer, report, 0

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        if not asynchronous:  # the hand-over when the partitions are revoked at close
            self._consumer.commit(offsets=offsets, asynchronous=False)
        elif not self.refused:
            self.refused += 1
            self._report(KafkaError(KafkaError.ILLEGAL_GENERATION), offsets)
        else:
            self._consumer.commit(offsets=offsets, asynchronous=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


@pytest.mark.integration
def test_a_refused_commit_is_sent_again_once_idle(stack: Callable[..., Settings]) -> None:
    s = stack(topic_events_partitions=2)
    ensure_topics(s)
    with EventProducer(s) as producer:
        for n in range(20):
            producer.send(new_event(f"u{n % 4}", "i1", "click"))
    source = Source(s)
    try:
        got: list[Message] = []

        def poll_all() -> bool:
            got.extend(source.poll())
            return len(got) == 20

        wait_for(poll_all, 30)
        fake = _RefuseFirstCommit(source._consumer, source._committed)
        source._consumer = fake  # type: ignore[assignment]
        source.commit(got, asynchronous=True)
        assert fake.refused == 1

        def idle() -> bool:  # what the loop does when a poll brings nothing
            assert not source.poll()
            source.idle()
            return committed_total(s) == 20

        wait_for(idle, 30)
    finally:
        source.close()


@pytest.mark.integration
@pytest.mark.parametrize(
    "outage", [None, "redis", "leader"], ids=["error", "redis-down", "no-leader"]
)
def test_partitions_whose_start_cannot_be_chosen_wait_paused_until_it_is(
    stack: Callable[..., Settings], outage: str | None
) -> None:
    """The first choice fails: with Redis down, or the partition between leaders (what the
    broker answers for a topic just created on a loaded machine), the poll goes on (the
    partition paused); with any other error, the poll raises it. Either way nothing is read
    before the second choice, and then from the offset it chose."""
    s = stack(topic_events_partitions=1)
    ensure_topics(s)
    with EventProducer(s) as producer:
        for n in range(10):
            producer.send(new_event("u", f"i{n}", "click"))
    calls: list[list[Assigned]] = []

    def choose(infos: list[Assigned]) -> dict[tuple[str, int], int]:
        calls.append(infos)
        if len(calls) == 1:
            if outage == "redis":
                raise redis.ConnectionError("injected: Redis does not answer")
            if outage == "leader":  # as get_watermark_offsets raises it
                raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
            raise ValueError("injected: a bug")
        return {(s.topic_events, 0): 4}

    source = Source(s, on_assign=choose)
    try:
        got: list[Message] = []

        def assignment_fails() -> bool:
            try:
                got.extend(source.poll())
            except ValueError:
                return True
            return len(calls) == 1

        wait_for(assignment_fails, 30)
        assert got == []

        def rest() -> bool:
            got.extend(source.poll())
            return len(got) >= 6

        wait_for(rest, 30)
        # Nothing was read from an offset nobody chose; then from the one chosen.
        assert [m.offset() for m in got] == list(range(4, 10))
        assert [(a.partition, a.committed, a.low, a.high) for a in calls[1]] == [(0, None, 0, 10)]
    finally:
        source.close()
