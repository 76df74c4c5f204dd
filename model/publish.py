"""Publish a model to Redis: the popular list first, then the ``<p>:model`` pointer last,
so a worker that follows the pointer finds everything the model needs already in place."""

from __future__ import annotations

import time

import redis

from streamrec.artifact import Model
from streamrec.keys import Keys, model_value, popular_value


def publish(model: Model, client: redis.Redis, keys: Keys, top_n: int) -> None:
    """Write ``<p>:popular`` for ``model``, then move ``<p>:model`` to it."""
    now = int(time.time() * 1000)
    client.set(keys.popular, popular_value(model.popular(top_n), model.version, now))
    client.set(keys.model, model_value(model.summary()))
