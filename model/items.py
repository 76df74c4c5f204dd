"""The nightly job's catalog (contract 3, ``streamrec.catalog``): item content to fit the
content->factor map on.

* ``read_catalog``: the compacted items topic read from its beginning to the end it has now,
  the worker's rules (a tombstone removes its key's item; a record that does not decode, has no
  key or whose key is not its ``item_id`` is skipped and counted: the worker dead-letters it).
* ``fit_for_model``: the content->factor map (``streamrec.als.content``) of a model's factors,
  fitted on its items that have content; ``similar_content``: what the publisher needs to
  blend content into the similar items of items with few interactions.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamrec.als.content import (
    ContentMap,
    HasContent,
    content_vectors,
    fit_content_map,
    item_features,
)
from streamrec.catalog import Item, decode_item
from streamrec.connect import kafka_metadata, read_ranges
from streamrec.errors import CatalogError, InfraError
from streamrec.model.publish import ContentSimilar
from streamrec.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class CatalogRead:
    """The catalog as of the topic's end offsets when reading began."""

    items: dict[str, Item] = field(default_factory=dict)
    offsets: dict[int, int] = field(default_factory=dict)
    records: int = 0
    bad: int = 0
    removed: set[str] = field(default_factory=set)  # ids whose last record is a tombstone

    def unavailable(self) -> set[str]:
        """Ids never to recommend, as the worker's ``Catalog.unavailable``: ``available``
        false, or removed by a tombstone."""
        return {i for i, item in self.items.items() if not item.available} | self.removed


def _watermarks(consumer: Consumer, settings: Settings, topic: str, p: int) -> tuple[int, int]:
    """(low, high) of ``topic[p]``, retried while the broker answers with a passing error
    (a just-created topic's partition has no leader for a moment: "Not leader for
    partition") for up to ``settings.kafka_timeout_s``; then ``InfraError``."""
    deadline = time.monotonic() + settings.kafka_timeout_s
    while True:
        try:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
            return int(lo), int(hi)
        except KafkaException as exc:
            if time.monotonic() >= deadline:
                raise InfraError(f"Kafka at {settings.kafka_bootstrap}: cannot read the end of "
                                 f"{topic}[{p}] ({exc.args[0].str()})") from None  # fmt: skip
            time.sleep(0.2)


def read_catalog(settings: Settings, timeout_s: float = 120.0) -> CatalogRead | None:
    """``settings.topic_items`` from its beginning to its end now; None when the topic does
    not exist (no catalog has been loaded yet). ``InfraError`` when Kafka does not answer."""
    topic = settings.topic_items
    consumer = Consumer({**settings.kafka_common(), "group.id": "streamrec-retrain-items"})
    try:
        meta = kafka_metadata(consumer, settings, topic)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            return None
        parts = sorted(meta.topics[topic].partitions)
        marks = {p: _watermarks(consumer, settings, topic, p) for p in parts}
    finally:
        consumer.close()
    out = CatalogRead(offsets={p: hi for p, (_lo, hi) in marks.items()})
    group = f"streamrec-retrain-items-{uuid.uuid4().hex[:12]}"  # reads, never commits
    for msg in read_ranges(settings, topic, marks, group, timeout_s):
        out.records += 1
        key, value = msg.key(), msg.value()
        try:
            item_id = key.decode("utf-8") if key else None
        except UnicodeDecodeError:
            item_id = None
        if item_id is None:
            out.bad += 1
            continue
        if value is None:
            out.items.pop(item_id, None)
            out.removed.add(item_id)
            continue
        try:
            item = decode_item(value)
        except CatalogError:
            out.bad += 1
            continue
        if item.item_id != item_id:
            out.bad += 1
            continue
        out.items[item_id] = item
        out.removed.discard(item_id)
    log.info("catalog: %d items from %d records of %s (%d bad, skipped), up to %s",
             len(out.items), out.records, topic, out.bad, out.offsets)  # fmt: skip
    return out


#: Fewer items with content than this: no map (a ridge fit on a handful of items would map
#: every new item to noise).
MIN_CONTENT_ITEMS = 10


@dataclass(frozen=True)
class ContentFit:
    """The map fitted for a model, or None, and what the manifest records about it."""

    cmap: ContentMap | None
    info: dict[str, Any]


def has_content(item: HasContent) -> bool:
    """Whether the map can read anything of ``item`` (a feature, a year or a category)."""
    return bool(item_features(item)) or bool(item.categories)


def fit_for_model(
    item_ids: Sequence[str],
    factors: npt.NDArray[np.float32],
    catalog: Mapping[str, HasContent],
    regularization: float,
    min_category_count: int = 1,
) -> ContentFit:
    """The content->factor map of a model's ``factors`` ((n_items, k) float32, row i the
    factors of ``item_ids[i]``), fitted on the items that have content in ``catalog``; no map
    (``cmap`` None, the reason in ``info``) when fewer than ``MIN_CONTENT_ITEMS`` do."""
    rows = [r for r, i in enumerate(item_ids) if i in catalog and has_content(catalog[i])]
    info: dict[str, Any] = {
        "catalog_items": len(catalog),
        "items": len(rows),
        "regularization": regularization,
        "min_category_count": min_category_count,
    }
    if len(rows) < MIN_CONTENT_ITEMS:
        info["skipped"] = f"{len(rows)} of the model's items have content (< {MIN_CONTENT_ITEMS})"
        log.info("no content map: %s", info["skipped"])
        return ContentFit(None, info)
    items = [catalog[item_ids[r]] for r in rows]
    y = np.asarray(factors, dtype=np.float32)[rows]
    cmap = fit_content_map(items, y, regularization, min_category_count=min_category_count)
    # How much of the factors the content explains on the items it was fitted on (R², of the
    # centred factors): a number to watch between nights, not a promise for new items.
    resid = float(((cmap.predict(items) - y) ** 2).sum())
    total = float(((y - y.mean(axis=0)) ** 2).sum())
    info.update(
        features=len(cmap.feature_names),
        categories=len(cmap.categories),
        train_r2=round(1.0 - resid / total, 4) if total > 0 else None,
    )
    log.info("content map: %d items, %d features, %d categories, train R² %s", len(rows),
             len(cmap.feature_names), len(cmap.categories), info["train_r2"])  # fmt: skip
    return ContentFit(cmap, info)


def similar_content(
    item_ids: Sequence[str],
    cmap: ContentMap,
    catalog: Mapping[str, HasContent],
    interactions: npt.NDArray[np.int64],
    settings: Settings,
) -> ContentSimilar | None:
    """What the publisher blends into the similar items of the model's items with fewer than
    ``settings.content_similar_min_interactions`` users (``interactions``: (n_items,) int64);
    None when the settings turn it off."""
    if settings.content_similar_min_interactions <= 0 or settings.content_similar_weight <= 0:
        return None
    empty = _NoContent()
    vectors = content_vectors(cmap, [catalog.get(i, empty) for i in item_ids])
    return ContentSimilar(
        vectors,
        np.asarray(interactions, dtype=np.int64),
        settings.content_similar_min_interactions,
        settings.content_similar_weight,
    )


@dataclass(frozen=True)
class _NoContent:
    features: Mapping[str, float] = field(default_factory=dict)
    categories: tuple[str, ...] = ()
