"""History: each user's per-item feedback totals, kept in Redis.

``<p>:hist:<user_id>`` is a hash ``item_id -> total weight`` (the sum of ``event_weight`` over
the user's events for that item). One batch does one MULTI/EXEC round trip: the increments of
every event, then a read of every touched user's whole hash.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence

import redis

from streamrec.events import Event
from streamrec.feedback import DEFAULT_WEIGHTS, event_weight
from streamrec.keys import Keys

log = logging.getLogger(__name__)


def coalesce(
    events: Sequence[Event], weights: Mapping[str, float] = DEFAULT_WEIGHTS
) -> dict[str, dict[str, float]]:
    """Per user, per item: the summed weight of the batch's events (users in first-seen order)."""
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in events:
        out[e.user_id][e.item_id] += event_weight(e.type, e.value, weights)
    return {u: dict(items) for u, items in out.items()}


class History:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self._redis = client
        self._keys = keys
        self._ttl = ttl_s

    def apply(self, deltas: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        """Add ``deltas`` (user -> item -> weight) and return each touched user's full history."""
        pipe = self._redis.pipeline(transaction=True)
        for user, items in deltas.items():
            key = self._keys.history(user)
            for item, delta in items.items():
                # A zero delta (e.g. a view with weight 0) still records the interaction.
                pipe.hincrbyfloat(key, item, delta)
            pipe.expire(key, self._ttl)
        for user in deltas:
            pipe.hgetall(self._keys.history(user))
        replies = pipe.execute()
        hashes = replies[len(replies) - len(deltas) :]
        return {
            user: {k.decode(): float(v) for k, v in h.items()}
            for user, h in zip(deltas, hashes, strict=True)
        }
