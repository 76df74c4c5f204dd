"""The Redis contract front-ends read: key layout and JSON values. Contract version 1.

Public keys (``<p>`` is the configured prefix, default ``streamrec``; ids are used verbatim)::

    <p>:recs:<user_id>   STRING, JSON, with a TTL
        {"user_id": str, "items": [{"item_id": str, "score": float}, ...],
         "model_version": str, "updated_at_ms": int}
        items are best first; none of them is an item the user already interacted with.
    <p>:popular          STRING, JSON: the same shape without "user_id"
    <p>:similar:<item_id>  STRING, JSON: {"item_id": str, "items": [...], "model_version": str,
                         "updated_at_ms": int}: items most like this one (cosine of factors)
    <p>:model            STRING, JSON: the live model
        {"version": str, "created_at_ms": int, "n_items": int, "factors": int,
         "params": {...}, "path": str, "contract_version": 1}

Operator keys::

    <p>:blocked          SET of item ids kept out of every list (takes effect within seconds)

Internal keys (may change without notice; do not read them from front-ends)::

    <p>:user:<user_id>             STRING, JSON: the user's history (worker/history.py)
    <p>:applied:<topic>:<partition>  last Kafka offset whose effect is in Redis

Rules for changing this module: adding a field to a JSON value is compatible; renaming or
removing a field, changing a type or a key's meaning is a breaking change and needs
CONTRACT_VERSION + 1, a new key prefix segment, and a note in the README's changelog.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

CONTRACT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "streamrec"

    def recs(self, user_id: str) -> str:
        return f"{self.prefix}:recs:{user_id}"

    @property
    def popular(self) -> str:
        return f"{self.prefix}:popular"

    @property
    def model(self) -> str:
        return f"{self.prefix}:model"

    def similar(self, item_id: str) -> str:
        return f"{self.prefix}:similar:{item_id}"

    @property
    def blocked(self) -> str:
        return f"{self.prefix}:blocked"

    def user(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}"

    def applied(self, topic: str, partition: int) -> str:
        return f"{self.prefix}:applied:{topic}:{partition}"


def round_scores(scores: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Scores rounded to 6 significant digits (all a float32 score carries), any shape.

    Done once per batch by whoever makes lists, so every value is short JSON: the decimal
    the rounded float64 prints as is exactly those 6 digits.
    """
    x = np.asarray(scores, dtype=np.float64)
    a = np.abs(x)
    ok = np.isfinite(x) & (a > 0)
    mag = np.floor(np.log10(np.where(ok, a, 1.0)))
    scale = 10.0 ** (5 - mag)
    return np.where(ok, np.round(x * scale) / scale, x)


def _items(items: Iterable[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"item_id": i, "score": s} for i, s in items]


def recs_value(
    user_id: str, items: Iterable[tuple[str, float]], model_version: str, updated_at_ms: int
) -> bytes:
    """JSON for ``<p>:recs:<user_id>``; ``items`` are (item_id, score), best first, scores
    finite (``round_scores`` them first for short values)."""
    # orjson: 4-5x faster than json.dumps here, and this runs for every list written.
    return orjson.dumps(
        {
            "user_id": user_id,
            "items": _items(items),
            "model_version": model_version,
            "updated_at_ms": int(updated_at_ms),
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def popular_value(
    items: Iterable[tuple[str, float]], model_version: str, updated_at_ms: int
) -> bytes:
    """JSON for ``<p>:popular``."""
    return orjson.dumps(
        {"items": _items(items), "model_version": model_version, "updated_at_ms": updated_at_ms},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def model_value(summary: Mapping[str, Any]) -> bytes:
    """JSON for ``<p>:model``."""
    return json.dumps(
        {**summary, "contract_version": CONTRACT_VERSION}, separators=(",", ":"), sort_keys=True
    ).encode()


def parse_list(raw: bytes | str) -> dict[str, Any]:
    """Parse a recs or popular value (for readers and tests); raises ValueError if malformed."""
    obj = json.loads(raw)
    if not isinstance(obj, dict) or not isinstance(obj.get("items"), list):
        raise ValueError("not a streamrec list value")
    return obj
