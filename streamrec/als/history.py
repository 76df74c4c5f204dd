"""History: each user's recent interactions, as the fold-in needs them.

A user's state is one Redis string (internal; the key is ``streamrec.keys.Keys.user``), binary
since state version 3::

    byte 0        3 (the version)
    bytes 1-8     n items, n digests: two little-endian uint32
    16 n bytes    per item, its decayed total and its last event time (ms): float64 pairs
    8 n' bytes    the recent event ids as 8-byte BLAKE2b digests, oldest first
    the rest      the item ids, UTF-8, separated by NUL bytes, in the same order

Versions 1 and 2 were JSON (``{"v": 2, "items": {item_id: [total, last_ms]}, "seen":
"<base64>", "ids": []}``; version 1 kept the event ids themselves in ``ids``) and are still
read; a state holding an item id with a NUL character in it is written as version 2 JSON, the
only layout that can say it. The binary form is about half the size (no decimal floats, no
quotes), is read with one ``struct``/``array`` call per field and written back the same way,
and keeps the items as flat lists (ids; totals and times interleaved) that ``flatten`` joins
without a Python step per item: on warm state the worker used to parse and re-serialize every
touched user's JSON (up to ``history_max`` items) on every batch.

``total`` is the user's decayed feedback total for the item as of ``last_ms`` (the item's latest
event time). Applying an event is pure (``UserState.apply``): duplicates by ``event_id`` are
dropped, the weight is added after decaying the old total to the event's time, and the history
is cut to the strongest items whenever it grows past ``history_max`` (down to
``TRIM_TO`` of it, so a heavy user does not pay a sort on every new item). Everything here
runs in event time, not wall time, so replaying the same events always gives the same state.

The value is the worker's own: only ``UserState`` writes it. A reader outside the worker (the
demo page's history column) goes through ``parse_history``, which gives the items most recent
first, so that the layout stays this module's business.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import numpy.typing as npt
import orjson

from streamrec.events import Event
from streamrec.feedback import decay, decay_to_latest, event_weight

STATE_VERSION = 3
#: Bytes of an event id's digest in ``seen``.
DIGEST = 8
#: A history past ``history_max`` items is cut to this fraction of it (hysteresis).
TRIM_TO = 0.9

_HEAD = struct.Struct("<BII")  # version, items, digests
_SWAP = sys.byteorder != "little"


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


class UserState:
    """One user's history: ``ids`` the item ids, ``vals`` for each (in the same order) its
    decayed total and last event ms, interleaved (``[t0, ms0, t1, ms1, ...]``, a float64
    ``array``: read from and written to the stored value as bytes, and joined by ``flatten``,
    without a Python object per number); ``seen`` the digests of the last ``dedup_window``
    event ids, oldest first. ``items`` gives the same as a dict item_id -> [total, last ms]
    (built on each call: for readers and tests)."""

    __slots__ = ("_index", "ids", "seen", "vals")

    def __init__(
        self, items: Mapping[str, Sequence[float]] | None = None, seen: bytes = b""
    ) -> None:
        self.ids: list[str] = list(items) if items else []
        self.vals = array("d", chain.from_iterable(items.values()) if items else ())
        if len(self.vals) != 2 * len(self.ids):
            raise ValueError("every item needs [total, last_ms]")
        self.seen = seen
        # item id -> position; built on an item's second apply (one lookup is a list scan)
        self._index: dict[str, int] | None = None

    @property
    def items(self) -> dict[str, list[float]]:
        v = self.vals
        return dict(zip(self.ids, map(list, zip(v[0::2], v[1::2], strict=True)), strict=True))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserState):
            return NotImplemented
        return self.items == other.items and self.seen == other.seen

    def __repr__(self) -> str:
        return f"UserState(items={self.items!r}, seen={self.seen!r})"

    @classmethod
    def decode(cls, raw: bytes | str | None) -> UserState:
        """A stored value of any version (None: a new user); ValueError when malformed."""
        if raw is None:
            return cls()
        if isinstance(raw, str) or raw[:1] == b"{":
            return cls._from_json(raw)
        try:
            version, n, n_seen = _HEAD.unpack_from(raw)
            if version != STATE_VERSION:
                raise ValueError(f"state version {version}")
            a = _HEAD.size
            b = a + 16 * n
            c = b + DIGEST * n_seen
            vals = array("d")
            vals.frombytes(raw[a:b])
            if _SWAP:
                vals.byteswap()
            ids = raw[c:].decode().split("\x00") if n else []
            if len(ids) != n or len(vals) != 2 * n or len(raw) < c:
                raise ValueError("lengths do not add up")
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"not a user history ({type(exc).__name__}: {exc})") from None
        state = cls()
        state.ids, state.vals, state.seen = ids, vals, bytes(raw[b:c])
        return state

    @classmethod
    def _from_json(cls, raw: bytes | str) -> UserState:
        obj = orjson.loads(raw)
        if "seen" in obj:
            return cls(items=obj["items"], seen=base64.b64decode(obj["seen"]))
        return cls(items=obj["items"], seen=b"".join(digest(i) for i in obj["ids"]))  # v1

    #: The former name of ``decode``: it reads the JSON versions as well.
    from_json = decode

    def encode(self) -> bytes:
        """The stored value (version 3; version 2 JSON for an item id holding a NUL)."""
        ids = self.ids
        blob = "\x00".join(ids)
        if blob.count("\x00") != max(0, len(ids) - 1):
            return self.to_json()
        head = _HEAD.pack(STATE_VERSION, len(ids), len(self.seen) // DIGEST)
        vals = self.vals
        if _SWAP:
            vals = array("d", vals)
            vals.byteswap()
        return b"".join((head, vals.tobytes(), self.seen, blob.encode()))

    def to_json(self) -> bytes:
        """The version 2 JSON of this state (what ``encode`` writes for ids it cannot pack)."""
        # orjson writes floats as their shortest round-trip repr: replays stay exact.
        return orjson.dumps({"v": 2, "items": self.items,
                             "seen": base64.b64encode(self.seen).decode(), "ids": []})  # fmt: skip

    @property
    def last_ms(self) -> float:
        return max(self.vals[1::2], default=0.0)

    def has_seen(self, event_id: str) -> bool:
        return self._seen(digest(event_id))

    def _seen(self, d: bytes) -> bool:
        blob = self.seen
        at = blob.find(d)
        while at != -1:
            if at % DIGEST == 0:  # a digest's own position, not across two neighbours
                return True
            at = blob.find(d, at + 1)
        return False

    def apply(self, event: Event, rules: Rules) -> bool:
        """Apply one event; False (and no change) when its event_id was already seen."""
        window = rules.dedup_window
        if window:
            d = digest(event.event_id)
            if self._seen(d):
                return False
        w = event_weight(event.type, event.value, rules.weights)
        ts = float(event.timestamp)
        ids, item, index = self.ids, event.item_id, self._index
        if index is None:
            # Most users get one event per batch: a scan (in C) then; a dict from the second.
            self._index = {}
            at = ids.index(item) if item in ids else None
        elif index or not ids:
            at = index.get(item)
        else:
            index.update(zip(ids, range(len(ids)), strict=True))
            at = index.get(item)
        v = self.vals
        if at is None:
            if self._index:
                self._index[item] = len(ids)
            ids.append(item)
            v.extend((w, ts))
        else:
            j = 2 * at
            total, last = v[j], v[j + 1]
            if ts >= last:
                v[j] = decay(total, ts - last, rules.half_life_ms) + w
                v[j + 1] = ts
            else:  # late event: its weight decays to the item's newer time instead
                v[j] = total + decay(w, last - ts, rules.half_life_ms)
        if window:
            self.seen = (self.seen + d)[-DIGEST * window :]
        if len(self.ids) > rules.history_max:
            self._trim(rules)
        return True

    def _trim(self, rules: Rules) -> None:
        now, hl, v = self.last_ms, rules.half_life_ms, self.vals
        order = sorted(
            range(len(self.ids)),
            key=lambda k: (-abs(decay(v[2 * k], now - v[2 * k + 1], hl)), -v[2 * k + 1]),
        )[: max(1, int(rules.history_max * TRIM_TO))]
        self.ids = [self.ids[k] for k in order]
        self.vals = array("d", chain.from_iterable((v[2 * k], v[2 * k + 1]) for k in order))
        self._index = None

    def totals(self, half_life_ms: float | None) -> dict[str, float]:
        """Every item's total decayed to the user's latest event time (what the solve uses)."""
        now, v = self.last_ms, self.vals
        return {i: decay(v[2 * k], now - v[2 * k + 1], half_life_ms)
                for k, i in enumerate(self.ids)}  # fmt: skip


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One item of a stored history as ``parse_history`` gives it: the decayed ``total`` as of
    ``last_ms``, the item's latest event time (epoch ms)."""

    item_id: str
    total: float
    last_ms: int


def parse_history(raw: bytes | str) -> list[HistoryEntry]:
    """The items of a stored history value, most recent first (ties by item id).

    For readers outside the worker; of a JSON value only ``items`` is read (``seen`` is the
    worker's deduplication state). Raises ValueError if the value is malformed.
    """
    try:
        if isinstance(raw, str) or raw[:1] == b"{":
            items = orjson.loads(raw)["items"]
            rows = [HistoryEntry(str(i), float(v[0]), int(v[1])) for i, v in items.items()]
        else:
            state = UserState.decode(raw)
            v = state.vals
            rows = [HistoryEntry(i, v[2 * k], int(v[2 * k + 1])) for k, i in enumerate(state.ids)]
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
    counts = np.fromiter((len(s.ids) for s in states), dtype=np.int64, count=len(states))
    nnz = int(counts.sum())
    item_ids = list(chain.from_iterable(s.ids for s in states))
    joined = array("d")
    for s in states:
        joined += s.vals  # a memcpy per state
    pairs = np.frombuffer(joined, dtype=np.float64, count=2 * nnz).reshape(nnz, 2)
    owner = np.repeat(np.arange(len(states)), counts)
    totals = decay_to_latest(pairs[:, 0], pairs[:, 1], owner, len(states), half_life_ms)
    return counts, item_ids, totals
