"""``streamrec replay PATH --evaluate``: prequential evaluation through the live path.

The events of PATH (read by ``streamrec.producer.eventcsv``, sorted by time) are cut at the
middle. The first half is sent to the events topic and the first model comes from the nightly
job's own code (``streamrec.model.retrain.retrain``, reading that topic, gated as every night);
a real ``Worker`` (on a thread of this process) then consumes the topic and writes lists to
Redis. The second half is replayed through the same broker, worker and Redis:

* **Periods.** Event time is cut into periods of ``retrain_every_ms`` from the middle; before
  each period that holds events (after the first) the nightly job runs again on everything the
  topic holds, through its gate, and the running worker hot-swaps to what it promotes.
* **Rounds** (``streamrec.model.prequential.schedule``): a period's events are sent in rounds,
  round r holding each user's r-th event of the period. Before a round is sent, every user's
  list is read from Redis as a front-end reads it (``<p>:recs:<user>``, else ``<p>:popular``)
  and each event is scored against it: the ``live`` policy. ``static`` is the list the last
  promoted retrain published for the user (popular for users it did not know), ``popularity``
  that publish's popular list.
* **Pacing.** After a round is sent and acknowledged, the replay waits (bounded by
  ``catchup_s``) until the worker's applied offsets reach the broker's acknowledged ones, so
  the next read reflects every earlier event of its user; it counts the rounds that had to
  wait and the reads that found a list older than their user's previous event anyway.
* **Freshness**: per event, the list's ``updated_at_ms`` read after its round was applied,
  minus the wall time just before the event was sent (the worker stamps a list as it builds it,
  just before the transaction that makes it visible).

With ``isolate`` (the CLI) the run has a namespace of its own (topics ``eval-<tag>.*``, consumer
group, Redis prefix ``<prefix>-eval-<tag>``), deleted at the end; the report lands in
``report_dir`` (``report.json``, ``report.html``).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import platform
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamrec import __version__
from streamrec.errors import InfraError, InputError
from streamrec.events import new_event
from streamrec.keys import Keys, mget, parse_applied, parse_list, read_model_pointer
from streamrec.settings import Settings

if TYPE_CHECKING:
    from streamrec.producer.producer import EventProducer

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
#: How often the replay reads the applied offsets while it waits for the worker.
POLL_S = 0.002
PROGRESS_S = 10.0


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run: see the module doc. ``limit``: the earliest N events of the file
    only; ``test_limit``: score only the first N events of the second half; ``n_boot``:
    bootstrap draws for the intervals."""

    path: Path
    report_dir: Path
    retrain_every_ms: int = DAY_MS
    params: Any = None  # streamrec.model.params.Params; None = its defaults
    limit: int | None = None
    test_limit: int | None = None
    n_boot: int = 1000
    seed: int = 0
    isolate: bool = True
    models_dir: Path | None = None
    catchup_s: float = 60.0
    fmt: str = "avro"
    #: the nightly gate's (``RetrainConfig``): how far the candidate may trail the live model,
    #: how far it must beat popularity
    tolerance: float = 0.02
    min_lift: float = 0.10
    extra: dict[str, Any] = field(default_factory=dict)
    #: move the replay's own long-lived objects (the file's rows, the retrain's leftovers) out
    #: of the collector's sight after each retrain: the worker thread shares this process's
    #: heap, and full collections walking them would stall it (a worker process has no such
    #: heap; it freezes its own model the same way)
    freeze_heap: bool = True


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def revision() -> str | None:
    """The git revision of the checkout this module runs from (``-dirty`` when modified),
    None outside a git checkout."""
    here = str(Path(__file__).resolve().parent)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()  # fmt: skip

    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def namespace(settings: Settings) -> Settings:
    """``settings`` with topics, consumer group and Redis prefix of their own (and no metrics
    endpoint), so an evaluation never touches the live ones."""
    tag = f"{int(time.time()):08x}{uuid.uuid4().hex[:6]}"
    return settings.model_copy(
        update={
            "topic_events": f"eval-{tag}.events",
            "topic_dlq": f"eval-{tag}.events.dlq",
            "topic_models": f"eval-{tag}.models",
            "topic_items": f"eval-{tag}.items",
            "consumer_group": f"eval-{tag}",
            "redis_prefix": f"{settings.redis_prefix}-eval-{tag}",
            "metrics_bind": "",
        }
    )


def _drop_namespace(settings: Settings, client: Any) -> None:
    """Delete the run's topics and Redis keys (best effort: logged, never raised)."""
    from confluent_kafka.admin import AdminClient

    from streamrec.connect import topic_specs

    try:
        names = list(topic_specs(settings))
        admin = AdminClient(settings.kafka_common())  # kept alive until its futures resolve
        futures = admin.delete_topics(names, operation_timeout=30, request_timeout=30)
        for topic, f in futures.items():
            try:
                f.result(timeout=30)
            except Exception as exc:  # one missing topic (never created) is no failure
                log.debug("deleting %s: %s", topic, exc)
        batch: list[Any] = []
        for key in client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    except Exception as exc:  # cleaning up must not hide the run's result
        log.warning("could not delete the evaluation's topics or keys: %s", exc)


class _WorkerThread:
    """A ``Worker`` run on a thread of this process; ``check`` raises what it raised."""

    def __init__(self, settings: Settings) -> None:
        from streamrec.worker.loop import Worker

        self.worker = Worker(settings)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="eval-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise InfraError(f"the worker stopped: {type(self.error).__name__}: {self.error}")
        if not self.thread.is_alive():
            raise InfraError("the worker stopped")

    @property
    def version(self) -> str:
        return self.worker.scorer.version

    def close(self) -> None:
        self.worker.stop.set()
        self.thread.join(timeout=60)


@dataclass
class _Pacing:
    rounds: int = 0
    waited: int = 0  # rounds whose first look found the worker behind
    wait_s: float = 0.0  # waiting for the worker's applied offsets
    timeouts: int = 0  # waits that gave up after catchup_s
    send_s: float = 0.0  # handing a round to the producer
    read_s: float = 0.0  # reading lists from Redis


class _Replay:
    """The state of one run; ``run`` drives it (the module doc)."""

    def __init__(
        self,
        settings: Settings,
        cfg: EvalConfig,
        echo: Callable[[str], None],
        stop: threading.Event,
    ) -> None:
        from streamrec.connect import redis_client

        self.s = settings
        self.cfg = cfg
        self.echo = echo
        self.stop = stop
        self.keys = Keys(settings.redis_prefix)
        self.client = redis_client(settings)
        self.applied_keys = [
            self.keys.applied(settings.topic_events, p)
            for p in range(settings.topic_events_partitions)
        ]
        self.pacing = _Pacing()
        self.retrains: list[dict[str, Any]] = []
        self.static: dict[str, list[str]] = {}
        self.popular: list[str] = []
        self.model_items: frozenset[str] = frozenset()
        self.known_users: set[str] = set()
        self.serving: str | None = None

    # --- the nightly job and what it published ---------------------------------------------------

    def retrain(self, models_dir: Path, at_ms: int, seen: set[str], first: bool = False) -> bool:
        """Run the nightly job; True when a new model went live. A failed run (not the
        first) is recorded and the replay goes on with the live model, as the nightly
        schedule does (``commands._daily``)."""
        from streamrec.model.params import Params
        from streamrec.model.retrain import RetrainConfig, retrain

        cfg = RetrainConfig(
            models_dir=models_dir,
            params=self.cfg.params or Params(),
            seed=self.cfg.seed,
            tolerance=self.cfg.tolerance,
            min_lift=self.cfg.min_lift,
            keep=3,
        )
        started = time.perf_counter()
        try:
            result = retrain(self.s, cfg, self.client, echo=lambda line: log.debug("%s", line))
        except Exception as exc:
            if first:
                raise
            return self._failed(at_ms, exc, time.perf_counter() - started, seen)
        took = time.perf_counter() - started
        self.retrains.append(
            {
                "at_event_ms": at_ms,
                "outcome": "promoted" if result.promoted else "kept",
                "version": result.version or result.live_version,
                "reason": result.reason,
                "rows": result.counts.get("rows"),
                "seconds": round(took, 2),
            }
        )
        log.info("retrain at event time %d: %s %s (%s) in %.1f s",
                 at_ms, self.retrains[-1]["outcome"], self.retrains[-1]["version"],
                 result.reason, took)  # fmt: skip
        if result.promoted:
            self.known_users = set(seen)
        return result.promoted

    def _failed(self, at_ms: int, exc: Exception, took: float, seen: set[str]) -> bool:
        log.warning("retrain at event time %d failed (%s: %s); the live model serves on",
                    at_ms, type(exc).__name__, exc)  # fmt: skip
        pointer = read_model_pointer(self.client, self.keys)
        moved = pointer is not None and pointer.version != self.serving
        self.retrains.append(
            {
                "at_event_ms": at_ms,
                "outcome": "failed",
                # a run that failed after moving the pointer still changed the serving model
                "version": pointer.version if moved and pointer is not None else self.serving,
                "reason": f"{type(exc).__name__}: {exc}"[:300],
                "rows": None,
                "seconds": round(took, 2),
            }
        )
        if moved:
            self.known_users = set(seen)
        return moved

    def wait_swap(self, worker: _WorkerThread, version: str) -> None:
        deadline = time.monotonic() + self.cfg.catchup_s
        while worker.version != version:
            worker.check()
            if time.monotonic() > deadline:
                raise InfraError(f"the worker did not swap to {version} within "
                                 f"{self.cfg.catchup_s:g} s")  # fmt: skip
            time.sleep(0.02)

    def snapshot(self) -> None:
        """What the last promoted retrain published: every known user's list, popular, the
        model's items (read right after it: no event was sent since)."""
        from streamrec.artifact import load_model

        users = sorted(self.known_users)
        self.static = {}
        for lo in range(0, len(users), 1000):
            part = users[lo : lo + 1000]
            for u, raw in zip(part, mget(self.client, [self.keys.recs(u) for u in part]),
                              strict=True):  # fmt: skip
                if raw is not None:
                    self.static[u] = [x["item_id"] for x in parse_list(raw)["items"]]
        raw_pop = self.client.get(self.keys.popular)
        self.popular = [x["item_id"] for x in parse_list(raw_pop)["items"]] if raw_pop else []
        pointer = read_model_pointer(self.client, self.keys)
        if pointer is None:
            raise InfraError("no model published")
        self.model_items = frozenset(load_model(pointer.path).item_ids)
        self.serving = pointer.version

    # --- the worker's progress -------------------------------------------------------------------

    def applied(self) -> dict[int, int]:
        raw = mget(self.client, self.applied_keys)
        return {p: parse_applied(v, missing=-1) for p, v in enumerate(raw)}

    def catch_up(self, producer: EventProducer, worker: _WorkerThread, bound_s: float) -> bool:
        """Wait until the broker acknowledged every event sent and the worker applied them
        all (its applied offsets reach the acknowledged ones); False after ``bound_s``. The
        round is not flushed first: the acknowledgements come while the worker consumes."""
        from streamrec.model.prequential import caught_up

        def done() -> bool:
            if producer.poll(0) > 0:
                return False
            if producer.failed:
                raise InfraError(f"{len(producer.failed)} event(s) not delivered to "
                                 f"{producer.topic}; first: {producer.failed[0]}")  # fmt: skip
            return caught_up(self.applied(), producer.acked)

        started = time.monotonic()
        if done():
            return True
        self.pacing.waited += 1
        try:
            while not done():
                worker.check()
                if time.monotonic() - started > bound_s:
                    self.pacing.timeouts += 1
                    log.warning("the worker did not catch up within %.0f s (applied %s, "
                                "acknowledged %s)", bound_s, self.applied(),
                                producer.acked)  # fmt: skip
                    return False
                time.sleep(POLL_S)
            return True
        finally:
            self.pacing.wait_s += time.monotonic() - started

    def read_lists(self, users: Sequence[str]) -> list[dict[str, Any] | None]:
        raw = mget(self.client, [self.keys.recs(u) for u in users])
        return [parse_list(r) if r is not None else None for r in raw]


def run_evaluation(
    settings: Settings,
    cfg: EvalConfig,
    echo: Callable[[str], None] = print,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run the evaluation of the module doc and write its report; returns ``report.json``'s
    content. Raises InputError (exit 4) for a file without timestamps or too few events,
    InfraError (exit 3) when a service or the worker fails.

    One BLAS thread for the whole run, as ``streamrec worker`` runs (``cmd_worker``): the
    worker's small products gain nothing from a second OpenBLAS thread, which spins; measured
    here, the worker on its thread spent 33 ms per one-user batch in fold-in and top-N
    without the limit on a loaded machine. (The nightly job's fit limits itself the same way.)
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        return _evaluate(settings, cfg, echo, stop)


def _evaluate(
    settings: Settings,
    cfg: EvalConfig,
    echo: Callable[[str], None],
    stop: threading.Event | None,
) -> dict[str, Any]:
    from streamrec.connect import ensure_topics
    from streamrec.model import prequential as pq
    from streamrec.producer.producer import EventProducer
    from streamrec.producer.replay import read_rows

    stop = stop or threading.Event()
    rows = read_rows(cfg.path, cfg.limit)  # a bad file: fail before connecting
    if rows.timestamps is None:
        raise InputError(f"{cfg.path}: --evaluate needs a timestamp column (events in time)")
    if len(rows) < 4:
        raise InputError(f"{cfg.path}: {len(rows)} events are too few to evaluate")
    digest = file_sha256(cfg.path)
    rev = revision()  # now: the code that runs, not what the checkout holds at the end
    ts = np.asarray(rows.timestamps, dtype=np.int64)
    half = len(rows) // 2
    end = len(rows) if cfg.test_limit is None else min(len(rows), half + cfg.test_limit)
    test = np.arange(half, end)
    split_ms = int(ts[half])
    plan = pq.schedule([rows.users[i] for i in test], ts[test], split_ms, cfg.retrain_every_ms)
    n_rounds = sum(len(g) for _, g in plan)
    echo(f"{len(rows)} events from {cfg.path}: training on the first {half}, replaying "
         f"{len(test)} in {len(plan)} retrain periods of {cfg.retrain_every_ms / DAY_MS:g} "
         f"day(s), {n_rounds} rounds")  # fmt: skip

    s = namespace(settings) if cfg.isolate else settings
    ensure_topics(s, create=True)
    run = _Replay(s, cfg, echo, stop)
    tmp = tempfile.TemporaryDirectory(prefix="streamrec-eval-") if cfg.models_dir is None else None
    models_dir = Path(tmp.name) if tmp is not None else Path(cfg.models_dir or ".")
    worker: _WorkerThread | None = None
    n = len(test)
    ranks = {p: np.full(n, -1, dtype=np.int64) for p in pq.POLICIES}
    scored = np.zeros(n, dtype=np.bool_)
    user_known = np.zeros(n, dtype=np.bool_)
    item_known = np.zeros(n, dtype=np.bool_)
    sent_ms = np.full(n, math.nan)
    fresh_ms = np.full(n, math.nan)
    had_prev = np.zeros(n, dtype=np.bool_)
    stale = np.zeros(n, dtype=np.bool_)
    first_round = np.zeros(n, dtype=np.bool_)  # sent in the first round after a retrain
    timings: dict[str, float] = {}
    try:
        producer = EventProducer(s, fmt=cfg.fmt, **{"linger.ms": 0})  # type: ignore[arg-type]

        def send(i: int) -> None:
            producer.send(new_event(rows.users[i], rows.items[i], rows.types[i],
                                    rows.values[i], int(ts[i])))  # fmt: skip

        t0 = time.perf_counter()
        echo(f"sending the first half ({half} events) to {s.topic_events} ...")
        for i in range(half):
            send(i)
        producer.flush()
        seen: set[str] = set(rows.users[:half])
        echo("fitting the first model (streamrec retrain: read the topic, evaluate, gate, "
             "publish) ...")  # fmt: skip
        if not run.retrain(models_dir, split_ms, seen, first=True):
            raise InputError(f"the first model was not promoted: {run.retrains[-1]['reason']}")
        timings["first_model_s"] = round(time.perf_counter() - t0, 2)
        worker = _WorkerThread(s)
        t1 = time.perf_counter()
        if not run.catch_up(producer, worker, max(120.0, half / 200)):
            raise InfraError("the worker did not consume the first half in time")
        timings["worker_first_half_s"] = round(time.perf_counter() - t1, 2)
        run.pacing = _Pacing()  # the warm-up's wait is not the replay's
        run.snapshot()
        _freeze(cfg)
        echo(
            f"worker caught up with the first half in {timings['worker_first_half_s']:.1f} s; "
            f"serving {run.serving} ({len(run.model_items)} items, {len(run.static)} users)"
        )

        last_sent: dict[str, float] = {}
        replay_s = retrain_s = 0.0
        next_line = time.monotonic() + PROGRESS_S
        done = 0
        for k, (period, groups) in enumerate(plan):
            if stop.is_set():
                break
            if k > 0:
                r0 = time.perf_counter()
                at = split_ms + period * cfg.retrain_every_ms
                if run.retrain(models_dir, at, seen):
                    version = run.retrains[-1]["version"]
                    run.wait_swap(worker, version)
                    run.snapshot()
                _freeze(cfg)
                retrain_s += time.perf_counter() - r0
            p0 = time.perf_counter()
            lists: dict[str, dict[str, Any] | None] = {}
            for r, idx in enumerate(groups):
                if stop.is_set():
                    break
                users = [rows.users[test[j]] for j in idx]
                if r == 0:
                    q0 = time.perf_counter()
                    lists = dict(zip(users, run.read_lists(users), strict=True))
                    run.pacing.read_s += time.perf_counter() - q0
                for j, u in zip(idx, users, strict=True):
                    value = lists.get(u)
                    item = rows.items[test[j]]
                    live = [x["item_id"] for x in value["items"]] if value else run.popular
                    ranks["live"][j] = pq.rank_of(live, item)
                    ranks["static"][j] = pq.rank_of(run.static.get(u, run.popular), item)
                    ranks["popularity"][j] = pq.rank_of(run.popular, item)
                    user_known[j] = u in run.static
                    item_known[j] = item in run.model_items
                    prev = last_sent.get(u)
                    if prev is not None:
                        had_prev[j] = True
                        stale[j] = value is None or int(value["updated_at_ms"]) < prev
                    scored[j] = True
                    first_round[j] = r == 0 and k > 0
                q0 = time.perf_counter()
                for j in idx:
                    # Whole milliseconds, as ``updated_at_ms`` is (the worker floors its write
                    # time): unfloored, a list written within the millisecond of its event read
                    # as older than it, a stale read that was not (199 items score in µs).
                    sent_ms[j] = time.time() * 1000 // 1
                    send(int(test[j]))
                run.pacing.rounds += 1
                run.pacing.send_s += time.perf_counter() - q0
                run.catch_up(producer, worker, cfg.catchup_s)
                q0 = time.perf_counter()
                got = run.read_lists(users)
                run.pacing.read_s += time.perf_counter() - q0
                lists = dict(zip(users, got, strict=True))
                for j, u, value in zip(idx, users, got, strict=True):
                    last_sent[u] = sent_ms[j]
                    seen.add(u)
                    if value is not None and int(value["updated_at_ms"]) >= sent_ms[j]:
                        fresh_ms[j] = int(value["updated_at_ms"]) - sent_ms[j]
                done += len(idx)
                if time.monotonic() >= next_line:
                    el = replay_s + time.perf_counter() - p0
                    echo(
                        f"  {done}/{n} events replayed ({done / max(el, 1e-9):,.0f}/s), "
                        f"period {k + 1}/{len(plan)}, {len(run.retrains)} retrains"
                    )
                    next_line = time.monotonic() + PROGRESS_S
            replay_s += time.perf_counter() - p0
        producer.flush()  # every event acknowledged (DeliveryError otherwise)
        timings["replay_s"] = round(replay_s, 2)
        timings["retrains_s"] = round(retrain_s, 2)
        timings["total_s"] = round(time.perf_counter() - t0, 2)
        worker_stats = asdict(worker.worker.stats)
        worker_stats["stage_seconds"] = _stage_seconds(worker.worker)
    finally:
        if worker is not None:
            worker.close()
        if cfg.isolate:
            _drop_namespace(s, run.client)
        if tmp is not None:
            tmp.cleanup()

    # --- the figures -----------------------------------------------------------------------------
    keep = scored
    test_users = np.asarray([rows.users[i] for i in test], dtype=object)
    codes = np.unique(test_users, return_inverse=True)[1]
    got_ranks = {p: r[keep] for p, r in ranks.items()}
    segments = {
        "user_known": user_known[keep],
        "user_new": ~user_known[keep],
        "item_known": item_known[keep],
        "item_new": ~item_known[keep],
    }
    figures = pq.summarize(got_ranks, codes.reshape(-1)[keep], segments, cfg.n_boot, cfg.seed)
    fresh = pq.percentiles(fresh_ms[keep], (50, 95, 99))
    reads = int(had_prev[keep].sum())
    replayed = int(keep.sum())
    report: dict[str, Any] = {
        **figures,
        "freshness_ms": {
            **fresh,
            "unreflected": int(np.sum(keep & ~np.isfinite(fresh_ms))),
            # a period's first round follows a retrain and a model swap: told apart
            "first_round_after_retrain": pq.percentiles(fresh_ms[keep & first_round]),
            "other_rounds": pq.percentiles(fresh_ms[keep & ~first_round]),
            "what": "per event: the updated_at_ms of the user's list read after the event's "
            "round was applied, minus the wall time just before the event was sent",
        },
        "stale_reads": {
            "reads": reads,
            "stale": int(stale[keep].sum()),
            "share": float(stale[keep].sum() / reads) if reads else 0.0,
            "what": "reads of a user with an earlier event that found no list or one older "
            "than that event's send time",
        },
        "pacing": {
            **asdict(run.pacing),
            "wait_s": round(run.pacing.wait_s, 2),
            "send_s": round(run.pacing.send_s, 2),
            "read_s": round(run.pacing.read_s, 2),
            "events_per_s": round(replayed / replay_s, 1) if replay_s > 0 else None,
            "events_per_round": (
                round(replayed / run.pacing.rounds, 2) if run.pacing.rounds else None
            ),
        },
        "over_time": pq.over_time(ts[test][keep], got_ranks),
        "freshness_sample_ms": _sample(fresh_ms[keep]),
        "retrains": run.retrains,
        "model_versions": sorted({r["version"] for r in run.retrains if r["version"]}),
        "data": {
            "path": str(cfg.path),
            "sha256": digest,
            "kind": rows.kind,
            "events": len(rows),
            "train_events": half,
            "test_events": len(test),
            "replayed_events": replayed,
            "split_ms": split_ms,
            "first_ms": int(ts[0]),
            "last_ms": int(ts[end - 1]),
            "test_users": int(codes.max() + 1) if len(codes) else 0,
        },
        "settings": {
            "retrain_every_days": cfg.retrain_every_ms / DAY_MS,
            "params": asdict(cfg.params) if cfg.params is not None else None,
            "limit": cfg.limit,
            "test_limit": cfg.test_limit,
            "bootstrap": cfg.n_boot,
            "seed": cfg.seed,
            "catchup_s": cfg.catchup_s,
            "freeze_heap": cfg.freeze_heap,
            "tolerance": cfg.tolerance,
            "min_lift": cfg.min_lift,
            "format": cfg.fmt,
            "worker": "streamrec.worker.loop.Worker on a thread of the replay's process",
            "partitions": s.topic_events_partitions,
            "top_n": s.top_n,
            "half_life_days": s.half_life_days,
            "batch_max": s.batch_max,
            "poll_timeout_s": s.poll_timeout_s,
            "topic_events": s.topic_events,
            "redis_prefix": s.redis_prefix,
            **cfg.extra,
        },
        "timings": timings,
        "worker": worker_stats,
        "interrupted": stop.is_set(),
        "revision": rev,
        "streamrec_version": __version__,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": _cpus(),
        },
        "created_at_ms": int(time.time() * 1000),
    }
    write_reports(cfg.report_dir, report)
    return report


def _stage_seconds(worker: Any) -> dict[str, dict[str, float]]:
    """The worker's time per stage over the run (``streamrec_stage_seconds``): sum, batches."""
    out: dict[str, dict[str, float]] = {}
    for family in worker.metrics.registry.collect():
        if family.name != "streamrec_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage")
            if stage is not None and sample.name.endswith(("_sum", "_count")):
                key = "seconds" if sample.name.endswith("_sum") else "batches"
                out.setdefault(stage, {})[key] = round(float(sample.value), 3)
    return out


def _freeze(cfg: EvalConfig) -> None:
    if cfg.freeze_heap:
        gc.collect()
        gc.freeze()


def _cpus() -> int | None:
    import os

    return os.cpu_count()


def _sample(values: np.ndarray, n: int = 2000) -> list[float]:
    """Up to ``n`` evenly spaced order statistics of the finite ``values`` (for the plot)."""
    v = np.sort(values[np.isfinite(values)])
    if len(v) > n:
        v = v[np.linspace(0, len(v) - 1, n).astype(np.int64)]
    return [round(float(x), 2) for x in v]


def write_reports(report_dir: Path, report: dict[str, Any]) -> None:
    from streamrec.model.replay_report import write_html

    report_dir.mkdir(parents=True, exist_ok=True)
    # NaN (a figure with no events behind it) is written as null: JSON has no NaN.
    text = json.dumps(_finite(report), indent=2, default=_json_default, allow_nan=False)
    (report_dir / "report.json").write_text(text)
    write_html(report_dir / "report.html", report)


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


def _json_default(x: object) -> object:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return str(x)
