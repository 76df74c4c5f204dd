"""Which model serves, which items are blocked, and which catalog items it scores from their
content: checked between batches.

A new model is noticed two ways: an announcement on ``settings.topic_models`` (at once) or the
``<p>:model`` pointer moving (polled every ``CHECK_S``). Either way the pointer is the truth:
the worker loads the directory it names, verifies it (checksums, shapes, dtypes) and only then
swaps one reference. A model that fails verification is refused, logged and remembered, and the
current one keeps serving.

The serving ``Scorer`` is the model's own (``plain``) composed with what is never recommended
(``<p>:blocked`` and the catalog's unavailable items, contract 3) and the cold items: catalog
items the model has no factors for, given factors by the model's content map
(``streamrec.artifact.ContentMap``, stored with it) when it has one. A swap maps them again
with the new model's map; an item the new model knows then uses its trained factors.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import numpy as np
import numpy.typing as npt
import redis
from confluent_kafka import Consumer

from streamrec.als.ann import load_for
from streamrec.als.scorer import ColdItems, Scorer
from streamrec.artifact import ContentMap, Model, load_content_map, load_model
from streamrec.catalog import Item
from streamrec.connect import blocked_items
from streamrec.errors import ArtifactError, InfraError
from streamrec.keys import Keys, ModelPointer, read_model_pointer
from streamrec.settings import Settings
from streamrec.worker.catalog import Catalog
from streamrec.worker.metrics import Metrics

log = logging.getLogger(__name__)

CHECK_S = 2.0
WAIT_POLL_S = 1.0  # how often a worker with no model yet reads the pointer again


class ModelWatcher:
    """Holds the serving ``Scorer``, configured with the settings' ``top_n`` and
    ``history_max`` and the blocked rows; ``refresh()`` between batches.

    ``check_s``: how often ``refresh`` reads the pointer and the blocked set from Redis.
    With no pointer and no model path, it waits up to ``settings.model_wait_s`` for one
    (``stop`` ends the wait), not ready meanwhile (``Metrics.wait_for``).
    """

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        keys: Keys,
        metrics: Metrics,
        check_s: float = CHECK_S,
        stop: threading.Event | None = None,
    ) -> None:
        self._settings = settings
        self._stop = stop or threading.Event()
        self._check_s = check_s
        self._redis = client
        self._keys = keys
        self._metrics = metrics
        self.refused: set[str] = set()
        self._pinned = settings.model_path is not None
        self._catalog: Catalog | None = None
        self._content: ContentMap | None = None
        self._loaded_content: ContentMap | None = None  # the map of the model ``_scorer`` loaded
        # Cold items' mapped factors under the serving model: item_id -> (record, factors).
        self._mapped: dict[str, tuple[Item, npt.NDArray[np.float32]]] = {}
        self._built: tuple[list[Item], ColdItems] | None = None  # the last cold block made
        self._unavailable: frozenset[str] = frozenset()
        #: Ids that left every list since the caller last took them (``take_purge``): the
        #: catalog's newly unavailable items, and all of them after a swap (the publisher
        #: wrote the new model's lists without the catalog).
        self.purge: set[str] = set()
        self._plain = self._initial()  # the model's own scorer, without blocked or cold rows
        self.scorer = self._plain
        self._blocked_ids: set[str] = set()
        self._next_check = 0.0
        self._unreported_swap = False
        self._announcements: Consumer | None = None
        if not self._pinned:
            self._announcements = Consumer(
                {
                    **settings.kafka_common(),
                    # Every worker must see every announcement: a group of its own, no commits.
                    "group.id": f"{settings.consumer_group}.models.{uuid.uuid4().hex[:12]}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "latest",
                }
            )
            self._announcements.subscribe([settings.topic_models])
        metrics.model_loaded(self.scorer.version)

    @property
    def blocked(self) -> npt.NDArray[np.int64]:
        """(m,) int64 rows of the serving model never recommended (the blocked items it knows)."""
        return self.scorer.blocked

    def _scorer(self, model: Model) -> Scorer:
        s = self._settings
        # A big catalogue's stored index is opened (memory-mapped) and checked with the model:
        # one that does not open makes load fail, and the model is refused like a bad one.
        # So is its content map (checksummed, shapes): refused with the model when bad.
        scorer = Scorer.create(model, n=s.top_n, history_max=s.history_max,
                               ann=load_for(model, s))  # fmt: skip
        self._loaded_content = load_content_map(model.path)
        return scorer

    # --- the catalog (contract 3) --------------------------------------------------------------

    def use_catalog(self, catalog: Catalog) -> None:
        """Serve with ``catalog``'s unavailable items left out and its cold items mapped;
        call ``catalog_changed`` after each change of it."""
        self._catalog = catalog
        self.catalog_changed()

    def catalog_changed(self) -> None:
        """Compose the serving scorer again from the catalog as it is now; the ids that
        became unavailable are added to ``purge``."""
        if self._catalog is None:
            return
        now = self._catalog.unavailable()
        self.purge |= now - self._unavailable
        self._unavailable = now
        self._compose()

    def never(self) -> set[str]:
        """Ids never recommended now: the operators' blocked items and the catalog's
        unavailable and removed ones."""
        return self._blocked_ids | set(self._unavailable)

    def take_purge(self) -> set[str]:
        """The ids of ``purge``, emptied."""
        ids, self.purge = self.purge, set()
        return ids

    @property
    def cold(self) -> int:
        """How many cold items the serving scorer maps from their content."""
        return len(self.scorer.cold) if self.scorer.cold is not None else 0

    def _compose(self) -> None:
        plain = self._plain
        never = self._blocked_ids | self._unavailable
        self.scorer = plain.with_(blocked=plain.blocked_rows(never), cold=self._cold_items(never))

    def _cold_items(self, never: set[str] | frozenset[str]) -> ColdItems | None:
        """The catalog's available items the model has no factors for, each with factors
        from the model's content map (None without a catalog, a map or such items)."""
        if self._catalog is None or self._content is None:
            return None
        index, cmap = self._plain.index, self._content
        fresh = sorted(
            (i for i in self._catalog.items().values()
             if i.available and i.item_id not in index and i.item_id not in never),
            key=lambda i: i.item_id,
        )  # fmt: skip
        if not fresh:
            self._mapped = {}
            return None
        built = self._built
        if built is not None and built[0] == fresh:
            return built[1]  # the same items as last time (a trained item's change): kept
        known = self._mapped
        todo = [i for i in fresh if (known.get(i.item_id) or (None,))[0] != i]
        if todo:
            for item, row in zip(todo, cmap.predict(todo), strict=True):
                known[item.item_id] = (item, row)
            log.info("mapped %d new catalog items from their content (model %s)",
                     len(todo), self._plain.version)  # fmt: skip
        self._mapped = {i.item_id: known[i.item_id] for i in fresh}
        factors = np.stack([self._mapped[i.item_id][1] for i in fresh])
        cold = ColdItems.create(self._plain.encoder, [i.item_id for i in fresh], factors)
        self._built = (fresh, cold)
        return cold

    def _initial(self) -> Scorer:
        scorer = self._initial_scorer()
        self._content = self._loaded_content
        return scorer

    def _initial_scorer(self) -> Scorer:
        if self._settings.model_path is not None:
            return self._scorer(load_model(self._settings.model_path))
        pointed = read_model_pointer(self._redis, self._keys)
        if pointed is None and self._settings.model_wait_s > 0:
            pointed = self._wait_for_pointer(self._settings.model_wait_s)
        if pointed is None:
            wait_s = self._settings.model_wait_s
            waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
            raise InfraError(
                f"no model: {self._keys.model} is not set in Redis{waited} and no model path "
                "was given; run: streamrec train --dataset synthetic --out DIR --publish "
                "(or set STREAMREC_MODEL_WAIT_S to wait for one)"
            )
        return self._scorer(load_model(pointed.path))

    def _wait_for_pointer(self, wait_s: float) -> ModelPointer | None:
        """Poll the pointer until it is set (returned), ``wait_s`` passes (None) or stop."""
        m, key = self._metrics, self._keys.model
        log.warning("no model: %s is not set in Redis; waiting up to %g s for one to be "
                    "published (not ready meanwhile)", key, wait_s)  # fmt: skip
        deadline = time.monotonic() + wait_s
        m.wait_for("a model")
        try:
            while time.monotonic() < deadline:
                m.looped()  # alive (/livez), only not ready
                if self._stop.wait(WAIT_POLL_S):
                    raise InfraError(f"stopped while waiting for a model ({key} not set)")
                try:
                    pointed = read_model_pointer(self._redis, self._keys)
                except redis.RedisError as exc:  # Redis may come up after the worker
                    m.dependency("redis", up=False)
                    log.debug("waiting for a model: Redis: %s", exc)
                    continue
                m.dependency("redis", up=True)
                if pointed is not None:
                    log.info("model %s published: starting", pointed.version)
                    return pointed
            return None
        finally:
            m.wait_for(None)

    def refresh(self) -> bool:
        """Swap to a newly published model and reload the blocked set, when due.

        Returns True when the serving model changed (since the last call that returned).
        Raises what Redis raises; the next call then reads again.
        """
        announced = False
        if self._announcements is not None:
            msg = self._announcements.poll(0)
            announced = msg is not None and msg.error() is None
            if msg is not None and announced:
                log.info("model announcement: %r", (msg.value() or b"")[:200])
        now = time.monotonic()
        if not announced and now < self._next_check:
            return False
        if not self._pinned and self._maybe_swap():
            self._unreported_swap = True
        self._reload_blocked()
        self._metrics.retrain_record(self._redis.get(self._keys.retrain_last))
        # Only now: when Redis failed above, the next call reads again (and still reports a
        # swap made before the failure, so the caller re-folds after it).
        self._next_check = now + self._check_s
        swapped, self._unreported_swap = self._unreported_swap, False
        return swapped

    def _maybe_swap(self) -> bool:
        pointed = read_model_pointer(self._redis, self._keys)
        if (
            pointed is None
            or pointed.version == self._plain.version
            or pointed.version in self.refused
        ):
            return False
        version, path = pointed.version, pointed.path
        try:
            scorer = self._scorer(load_model(path))
        except ArtifactError as exc:
            self.refused.add(version)
            self._metrics.stats.models_refused += 1
            log.error("refusing model %s: %s; still serving %s", version, exc, self.scorer.version)
            return False
        log.info("model swap %s -> %s", self.scorer.version, scorer.version)
        self._plain = self.scorer = scorer
        self._content, self._mapped, self._built = self._loaded_content, {}, None
        # Re-map the blocked ids and the catalog onto the new model's rows just below, and
        # purge the unavailable items from the lists the publisher wrote.
        self._blocked_ids = set()
        self._compose()
        self.purge |= self._unavailable
        self._metrics.model_loaded(scorer.version)
        return True

    def _reload_blocked(self) -> None:
        ids = blocked_items(self._redis, self._keys)
        if ids != self._blocked_ids:
            self._blocked_ids = ids
            self._compose()
            log.info("blocked items: %d (%d known to the model)", len(ids), len(self.blocked))

    def close(self) -> None:
        if self._announcements is not None:
            self._announcements.close()
