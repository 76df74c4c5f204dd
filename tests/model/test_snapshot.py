"""The retrain's read of the events topic against the real broker: the worker's bounds."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from streamrec.connect import ensure_topics
from streamrec.events import EVENT_TYPES, new_event
from streamrec.model.snapshot import read_window
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings

pytestmark = pytest.mark.integration


def test_the_window_is_decoded_with_the_settings_bounds(stack: Callable[..., Settings]) -> None:
    # A context the worker refuses (it dead-letters it) must not enter the training data either.
    s = stack(max_context_entries=2)
    ensure_topics(s)
    with EventProducer(s) as p:
        p.send(new_event("u1", "i1", "play", value=30.0))
        p.send(new_event("u1", "i2", "play", value=30.0, context={"a": "1", "b": "2", "c": "3"}))
        p.send(new_event("u2", "i1", "click", context={"a": "1"}))
    snap = read_window(s, since_ms=0, timeout_s=60)
    assert sorted((e.user_id, e.item_id) for e in snap.events) == [("u1", "i1"), ("u2", "i1")]
    assert snap.undecodable == 1 and snap.decoded == 2
    cols = snap.columns  # what the matrix is built from: interned ids, codes, arrays
    assert sorted(cols.user_names) == ["u1", "u2"] and cols.item_names == ["i1"]
    users, items, types, values, stamps = cols.arrays()
    assert sorted(cols.user_names[u] for u in users.tolist()) == ["u1", "u2"]
    assert items.tolist() == [0, 0] and stamps.dtype == np.int64
    assert sorted(zip(types.tolist(), np.isnan(values).tolist(), strict=True)) == [
        (EVENT_TYPES.index("play"), False),
        (EVENT_TYPES.index("click"), True),
    ]
    assert sum(snap.offsets.values()) == 3
