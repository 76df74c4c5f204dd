"""The loop's three seams: what ``Worker`` needs of its source, its sink and its dead letters.

The real ones are ``streamrec.worker.source.Source`` (Kafka), ``streamrec.sink.Sink`` (Redis)
and ``streamrec.worker.decode.DeadLetters`` (Kafka); ``Worker`` builds them unless given
others, so a test can hand it, say, a sink that fails on its Nth write, without patching.
Checkpoint order, whatever sits behind them: ``BatchSink.write`` first, ``BatchSource.commit``
after it succeeds, and dead letters delivered (``DeadLetterWriter.send`` returned) before that
write.

A source that is also ``Positions`` (the real one) lets the worker move partitions: back to
what Redis reflects, or to the start for a rebuild (``worker/rebuild.py``). With another
source, a loss of Redis noticed while running stops the worker instead (a restart rebuilds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from confluent_kafka import Message


class BatchSource(Protocol):
    """Bounded batches of messages and the commits of those applied."""

    @property
    def assigned(self) -> set[tuple[str, int]]:
        """The (topic, partition)s owned now (changes on rebalances)."""
        ...

    def poll(self) -> list[Message]:
        """The next batch (error-free messages; empty when none came within the timeout)."""
        ...

    def commit(self, msgs: Sequence[Message], asynchronous: bool = False) -> None:
        """Record ``msgs`` as applied (their effect is in Redis) and commit their offsets."""
        ...

    def commit_all(self) -> None:
        """Commit everything recorded as applied, synchronously (at stop)."""
        ...

    def idle(self) -> None:
        """Called when a poll brought nothing (catch-up work, e.g. commits sent again)."""
        ...

    def lag(self) -> int:
        """Messages not consumed yet in the owned partitions."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Positions(Protocol):
    """Where owned partitions are read from (``streamrec.worker.source.Source``)."""

    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Read each partition next from its offset (or ``OFFSET_BEGINNING``)."""
        ...

    def position(self, part: tuple[str, int]) -> int:
        """The offset of the partition's next message to come out of a poll (< 0: unknown)."""
        ...

    def watermarks(self, part: tuple[str, int]) -> tuple[int, int]:
        """(earliest offset still in the log, end of the log) of an owned partition."""
        ...


class BatchSink(Protocol):
    """A batch's read-then-write of Redis, all or nothing (``streamrec.sink.Sink``)."""

    def watch_read(self, keys: Sequence[str]) -> list[bytes | None]:
        """Watch ``keys`` and return their values (None where missing)."""
        ...

    def write(
        self,
        lists: Sequence[tuple[str, bytes]],
        states: Sequence[tuple[str, bytes]] = (),
        applied: Sequence[tuple[str, int]] = (),
        transaction: bool = True,
        homes: Sequence[tuple[str, bytes]] = (),
        vecs: Sequence[tuple[str, bytes]] = (),
    ) -> bool:
        """Write lists, states (by key), applied offsets, the users' homes and vectors; False
        (nothing written) when a watched key changed since ``watch_read``."""
        ...

    def reset(self) -> None:
        """Forget any watch and connection state (after a failure mid-batch)."""
        ...

    def close(self) -> None: ...


class DeadLetterWriter(Protocol):
    """Where undecodable messages go, with the reason (``streamrec.worker.decode``)."""

    def send(self, failed: Sequence[tuple[Message, str]]) -> None:
        """Deliver every (message, reason) before returning; raise if one cannot be."""
        ...

    def close(self) -> None: ...
