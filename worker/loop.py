"""The worker loop, one micro-batch at a time:

    source.poll -> decode (dead letters out) -> history.apply -> scorer (fold-in, top-N)
    -> sink.write -> source.commit

Offsets are committed only after Redis holds the lists, so a crash means redelivery, never loss.
Between batches the worker checks the ``<p>:model`` pointer and hot-swaps to a new model once it
has verified it; a bad artifact is refused and the current model keeps serving.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from streamrec.artifact import load_model
from streamrec.connect import ensure_topics, redis_client
from streamrec.errors import ArtifactError, InfraError
from streamrec.keys import Keys
from streamrec.settings import Settings
from worker.decode import DeadLetters, decode_batch
from worker.history import History, coalesce
from worker.scorer import Scorer
from worker.sink import Sink
from worker.source import Source

log = logging.getLogger(__name__)

MODEL_CHECK_S = 2.0
PROGRESS_S = 10.0


@dataclass
class Stats:
    messages: int = 0
    decoded: int = 0
    dead_lettered: int = 0
    users_updated: int = 0
    batches: int = 0
    unknown_items: int = 0
    model_swaps: int = 0


def load_pointed_model(client: redis.Redis, keys: Keys) -> tuple[str, Path] | None:
    """(version, path) from the ``<p>:model`` pointer, or None when nothing is published."""
    raw = client.get(keys.model)
    if raw is None:
        return None
    try:
        pointer = json.loads(raw)
        return str(pointer["version"]), Path(pointer["path"])
    except (ValueError, KeyError, TypeError):
        log.error("ignoring malformed %s: %r", keys.model, raw[:200])
        return None


class Worker:
    """Runs until ``stop`` is set (or the limits given to ``run`` are reached)."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.stats = Stats()
        self.keys = Keys(settings.redis_prefix)
        self._redis = redis_client(settings)
        self._refused: set[str] = set()
        self.scorer = self._initial_model()

    def _initial_model(self) -> Scorer:
        if self.settings.model_path is not None:
            return Scorer.create(load_model(self.settings.model_path))
        pointed = load_pointed_model(self._redis, self.keys)
        if pointed is None:
            raise InfraError(
                f"no model: {self.keys.model} is not set in Redis and no model path was given; "
                "run: streamrec train --dataset synthetic --out DIR --publish"
            )
        return Scorer.create(load_model(pointed[1]))

    def _maybe_swap(self) -> None:
        if self.settings.model_path is not None:
            return
        pointed = load_pointed_model(self._redis, self.keys)
        if pointed is None or pointed[0] == self.scorer.version or pointed[0] in self._refused:
            return
        version, path = pointed
        try:
            scorer = Scorer.create(load_model(path))
        except ArtifactError as exc:
            self._refused.add(version)
            log.error("refusing model %s: %s; still serving %s", version, exc, self.scorer.version)
            return
        log.info("model swap %s -> %s", self.scorer.version, scorer.version)
        self.scorer = scorer
        self.stats.model_swaps += 1

    def run(self, max_messages: int | None = None, duration_s: float | None = None) -> Stats:
        s = self.settings
        ensure_topics(s)
        source = Source(s)
        dead = DeadLetters(s)
        history = History(self._redis, self.keys, s.history_ttl_s)
        sink = Sink(self._redis, self.keys, s.recs_ttl_s)
        started = time.monotonic()
        next_check = started + MODEL_CHECK_S
        next_report = started + PROGRESS_S
        log.info(
            "worker up: %s -> %s (model %s, %d items)",
            s.topic_events,
            s.redis_url,
            self.scorer.version,
            self.scorer.model.n_items,
        )
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if duration_s is not None and now - started >= duration_s:
                    break
                if max_messages is not None and self.stats.messages >= max_messages:
                    break
                if now >= next_check:
                    self._maybe_swap()
                    next_check = now + MODEL_CHECK_S
                if now >= next_report:
                    log.info("progress: %s lag=%d", self.stats, source.lag())
                    next_report = now + PROGRESS_S
                msgs = source.poll()
                if not msgs:
                    continue
                batch = decode_batch(msgs)
                dead.send(batch.failed)
                if batch.events:
                    histories = history.apply(coalesce(batch.events))
                    lists, unknown = self.scorer.recommend(
                        histories, s.top_n, history_max=s.history_max
                    )
                    sink.write(lists, self.scorer.version, int(time.time() * 1000))
                    self.stats.users_updated += len(lists)
                    self.stats.unknown_items += unknown
                source.commit(msgs)
                self.stats.messages += len(msgs)
                self.stats.decoded += len(batch.events)
                self.stats.dead_lettered += len(batch.failed)
                self.stats.batches += 1
        finally:
            try:
                dead.close()
            finally:
                source.close()
                log.info("worker stopped: %s", self.stats)
        return self.stats
