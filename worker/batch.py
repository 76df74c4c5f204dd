"""One polled batch, as every attempt at applying it reads it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import Message

from streamrec.keys import Keys
from streamrec.worker.decode import Decoded
from streamrec.worker.source import last_offsets


@dataclass(frozen=True, slots=True)
class Batch:
    """A poll's messages, decoded, and the Redis keys an attempt at applying them watches.

    Built once per poll (``Batch.of``), whatever the number of attempts.
    """

    decoded: list[Decoded]  # every message, in poll order, with its event or the reason
    parts: list[tuple[str, int]]  # the (topic, partition)s of the batch, sorted
    last: dict[tuple[str, int], int]  # the highest offset per partition
    applied_keys: list[str]  # ``<p>:applied:<topic>:<partition>`` per ``parts`` entry
    users: list[str]  # users with a decoded event, in order of first appearance
    state_keys: list[str]  # ``<p>:user:<user_id>`` per ``users`` entry

    @classmethod
    def of(cls, msgs: Sequence[Message], decoded: list[Decoded], keys: Keys) -> Batch:
        """``decoded``: ``decode_batch(msgs)``."""
        last = last_offsets(msgs)
        parts = sorted(last)
        users = list(dict.fromkeys(d.event.user_id for d in decoded if d.event is not None))
        return cls(
            decoded=decoded,
            parts=parts,
            last=last,
            applied_keys=[keys.applied(t, p) for t, p in parts],
            users=users,
            state_keys=[keys.user(u) for u in users],
        )

    @property
    def watched(self) -> list[str]:
        """The keys an attempt watches and reads: the applied offsets, then the states."""
        return self.applied_keys + self.state_keys

    def __len__(self) -> int:
        return len(self.decoded)
