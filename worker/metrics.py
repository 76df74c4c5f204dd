"""Worker metrics (Prometheus) and the /metrics + /healthz HTTP endpoint.

What the worker counts is counted once, in ``Stats`` (plain ints, bumped per batch by the
loop and per model check by the model watcher): ``Worker.stats``, the progress logs and tests
read it, and ``Metrics`` exports it as Prometheus counters (``COUNTERS``) when scraped.
Timings, sizes, lag and the serving version are Prometheus histograms and gauges of
``Metrics``.

Each ``Metrics`` owns its registry, so several workers in one process (tests) never collide.
``/healthz`` answers 200 while the loop has completed an iteration within ``stale_after_s``
and no dependency is down, and 503 otherwise: ``redis down`` / ``kafka down`` while the loop
waits out an outage (``worker/retry.py``; ``streamrec_dependency_up`` says the same), ``stale``
when stuck or stopped, ``waiting for a model`` while a worker started before any model was
published waits for the pointer (``worker/models.py``). ``/livez`` is the liveness half only:
200 while the loop (or that wait) turns or an outage is being waited out; 503 ``stale`` when
stuck.

The last nightly retrain's record (``<p>:retrain:last``, written by ``model/retrain.py``), read
by the model watcher with the pointer, is exported as the ``streamrec_retrain_*`` gauges.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import numpy.typing as npt
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: What the worker cannot make progress without (``streamrec_dependency_up{dependency}``).
DEPENDENCIES = ("redis", "kafka")
STAGES = ("decode", "state_read", "history", "foldin_topn", "redis_write", "commit")
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass(slots=True)
class Stats:
    """Totals since the worker started; the one place each is counted.

    Written by the worker's thread only (per batch or model check, never per event); the
    metrics server's thread reads them when scraped.
    """

    messages: int = 0  # Kafka messages consumed, redelivered ones included
    decoded: int = 0  # events decoded and not already applied
    dead_lettered: int = 0  # messages sent to the dead-letter topic
    redelivered: int = 0  # messages skipped: their effect was already in Redis
    duplicates: int = 0  # events dropped as a duplicate event_id
    users_updated: int = 0  # lists written by batches
    batches: int = 0  # batches applied
    unknown_items: int = 0  # history entries naming items the model does not know
    refolded: int = 0  # lists written again after a model swap (``Worker._refold``)
    cold_users: int = 0  # lists served from popularity (no usable history)
    topn_fallback: int = 0  # users a big catalogue's top-N index handed to exact scoring
    users_failed: int = 0  # users a batch could not be applied to: list and state kept
    models_refused: int = 0  # published models that failed verification
    model_swaps: int = 0  # models loaded, the first one included
    rebuilds: int = 0  # partition rebuilds begun: their state in Redis was lost (rebuild.py)
    replayed: int = 0  # messages applied by rebuilds (re-read from the topic)
    relisted: int = 0  # lists written again at the end of a rebuild
    purged: int = 0  # lists written again without items the catalog made unavailable


#: The Prometheus counters exported from ``Stats``: name, help, the fields summed into it.
COUNTERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("streamrec_messages", "Kafka messages consumed", ("messages",)),
    ("streamrec_events_decoded", "events decoded", ("decoded",)),
    ("streamrec_events_dead_lettered", "messages sent to the DLQ", ("dead_lettered",)),
    (
        "streamrec_messages_redelivered",
        "messages skipped because their effect was already in Redis",
        ("redelivered",),
    ),
    ("streamrec_events_duplicate", "events dropped as duplicate event_id", ("duplicates",)),
    (
        "streamrec_users_updated",
        "lists written",
        ("users_updated", "refolded", "relisted", "purged"),
    ),
    (
        "streamrec_unknown_items",
        "history entries skipped in the solve: item unknown to the model",
        ("unknown_items",),
    ),
    (
        "streamrec_cold_users",
        "lists served from popularity (no usable history)",
        ("cold_users",),
    ),
    (
        "streamrec_topn_index_fallback",
        "users the top-N index of a big catalogue handed to exact scoring",
        ("topn_fallback",),
    ),
    (
        "streamrec_users_failed",
        "users a batch could not be applied to (their list and state were kept)",
        ("users_failed",),
    ),
    (
        "streamrec_models_refused",
        "published models that failed verification",
        ("models_refused",),
    ),
    ("streamrec_model_swaps", "models loaded", ("model_swaps",)),
    (
        "streamrec_lists_purged",
        "lists written again without items the catalog made unavailable or removed",
        ("purged",),
    ),
    (
        "streamrec_rebuilds",
        "partition rebuilds begun because Redis lost the partition's state",
        ("rebuilds",),
    ),
    ("streamrec_rebuild_messages", "messages re-read and applied by rebuilds", ("replayed",)),
)


class StatsCollector(Collector):
    """Exposes a ``Stats`` as the Prometheus counters of ``COUNTERS``, read at each scrape."""

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._created = time.time()

    def collect(self) -> Iterator[CounterMetricFamily]:
        st = self._stats
        for name, doc, fields in COUNTERS:
            value = float(sum(getattr(st, f) for f in fields))
            yield CounterMetricFamily(name, doc, value=value, created=self._created)


#: How a nightly retrain can end (``streamrec_retrain_last_outcome{outcome}``).
RETRAIN_OUTCOMES = ("promoted", "kept", "failed")


class RetrainCollector(Collector):
    """The last retrain's record (``<p>:retrain:last``) as gauges; nothing before one is read.

    ``record`` is replaced whole by ``Metrics.retrain_record`` (the worker's thread) and read
    here at each scrape (the server's thread): no Redis call happens in a scrape.
    """

    def __init__(self) -> None:
        self.record: dict[str, object] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rec = self.record
        if rec is None:
            return
        outcome = GaugeMetricFamily(
            "streamrec_retrain_last_outcome",
            "1 for how the last nightly retrain ended (promoted, kept, failed), 0 for the others",
            labels=["outcome"],
        )
        for name in RETRAIN_OUTCOMES:
            outcome.add_metric([name], 1.0 if rec.get("outcome") == name else 0.0)
        yield outcome
        for name, field, doc, scale in (
            ("finished_timestamp_seconds", "finished_at_ms", "unix time it ended", 1e-3),
            ("completed_timestamp_seconds", "last_completed_at_ms",
             "unix time the last run that promoted or kept the model ended", 1e-3),
            ("duration_seconds", "duration_s", "how long it ran", 1.0),
        ):  # fmt: skip
            value = rec.get(field)
            if isinstance(value, (int, float)):
                yield GaugeMetricFamily(
                    f"streamrec_retrain_last_{name}", f"last nightly retrain: {doc}",
                    value=float(value) * scale,
                )  # fmt: skip
        scores = rec.get("metrics")
        if isinstance(scores, dict):
            family = GaugeMetricFamily(
                "streamrec_retrain_last_metric",
                "last nightly retrain: each evaluated model's holdout metrics",
                labels=["model", "metric"],
            )
            for model, values in sorted(scores.items()):
                for metric, value in sorted(values.items() if isinstance(values, dict) else ()):
                    if isinstance(value, (int, float)):
                        family.add_metric([str(model), str(metric)], float(value))
            yield family


class Metrics:
    """The worker's ``stats`` and its Prometheus registry (``registry``)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.stats = Stats()
        r.register(StatsCollector(self.stats))
        self.retrain = RetrainCollector()
        r.register(self.retrain)
        #: Set while the worker cannot serve yet (``/healthz`` 503 with it): "a model".
        self.waiting_for: str | None = None
        self.model_missing = Gauge(
            "streamrec_model_missing",
            "1 while the worker waits for a first model to be published (not ready)",
            registry=r,
        )
        self.batch_size = Histogram(
            "streamrec_batch_messages",
            "messages per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.stage_seconds = Histogram(
            "streamrec_stage_seconds",
            "time per batch in each stage",
            ["stage"],
            buckets=_FAST,
            registry=r,
        )
        self.latency = BulkHistogram(
            "streamrec_event_to_redis_seconds",
            "event timestamp to its list written in Redis",
            _LATENCY,
        )
        r.register(self.latency)
        self.lag = Gauge("streamrec_consumer_lag", "messages not yet consumed", registry=r)
        self.catalog_items = Gauge(
            "streamrec_catalog_items",
            "items in the catalog view (contract 3), by state",
            ["state"],  # available, unavailable, content (the cold ones mapped from content)
            registry=r,
        )
        self.model_version = Gauge(
            "streamrec_model_info", "1 for the serving model's version", ["version"], registry=r
        )
        self.rebuild_messages = Gauge(
            "streamrec_rebuild_remaining_messages",
            "messages a rebuild of the partition still has to re-read (0: none under way)",
            ["partition"],
            registry=r,
        )
        self.rebuild_lists = Gauge(
            "streamrec_rebuild_remaining_lists",
            "lists a rebuild of the partition still has to write (0: none under way)",
            ["partition"],
            registry=r,
        )
        self.last_loop = Gauge(
            "streamrec_last_loop_timestamp_seconds", "unix time of the last loop", registry=r
        )
        self.dependency_up = Gauge(
            "streamrec_dependency_up",
            "1 while the worker reaches the dependency, 0 while it waits out its outage",
            ["dependency"],
            registry=r,
        )
        for name in DEPENDENCIES:
            self.dependency_up.labels(dependency=name).set(1)
        self._down: frozenset[str] = frozenset()  # replaced whole: the server thread reads it
        self._current_version: str | None = None
        self._last_loop_mono = time.monotonic()

    def stage(self, name: str) -> Histogram:
        return self.stage_seconds.labels(stage=name)

    def model_loaded(self, version: str) -> None:
        if self._current_version is not None:
            self.model_version.remove(self._current_version)
        self.model_version.labels(version=version).set(1)
        self._current_version = version
        self.stats.model_swaps += 1

    def retrain_record(self, raw: bytes | str | None) -> None:
        """Take the ``<p>:retrain:last`` value as read from Redis (None: no run recorded)."""
        if raw is None:
            self.retrain.record = None
            return
        try:
            rec = json.loads(raw)
        except ValueError:
            rec = None
        if not isinstance(rec, dict):
            log.warning("ignoring a malformed retrain record: %r", raw[:200])
            return
        self.retrain.record = rec

    def wait_for(self, what: str | None) -> None:
        """Mark the worker not ready while it waits for ``what`` (None: no longer waiting)."""
        self.waiting_for = what
        self.model_missing.set(1 if what == "a model" else 0)

    def looped(self) -> None:
        self._last_loop_mono = time.monotonic()
        self.last_loop.set(time.time())

    def dependency(self, name: str, up: bool) -> None:
        """Record whether ``name`` (one of ``DEPENDENCIES``) answers."""
        self.dependency_up.labels(dependency=name).set(1 if up else 0)
        self._down = self._down - {name} if up else self._down | {name}

    @property
    def down(self) -> frozenset[str]:
        """The dependencies the worker is waiting for now."""
        return self._down

    def alive(self, stale_after_s: float) -> bool:
        """The loop (or a wait before it) has turned within ``stale_after_s``."""
        return time.monotonic() - self._last_loop_mono <= stale_after_s

    def healthy(self, stale_after_s: float) -> bool:
        return self.alive(stale_after_s) and not self._down and self.waiting_for is None


class BulkHistogram(Collector):
    """A Prometheus histogram fed a whole batch of values at once (``observe_many``): one
    numpy pass per batch instead of a locked ``observe`` per event."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self._name, self._doc = name, documentation
        self._bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)  # the last: +Inf only
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: npt.ArrayLike) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        if not len(v):
            return
        # Bucket i counts values <= bound i (Prometheus' "le"), so search from the left.
        counts = np.bincount(np.searchsorted(self._bounds, v, side="left"),
                             minlength=len(self._counts))  # fmt: skip
        with self._lock:
            self._counts += counts
            self._sum += float(v.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self._sum
        family = HistogramMetricFamily(self._name, self._doc)
        labels = [repr(float(b)) for b in self._bounds] + ["+Inf"]
        family.add_metric([], list(zip(labels, cumulative, strict=True)), total)
        yield family


class MetricsServer:
    """Serves ``/metrics``, ``/healthz`` and ``/livez`` from a daemon thread; ``close()``
    stops it."""

    def __init__(self, metrics: Metrics, bind: str, stale_after_s: float = 30.0) -> None:
        host, _, port = bind.rpartition(":")
        outer = self
        self._metrics = metrics

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    body, ctype, code = generate_latest(metrics.registry), CONTENT_TYPE_LATEST, 200
                elif self.path == "/healthz":
                    ok = outer.running and metrics.healthy(stale_after_s)
                    body, ctype = f"{outer.status(stale_after_s)}\n".encode(), "text/plain"
                    code = 200 if ok else 503
                elif self.path == "/livez":
                    # An outage being waited out (worker/retry.py) is not a stuck loop.
                    ok = outer.running and (metrics.alive(stale_after_s) or bool(metrics.down))
                    body, ctype = (b"ok\n" if ok else b"stale\n"), "text/plain"
                    code = 200 if ok else 503
                else:
                    body, ctype, code = b"not found\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http: " + format, *args)

        self.running = True
        self._server = ThreadingHTTPServer((host, int(port)), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics, /healthz and /livez", host, self.port)

    def status(self, stale_after_s: float) -> str:
        """What ``/healthz`` says: ok, the dependencies down, what it waits for, or stale."""
        m = self._metrics
        if self.running and m.down:
            return " and ".join(sorted(m.down)) + " down"
        if not self.running or not m.alive(stale_after_s):
            return "stale"
        if m.waiting_for is not None:
            return f"waiting for {m.waiting_for}"
        return "ok"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        self.running = False
        self._server.shutdown()
        self._server.server_close()
