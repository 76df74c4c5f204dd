"""Read a time window of the events topic (the source of truth) up to a fixed snapshot.

The snapshot is the end offset of every partition when reading starts: everything before it
is in the training data, everything at or after it is what workers must re-fold once the new
model is live. Undecodable messages are counted and skipped (the worker dead-letters them).

Each message is decoded by the one decoder of contract 1 (``streamrec.registry.event_decoder``:
the worker's bounds, schema versions and registry framing) and goes straight into
:class:`EventColumns`: interned user and item codes, type codes, values and timestamps in
``array`` buffers (about 33 bytes an event, the event id's hash included, against ~600 for a
kept ``Event`` with its own strings), so the window never lives as a list of Python objects.
The decoder's ``fields`` reads the common message (Avro single-object v1, no context) with a
hand-written reader of v1's layout, tested against the general decoder for the same verdict
and fields.
"""

from __future__ import annotations

import logging
import uuid
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from confluent_kafka import Consumer, TopicPartition

from streamrec.connect import kafka_metadata, read_ranges
from streamrec.errors import EventError, InfraError
from streamrec.events import EVENT_TYPES, Event
from streamrec.registry import event_decoder
from streamrec.settings import Settings

log = logging.getLogger(__name__)


_TYPE_CODE = {t: n for n, t in enumerate(EVENT_TYPES)}
_NAN = float("nan")


class EventRow(NamedTuple):
    """One kept event as read back from :class:`EventColumns` (no event id, no context)."""

    user_id: str
    item_id: str
    type: str
    value: float | None
    timestamp: int


class EventColumns:
    """Decoded events as columns, appended in read order; a repeated ``event_id`` is kept once
    (the first seen), as the worker and ``interactions_from_events(dedup=True)`` count it.

    ``user_names``/``item_names``: the distinct ids in first-seen order; ``users``/``items``:
    (n,) int32 codes into them; ``types``: (n,) int8 index into ``EVENT_TYPES``; ``values``:
    (n,) float64, NaN where the event has no value (a decoded value is always finite);
    ``timestamps``: (n,) int64 epoch ms. ``decoded`` counts every decodable event,
    ``duplicates`` the repeats dropped.

    Repeats are found by the 64-bit ``hash`` of each event id (this process's, kept in an
    int64 buffer: 8 bytes an event, where a set of the ids took ~110 and was most of the read's
    memory), all at once when the columns are next read (``np.unique``'s first occurrence).
    Two distinct ids of one window collide with probability about n² / 2⁶⁵ (30M events:
    2e-5), and the later of the two would be dropped; the worker's history remembers ids by an
    8-byte digest too (``streamrec.als.history.digest``).
    """

    __slots__ = ("_dropped", "_hashes", "_items", "_pending", "_users", "decoded",
                 "item_names", "items", "timestamps", "types", "user_names", "users",
                 "values")  # fmt: skip

    def __init__(self, events: Iterable[Event] = ()) -> None:
        self._users: dict[str, int] = {}
        self._items: dict[str, int] = {}
        self._hashes = array("q")
        self._pending = False  # appended since the last dedup
        self._dropped = 0
        self.user_names: list[str] = []
        self.item_names: list[str] = []
        self.users = array("i")
        self.items = array("i")
        self.types = array("b")
        self.values = array("d")
        self.timestamps = array("q")
        self.decoded = 0
        for e in events:
            self.append(e)

    def append(self, e: Event) -> None:
        """Add one decoded (valid) event."""
        self.add(e.event_id, e.user_id, e.item_id, e.type, e.value, e.timestamp)

    def add(
        self, event_id: str, user_id: str, item_id: str, type: str, value: float | None, ts: int
    ) -> None:
        """Add one decoded (valid) event's fields (``EventDecoder.fields``' tuple)."""
        self.decoded += 1
        self._pending = True
        self._hashes.append(hash(event_id))
        u = self._users.get(user_id)
        if u is None:
            u = self._users[user_id] = len(self.user_names)
            self.user_names.append(user_id)
        i = self._items.get(item_id)
        if i is None:
            i = self._items[item_id] = len(self.item_names)
            self.item_names.append(item_id)
        self.users.append(u)
        self.items.append(i)
        self.types.append(_TYPE_CODE[type])
        self.values.append(_NAN if value is None else value)
        self.timestamps.append(ts)

    @property
    def duplicates(self) -> int:
        """Repeated event ids dropped so far."""
        self._dedup()
        return self._dropped

    def _dedup(self) -> None:
        """Drop every event whose id hash an earlier one has, and the names only they used."""
        if not self._pending:
            return
        self._pending = False
        h = np.frombuffer(self._hashes, dtype=np.int64)
        if len(h) == 0:
            return
        _, first = np.unique(h, return_index=True)
        if len(first) == len(h):
            return
        keep = np.sort(first)
        self._dropped += len(h) - len(keep)
        self._hashes = _taken(self._hashes, keep)
        for name in ("types", "values", "timestamps"):
            setattr(self, name, _taken(getattr(self, name), keep))
        self.users, self.user_names, self._users = _recoded(
            _taken(self.users, keep), self.user_names
        )
        self.items, self.item_names, self._items = _recoded(
            _taken(self.items, keep), self.item_names
        )

    def __len__(self) -> int:
        self._dedup()
        return len(self.users)

    def arrays(
        self,
    ) -> tuple[
        npt.NDArray[np.int32],
        npt.NDArray[np.int32],
        npt.NDArray[np.int8],
        npt.NDArray[np.float64],
        npt.NDArray[np.int64],
    ]:
        """(users, items, types, values, timestamps) as numpy views of the buffers (no copy)."""
        self._dedup()
        return (
            np.frombuffer(self.users, dtype=np.int32) if len(self) else np.zeros(0, np.int32),
            np.frombuffer(self.items, dtype=np.int32) if len(self) else np.zeros(0, np.int32),
            np.frombuffer(self.types, dtype=np.int8) if len(self) else np.zeros(0, np.int8),
            np.frombuffer(self.values, dtype=np.float64) if len(self) else np.zeros(0),
            np.frombuffer(self.timestamps, dtype=np.int64) if len(self) else np.zeros(0, np.int64),
        )

    def rows(self) -> list[EventRow]:
        """The kept events as tuples, in read order: for inspection and tests (the training
        path reads the arrays)."""
        self._dedup()
        return [
            EventRow(
                self.user_names[u],
                self.item_names[i],
                EVENT_TYPES[t],
                None if v != v else v,  # NaN: no value
                ts,
            )
            for u, i, t, v, ts in zip(
                self.users, self.items, self.types, self.values, self.timestamps, strict=True
            )
        ]


def _taken(buf: array[Any], keep: npt.NDArray[np.intp]) -> array[Any]:
    """A new ``array`` of ``buf``'s entries at the (sorted) positions ``keep``."""
    out = array(buf.typecode)
    out.frombytes(np.frombuffer(buf, dtype=_DTYPES[buf.typecode])[keep].tobytes())
    return out


def _recoded(codes: array[Any], names: list[str]) -> tuple[array[Any], list[str], dict[str, int]]:
    """Codes and names without the names no code uses (first-seen order kept)."""
    c = np.frombuffer(codes, dtype=np.int32)
    used = np.zeros(len(names), dtype=bool)
    used[c] = True
    if used.all():
        return codes, names, {n: k for k, n in enumerate(names)}
    new_code = np.cumsum(used, dtype=np.int32) - 1
    kept = [n for n, u in zip(names, used.tolist(), strict=True) if u]
    out = array("i")
    out.frombytes(new_code[c].astype(np.int32).tobytes())
    return out, kept, {n: k for k, n in enumerate(kept)}


_DTYPES = {"i": np.int32, "b": np.int8, "d": np.float64, "q": np.int64}


@dataclass
class Snapshot:
    """Events in the window (as columns) and the per-partition end offsets they stop at."""

    topic: str
    since_ms: int
    offsets: dict[int, int]
    columns: EventColumns = field(default_factory=EventColumns)
    undecodable: int = 0

    @property
    def decoded(self) -> int:
        """Decodable events read (repeated event ids included)."""
        return self.columns.decoded

    @property
    def events(self) -> list[EventRow]:
        """The kept events as rows (``EventColumns.rows``); built on each call."""
        return self.columns.rows()


def read_window(settings: Settings, since_ms: int, timeout_s: float = 300.0) -> Snapshot:
    """All decodable events published at or after ``since_ms`` (message time) up to now."""
    topic = settings.topic_events
    # Metadata from one consumer, the messages from ``read_ranges``' own.
    consumer = Consumer({**settings.kafka_common(), "group.id": "streamrec-retrain"})
    try:
        meta = kafka_metadata(consumer, settings, topic)  # not assigned yet: poll is safe
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
    decode = event_decoder(settings)  # every schema version the worker reads, the registry too
    # ``fields``: the decoder's verdict and fields without an Event object (its hand-written
    # reader takes the common v1 message; anything else goes through the general decoder).
    fields, add = decode.fields, snap.columns.add
    for msg in read_ranges(settings, topic, todo, group, timeout_s):
        try:
            got = fields(msg.value())
        except EventError:
            snap.undecodable += 1
            continue
        add(*got)
    log.info("read %d events (%d repeats, %d undecodable) from %s since %d, snapshot %s",
             snap.decoded, snap.columns.duplicates, snap.undecodable, topic, since_ms,
             snap.offsets)  # fmt: skip
    return snap
