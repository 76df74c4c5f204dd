"""Source: a Kafka consumer handing out bounded batches and committing what was applied."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streamrec.connect import read_ranges
from streamrec.settings import Settings
from streamrec.worker.errors import WorkerError
from streamrec.worker.retry import down_dependency

log = logging.getLogger(__name__)

#: The longest wait for the broker while partitions are being assigned.
ASSIGN_TIMEOUT_S = 10.0
#: How soon the start of partitions left undecided (Redis or Kafka down) is tried again.
DECIDE_AGAIN_S = 1.0


@dataclass(frozen=True, slots=True)
class Assigned:
    """A partition newly assigned to this worker, as the broker sees it then."""

    topic: str
    partition: int
    committed: int | None  # the group's committed offset (None: the group never committed)
    low: int  # the earliest offset still in the log
    high: int  # the end of the log (the next offset to be written)


#: Chooses where newly assigned partitions start: (topic, partition) -> offset (an offset, or
#: ``OFFSET_BEGINNING``); partitions left out start at the group's committed offset.
StartHook = Callable[[list[Assigned]], Mapping[tuple[str, int], int]]


def position(msg: Message) -> tuple[tuple[str, int], int]:
    """((topic, partition), offset) of a consumed message."""
    topic, part, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and part is not None and offset is not None
    return (topic, part), offset


def where(msg: Message) -> str:
    """``topic[partition]@offset`` for logs and dead-letter headers."""
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


def last_offsets(msgs: Sequence[Message]) -> dict[tuple[str, int], int]:
    """The highest offset per (topic, partition) among ``msgs``."""
    last: dict[tuple[str, int], int] = {}
    for m in msgs:
        part, offset = position(m)
        last[part] = max(last.get(part, -1), offset)
    return last


class Source:
    """Consumes ``settings.topic_events`` in the worker's consumer group.

    Offsets are committed explicitly, only after the batch's results are in Redis, so a crash
    redelivers rather than loses events. ``on_assign`` (``StartHook``) may choose where each
    newly assigned partition starts instead (the worker resumes from what Redis holds:
    ``worker/rebuild.py``); ``seek`` moves an owned partition.
    """

    def __init__(
        self,
        settings: Settings,
        on_revoke: Callable[[list[TopicPartition]], None] | None = None,
        on_assign: StartHook | None = None,
        **overrides: Any,
    ) -> None:
        conf: dict[str, Any] = {
            **settings.kafka_common(),
            "group.id": settings.consumer_group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            # A batch never takes this long; if it does, the worker is stuck and should go.
            "max.poll.interval.ms": 300_000,
            "session.timeout.ms": settings.session_timeout_ms,
            "queued.min.messages": settings.prefetch_messages,
            "queued.max.messages.kbytes": settings.prefetch_kb,
            **({"group.instance.id": settings.instance_id} if settings.instance_id else {}),
            "on_commit": self._committed,
            **overrides,
        }
        self._consumer = Consumer(conf)
        self._batch_max = settings.batch_max
        self._timeout = settings.poll_timeout_s
        self._linger = settings.batch_linger_s
        self._commit_interval = settings.commit_interval_s
        self._next_commit = 0.0
        self._uncommitted = False
        self._on_revoke = on_revoke
        self._on_assign = on_assign
        self._undecided: list[TopicPartition] = []  # assigned paused: start not chosen yet
        self._decide_at = 0.0
        self._cooperative = "cooperative" in str(conf["partition.assignment.strategy"])
        self.assigned: set[tuple[str, int]] = set()
        # The last applied offset per owned partition, and whether a commit of it failed.
        self._applied: dict[tuple[str, int], int] = {}
        self._commit_failed = False
        self._commit_failing = False  # since the last commit that went through
        self._consumer.subscribe(
            [settings.topic_events],
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )

    def _assigned(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        log.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in parts))
        self.assigned |= {(p.topic, p.partition) for p in parts}
        if self._on_assign is None or not parts:
            return  # the client assigns them at the committed offsets
        try:
            chosen = self._starts(consumer, parts)
        except BaseException as exc:
            # Undecided: assigned paused, so nothing of them is read from an unchosen offset;
            # ``poll`` chooses again. An outage (Redis or Kafka not answering) is waited out
            # that way; anything else comes out of this poll as well.
            plain = [TopicPartition(p.topic, p.partition, OFFSET_INVALID) for p in parts]
            self._assign(consumer, plain)
            consumer.pause(plain)
            self._undecided += plain
            self._decide_at = time.monotonic() + DECIDE_AGAIN_S
            names = ", ".join(f"{p.topic}[{p.partition}]" for p in parts)
            down = down_dependency(exc) if isinstance(exc, Exception) else None
            if down is not None:
                log.warning("could not choose where %s start (%s down: %s); paused until it "
                            "answers", names, down, exc)  # fmt: skip
                return
            log.error("could not choose where %s start; paused until they are chosen", names)
            raise
        # Assigning here, with offsets, replaces the client's own assignment at the commits.
        self._assign(consumer, chosen)

    def _starts(self, consumer: Consumer, parts: list[TopicPartition]) -> list[TopicPartition]:
        """``on_assign``'s start offsets for ``parts`` (OFFSET_INVALID: the commit)."""
        assert self._on_assign is not None
        committed = consumer.committed(parts, timeout=ASSIGN_TIMEOUT_S)
        infos = []
        for tp, c in zip(parts, committed, strict=True):
            low, high = consumer.get_watermark_offsets(tp, timeout=ASSIGN_TIMEOUT_S, cached=False)
            at = c.offset if c.offset >= 0 else None
            infos.append(Assigned(tp.topic, tp.partition, at, low, high))
        starts = self._on_assign(infos)
        return [TopicPartition(p.topic, p.partition, starts.get((p.topic, p.partition),
                                                                OFFSET_INVALID))
                for p in parts]  # fmt: skip

    def _assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        if self._cooperative:
            consumer.incremental_assign(parts)
        else:
            consumer.assign(parts)

    def _decide_again(self) -> None:
        """Choose the start of partitions left undecided at their assignment, then read them."""
        parts = [p for p in self._undecided if (p.topic, p.partition) in self.assigned]
        chosen = self._starts(self._consumer, parts) if parts else []
        self._undecided = []
        for tp in chosen:
            if tp.offset != OFFSET_INVALID:
                self._consumer.seek(tp)
        if parts:
            self._consumer.resume(parts)
            log.info("chose where %s start; reading them", ", ".join(
                f"{p.topic}[{p.partition}]" for p in parts))  # fmt: skip

    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Move owned partitions: the next messages of each come from its offset (or
        ``OFFSET_BEGINNING``); what was fetched past it is dropped."""
        for (topic, part), offset in offsets.items():
            self._consumer.seek(TopicPartition(topic, part, offset))

    def position(self, part: tuple[str, int]) -> int:
        """The offset of the next message of an owned partition to come out of ``poll``
        (negative when not known yet)."""
        return int(self._consumer.position([TopicPartition(*part)])[0].offset)

    def watermarks(self, part: tuple[str, int]) -> tuple[int, int]:
        """(earliest offset still in the log, end of the log) of a partition, from the broker."""
        lo, hi = self._consumer.get_watermark_offsets(
            TopicPartition(*part), timeout=ASSIGN_TIMEOUT_S, cached=False
        )
        return int(lo), int(hi)

    def _lost(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        """Partitions taken away without a handover: the group session expired (the broker
        was down, or the loop waited out a Redis outage past ``max.poll.interval.ms``)."""
        names = ", ".join(f"{p.topic}[{p.partition}]" for p in parts)
        log.warning("lost %s (group session expired); the next owner skips what Redis holds "
                    "as applied", names)  # fmt: skip
        # No commit: it would wait for a coordinator that may not be there (as long as the
        # session timeout) and be refused anyway, since this member has left the group.
        self._revoked(consumer, parts, handover=False)

    def _revoked(
        self, consumer: Consumer, parts: list[TopicPartition], handover: bool = True
    ) -> None:
        log.info("revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in parts))
        gone = {(p.topic, p.partition) for p in parts}
        # Hand the partitions over at the offsets applied here (commits are periodic).
        pending = [
            TopicPartition(t, p, o + 1) for (t, p), o in self._applied.items() if (t, p) in gone
        ]
        if pending and handover:
            try:
                self._consumer.commit(offsets=pending, asynchronous=False)
            except KafkaException as exc:
                log.warning("commit on revocation failed (%s); the next owner skips what "
                            "Redis holds as applied", exc)  # fmt: skip
        self.assigned -= gone
        self._undecided = [p for p in self._undecided if (p.topic, p.partition) not in gone]
        for part in gone:
            self._applied.pop(part, None)
        if self._on_revoke is not None:
            self._on_revoke(parts)

    def poll(self) -> list[Message]:
        """Every message already fetched, up to ``batch_max``; when there is none, wait at most
        ``poll_timeout_s`` for the first; a short batch then waits at most ``batch_linger_s``
        for more. Errors are filtered out.

        A batch is mostly what arrived while the previous one was processed: an event's
        latency is about two batch times plus the linger, and under load batches grow by
        themselves, which is what keeps up with it.
        """
        if self._undecided and time.monotonic() >= self._decide_at:
            try:
                self._decide_again()
            except Exception as exc:
                if down_dependency(exc) is None:
                    raise
                self._decide_at = time.monotonic() + DECIDE_AGAIN_S
        consume = self._consumer.consume
        msgs = consume(num_messages=self._batch_max, timeout=0)
        if not msgs:
            msgs = consume(num_messages=1, timeout=self._timeout)
        if msgs and len(msgs) < self._batch_max:
            # A short batch waits up to batch_linger_s for more: each batch costs ~1 ms
            # whatever its size (round trips, small matrix products), so batches of a handful
            # of events would spend more CPU on that than on the events.
            msgs += consume(num_messages=self._batch_max - len(msgs), timeout=self._linger)
        out = []
        for m in msgs:
            err = m.error()
            if err is None:
                out.append(m)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            elif err.fatal():
                raise WorkerError(f"fatal consumer error: {err}")
            else:
                log.warning("consumer error: %s", err)
        return out

    def commit(self, msgs: Sequence[Message], asynchronous: bool = False) -> None:
        """Record ``msgs`` as applied and commit the owned partitions' applied offsets:
        synchronously now, or (``asynchronous``) in the background at most every
        ``commit_interval_s``.

        The worker commits asynchronously between batches: Redis already holds each
        partition's applied offset, so a commit lost in a crash, or not sent yet, only means
        redelivered messages that are skipped. A commit per batch cost ~0.4 ms of the loop,
        more than a small batch's events. The last commit before closing is synchronous.
        """
        for part, offset in last_offsets(msgs).items():
            if part in self.assigned:
                self._applied[part] = max(offset, self._applied.get(part, -1))
                self._uncommitted = True
        if not asynchronous or time.monotonic() >= self._next_commit:
            self._commit_owned(asynchronous)

    def commit_all(self) -> None:
        """Commit every owned partition's applied offset now, synchronously (at stop)."""
        self._commit_owned(asynchronous=False)

    def _commit_owned(self, asynchronous: bool) -> None:
        self._next_commit = time.monotonic() + self._commit_interval
        self._uncommitted = False
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in self._applied.items()
                   if (t, p) in self.assigned]  # fmt: skip
        if offsets:
            self._commit(offsets, asynchronous)

    def _committed(self, err: KafkaError | None, parts: list[TopicPartition]) -> None:
        """Delivery report of a commit (served during ``poll``)."""
        failed = [p for p in parts if p.error is not None]
        if err is not None or failed:
            # Typically a commit sent while the group rebalanced, or while the broker is down.
            # Redis holds the applied offsets, so nothing is lost; the offsets are sent again
            # when the worker is idle, so lag and a restart start from where it really is.
            # Logged once per run of failures (a broker outage fails one every second).
            if not self._commit_failing:
                log.warning("commit failed (%s); will send it again", err or failed[0].error)
            self._commit_failed = self._commit_failing = True
        else:
            self._commit_failing = False

    def idle(self) -> None:
        """Between batches with nothing to do: commit what is applied but not committed yet
        (once the interval is up), or what the broker refused."""
        due = self._uncommitted and time.monotonic() >= self._next_commit
        if due or self._commit_failed:
            self._commit_failed = False
            self._commit_owned(asynchronous=True)

    def _commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Lost partitions after a rebalance: another worker redoes them; results are safe
            # to repeat, so this is logged, not fatal.
            if exc.args[0].code() in (
                KafkaError.REBALANCE_IN_PROGRESS,
                KafkaError.ILLEGAL_GENERATION,
                KafkaError.UNKNOWN_MEMBER_ID,
            ):
                log.warning("commit refused during rebalance: %s", exc)
                return
            raise WorkerError(f"commit failed: {exc}") from None

    def lag(self) -> int:
        """Messages between the committed position and the end of assigned partitions."""
        total = 0
        for tp in self._consumer.assignment():
            _lo, hi = self._consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
            pos = self._consumer.position([tp])[0].offset
            if pos >= 0 and hi >= 0:
                total += max(0, hi - pos)
        return total

    def close(self) -> None:
        self._consumer.close()


def read_keys(
    settings: Settings, topic: str, ranges: dict[int, tuple[int, int]], timeout_s: float = 60.0
) -> set[str]:
    """Message keys (user ids) at offsets ``[first, last]`` of each partition in ``ranges``,
    read by a throwaway consumer outside any group (``streamrec.connect.read_ranges``)."""
    spans = {p: (first, last + 1) for p, (first, last) in ranges.items()}
    group = f"{settings.consumer_group}.refold"
    keys: set[str] = set()
    for m in read_ranges(settings, topic, spans, group, timeout_s):
        key = m.key()
        if key is not None:
            keys.add(key.decode("utf-8", "replace"))
    return keys
