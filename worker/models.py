"""Which model serves, and which items are blocked: checked between batches.

A new model is noticed two ways: an announcement on ``settings.topic_models`` (at once) or the
``<p>:model`` pointer moving (polled every ``CHECK_S``). Either way the pointer is the truth:
the worker loads the directory it names, verifies it (checksums, shapes, dtypes) and only then
swaps one reference. A model that fails verification is refused, logged and remembered, and the
current one keeps serving.
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

from streamrec.als.scorer import Scorer
from streamrec.artifact import Model, load_model
from streamrec.connect import blocked_items
from streamrec.errors import ArtifactError, InfraError
from streamrec.keys import Keys, ModelPointer, read_model_pointer
from streamrec.settings import Settings
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
        self.scorer = self._initial()
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
        return Scorer.create(model, n=s.top_n, history_max=s.history_max)

    def _initial(self) -> Scorer:
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
            or pointed.version == self.scorer.version
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
        self.scorer = scorer
        # Re-map the blocked ids onto the new model's rows on the reload just below.
        self._blocked_ids = set()
        self._metrics.model_loaded(scorer.version)
        return True

    def _reload_blocked(self) -> None:
        ids = blocked_items(self._redis, self._keys)
        if ids != self._blocked_ids:
            self._blocked_ids = ids
            self.scorer = self.scorer.with_(blocked=self.scorer.blocked_rows(ids))
            log.info("blocked items: %d (%d known to the model)", len(ids), len(self.blocked))

    def close(self) -> None:
        if self._announcements is not None:
            self._announcements.close()
