"""``parse_history``: the reader of ``<p>:user:<id>`` for everything outside the worker."""

from __future__ import annotations

import orjson
import pytest

from streamrec.als.history import HistoryEntry, Rules, UserState, parse_history
from streamrec.events import new_event

RULES = Rules(weights={"play": 1.0, "like": 3.0}, half_life_ms=None, history_max=50,
              dedup_window=8)  # fmt: skip


def test_items_most_recent_first_as_the_worker_stored_them() -> None:
    state = UserState()
    for item, kind, ts in [("b", "play", 1_000), ("a", "like", 3_000), ("c", "play", 3_000),
                           ("b", "play", 2_000)]:  # fmt: skip
        state.apply(new_event("u", item, kind, timestamp=ts), RULES)
    got = parse_history(state.to_json())
    assert got == [
        HistoryEntry("a", state.items["a"][0], 3_000),  # ties by item id
        HistoryEntry("c", state.items["c"][0], 3_000),
        HistoryEntry("b", state.items["b"][0], 2_000),
    ]
    assert got[2].total == pytest.approx(2 * got[1].total)  # b: two plays, c: one


def test_only_items_are_read() -> None:
    v1 = b'{"items": {"x": [1.5, 7]}, "ids": ["e1"]}'
    assert parse_history(v1) == [HistoryEntry("x", 1.5, 7)]
    # the worker's dedup state is not the reader's business, even when it is damaged
    damaged_seen = orjson.dumps({"v": 2, "items": {"x": [1.5, 7]}, "seen": "!!", "ids": []})
    assert parse_history(damaged_seen) == [HistoryEntry("x", 1.5, 7)]
    assert parse_history(b'{"items": {}}') == []


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"v": 2}',
        b'{"items": []}',
        b'{"items": {"x": 1}}',
        b'{"items": {"x": []}}',
        b'{"items": {"x": ["many", 7]}}',
    ],
)
def test_a_malformed_value_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a user history"):
        parse_history(raw)
