"""History rules: duplicates, decay in event time, late events, the cap, negative feedback."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from streamrec.als.history import Rules, UserState, flatten
from streamrec.events import Event
from streamrec.feedback import DEFAULT_WEIGHTS

DAY = 86_400_000
RULES = Rules(weights=DEFAULT_WEIGHTS, half_life_ms=10 * DAY, history_max=3, dedup_window=4)
CAP10 = Rules(weights=DEFAULT_WEIGHTS, half_life_ms=None, history_max=10, dedup_window=0)


def ev(n: int, item: str, type: str = "play", ts: int = 0, value: float | None = None) -> Event:
    return Event(f"e{n}", "u", item, type, ts, value)


def test_duplicate_event_ids_are_ignored() -> None:
    s = UserState()
    assert s.apply(ev(1, "a"), RULES)
    assert not s.apply(ev(1, "a"), RULES)
    assert s.items["a"][0] == 1.0


def test_dedup_window_is_bounded() -> None:
    s = UserState()
    for n in range(10):
        s.apply(ev(n, "a", ts=n), RULES)
    assert len(s.seen) == 4 * 8  # RULES.dedup_window digests
    assert all(s.has_seen(f"e{n}") for n in range(6, 10))
    assert not any(s.has_seen(f"e{n}") for n in range(6))
    assert s.apply(ev(2, "a", ts=11), RULES)  # forgotten: counted again


def test_seen_matches_whole_digests_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamrec.als.history as history

    s = UserState()
    for n in range(4):
        s.apply(ev(n, "a", ts=n), RULES)
    straddle = s.seen[4:12]  # the back half of one digest and the front half of the next
    real = history.digest
    monkeypatch.setattr(history, "digest", lambda i: straddle if i == "x" else real(i))
    assert s.seen.find(straddle) == 4 and not s.has_seen("x")
    assert s.has_seen("e3") and not s.has_seen("e9")


def test_version_1_states_are_read() -> None:
    v1 = b'{"v":1,"items":{"a":[1.5,1000.0]},"ids":["e1","e2"]}'
    s = UserState.from_json(v1)
    assert s.items == {"a": [1.5, 1000.0]} and s.has_seen("e1") and s.has_seen("e2")
    assert not s.apply(ev(1, "a", ts=2000), RULES)
    again = orjson.loads(s.to_json())
    assert again["v"] == 2 and again["ids"] == [] and UserState.from_json(s.to_json()) == s


def test_decay_halves_per_half_life_in_event_time() -> None:
    s = UserState()
    s.apply(ev(1, "a", ts=0), RULES)
    s.apply(ev(2, "b", ts=10 * DAY), RULES)
    totals = s.totals(RULES.half_life_ms)
    assert totals["a"] == pytest.approx(0.5)  # one half-life older than the newest event
    assert totals["b"] == pytest.approx(1.0)
    s.apply(ev(3, "a", ts=20 * DAY), RULES)
    assert s.items["a"] == [pytest.approx(0.25 + 1.0), 20 * DAY]


def test_late_event_decays_to_the_newer_time_and_order_does_not_matter() -> None:
    a, b = UserState(), UserState()
    for e in (ev(1, "x", ts=0), ev(2, "x", ts=10 * DAY)):
        a.apply(e, RULES)
    for e in (ev(2, "x", ts=10 * DAY), ev(1, "x", ts=0)):
        b.apply(e, RULES)
    assert a.items["x"][0] == pytest.approx(b.items["x"][0]) == pytest.approx(1.5)


def test_cap_keeps_the_strongest() -> None:
    s = UserState()
    s.apply(ev(1, "weak", "view", ts=5), RULES)
    s.apply(ev(2, "liked", "like", ts=5), RULES)
    s.apply(ev(3, "played", "play", ts=5), RULES)
    s.apply(ev(4, "bought", "purchase", ts=5), RULES)
    # past the cap of 3: cut to the strongest 90% of 3, i.e. 2
    assert set(s.items) == {"liked", "bought"}


def test_negative_feedback_and_value_transforms() -> None:
    s = UserState()
    s.apply(ev(1, "a", "dislike"), RULES)
    s.apply(ev(2, "b", "skip", value=5.0), RULES)  # quick skip
    s.apply(ev(3, "c", "skip", value=200.0), RULES)  # listened, then skipped: neutral
    assert s.items["a"][0] == -2.0 and s.items["b"][0] == -0.5 and s.items["c"][0] == 0.0


def test_json_round_trip() -> None:
    s = UserState()
    s.apply(ev(1, "a", ts=1_700_000_000_000, value=90.0), RULES)
    again = UserState.from_json(s.to_json())
    assert again.items == s.items and again.seen == s.seen and again == s
    assert UserState.from_json(None).items == {}


def test_cap_cuts_with_hysteresis() -> None:
    s = UserState()
    for n in range(11):  # the 11th item passes the cap of 10: cut to 9, the strongest
        s.apply(ev(n, f"i{n}", "play", ts=n, value=30.0 * (n + 1)), CAP10)
    assert len(s.items) == 9
    assert "i0" not in s.items and "i1" not in s.items
    s.apply(ev(99, "new", ts=50), CAP10)  # room again: nothing is cut
    assert len(s.items) == 10


@pytest.mark.parametrize("half_life_ms", [None, 3_600_000.0])
def test_flatten_is_every_states_totals_in_order(half_life_ms: float | None) -> None:
    rng = np.random.default_rng(5)
    states = [UserState()]  # an empty history among the others
    for n in (1, 7, 300):
        items = {f"i{j}": [float(rng.normal()), float(1.7e12 + rng.integers(0, 10**8))]
                 for j in range(n)}  # fmt: skip
        states.append(UserState(items=items))
    counts, ids, totals = flatten(states, half_life_ms)
    assert counts.tolist() == [0, 1, 7, 300]
    want = [(i, t) for s in states for i, t in s.totals(half_life_ms).items()]
    assert ids == [i for i, _ in want]
    np.testing.assert_allclose(totals, [t for _, t in want], rtol=1e-15)


def test_binary_round_trip_is_exact_and_smaller_than_json() -> None:
    s = UserState()
    for n in range(40):
        s.apply(
            ev(n, f"item-{n % 25}", "play", ts=1_700_000_000_000 + 977 * n, value=33.3), RULES50
        )
    raw = s.encode()
    assert raw[0] == 3 and UserState.decode(raw) == s
    again = UserState.decode(raw)
    assert again.ids == s.ids and again.vals == s.vals and again.seen == s.seen  # bit for bit
    assert len(raw) < 0.6 * len(s.to_json())
    assert UserState.decode(UserState().encode()) == UserState()
    # JSON states (versions 1 and 2) read into the same state
    assert UserState.decode(s.to_json()) == s


def test_an_item_id_with_a_nul_is_written_as_json() -> None:
    s = UserState()
    s.apply(ev(1, "a\x00b", ts=5), RULES50)
    s.apply(ev(2, "c", ts=6), RULES50)
    raw = s.encode()
    assert raw[:1] == b"{" and UserState.decode(raw) == s and set(s.items) == {"a\x00b", "c"}


@pytest.mark.parametrize(
    "raw",
    [b"\x03", b"\x07\x00\x00\x00\x00\x00\x00\x00\x00", b"\x03\x02\x00\x00\x00\x00\x00\x00\x00ab",
     b"\x03\x01\x00\x00\x00\x00\x00\x00\x00" + b"\x00" * 16 + b"\xff"],
)  # fmt: skip
def test_a_malformed_binary_state_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a user history"):
        UserState.decode(raw)


def test_applying_to_a_decoded_state_equals_applying_to_the_original() -> None:
    a = UserState()
    for n in range(30):
        a.apply(ev(n, f"i{n % 7}", ts=n * 1000), RULES50)
    b = UserState.decode(a.encode())
    for n in range(30, 60):
        e = ev(n, f"i{n % 11}", "like", ts=n * 900)
        assert a.apply(e, RULES50) == b.apply(e, RULES50)
    assert a == b and a.encode() == b.encode()


RULES50 = Rules(weights=DEFAULT_WEIGHTS, half_life_ms=10 * DAY, history_max=50, dedup_window=16)
