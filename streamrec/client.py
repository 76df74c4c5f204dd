"""The front-end kit: read streamrec's lists from Redis as contract 2 says (README "Front-end
kit"), without the ALS dependencies.

::

    from streamrec.client import Client

    recs = Client.from_url("redis://cache:6379/0").recommendations("user-42", n=10)
    for item in recs.items:          # best first; source is "user" or "popular"
        show(item.item_id, item.score)

Every value is read through ``streamrec.keys`` (``Keys``, ``parse_list``,
``parse_model_pointer``): the one place contract 2 is read, so the kit and streamrec's own
readers cannot disagree. Imports only the standard library, ``streamrec.keys`` (which imports
orjson, never numpy at import time) and, for ``Client.from_url``, redis-py: numpy, scipy,
implicit, confluent-kafka and pydantic are never imported (``tests/streamrec/test_client.py``
blocks them and uses the kit against lists a real worker wrote).

The JSON Schema of every public value ships beside it (``schema(name)``; files under
``streamrec/schema/redis/``), for teams that validate in another language.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal, Protocol

from streamrec.keys import Keys, parse_list, parse_model_pointer

log = logging.getLogger(__name__)

#: The public values of contract 2 with a JSON Schema in ``streamrec/schema/redis/``.
SCHEMAS = ("recs", "popular", "similar", "model")


class Getter(Protocol):
    """What the kit needs of a Redis client: ``GET`` (redis-py's ``Redis`` and
    ``RedisCluster`` have it, with or without ``decode_responses``)."""

    def get(self, name: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class Item:
    """One entry of a list: the item and its score (scores compare within one list only);
    ``why``: the entry's optional explanation (``"content"``: a new catalog item placed from
    its content before the model learned it), None when it has none."""

    item_id: str
    score: float
    why: str | None = None


@dataclass(frozen=True, slots=True)
class Recommendations:
    """A list to show. ``source``: ``"user"`` (the user's own list), ``"popular"`` (no list
    yet: the popular ranking, as the contract says to show), or ``"none"`` (nothing
    published yet at all: ``items`` is empty)."""

    user_id: str | None
    items: tuple[Item, ...]
    model_version: str | None
    updated_at_ms: int | None
    source: Literal["user", "popular", "similar", "none"]


def _recommendations(
    value: dict[str, Any], source: Literal["user", "popular", "similar"], n: int | None
) -> Recommendations:
    items = tuple(
        Item(str(i["item_id"]), float(i["score"]), str(i["why"]) if "why" in i else None)
        for i in value["items"][:n]
    )
    owner = value.get("user_id") if source == "user" else value.get("item_id")
    return Recommendations(
        user_id=None if owner is None else str(owner),
        items=items,
        model_version=value.get("model_version"),
        updated_at_ms=value.get("updated_at_ms"),
        source=source,
    )


class Client:
    """Reads contract 2's values under one key prefix (``STREAMREC_REDIS_PREFIX``).

    ``redis``: any client with ``get`` (``Getter``); ``Client.from_url`` makes a redis-py one.
    """

    def __init__(self, redis: Getter, prefix: str = "streamrec") -> None:
        self.redis = redis
        self.keys = Keys(prefix)

    @classmethod
    def from_url(cls, url: str, prefix: str = "streamrec", **options: Any) -> Client:
        """A client on a redis-py connection to ``url`` (``options`` go to
        ``redis.Redis.from_url``, e.g. ``password=``, ``socket_timeout=``)."""
        import redis

        options.setdefault("socket_timeout", 2.0)
        return cls(redis.Redis.from_url(url, **options), prefix)

    def _list(self, key: str) -> dict[str, Any] | None:
        raw = self.redis.get(key)
        if raw is None:
            return None
        try:
            return parse_list(raw)
        except (ValueError, TypeError):
            # A reader keeps serving rather than failing on one bad value (contract 2).
            log.warning("ignoring malformed %s", key)
            return None

    def recommendations(self, user_id: str, n: int | None = None) -> Recommendations:
        """``user_id``'s list, best first (at most ``n`` items); when the user has none yet,
        the popular list (``source="popular"``), as contract 2 says to show. One ``GET``, two
        when it falls back."""
        own = self._list(self.keys.recs(user_id))
        if own is not None:
            return _recommendations(own, "user", n)
        popular = self._list(self.keys.popular)
        if popular is not None:
            return _recommendations(popular, "popular", n)
        return Recommendations(user_id, (), None, None, "none")

    def popular(self, n: int | None = None) -> Recommendations | None:
        """The popular list (no user in it), or None before the first model is published."""
        value = self._list(self.keys.popular)
        return None if value is None else _recommendations(value, "popular", n)

    def similar(self, item_id: str, n: int | None = None) -> Recommendations | None:
        """The items most like ``item_id`` (``user_id`` of the answer is None), or None for an
        item the live model does not know."""
        value = self._list(self.keys.similar(item_id))
        return None if value is None else _recommendations(value, "similar", n)

    def model(self) -> dict[str, Any] | None:
        """The live model's pointer value (version, created_at_ms, n_items, factors, ...), or
        None when none is published or the value is malformed."""
        raw = self.redis.get(self.keys.model)
        if raw is None:
            return None
        try:
            pointer = parse_model_pointer(raw)
        except ValueError:
            log.warning("ignoring malformed %s", self.keys.model)
            return None
        value: dict[str, Any] = json.loads(pointer.raw)
        return value


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of contract 2's ``name`` value, one of ``SCHEMAS``."""
    if name not in SCHEMAS:
        raise KeyError(f"no schema {name!r}; known: {', '.join(SCHEMAS)}")
    text = resources.files("streamrec").joinpath("schema", "redis", f"{name}.schema.json")
    loaded: dict[str, Any] = json.loads(text.read_text("utf-8"))
    return loaded
