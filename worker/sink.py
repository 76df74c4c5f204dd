"""Sink: every updated user's list queued on the batch's Redis transaction (SET with a TTL).

Each write replaces the whole value, so writing the same batch twice leaves the same state.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.client import Pipeline

from streamrec.keys import Keys, recs_value


class Sink:
    def __init__(self, keys: Keys, ttl_s: int) -> None:
        self._keys = keys
        self._ttl = ttl_s

    def queue(
        self,
        pipe: Pipeline,
        lists: Sequence[tuple[str, Sequence[tuple[str, float]]]],
        model_version: str,
        now_ms: int,
    ) -> None:
        """``lists``: (user_id, [(item_id, score), ...] best first) per user."""
        for user, items in lists:
            pipe.set(
                self._keys.recs(user), recs_value(user, items, model_version, now_ms), ex=self._ttl
            )
