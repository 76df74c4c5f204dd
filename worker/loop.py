"""The worker loop, one micro-batch at a time:

    source.poll -> decode -> [WATCH applied offsets + user states] -> skip what is applied
    -> dead letters out -> history -> scorer (fold-in, top-N)
    -> MULTI: states, lists, applied offsets EXEC -> source.commit

Exactly-once effect: the batch's history changes, its lists and each partition's last applied
offset go to Redis in one MULTI/EXEC; messages at or below a partition's applied offset are
skipped when they come again (a crash between EXEC and the Kafka commit, or a rebalance). The
WATCH makes a zombie worker that lost its partitions fail its EXEC instead of applying twice.
Kafka offsets are committed only after EXEC (in the background every commit interval, and
synchronously on revocation and at stop: ``worker/source.py``).

Redis is a rebuildable copy: each partition resumes from what its state in Redis reflects, and
a state Redis lost is rebuilt from the events topic (``worker/rebuild.py``: ``StateGuard``
chooses assigned partitions' start offsets, checks each batch's applied offsets and takes the
messages of partitions under rebuild).

The source, the sink and the dead-letter writer are parameters (``worker/seams.py``), the real
Kafka and Redis ones unless given; what the worker counts is in ``Worker.stats``, which its
Prometheus metrics export (``worker/metrics.py``).

Redis or Kafka down: the model check and each batch are run through ``Worker.outages``
(``worker/retry.py``), which waits the outage out and redoes the step from its start; a stop
meanwhile ends the loop with the batch in hand neither applied nor committed.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np
import orjson
from confluent_kafka import Message

from streamrec.als.history import Rules, UserState
from streamrec.als.scorer import Scorer
from streamrec.connect import redis_client
from streamrec.keys import (
    Keys,
    home_value,
    mget,
    parse_applied,
    parse_list,
    popular_value,
    read_histories,
)
from streamrec.registry import event_decoder
from streamrec.settings import Settings
from streamrec.sink import Sink
from streamrec.worker.batch import Batch
from streamrec.worker.catalog import Catalog, CatalogFollower
from streamrec.worker.decode import DeadLetters, Decoded, decode_batch
from streamrec.worker.errors import WorkerError
from streamrec.worker.isolate import (
    Failed,
    apply_events,
    flatten_apart,
    read_states,
    score_apart,
)
from streamrec.worker.metrics import Metrics, MetricsServer, Stats
from streamrec.worker.models import ModelWatcher
from streamrec.worker.preflight import check_redis, preflight_topics
from streamrec.worker.rebuild import StateGuard, StateLost
from streamrec.worker.retry import Outages, Stopped, within
from streamrec.worker.seams import BatchSink, BatchSource, DeadLetterWriter, Positions
from streamrec.worker.source import Source, position, read_keys, where

log = logging.getLogger(__name__)

PROGRESS_S = 10.0
MAX_ATTEMPTS = 5
#: On a Redis Cluster, how far back the lists written before a failure of Redis are written
#: again once it answers: a master's writes not yet on its replica when it failed over are
#: gone from the promoted one, and a list lives in another slot than its user's history, so
#: nothing else would bring it back (replication lag on a healthy cluster: milliseconds).
REPAIR_S = 5.0
#: Users whose lists the purge of unavailable items reads per loop turn (``Worker._purge``):
#: it runs between batches, a slice at a time, so events are not held up behind it.
PURGE_CHUNK = 2000


def _freeze_heap() -> None:
    """Move what lives now (the model, its index and encoder) out of the collector's sight:
    they live as long as the process, and full collections would walk them every few hundred
    batches."""
    gc.collect()
    gc.freeze()


class Worker:
    """Runs until ``stop`` is set (or the limits given to ``run`` are reached).

    ``source``, ``sink`` and ``dead_letters`` default to the real ones (``Source``: the
    events topic in the worker's group; ``Sink``: Redis; ``DeadLetters``: the DLQ topic). The
    worker owns what it is given: ``run`` closes it at the end.
    """

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event | None = None,
        *,
        source: BatchSource | None = None,
        sink: BatchSink | None = None,
        dead_letters: DeadLetterWriter | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.metrics = Metrics()
        # Up before the model is: a worker waiting for a first model answers /healthz 503.
        self.server = (
            MetricsServer(self.metrics, settings.metrics_bind) if settings.metrics_bind else None
        )
        self.keys = Keys(settings.redis_prefix)
        self._redis = redis_client(settings)
        try:
            self.models = ModelWatcher(
                settings, self._redis, self.keys, self.metrics, stop=self.stop
            )
        except BaseException:
            if self.server is not None:  # no model: the process ends, and its endpoint
                self.server.close()
            raise
        self.rules = Rules(
            weights=settings.event_weights,
            half_life_ms=settings.half_life_ms,
            history_max=settings.history_max,
            dedup_window=settings.dedup_window,
        )
        if sink is None:
            sink = Sink(self._redis, self.keys, settings.recs_ttl_s, settings.history_ttl_s)
        self._sink = sink
        # Redis Cluster (lists written apart): the users of lists written in the last
        # REPAIR_S, and whether a batch failed since the last one that went through.
        self._recent: deque[tuple[float, dict[str, str]]] = deque()
        self._unsure = False
        self.state = StateGuard(
            settings, self._redis, self.keys, sink, self.rules, self.metrics, lambda: self.scorer
        )
        self._source = source  # built in ``run`` when None: after the topics exist
        self._dead = dead_letters
        # Every known schema version, and the registry when one is set (ConfigError at start).
        self._decoder = event_decoder(settings)
        self.assigned: set[tuple[str, int]] = set()  # the partitions this worker owns now
        # The item catalog (contract 3), read to its end in ``run`` and followed between
        # batches; the purge of items that left it: ids and the history keys still to read.
        self.catalog = Catalog()
        self._follower: CatalogFollower | None = None
        self._purge_ids: set[str] = set()  # looked for by the round under way
        self._purge_next: set[str] = set()  # for the next round (and the rest of this one)
        self._purge_keys: Iterator[str] | None = None
        self._purge_popular: set[str] = set()  # ids to look for in ``<p>:popular``
        self.outages = Outages(settings, self.metrics, self.stop)  # Redis or Kafka down

    @property
    def stats(self) -> Stats:
        """What this worker has done (``Metrics.stats``: the counts its metrics export)."""
        return self.metrics.stats

    @property
    def scorer(self) -> Scorer:
        """The model serving now (it may be swapped between batches)."""
        return self.models.scorer

    def run(self, max_messages: int | None = None, duration_s: float | None = None) -> Stats:
        check_redis(self._redis, self.settings)  # refuses a Redis that can evict its state
        s = self.settings
        preflight_topics(s)  # refuses missing or under-replicated topics (exit 6)
        if self._source is None:
            self._source = Source(s, on_assign=self.state.assigned, on_revoke=self.state.revoked)
        if self._dead is None:
            self._dead = DeadLetters(s)
        source, dead = self._source, self._dead
        self.state.attach(source if isinstance(source, Positions) else None, dead)
        if self._follower is None:
            self._follower = CatalogFollower(s, self.catalog, dead_letters=dead)
            self._follower.start()  # the whole catalog before the first batch (bounded)
            self.models.use_catalog(self.catalog)
            self._catalog_gauges()
        self.assigned = source.assigned
        server = self.server
        started = time.monotonic()
        next_report = started + PROGRESS_S
        log.info(
            "worker up: %s -> %s (model %s, %d items)",
            s.topic_events,
            s.redis_address,  # not the URL: it may hold a password
            self.scorer.version,
            self.scorer.model.n_items,
        )
        _freeze_heap()
        outages = self.outages
        outages.deadline = started + duration_s if duration_s is not None else None
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                self.metrics.looped()
                if duration_s is not None and now - started >= duration_s:
                    break
                if max_messages is not None and self.stats.messages >= max_messages:
                    break
                if outages.call(self.models.refresh):
                    _freeze_heap()
                    outages.call(self._refold)
                    self._catalog_gauges()
                outages.call(self.state.tick)
                outages.call(self._follow_catalog)
                if now >= next_report:
                    lag = source.lag()
                    self.metrics.lag.set(lag)
                    log.info("progress: %s lag=%d", self.stats, lag)
                    next_report = now + PROGRESS_S
                msgs = source.poll()
                if not msgs:
                    source.idle()
                    outages.idle()
                    continue
                outages.call(functools.partial(self._process, msgs))
                with self.metrics.stage("commit").time():
                    source.commit(msgs, asynchronous=True)
        except Stopped:
            waited = " and ".join(sorted(self.metrics.down)) or "a dependency"
            log.info("stopped while waiting for %s: the batch in hand is neither applied nor "
                     "committed", waited)  # fmt: skip
        finally:
            try:
                # Kafka's last commit and closes wait for the group coordinator, as long as the
                # session timeout when the broker is down: bounded, so a stop stays prompt.
                wait_s = 1.0 if outages.is_down("kafka") else s.kafka_timeout_s
                close = functools.partial(self._close_kafka, source, dead)
                if not within(close, wait_s, "kafka-close"):
                    log.warning("Kafka at %s did not answer within %g s at stop: its last "
                                "commit and close are left behind (Redis holds the applied "
                                "offsets: the next owner skips what was applied here)",
                                s.kafka_bootstrap, wait_s)  # fmt: skip
                if server is not None:
                    server.close()
            finally:
                self._sink.close()
                self._redis.close()
                log.info("worker stopped: %s", self.stats)
        return self.stats

    def _close_kafka(self, source: BatchSource, dead: DeadLetterWriter) -> None:
        try:
            source.commit_all()  # synchronous: the group resumes exactly here
            dead.close()
            self.models.close()
            if self._follower is not None:
                self._follower.close()
        finally:
            source.close()

    def _refold(self) -> None:
        """After a swap: re-fold the users whose events came after the new model's snapshot.

        The publisher wrote every known user's list from the data up to the snapshot; events
        this worker applied since then (offsets from the snapshot to the applied offset of
        each partition it owns) would be missing from those lists.
        """
        snap = self.scorer.model.manifest.get("kafka_snapshot")
        if not isinstance(snap, dict) or snap.get("topic") != self.settings.topic_events:
            return
        start = {int(p): int(o) for p, o in snap.get("offsets", {}).items()}
        ranges = {}
        for topic, part in sorted(self.assigned):
            if self.state.rebuilding((topic, part)):
                continue  # its lists are all written at the end of the rebuild, by this model
            applied = parse_applied(self._redis.get(self.keys.applied(topic, part)))
            if topic == self.settings.topic_events and applied is not None:
                ranges[part] = (start.get(part, 0), applied)
        users = sorted(read_keys(self.settings, self.settings.topic_events, ranges))
        if not users:
            return
        raw = read_histories(self._redis, self.keys, users)
        histories = {u: UserState.decode(r).totals(self.rules.half_life_ms)
                     for u, r in raw.items()}  # fmt: skip
        scorer = self.scorer
        scored = scorer.score(histories)
        lists = scorer.values(scored, int(time.time() * 1000))
        self._sink.write(lists, transaction=False, vecs=scorer.vecs(scored))
        self.stats.refolded += len(lists)
        log.info("re-folded %d users with events after the snapshot %s", len(lists), ranges)

    def _follow_catalog(self) -> None:
        """Apply what arrived on the items topic, and go on with the purge of lists that
        hold an item that left the catalog (or became unavailable)."""
        follower = self._follower
        if follower is None:
            return
        if follower.poll():
            self.models.catalog_changed()
            self._catalog_gauges()
            log.info("catalog: %d items, %d unavailable, %d mapped from their content "
                     "(version %d)", len(self.catalog), len(self.catalog.unavailable()),
                     self.models.cold, self.catalog.version)  # fmt: skip
        # Not before this worker owns partitions: a purge goes over their users.
        taken = self.models.take_purge() if self.assigned else set()
        self._purge_next |= taken
        self._purge_popular |= taken
        if self._purge_popular:
            self._purge_popular_list()
        if self._purge_keys is None and self._purge_next:
            # A round over every owned user; ids that come during it are looked for in the
            # rest of it and in one more round (so a round always ends, however often the
            # catalog changes: an id is gone from every list within two rounds).
            self._purge_ids, self._purge_next = self._purge_next, set()
            self._purge_keys = self._owned_history_keys()
        if self._purge_keys is not None:
            self._purge()

    def _purge_popular_list(self) -> None:
        """``<p>:popular`` written again without the ids of ``_purge_popular`` where it holds
        one and is the serving model's: what the publisher wrote, less the items that left
        the catalog since (every owning worker writes the same value). A newer model's list
        is its publisher's, and a retry after an outage looks again."""
        ids, self._purge_popular = self._purge_popular, set()
        try:
            raw = self._redis.get(self.keys.popular)
            scorer = self.models.scorer
            current = parse_list(raw) if raw is not None else None
            if current is None or current.get("model_version") != scorer.version:
                return
            if not {e.get("item_id") for e in current["items"]} & ids:
                return
            never, n = self.models.never(), self.settings.top_n
            kept = [p for p in scorer.model.popular(n + len(never)) if p[0] not in never][:n]
            value = popular_value(kept, scorer.version, int(time.time() * 1000))
            self._redis.set(self.keys.popular, value)
        except BaseException:
            self._purge_popular |= ids
            raise
        log.info("popular written again without %s", ", ".join(sorted(ids & {
            e.get("item_id") for e in current["items"]})))  # fmt: skip

    def _catalog_gauges(self) -> None:
        off = len(self.catalog.unavailable() & set(self.catalog.items()))
        gauge = self.metrics.catalog_items
        gauge.labels(state="available").set(len(self.catalog) - off)
        gauge.labels(state="unavailable").set(off)
        gauge.labels(state="content").set(self.models.cold)

    def _owned_history_keys(self) -> Iterator[str]:
        """The history key of every user of the partitions this worker owns now."""
        topics = {self.settings.topic_events}
        for topic, part in sorted(self.assigned):
            if topic not in topics:
                continue
            pattern = _glob_escape(self.keys.users(topic, part)) + "*"
            for key in self._redis.scan_iter(match=pattern, count=1000):
                yield key.decode() if isinstance(key, bytes) else key

    def _purge(self) -> None:
        """One slice of the purge: of up to ``PURGE_CHUNK`` owned users, re-fold those whose
        stored list holds an id of ``_purge_ids`` or ``_purge_next`` (their new list leaves
        it out: the scorer blocks them), so such a list is rewritten within one round over
        the owned users after the id came (two when it came during a round)."""
        assert self._purge_keys is not None
        keys: list[str] = []
        try:
            for key in self._purge_keys:
                keys.append(key)
                if len(keys) >= PURGE_CHUNK:
                    break
            else:
                self._purge_keys = None  # the round ends with this slice
            self._purge_slice(keys)
        except BaseException:
            # Redis failed under the scan (a generator that raised is done): the round
            # begins again once the outage is over.
            self._purge_keys = None
            self._purge_next |= self._purge_ids
            self._purge_ids = set()
            raise
        if self._purge_keys is None:
            log.info("purge of %d unavailable items done", len(self._purge_ids))
            self._purge_ids = set()

    def _purge_slice(self, keys: list[str]) -> None:
        """Re-fold the users of ``keys`` (history keys) whose list holds a purged id."""
        users: dict[str, str] = {}
        for key in keys:
            found = self.keys.parse_user(key)
            if found is not None:
                users[found[2]] = key
        names = list(users)
        marks = [b'"item_id":' + orjson.dumps(i) for i in self._purge_ids | self._purge_next]
        hit = [u for u, raw in zip(names, mget(self._redis, [self.keys.recs(u) for u in names]),
                                   strict=True)
               if raw is not None and any(m in bytes(raw) for m in marks)]  # fmt: skip
        if hit:
            raw_states = mget(self._redis, [users[u] for u in hit])
            states = {u: UserState.decode(r) for u, r in zip(hit, raw_states, strict=True) if r}
            histories = {u: st.totals(self.rules.half_life_ms) for u, st in states.items()}
            scorer = self.scorer
            lists = scorer.values(scorer.score(histories), int(time.time() * 1000))
            self._sink.write(lists, transaction=False)
            self.stats.purged += len(lists)
            log.info("rewrote %d lists that held an unavailable item", len(lists))

    def _repair(self) -> None:
        """After a failure of Redis (a Redis Cluster failing over): write again, from the
        stored histories, the lists written in the last ``REPAIR_S`` (see there)."""
        self._unsure = False
        where = {u: k for _, users in self._recent for u, k in users.items()}
        users = list(where)
        raw = mget(self._redis, [where[u] for u in users])
        states = {u: UserState.decode(r) for u, r in zip(users, raw, strict=True) if r}
        histories = {u: s.totals(self.rules.half_life_ms) for u, s in states.items()}
        scorer = self.scorer
        scored = scorer.score(histories)
        lists = scorer.values(scored, int(time.time() * 1000))
        homes = []
        for u, _ in lists:
            found = self.keys.parse_user(where[u])
            if found is not None:
                homes.append((u, home_value(found[0], found[1])))
        self._sink.write(lists, transaction=False, homes=homes, vecs=scorer.vecs(scored))
        self.stats.refolded += len(lists)
        log.warning("Redis failed under this worker: wrote again the %d lists of the last "
                    "%.0f s (a failover may have lost them)", len(lists), REPAIR_S)  # fmt: skip

    def _process(self, msgs: Sequence[Message]) -> None:
        m = self.metrics
        with m.stage("decode").time():
            decoded = decode_batch(msgs, self._decoder)
        rest = self.state.replay(decoded)  # partitions under rebuild take their messages
        for group in Batch.split(rest):
            self._apply_all(Batch.of(group, self.keys))
        m.batch_size.observe(len(msgs))
        self.stats.messages += len(msgs)
        self.stats.batches += 1

    def _apply_all(self, batch: Batch) -> None:
        """Apply ``batch`` (retried when it raced with another writer, or parts of it when
        Redis lost their partitions' state)."""
        n = len(batch)
        for _attempt in range(MAX_ATTEMPTS):
            if not batch.decoded:
                break
            try:
                if self._apply(batch):
                    self.state.wrote(batch.last)
                    if self._unsure:
                        self._repair()
                    break
            except StateLost as lost:
                self._sink.reset()  # drop the connection and its WATCH
                self.state.recover(lost)  # rebuild, or move back: their messages come again
                kept = [d for d in batch.decoded if position(d.msg)[0] not in lost.found]
                batch = Batch.of(kept, self.keys)
                continue
            except BaseException:
                self._sink.reset()  # drop the connection and its WATCH
                self._unsure = bool(self._recent)
                raise
            log.warning("batch raced with another writer on %s; retrying", batch.parts)
        else:
            raise WorkerError(
                f"could not apply a batch of {n} in {MAX_ATTEMPTS} attempts: its state "
                "kept changing (another worker writing the same partitions?)"
            )

    def _apply(self, batch: Batch) -> bool:
        """One attempt at a batch; False when another writer changed its keys meanwhile."""
        m, parts, users = self.metrics, batch.parts, batch.users
        assert self._dead is not None  # set by ``run``
        with m.stage("state_read").time():
            raw = self._sink.watch_read(batch.watched)
            applied = {
                p: parse_applied(v, missing=-1)
                for p, v in zip(parts, raw[: len(parts)], strict=True)
            }
            self.state.check(applied)  # raises StateLost when Redis lost what was applied
            raw_states = raw[len(parts) :]
        again: dict[str, None] = {}  # users of messages found applied (lists written apart)
        if all(batch.first[p] > applied[p] for p in parts):
            fresh = batch.decoded  # nothing redelivered: the usual case
        else:
            fresh = []
            apart = getattr(self._sink, "lists_apart", False)
            for d, (part, offset) in zip(batch.decoded, batch.pos, strict=True):
                if offset > applied[part]:
                    fresh.append(d)
                elif apart and d.event is not None:
                    again[d.event.user_id] = None
        redelivered = len(batch) - len(fresh)
        failed = [(d.msg, d.reason or "") for d in fresh if d.event is None]
        self._dead.send(failed)

        # A failure confined to one user (worker/isolate.py) drops that user from the batch:
        # their state and list are not written, so they stay as they were.
        faulty: Failed = {}
        with m.stage("history").time():
            states = read_states(users, raw_states, faulty)
            events = [d.event for d in fresh if d.event is not None]
            live, duplicates = apply_events(events, states, self.rules, faulty)
            if again:
                # On a Redis Cluster a batch's lists follow its state transaction: where that
                # went through and the lists may not have (a crash, an outage, a race lost on
                # another partition), the redelivery writes them again from the state.
                stored = {u for u, r in zip(users, raw_states, strict=True) if r is not None}
                live += [u for u in again if u in stored and u in states and u not in live]
            live, counts, item_ids, totals = flatten_apart(
                live, states, self.rules.half_life_ms, faulty
            )

        with m.stage("foldin_topn").time():
            scorer = self.scorer
            rows = scorer.rows_of(item_ids)
            scored = score_apart(scorer, live, counts, rows, totals, faulty)

        with m.stage("redis_write").time():
            key_of = dict(zip(users, batch.state_keys, strict=True))
            ok = self._sink.write(
                lists=scorer.values(scored, int(time.time() * 1000)),
                vecs=scorer.vecs(scored),
                states=[(key_of[u], states[u].encode()) for u in scored.users],
                applied=[
                    (key, max(batch.last[part], applied[part]))
                    for part, key in zip(parts, batch.applied_keys, strict=True)
                ],
                homes=[(u, batch.homes[u]) for u in scored.users],
            )
        if not ok:
            return False
        if getattr(self._sink, "lists_apart", False):
            now = time.monotonic()
            self._recent.append((now, {u: key_of[u] for u in scored.users}))
            while self._recent and self._recent[0][0] < now - REPAIR_S:
                self._recent.popleft()
        written_ms = time.time() * 1000
        stamps = np.fromiter((ev.timestamp for ev in events), dtype=np.float64, count=len(events))
        m.latency.observe_many(np.maximum(0.0, written_ms - stamps) / 1000)
        st = self.stats
        st.decoded += len(events)
        st.dead_lettered += len(failed)
        st.redelivered += redelivered
        st.duplicates += duplicates
        st.users_updated += len(scored.users)
        st.unknown_items += scored.unknown
        st.cold_users += scored.cold
        st.topn_fallback += scored.short
        if faulty:
            st.users_failed += len(faulty)
            _log_failed(faulty, fresh)
        return True


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis SCAN pattern."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _log_failed(failed: Failed, fresh: Sequence[Decoded]) -> None:
    """One line per user a batch could not be applied to, with where their events were."""
    at: dict[str, list[str]] = {u: [] for u in failed}
    for d in fresh:
        if d.event is not None and d.event.user_id in at:
            at[d.event.user_id].append(where(d.msg))
    for user, reason in failed.items():
        spots = at[user]
        shown = ", ".join(spots[:3]) + (f" and {len(spots) - 3} more" if len(spots) > 3 else "")
        log.error("user %r not updated, list and state kept: %s; events at %s",
                  user, reason, shown or "none")  # fmt: skip
