"""The catalog view against the real broker: read to the end at start, then followed; bad
records dead-lettered once with their reason."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Message, Producer

from streamrec.catalog import Item, encode_item, encode_item_json
from streamrec.connect import ensure_topics, read_ranges
from streamrec.settings import Settings
from streamrec.worker.catalog import Catalog, CatalogFollower
from streamrec.worker.decode import DeadLetters
from tests.conftest import log_end, wait_for

pytestmark = pytest.mark.integration


def item(i: int, *, available: bool = True, name: str | None = None) -> Item:
    return Item(f"i{i}", name or f"Item {i}", ("rock",), 2000 + i, available,
                {"tempo": float(100 + i)}, 1_700_000_000_000 + i)  # fmt: skip


def send(s: Settings, records: list[tuple[bytes, bytes | None]]) -> None:
    p = Producer({**s.kafka_common(), "acks": "all"})
    for key, value in records:
        p.produce(s.topic_items, key=key, value=value)
    assert p.flush(30) == 0


def _header(m: Message, name: str) -> str:
    value = dict(m.headers() or [])[name]
    assert isinstance(value, bytes)
    return value.decode()


def test_catalog_view_is_a_snapshot_and_counts_versions() -> None:
    c = Catalog()
    assert c.apply({"i1": item(1), "i2": item(2, available=False)})
    snap = c.items()
    assert c.version == 1 and set(snap) == {"i1", "i2"} and c.unavailable() == {"i2"}
    assert not c.apply({"i1": item(1)})  # the same record again changes nothing
    assert c.apply({"i1": None, "i2": item(2)})
    assert set(snap) == {"i1", "i2"}, "a snapshot never changes"
    assert c.version == 2 and c.get("i1") is None and c.unavailable() == {"i1"}
    assert c.apply({"i1": item(1)}) and c.unavailable() == frozenset()


def test_follower_reads_to_the_end_then_follows_records_and_tombstones(
    stack: Callable[..., Settings],
) -> None:
    s = stack()
    ensure_topics(s)
    send(s, [(f"i{i}".encode(), encode_item(item(i))) for i in range(50)])
    send(s, [(b"i3", encode_item(item(3, name="renamed"))), (b"i4", None),
             (b"i5", encode_item_json(item(5, available=False)))])  # fmt: skip
    follower = CatalogFollower(s)
    try:
        cat = follower.start(timeout_s=30)
        assert len(cat) == 49 and cat.get("i4") is None
        assert cat.get("i3") == item(3, name="renamed") and cat.version == 1
        assert cat.unavailable() == {"i4", "i5"}
        follower.follow(interval_s=0.05)
        send(s, [(b"i100", encode_item(item(100)))])
        wait_for(lambda: cat.get("i100") == item(100), 30)
        send(s, [(b"i100", None)])
        wait_for(lambda: "i100" not in cat, 30)
        assert "i100" in cat.unavailable()
    finally:
        follower.stop()


def test_bad_records_are_dead_lettered_once_with_the_reason(
    stack: Callable[..., Settings],
) -> None:
    s = stack()
    ensure_topics(s)
    send(s, [(b"i1", encode_item(item(1))), (b"i2", b"not a record"),
             (b"other", encode_item(item(3))), (b"i4", b'{"item_id": "i4"}')])  # fmt: skip
    dead = DeadLetters(s)
    follower = CatalogFollower(s, dead_letters=dead)
    try:
        cat = follower.start(timeout_s=30)
        assert set(cat.items()) == {"i1"}
    finally:
        follower.stop()
    assert follower.dead_lettered == 3
    letters = list(read_ranges(s, s.topic_dlq, {0: (0, log_end(s, s.topic_dlq))}, "g-dlq", 30))
    reasons = {m.key(): _header(m, "streamrec.error") for m in letters}
    assert "neither Avro" in reasons[b"i2"]
    assert "is not the record's item_id 'i3'" in reasons[b"other"]
    assert "missing field 'updated_at'" in reasons[b"i4"]
    sources = {_header(m, "streamrec.source") for m in letters}
    assert sources == {f"{s.topic_items}[0]@{o}" for o in (1, 2, 3)}
    assert {m.value() for m in letters} >= {b"not a record"}  # byte for byte

    # A second start reads the whole topic again but sends only what is new.
    send(s, [(b"i9", b"\xc3\x01broken")])
    again = CatalogFollower(s, dead_letters=dead)
    try:
        again.start(timeout_s=30)
    finally:
        again.stop()
        dead.close()
    assert again.dead_lettered == 1
    assert log_end(s, s.topic_dlq) == 4
