"""One polled batch, as every attempt at applying it reads it."""

from __future__ import annotations

from dataclasses import dataclass

from streamrec.keys import Keys, home_value
from streamrec.worker.decode import Decoded
from streamrec.worker.source import position


@dataclass(frozen=True, slots=True)
class Batch:
    """A poll's messages, decoded, and the Redis keys an attempt at applying them watches.

    Built once per poll (``Batch.of``), whatever the number of attempts. A user's history
    lives with the partition their events come from (``Keys.user``): one key of it, hash-tagged
    by that partition, so it commits with the partition's applied offset.
    """

    decoded: list[Decoded]  # every message, in poll order, with its event or the reason
    pos: list[tuple[tuple[str, int], int]]  # ((topic, partition), offset) per ``decoded``
    parts: list[tuple[str, int]]  # the (topic, partition)s of the batch, sorted
    first: dict[tuple[str, int], int]  # the lowest offset per partition
    last: dict[tuple[str, int], int]  # the highest offset per partition
    applied_keys: list[str]  # ``Keys.applied`` per ``parts`` entry
    users: list[str]  # users with a decoded event, in order of first appearance
    state_keys: list[str]  # ``Keys.user`` per ``users`` entry (in their event's partition)
    homes: dict[str, bytes]  # user -> ``home_value`` of their partition

    @classmethod
    def of(cls, decoded: list[Decoded], keys: Keys) -> Batch:
        """``decoded``: ``decode_batch`` of a poll's messages (or some partitions of them), no
        user's events in two partitions (``split``)."""
        pos = [position(d.msg) for d in decoded]
        first: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
        for part, offset in pos:
            if offset < first.get(part, offset + 1):
                first[part] = offset
            if offset > last.get(part, -1):
                last[part] = offset
        parts = sorted(last)
        home: dict[str, tuple[str, int]] = {}
        for d, (part, _) in zip(decoded, pos, strict=True):
            ev = d.event
            if ev is not None and ev.user_id not in home:
                home[ev.user_id] = part
        users = list(home)
        return cls(
            decoded=decoded,
            pos=pos,
            parts=parts,
            first=first,
            last=last,
            applied_keys=[keys.applied(t, p) for t, p in parts],
            users=users,
            state_keys=[keys.user(u, *home[u]) for u in users],
            homes={u: home_value(*home[u]) for u in users},
        )

    @staticmethod
    def split(decoded: list[Decoded]) -> list[list[Decoded]]:
        """``decoded`` in groups whose partitions share no user, in partition order (one group,
        ``decoded`` itself, in the usual case): a user whose events arrive in two partitions
        (producers keying or partitioning them differently) has one history per partition,
        each applied with its own partition's offset."""
        seen: dict[str, tuple[str, int]] = {}
        clash = False
        for d in decoded:
            if d.event is not None:
                part = position(d.msg)[0]
                if seen.setdefault(d.event.user_id, part) != part:
                    clash = True
                    break
        if not clash:
            return [decoded]
        by_part: dict[tuple[str, int], list[Decoded]] = {}
        for d in decoded:
            by_part.setdefault(position(d.msg)[0], []).append(d)
        groups: list[tuple[set[str], list[Decoded]]] = []
        for _, items in sorted(by_part.items()):
            users = {d.event.user_id for d in items if d.event is not None}
            for taken, group in groups:
                if not taken & users:
                    taken |= users
                    group += items
                    break
            else:
                groups.append((users, list(items)))
        return [group for _, group in groups]

    @property
    def watched(self) -> list[str]:
        """The keys an attempt watches and reads: the applied offsets, then the states."""
        return self.applied_keys + self.state_keys

    def __len__(self) -> int:
        return len(self.decoded)
