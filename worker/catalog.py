"""The item catalog as a process keeps it: ``Catalog`` (item_id -> ``Item``), fed from the
compacted items topic (contract 3, ``streamrec.catalog``) by ``CatalogFollower``.

The follower reads the topic from its beginning to the end it had at start (bounded, polling;
compaction keeps the latest record of every item, so that is the whole catalog), then follows
it: the worker calls ``poll()`` between batches, the web service runs ``follow()`` on a thread
of its own. A tombstone (a null value) removes the item its key names; a record that does not
decode, or whose key is not its ``item_id``, is dead-lettered with the reason (when the
follower is given a dead-letter writer: the worker's) and the catalog goes on without it.

Dead letters are sent once per record, not once per start: every start reads the whole topic
again, so the follower remembers how far it has dead-lettered as the committed offsets of the
consumer group ``<consumer_group>.catalog`` (committed after the letters are acknowledged) and
sends only the bad records past them. Several workers share that group, so a bad record that
arrives while two run may be dead-lettered by both (at least once, as for events).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from types import MappingProxyType

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from streamrec.catalog import Item, decode_item
from streamrec.errors import CatalogError, InfraError, TopicsError
from streamrec.settings import Settings
from streamrec.worker.errors import DependencyDown
from streamrec.worker.seams import DeadLetterWriter
from streamrec.worker.source import where

log = logging.getLogger(__name__)

#: Longest wait to read the items topic to its end at start (a catalog of 200k items is read
#: in a few seconds); past it ``start`` raises ``InfraError``.
LOAD_TIMEOUT_S = 120.0
POLL_BATCH = 5000


class Catalog:
    """In-memory view item_id -> ``Item``; reads are safe from any thread.

    Changes come in batches (``apply``): each makes a new dict, published by one reference
    swap, so a reader's ``items()`` is a snapshot that never changes under it, and ``version``
    (an int) grows by one per batch that changed something.

    ``unavailable()``: the ids never to recommend: items with ``available`` false, and items
    a tombstone removed (an item the model was trained on stays out of lists once removed).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: Mapping[str, Item] = MappingProxyType({})
        self._off: frozenset[str] = frozenset()  # available false
        self._removed: frozenset[str] = frozenset()  # tombstoned, not back since
        self.version = 0

    def get(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def items(self) -> Mapping[str, Item]:
        """A snapshot of the whole catalog (read-only; later changes make a new one)."""
        return self._items

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def unavailable(self) -> frozenset[str]:
        """Ids never to recommend: ``available`` false, or removed by a tombstone."""
        return self._off | self._removed

    def apply(self, changes: Mapping[str, Item | None]) -> bool:
        """Apply one batch (item_id -> its new record, or None for a tombstone), in order;
        True (and ``version`` + 1) when anything changed."""
        if not changes:
            return False
        with self._lock:
            items = dict(self._items)
            off, removed = set(self._off), set(self._removed)
            changed = False
            for item_id, item in changes.items():
                if item is None:
                    changed |= items.pop(item_id, None) is not None or item_id not in removed
                    removed.add(item_id)
                    off.discard(item_id)
                    continue
                changed |= items.get(item_id) != item or item_id in removed
                items[item_id] = item
                removed.discard(item_id)
                if item.available:
                    off.discard(item_id)
                else:
                    off.add(item_id)
            if not changed:
                return False
            self._items = MappingProxyType(items)
            self._off, self._removed = frozenset(off), frozenset(removed)
            self.version += 1
            return True


class CatalogFollower:
    """Keeps a ``Catalog`` in step with ``settings.topic_items``.

    ``start()`` reads the topic to the end it has now (``LOAD_TIMEOUT_S`` at most), then
    ``poll()`` applies whatever has arrived since (never blocking longer than its timeout);
    ``follow()``/``stop()`` run ``poll`` on a background thread instead. ``dead_letters``:
    where undecodable records go (the worker's ``DeadLetters``); None = logged only (the web
    service: the workers dead-letter them).
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog | None = None,
        *,
        dead_letters: DeadLetterWriter | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog if catalog is not None else Catalog()
        self.topic = settings.topic_items
        self._dead = dead_letters
        # The committed offsets of this group say how far records were dead-lettered; reading
        # itself starts at the beginning every time (assign, never subscribe: no rebalances).
        self._group = f"{settings.consumer_group}.catalog"
        self._consumer = Consumer(
            {
                **settings.kafka_common(),
                "group.id": self._group if dead_letters is not None
                else f"{self._group}.{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
            }
        )  # fmt: skip
        self._parts: list[int] = []
        self._lettered: dict[int, int] = {}  # partition -> first offset not dead-lettered yet
        self._pending: list[tuple[Message, str]] = []  # dead letters not acknowledged yet
        self._next: dict[int, int] = {}  # partition -> offset after the last one applied
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.records = 0  # records applied (tombstones too)
        self.dead_lettered = 0
        self.loaded = False

    # --- start -----------------------------------------------------------------------------

    def start(self, timeout_s: float = LOAD_TIMEOUT_S) -> Catalog:
        """Read the topic from its beginning to the end it has now; the catalog, complete as
        of that end. ``TopicsError`` when the topic is missing, ``InfraError`` when the broker
        does not answer or the end is not reached within ``timeout_s``."""
        s = self.settings
        started = time.monotonic()
        try:
            meta = self._consumer.list_topics(self.topic, timeout=s.kafka_timeout_s)
        except KafkaException as exc:
            why = exc.args[0].str()
            raise InfraError(f"Kafka at {s.kafka_bootstrap} does not answer within "
                             f"{s.kafka_timeout_s:g} s ({why})") from None  # fmt: skip
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise TopicsError(f"topic {self.topic} missing at {s.kafka_bootstrap}; create it "
                              "with: streamrec topics create")  # fmt: skip
        self._parts = sorted(topic.partitions)
        ends: dict[int, int] = {}
        for p in self._parts:
            ends[p] = self._end(p, min(timeout_s, s.kafka_timeout_s))
        if self._dead is not None:
            self._lettered = self._marks(min(timeout_s, s.kafka_timeout_s))
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING)
                               for p in self._parts])  # fmt: skip
        deadline = started + timeout_s
        changes: dict[str, Item | None] = {}
        while any(self._next.get(p, 0) < ends[p] for p in self._parts):
            left = deadline - time.monotonic()
            if left <= 0:
                got = sum(self._next.get(p, 0) for p in self._parts)
                raise InfraError(f"read {got} of {sum(ends.values())} records of {self.topic} "
                                 f"in {timeout_s:g} s; the catalog is not complete")  # fmt: skip
            msgs = self._consumer.consume(POLL_BATCH, min(0.5, left))
            self._read(msgs, changes)
            if not msgs:  # compaction may have removed the records just before the end
                for tp in self._consumer.position([TopicPartition(self.topic, p)
                                                   for p in self._parts]):  # fmt: skip
                    if tp.offset > self._next.get(tp.partition, 0):
                        self._next[tp.partition] = tp.offset
        self.catalog.apply(changes)  # one snapshot for the whole load
        self._flush_dead()
        self.loaded = True
        log.info("catalog: %d items (%d unavailable) from %s in %.1f s", len(self.catalog),
                 len(self.catalog.unavailable()), self.topic,
                 time.monotonic() - started)  # fmt: skip
        return self.catalog

    def _end(self, part: int, wait_s: float) -> int:
        """The end offset of ``topic[part]``, asked again for ``wait_s`` while the broker has
        no leader for it yet (a topic just created, a leader moving): ``InfraError`` after."""
        deadline = time.monotonic() + wait_s
        pause = 0.1
        while True:
            try:
                _lo, hi = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, part),
                    timeout=max(0.5, deadline - time.monotonic()),
                    cached=False,
                )
                return int(hi)
            except KafkaException as exc:
                if time.monotonic() + pause > deadline:
                    raise InfraError(f"Kafka at {self.settings.kafka_bootstrap}: cannot read the "
                                     f"end of {self.topic}[{part}] within {wait_s:g} s "
                                     f"({exc.args[0].str()})") from None  # fmt: skip
            time.sleep(pause)
            pause = min(1.0, pause * 2)

    def _marks(self, wait_s: float) -> dict[int, int]:
        """How far records were dead-lettered (the group's committed offsets), asked again
        while the group coordinator is not ready (a broker just started says "not
        coordinator" or "loading" for a while). Not known within ``wait_s``: 0 for every
        partition, so bad records may go to the dead-letter topic again (at least once)."""
        tps = [TopicPartition(self.topic, p) for p in self._parts]
        deadline = time.monotonic() + wait_s
        pause = 0.1
        while True:
            try:
                got = self._consumer.committed(tps, timeout=max(0.5, deadline - time.monotonic()))
                return {tp.partition: max(tp.offset, 0) for tp in got}
            except KafkaException as exc:
                if time.monotonic() + pause > deadline:
                    log.warning("catalog: cannot read how far %s was dead-lettered (%s); its "
                                "bad records may be dead-lettered again", self.topic,
                                exc.args[0].str())  # fmt: skip
                    return {p: 0 for p in self._parts}
            time.sleep(pause)
            pause = min(1.0, pause * 2)

    # --- follow ----------------------------------------------------------------------------

    def poll(self, timeout_s: float = 0.0, max_records: int = POLL_BATCH) -> bool:
        """Apply the records that arrived (waiting up to ``timeout_s`` for the first); True
        when the catalog changed. Dead letters that could not go (Kafka down) are sent again
        on the next call; the records themselves are never read twice."""
        changes: dict[str, Item | None] = {}
        msgs = self._consumer.consume(max_records, timeout_s)
        self._read(msgs, changes)
        changed = self.catalog.apply(changes)
        self._flush_dead()
        return changed

    def follow(self, interval_s: float = 0.2) -> threading.Thread:
        """``poll`` on a daemon thread until ``stop()`` (``start()`` first, if not done)."""
        if not self.loaded:
            self.start()

        def run() -> None:
            while not self._stop.is_set():
                try:
                    self.poll(timeout_s=interval_s)
                except Exception:  # keep following: one bad poll must not end the view
                    log.exception("catalog follower: poll of %s failed", self.topic)
                    self._stop.wait(1.0)

        self._thread = threading.Thread(target=run, name="catalog-follower", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Stop ``follow``'s thread (if any) and close the consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._consumer.close()

    close = stop

    # --- records ---------------------------------------------------------------------------

    def _read(self, msgs: list[Message], changes: dict[str, Item | None]) -> None:
        for m in msgs:
            err = m.error()
            if err is not None:  # a consumer event, not a record (no EOF events: off)
                log.warning("catalog: %s: %s", self.topic, err.str())
                continue
            part, offset = m.partition(), m.offset()
            assert part is not None and offset is not None
            self._next[part] = offset + 1
            item, reason = self._record(m)
            self.records += 1
            if reason is None:
                key = m.key()
                assert key is not None
                item_id = item.item_id if item is not None else key.decode()
                changes.pop(item_id, None)  # keep the order: the latest record wins
                changes[item_id] = item
                continue
            log.warning("catalog: bad record at %s: %s", where(m), reason)
            if self._dead is not None and offset >= self._lettered.get(part, 0):
                self._pending.append((m, reason))

    @staticmethod
    def _record(m: Message) -> tuple[Item | None, str | None]:
        """(item or None for a tombstone, None) or (None, the reason it is a bad record)."""
        key, value = m.key(), m.value()
        if not key:
            return None, "catalog record without a key (the key must be its item_id)"
        try:
            key_id = key.decode("utf-8")
        except UnicodeDecodeError:
            return None, "catalog record key is not UTF-8"
        if value is None:
            return None, None  # a tombstone: the key's item is removed
        try:
            item = decode_item(value)
        except CatalogError as exc:
            return None, exc.reason
        if item.item_id != key_id:
            return None, f"key {key_id[:40]!r} is not the record's item_id {item.item_id[:40]!r}"
        return item, None

    def _flush_dead(self) -> None:
        """Send the pending dead letters; once acknowledged, commit how far they go."""
        if self._dead is None:
            return
        if self._pending:
            try:
                self._dead.send(self._pending)
            except DependencyDown as exc:
                log.warning("catalog: %d dead letters wait for Kafka: %s", len(self._pending), exc)
                return
            self.dead_lettered += len(self._pending)
            self._pending = []
        marks = [TopicPartition(self.topic, p, o) for p, o in self._next.items()
                 if o > self._lettered.get(p, 0)]  # fmt: skip
        if not marks:
            return
        try:
            self._consumer.commit(offsets=marks, asynchronous=False)
        except KafkaException as exc:  # the next flush commits again; at worst a re-send
            log.warning("catalog: cannot commit the dead-letter marks: %s", exc.args[0].str())
            return
        for tp in marks:
            self._lettered[tp.partition] = tp.offset
