"""Publish a model without a gap.

Order, so a reader never sees a list from a model that is not fully in place:

1. every known user's list under the new version (bulk, pipelined), ``<p>:popular`` (without
   blocked items) and ``<p>:similar:<item_id>`` for every item;
2. move the ``<p>:model`` pointer;
3. announce the version on ``settings.topic_models``.

Workers then swap to the model and re-fold the users whose events arrived after the model's
Kafka snapshot (``worker/models.py``), so no event is left out of a list.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping

import numpy as np
import redis
from confluent_kafka import Producer

from streamrec.artifact import Model
from streamrec.connect import blocked_items, ensure_topics
from streamrec.errors import InfraError
from streamrec.keys import Keys, model_value, popular_value, recs_value, round_scores
from streamrec.settings import Settings
from worker.history import UserState
from worker.scorer import Scorer
from worker.topn import top_n

log = logging.getLogger(__name__)

CHUNK = 1000


def similar_items(
    model: Model, n: int, chunk: int = 1024
) -> Iterator[tuple[str, list[tuple[str, float]]]]:
    """Each item's ``n`` nearest items by cosine of their factors (itself excluded)."""
    y = np.asarray(model.item_factors, dtype=np.float32)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    unit = y / np.maximum(norms, 1e-12)
    ids = model.item_ids
    for lo in range(0, len(ids), chunk):
        rows = np.arange(lo, min(lo + chunk, len(ids)), dtype=np.int64)
        ptr = np.arange(len(rows) + 1, dtype=np.int64)
        items, raw = top_n(unit[rows], unit, n, ptr, rows)
        scores = round_scores(raw)
        for r, row in enumerate(rows):
            keep = items[r] >= 0
            yield ids[row], [(ids[i], float(s)) for i, s in zip(items[r][keep], scores[r][keep],
                                                                  strict=True)]  # fmt: skip


def live_histories(
    client: redis.Redis, keys: Keys, users: list[str], half_life_ms: float | None
) -> dict[str, dict[str, float]]:
    """The worker's current history totals for ``users`` that have one in Redis."""
    out: dict[str, dict[str, float]] = {}
    for lo in range(0, len(users), CHUNK):
        part = users[lo : lo + CHUNK]
        for user, raw in zip(part, client.mget([keys.user(u) for u in part]), strict=True):
            if raw is not None:
                out[user] = UserState.from_json(raw).totals(half_life_ms)
    return out


def publish(
    model: Model,
    settings: Settings,
    client: redis.Redis,
    histories: Mapping[str, Mapping[str, float]] | None = None,
    similar_n: int = 20,
    announce: bool = True,
) -> dict[str, int]:
    """Bulk-write lists for ``histories`` (user -> item -> total), popular and similar items
    under ``model``'s version, then move the pointer and announce. Returns counts written."""
    keys = Keys(settings.redis_prefix)
    blocked = blocked_items(client, keys)
    now = int(time.time() * 1000)
    counts = {"lists": 0, "similar": 0}
    if histories:
        scorer = Scorer.create(model)
        rows = scorer.blocked_rows(blocked)
        users = list(histories)
        for lo in range(0, len(users), CHUNK):
            part = {u: histories[u] for u in users[lo : lo + CHUNK]}
            lists, _unknown, _cold = scorer.recommend(
                part, settings.top_n, history_max=settings.history_max, blocked=rows
            )
            pipe = client.pipeline(transaction=False)
            for user, items in lists:
                pipe.set(keys.recs(user), recs_value(user, items, model.version, now),
                         ex=settings.recs_ttl_s)  # fmt: skip
            pipe.execute()
            counts["lists"] += len(lists)
    if similar_n:
        pipe = client.pipeline(transaction=False)
        for item, items in similar_items(model, similar_n + len(blocked)):
            kept = [p for p in items if p[0] not in blocked][:similar_n]
            value = json.loads(popular_value(kept, model.version, now))
            pipe.set(keys.similar(item), json.dumps({"item_id": item, **value},
                                                    separators=(",", ":")))  # fmt: skip
            counts["similar"] += 1
            if len(pipe) >= CHUNK:
                pipe.execute()
        pipe.execute()
    popular = [p for p in model.popular(settings.top_n + len(blocked)) if p[0] not in blocked]
    client.set(keys.popular, popular_value(popular[: settings.top_n], model.version, now))
    value = model_value(model.summary())
    client.set(keys.model, value)
    if announce:
        ensure_topics(settings, {settings.topic_models: 1})
        producer = Producer(settings.kafka_common())
        producer.produce(settings.topic_models, key=model.version.encode(), value=value)
        if producer.flush(30):
            raise InfraError(f"model announcement not delivered to {settings.topic_models}")
    log.info("published model %s: %d lists, %d similar-item lists",
             model.version, counts["lists"], counts["similar"])  # fmt: skip
    return counts
