"""History: each user's recent interactions, as the fold-in needs them.

A user's state is one Redis string ``<p>:user:<user_id>`` (internal; JSON)::

    {"v": 2, "items": {item_id: [total, last_ms], ...}, "seen": "<base64>", "ids": []}

``seen`` holds the recent event ids as 8-byte BLAKE2b digests, oldest first (version 1 kept the
ids themselves in ``ids``: 256 uuids were 9 KB of a heavy user's state, parsed and written
again on every batch). Version 1 states are read; ``ids`` stays, empty, so a worker of the
previous release that reads a new state during a rolling deploy still finds the field.

``total`` is the user's decayed feedback total for the item as of ``last_ms`` (the item's latest
event time). Applying an event is pure (``UserState.apply``): duplicates by ``event_id`` are
dropped, the weight is added after decaying the old total to the event's time, and the history
is cut to the strongest items whenever it grows past ``history_max`` (down to
``TRIM_TO`` of it, so a heavy user does not pay a sort on every new item). Everything here
runs in event time, not wall time, so replaying the same events always gives the same state.

The value is the worker's own: only ``UserState`` writes it. A reader outside the worker (the
demo page's history column) goes through ``parse_history``, which reads ``items`` alone and
gives the items most recent first, so that the layout stays this module's business.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import orjson

from streamrec.events import Event
from streamrec.feedback import decay, decay_to_latest, event_weight

STATE_VERSION = 2
#: Bytes of an event id's digest in ``seen``.
DIGEST = 8
#: A history past ``history_max`` items is cut to this fraction of it (hysteresis).
TRIM_TO = 0.9


@dataclass(frozen=True, slots=True)
class Rules:
    """How events change a history (from settings)."""

    weights: Mapping[str, float]
    half_life_ms: float | None
    history_max: int
    dedup_window: int


def digest(event_id: str) -> bytes:
    """The 8 bytes by which ``seen`` remembers an event id."""
    return hashlib.blake2b(event_id.encode(), digest_size=DIGEST).digest()


@dataclass(slots=True)
class UserState:
    """One user's history: ``items`` maps item_id -> [decayed total, last event ms];
    ``seen`` is the digests of the last ``dedup_window`` event ids, oldest first."""

    items: dict[str, list[float]] = field(default_factory=dict)
    seen: bytes = b""

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> UserState:
        if raw is None:
            return cls()
        obj = orjson.loads(raw)
        if "seen" in obj:
            return cls(items=obj["items"], seen=base64.b64decode(obj["seen"]))
        return cls(items=obj["items"], seen=b"".join(digest(i) for i in obj["ids"]))  # v1

    def to_json(self) -> bytes:
        # orjson writes floats as their shortest round-trip repr: replays stay exact.
        return orjson.dumps({"v": STATE_VERSION, "items": self.items,
                             "seen": base64.b64encode(self.seen).decode(), "ids": []})  # fmt: skip

    @property
    def last_ms(self) -> float:
        return max((v[1] for v in self.items.values()), default=0.0)

    def has_seen(self, event_id: str) -> bool:
        d, blob = digest(event_id), self.seen
        at = blob.find(d)
        while at != -1:
            if at % DIGEST == 0:  # a digest's own position, not across two neighbours
                return True
            at = blob.find(d, at + 1)
        return False

    def apply(self, event: Event, rules: Rules) -> bool:
        """Apply one event; False (and no change) when its event_id was already seen."""
        if rules.dedup_window and self.has_seen(event.event_id):
            return False
        w = event_weight(event.type, event.value, rules.weights)
        ts = float(event.timestamp)
        old = self.items.get(event.item_id)
        if old is None:
            self.items[event.item_id] = [w, ts]
        elif ts >= old[1]:
            self.items[event.item_id] = [decay(old[0], ts - old[1], rules.half_life_ms) + w, ts]
        else:  # late event: its weight decays to the item's newer time instead
            old[0] += decay(w, old[1] - ts, rules.half_life_ms)
        if rules.dedup_window:
            self.seen = (self.seen + digest(event.event_id))[-DIGEST * rules.dedup_window :]
        if len(self.items) > rules.history_max:
            self._trim(rules)
        return True

    def _trim(self, rules: Rules) -> None:
        now = self.last_ms
        ranked = sorted(
            self.items.items(),
            key=lambda kv: (-abs(decay(kv[1][0], now - kv[1][1], rules.half_life_ms)), -kv[1][1]),
        )
        self.items = dict(ranked[: max(1, int(rules.history_max * TRIM_TO))])

    def totals(self, half_life_ms: float | None) -> dict[str, float]:
        """Every item's total decayed to the user's latest event time (what the solve uses)."""
        now = self.last_ms
        return {i: decay(t, now - ts, half_life_ms) for i, (t, ts) in self.items.items()}


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One item of a stored history as ``parse_history`` gives it: the decayed ``total`` as of
    ``last_ms``, the item's latest event time (epoch ms)."""

    item_id: str
    total: float
    last_ms: int


def parse_history(raw: bytes | str) -> list[HistoryEntry]:
    """The items of a ``<p>:user:<user_id>`` value, most recent first (ties by item id).

    For readers outside the worker; only ``items`` is read (``seen`` is the worker's
    deduplication state). Raises ValueError if the value is malformed.
    """
    try:
        items = orjson.loads(raw)["items"]
        rows = [HistoryEntry(str(i), float(v[0]), int(v[1])) for i, v in items.items()]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"not a user history ({type(exc).__name__}: {exc})") from None
    rows.sort(key=lambda r: (-r.last_ms, r.item_id))
    return rows


def flatten(
    states: Sequence[UserState], half_life_ms: float | None
) -> tuple[npt.NDArray[np.int64], list[str], npt.NDArray[np.float64]]:
    """Every state's ``totals`` at once, flattened (what ``Scorer.score_flat`` takes).

    Returns ``(counts, item_ids, totals)``: (B,) int64 items per state, then each state's
    item ids and (nnz,) float64 totals decayed to that state's latest event time, in order.
    Same numbers as ``UserState.totals``, without a Python call per item.
    """
    counts = np.fromiter((len(s.items) for s in states), dtype=np.int64, count=len(states))
    nnz = int(counts.sum())
    item_ids = [i for s in states for i in s.items]
    pairs = np.fromiter(
        (x for s in states for v in s.items.values() for x in v), dtype=np.float64, count=2 * nnz
    ).reshape(nnz, 2)
    owner = np.repeat(np.arange(len(states)), counts)
    totals = decay_to_latest(pairs[:, 0], pairs[:, 1], owner, len(states), half_life_ms)
    return counts, item_ids, totals
