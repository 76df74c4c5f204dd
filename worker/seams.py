"""The loop's three seams: what ``Worker`` needs of its source, its sink and its dead letters.

The real ones are ``streamrec.worker.source.Source`` (Kafka), ``streamrec.sink.Sink`` (Redis)
and ``streamrec.worker.decode.DeadLetters`` (Kafka); ``Worker`` builds them unless given
others, so a test can hand it, say, a sink that fails on its Nth write, without patching.
Checkpoint order, whatever sits behind them: ``BatchSink.write`` first, ``BatchSource.commit``
after it succeeds, and dead letters delivered (``DeadLetterWriter.send`` returned) before that
write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

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
    ) -> bool:
        """Write lists, states and applied offsets; False (nothing written) when a watched key
        changed since ``watch_read``."""
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
