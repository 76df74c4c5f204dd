"""Publish a model without a gap.

Order, so a reader never sees a list from a model that is not fully in place:

1. every known user's list under the new version (bulk, pipelined), ``<p>:popular`` (without
   blocked items) and ``<p>:similar:<item_id>`` for every item;
2. move the ``<p>:model`` pointer;
3. announce the version on ``settings.topic_models``.

Each step logs a line (the lists a line per tenth). A publisher killed during 1 leaves some
lists under the new version while the pointer still names the old one: both models are
complete on disk, every list is a whole value, and the next publish rewrites them all. Killed
between 2 and 3, workers still find the new model by polling the pointer (within 2 s).

Workers then swap to the model and re-fold the users whose events arrived after the model's
Kafka snapshot (``worker/models.py``), so no event is left out of a list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np
import numpy.typing as npt
import redis
import scipy.sparse as sp
from confluent_kafka import Producer

from streamrec.als.ann import load_for, wanted
from streamrec.als.history import UserState
from streamrec.als.scorer import Scored, Scorer
from streamrec.als.scoring import score_csr, scored_in_order
from streamrec.als.similar import blend_rows, neighbours, similar_items, unit_index, unit_rows
from streamrec.artifact import Model
from streamrec.connect import DURABLE_PRODUCER, blocked_items, ensure_topics, kafka_metadata
from streamrec.errors import InfraError
from streamrec.keys import Keys, model_value, popular_value, read_histories
from streamrec.settings import Settings
from streamrec.sink import Sink

log = logging.getLogger(__name__)

CHUNK = 1000


def live_histories(
    client: redis.Redis, keys: Keys, users: list[str], half_life_ms: float | None
) -> dict[str, dict[str, float]]:
    """The worker's current history totals for ``users`` that have one in Redis."""
    raw = read_histories(client, keys, users, CHUNK)
    return {user: UserState.decode(r).totals(half_life_ms) for user, r in raw.items()}


@dataclass(frozen=True)
class Totals:
    """Feedback totals per (user, item), as a sparse matrix: ``matrix`` (n_users, n_items)
    CSR whose rows are ``user_ids`` and columns ``item_ids``."""

    user_ids: Sequence[str]
    item_ids: Sequence[str]
    matrix: sp.csr_matrix


@dataclass(frozen=True)
class ContentSimilar:
    """What blends content into the similar items of items with few interactions (README "New
    items from their content"): ``vectors`` (n_items, d) float32 unit content rows in the
    model's item order (``streamrec.als.content.content_vectors``; zeros where an item has no
    content), ``interactions`` (n_items,) int64 users with a positive interaction per item,
    and the settings: items with fewer than ``min_interactions`` get the blend with
    ``weight`` on the content cosine."""

    vectors: npt.NDArray[np.float32]
    interactions: npt.NDArray[np.int64]
    min_interactions: int
    weight: float

    def few(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Which of ``rows`` get the blend."""
        return np.asarray(self.interactions[rows] < self.min_interactions) & (self.weight > 0)


def publish(
    model: Model,
    settings: Settings,
    client: redis.Redis,
    histories: Mapping[str, Mapping[str, float]] | None = None,
    similar_n: int = 20,
    announce: bool = True,
    totals: Totals | None = None,
    progress: Callable[[float, float], None] | None = None,
    content: ContentSimilar | None = None,
    unavailable: Collection[str] = (),
) -> dict[str, int]:
    """Bulk-write lists for ``histories`` (user -> item -> total) and the users of ``totals``
    (those not in ``histories``), popular and similar items under ``model``'s version, then
    move the pointer and announce. Returns counts written. ``progress(values written, values
    to write)`` is called after each chunk (the application draws it). ``content``: blend
    content cosine into the similar items of items with few interactions. ``unavailable``:
    the catalog's items never to recommend (``CatalogRead.unavailable``), left out of every
    list as the operator's blocked items are: users' lists, popular, similar items."""
    keys = Keys(settings.redis_prefix)
    # The announcement's topic check and broker connection are network waits (~0.1 s): made
    # in the background while the lists are computed, used only after the pointer moves.
    announcer = ThreadPoolExecutor(1, thread_name_prefix="announce")
    ready = announcer.submit(_announcement_producer, settings) if announce else None
    blocked = blocked_items(client, keys) | set(unavailable)
    now = int(time.time() * 1000)
    try:
        counts = _write_lists(model, settings, client, keys, blocked, now, histories, similar_n,
                              totals, progress, content)  # fmt: skip
    finally:
        # Not waited for here: a slow or absent broker must not hold the pointer back (workers
        # also poll it); the announcement waits for it below.
        announcer.shutdown(wait=False)
    popular = [p for p in model.popular(settings.top_n + len(blocked)) if p[0] not in blocked]
    client.set(keys.popular, popular_value(popular[: settings.top_n], model.version, now))
    value = model_value(model.summary())
    client.set(keys.model, value)
    log.info("pointer %s moved to %s%s", keys.model, model.version,
             f"; announcing it on {settings.topic_models}" if announce else "")  # fmt: skip
    if ready is not None:
        producer = ready.result()
        producer.produce(settings.topic_models, key=model.version.encode(), value=value)
        if producer.flush(30):
            raise InfraError(f"model announcement not delivered to {settings.topic_models}")
    log.info("published model %s: %d lists, %d similar-item lists",
             model.version, counts["lists"], counts["similar"])  # fmt: skip
    return counts


def _announcement_producer(settings: Settings) -> Producer:
    """A producer connected to the broker that leads ``settings.topic_models`` (created when
    missing)."""
    ensure_topics(settings, {settings.topic_models: 1})
    producer = Producer({**settings.kafka_common(), **DURABLE_PRODUCER})
    kafka_metadata(producer, settings, settings.topic_models)  # InfraError / AuthError
    return producer


def _write_lists(
    model: Model,
    settings: Settings,
    client: redis.Redis,
    keys: Keys,
    blocked: set[str],
    now: int,
    histories: Mapping[str, Mapping[str, float]] | None,
    similar_n: int,
    totals: Totals | None,
    progress: Callable[[float, float], None] | None = None,
    content: ContentSimilar | None = None,
) -> dict[str, int]:
    """Every user's list and every item's similar items, under ``model``'s version
    (``blocked`` item ids left out; ``now`` epoch ms)."""
    counts = {"lists": 0, "similar": 0}
    if content is not None:
        counts["similar_content"] = 0  # similar-item lists blended with content
    # A big catalogue is served from the model's stored index (built with it by the nightly
    # job), its similar items from one built here over the unit rows.
    scorer = Scorer.create(
        model,
        n=settings.top_n,
        history_max=settings.history_max,
        ann=load_for(model, settings),
    )
    rows = scorer.blocked_rows(blocked)
    scorer = scorer.with_(blocked=rows)
    sink = Sink(client, keys, settings.recs_ttl_s, settings.history_ttl_s)
    try:
        jobs: list[Callable[[Scorer], Scored]] = []
        if histories:
            users = list(histories)
            for lo in range(0, len(users), CHUNK):
                part = {u: histories[u] for u in users[lo : lo + CHUNK]}
                jobs.append(partial(Scorer.score, histories=part))
        todo: list[int] = []
        if totals is not None:
            m = totals.matrix.tocsr()
            column_rows = scorer.rows_of(totals.item_ids)
            todo = [r for r, u in enumerate(totals.user_ids) if not histories or u not in histories]
            for lo in range(0, len(todo), CHUNK):
                jobs.append(partial(score_csr, m=m, part_rows=todo[lo : lo + CHUNK],
                                    user_ids=totals.user_ids, column_rows=column_rows))  # fmt: skip

        def run(
            own: Scorer, job: Callable[[Scorer], Scored]
        ) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
            scored = job(own)  # the lists, and the vectors the serving API's filters use
            return own.values(scored, now), own.vecs(scored)

        # Chunks are scored and encoded on scoring.THREADS threads and written in order.
        total, tenths = (len(histories) if histories else 0) + len(todo), 0
        to_write = total + (model.n_items if similar_n else 0)  # lists, then similar items
        for lists, vecs in scored_in_order(scorer, run, jobs):
            sink.write(lists, transaction=False, vecs=vecs)
            counts["lists"] += len(lists)
            if progress is not None:
                progress(counts["lists"], to_write)
            if counts["lists"] * 10 // total > tenths:  # a line per tenth: how far it got
                tenths = counts["lists"] * 10 // total
                log.info("publish %s: %d of %d lists written", model.version, counts["lists"],
                         total)  # fmt: skip
        if similar_n:
            ids, batch = model.item_ids, []
            big = wanted(model.n_items, settings)
            index = unit_index(model.item_factors, settings.ann_nprobe) if big else None
            similar = similar_items(
                model.item_factors, similar_n, rows, index=index, overfetch=settings.ann_overfetch
            )
            blend = None
            if content is not None and content.few(np.arange(model.n_items)).any():
                if content.vectors.shape[0] != model.n_items:
                    raise ValueError(
                        f"content rows {content.vectors.shape} do not fit {model.n_items} items"
                    )
                blend = blend_rows(unit_rows(model.item_factors), content.vectors, content.weight)
            for item_rows, items, scores in similar:
                if blend is not None:
                    assert content is not None
                    few = content.few(item_rows)
                    if few.any():  # these items' factors say little; their content more
                        items[few], scores[few] = neighbours(blend, item_rows[few], similar_n, rows)
                        counts["similar_content"] += int(few.sum())
                query = [ids[i] for i in item_rows.tolist()]
                values = scorer.encoder.similar(query, items, scores, model.version, now)
                batch += [(keys.similar(i), v) for i, v in zip(query, values, strict=True)]
                if len(batch) >= CHUNK:  # one round trip per CHUNK values, not per chunk
                    sink.write_plain(batch)
                    counts["similar"] += len(batch)
                    batch = []
                    if progress is not None:
                        progress(counts["lists"] + counts["similar"], to_write)
            sink.write_plain(batch)
            counts["similar"] += len(batch)
            if progress is not None:
                progress(counts["lists"] + counts["similar"], to_write)
            log.info(
                "publish %s: %d similar-item lists written (%d blended with content)",
                model.version,
                counts["similar"],
                counts.get("similar_content", 0),
            )
    finally:
        sink.close()
    return counts
