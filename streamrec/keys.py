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
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

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


@lru_cache(maxsize=1 << 20)
def _jstr(text: str) -> str:
    """A JSON string literal; cached, since item ids and versions repeat in every list."""
    return json.dumps(text, ensure_ascii=False)


def _items(items: Iterable[tuple[str, float]]) -> str:
    # Built as text: this runs for every list the worker writes, and json.dumps of a list of
    # dicts is several times slower. Six significant digits is all a float32 score carries;
    # "%.6g" of a finite float is always a valid JSON number.
    return ",".join(
        f'{{"item_id":{_jstr(i)},"score":{s:.6g}}}' for i, s in items if math.isfinite(s)
    )


def recs_value(
    user_id: str, items: Iterable[tuple[str, float]], model_version: str, updated_at_ms: int
) -> bytes:
    """JSON for ``<p>:recs:<user_id>``; ``items`` are (item_id, score), best first."""
    return (
        f'{{"user_id":{json.dumps(user_id, ensure_ascii=False)},"items":[{_items(items)}],'
        f'"model_version":{_jstr(model_version)},"updated_at_ms":{int(updated_at_ms)}}}'
    ).encode()


def popular_value(
    items: Iterable[tuple[str, float]], model_version: str, updated_at_ms: int
) -> bytes:
    """JSON for ``<p>:popular``."""
    return (
        f'{{"items":[{_items(items)}],"model_version":{_jstr(model_version)},'
        f'"updated_at_ms":{int(updated_at_ms)}}}'
    ).encode()


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
