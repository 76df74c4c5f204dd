"""The nightly read's columns (``EventColumns`` -> ``interactions_from_columns``) give exactly
the rows ``interactions_from_events`` gives from the same decoded events: ids, weights, times,
deduplication and decay."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamrec.events import EVENT_TYPES, Event, new_event
from streamrec.feedback import DEFAULT_WEIGHTS
from streamrec.model.data import interactions_from_columns, interactions_from_events
from streamrec.model.snapshot import EventColumns, EventRow

DAY = 86_400_000

values = st.one_of(
    st.none(),
    st.sampled_from([0.0, -0.0, 1.0, 3.0, 5.0, 30.0, 120.0]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)
events_strategy = st.lists(
    st.builds(
        lambda u, i, t, v, ts, eid: new_event(
            f"u{u}", f"i{i}", t, v, 1_700_000_000_000 + ts, event_id=f"e{eid}"
        ),
        st.integers(0, 8),
        st.integers(0, 12),
        st.sampled_from(EVENT_TYPES),
        values,
        st.integers(0, 30 * DAY),
        st.integers(0, 60),  # small: repeated event ids are common
    ),
    max_size=80,
)


def same(events: list[Event], half_life_ms: float | None) -> None:
    cols = EventColumns(events)
    want = interactions_from_events(events, DEFAULT_WEIGHTS, half_life_ms)
    got = interactions_from_columns(cols, DEFAULT_WEIGHTS, half_life_ms)
    assert got.users.dtype == np.object_ and got.items.dtype == np.object_
    assert got.users.tolist() == want.users.tolist()
    assert got.items.tolist() == want.items.tolist()
    assert got.weights.dtype == np.float32
    assert got.weights.tolist() == want.weights.tolist()
    assert got.timestamps is not None and want.timestamps is not None
    assert got.timestamps.tolist() == want.timestamps.tolist()
    assert cols.decoded == len(events)
    assert cols.duplicates == len(events) - len(want)


@settings(max_examples=300, deadline=None)
@given(events_strategy, st.sampled_from([None, 0.0, 7.0 * DAY, 3_600_000.0]))
def test_columns_give_the_rows_of_the_events(events: list[Event], half_life: float | None) -> None:
    same(events, half_life)


def test_a_known_window() -> None:
    t0 = 1_700_000_000_000
    events = [
        new_event("u", "a", "play", 90.0, t0, event_id="e1"),
        new_event("u", "a", "play", 30.0, t0 + 3 * DAY, event_id="e2"),
        new_event("u", "b", "skip", 5.0, t0 + DAY, event_id="e3"),
        new_event("u", "c", "rating", 5.0, t0 + 10 * DAY, event_id="e4"),
        new_event("u", "c", "rating", 1.0, t0 + 11 * DAY, event_id="e4"),  # a repeat: dropped
        new_event("v", "a", "like", None, t0 + 2 * DAY, event_id="e5"),
    ]
    cols = EventColumns(events)
    assert (len(cols), cols.decoded, cols.duplicates) == (5, 6, 1)
    assert cols.user_names == ["u", "v"] and cols.item_names == ["a", "b", "c"]
    assert cols.rows() == [
        EventRow("u", "a", "play", 90.0, t0),
        EventRow("u", "a", "play", 30.0, t0 + 3 * DAY),
        EventRow("u", "b", "skip", 5.0, t0 + DAY),
        EventRow("u", "c", "rating", 5.0, t0 + 10 * DAY),
        EventRow("v", "a", "like", None, t0 + 2 * DAY),
    ]
    got = interactions_from_columns(cols)
    # rating 5 -> +2.5 with the default weights (README, feedback): the first e4, not the repeat
    assert got.weights.tolist()[3] == 2.5
    same(events, 7.0 * DAY)


def test_no_events() -> None:
    got = interactions_from_columns(EventColumns())
    assert len(got) == 0 and got.timestamps is not None and len(got.timestamps) == 0
