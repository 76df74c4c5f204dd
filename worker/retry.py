"""Outages of Redis or Kafka are waited out, not crashed on.

What counts as one (``down_dependency``): Redis connection errors and timeouts (a loading
server included), Kafka transport-class errors, and ``DependencyDown``, which the worker's own
code raises (dead letters not acknowledged, the broker not answering a probe). Anything else is
no outage and propagates as before.

``Outages`` is the loop's one place for them:

- ``call(step)`` runs one step of the loop (the model check, a batch) until it gets through.
  After a failure that is an outage it waits (capped exponential backoff with jitter, cut short
  by the stop flag) and runs the step again from its start. A batch is redone from its WATCH
  and reads: one whose transaction failed midway (its EXEC may or may not have landed) is then
  skipped as applied or applied, never applied twice, and its offsets are committed only once
  it went through. ``Stopped`` when the stop flag is set (or the run's time is up) meanwhile.
- ``idle()``, between empty polls, asks Kafka for the events topic's metadata when due
  (``KafkaProbe``): a poll that brings nothing cannot tell an idle topic from a dead broker.
- For each dependency, the gauge ``streamrec_dependency_up`` and ``/healthz``
  (``Metrics.dependency``), a WARNING when it goes down, another every
  ``outage_log_interval_s`` while it stays down (never one per attempt), and one when it is
  back.

``within`` bounds what waits for Kafka at stop: librdkafka's last synchronous commit and a
consumer's close wait for the group coordinator, as long as the session timeout when the
broker is down.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streamrec.connect import KAFKA_REFUSALS
from streamrec.settings import Settings
from streamrec.worker.errors import DependencyDown
from streamrec.worker.metrics import DEPENDENCIES, Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_WAIT_S = 0.1  # the first wait after a failure; it doubles up to retry_backoff_max_s
KAFKA_PROBE_S = 1.0  # how often an idle worker asks Kafka whether it answers
PROBE_TIMEOUT_S = 2.0  # how long it waits for that answer

#: Kafka errors that mean "no broker (or coordinator, or partition leader) answers now", not
#: "refused".
KAFKA_UNREACHABLE = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._WAIT_COORD,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.NOT_COORDINATOR,
        # A partition between leaders: just created, or its leader's broker died and the
        # controller has not elected another yet. Transient on a healthy cluster.
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)


#: Redis Cluster errors that mean "this slot's master is changing" (a failover, a reshard).
_CLUSTER_MOVING = (
    redis.exceptions.ClusterError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.RedisClusterException,  # "cannot be connected": no node answers
)
_CLUSTER_BUGS = (redis.exceptions.CrossSlotTransactionError, redis.exceptions.InvalidPipelineStack)


class Stopped(Exception):
    """The stop flag was set, or the run's time ran out, while waiting out an outage."""


def down_dependency(exc: BaseException) -> str | None:
    """The dependency ("redis" or "kafka") ``exc`` says does not answer now, else None."""
    if isinstance(exc, DependencyDown):
        return exc.dependency
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return None  # a ConnectionError to redis-py, but a setting to fix, not an outage
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return "redis"
    if isinstance(exc, _CLUSTER_MOVING) and not isinstance(exc, _CLUSTER_BUGS):
        return "redis"  # a Redis Cluster failing over: a slot without a master, or moving
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return "kafka" if exc.args[0].code() in KAFKA_UNREACHABLE else None
    return None


def _reason(exc: BaseException) -> str:
    """One line of at most 200 characters: what the log says about a failure."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: the n-th wait is
    ``min(max_s, first_s * 2**n)`` times a random factor in [0.5, 1], so workers that failed
    together do not all retry in the same instant."""

    max_s: float
    first_s: float = FIRST_WAIT_S
    failures: int = 0

    def next(self) -> float:
        wait = min(self.max_s, self.first_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return wait * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class _Outage:
    since: float  # monotonic
    attempts: int
    reason: str
    next_log: float  # monotonic


class KafkaProbe:
    """Whether the cluster answers a metadata request for the events topic, on a client of
    its own (made on first use)."""

    def __init__(self, settings: Settings, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self._settings = settings
        self._timeout = timeout_s
        self._admin: AdminClient | None = None

    def check(self) -> None:
        """Returns when the broker answered; ``DependencyDown`` when it did not in time."""
        if self._admin is None:
            self._admin = AdminClient(self._settings.kafka_common())
        try:
            self._admin.list_topics(self._settings.topic_events, timeout=self._timeout)
        except KafkaException as exc:
            self._admin.poll(0)  # serves the error callback: a refused login says so here
            refused = KAFKA_REFUSALS.since(self._settings.kafka_bootstrap, time.monotonic() - 60)
            raise DependencyDown(
                "kafka",
                f"no metadata within {self._timeout:g} s ({exc.args[0].str()})"
                + (f"; the broker refused the connection: {refused}" if refused else ""),
            ) from None


class Outages:
    """The worker's record of which dependency is down, and the waiting (see the module)."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        stop: threading.Event,
        probe: KafkaProbe | None = None,
    ) -> None:
        self._stop = stop
        self._metrics = metrics
        self._max_s = settings.retry_backoff_max_s
        self._log_every = settings.outage_log_interval_s
        self._names = {
            "redis": f"Redis at {settings.redis_address}",
            "kafka": f"Kafka at {settings.kafka_bootstrap}",
        }
        self._backoff = {d: Backoff(settings.retry_backoff_max_s) for d in DEPENDENCIES}
        self._down: dict[str, _Outage] = {}
        self._probe = probe if probe is not None else KafkaProbe(settings)
        self._next_probe = 0.0
        self.deadline: float | None = None  # monotonic: when ``run``'s duration ends

    def is_down(self, dependency: str) -> bool:
        return dependency in self._down

    def call(self, step: Callable[[], T]) -> T:
        """``step()``, run again after each outage it hits until it gets through."""
        failed: set[str] = set()
        while True:
            try:
                value = step()
            except Exception as exc:
                dependency = down_dependency(exc)
                if dependency is None:
                    raise
                failed.add(dependency)
                self.failed(dependency, exc)
                self._wait(self._backoff[dependency].next())
                continue
            for dependency in failed:
                self.recovered(dependency)
            return value

    def idle(self) -> None:
        """Between empty polls: ask Kafka whether it answers, when due (every KAFKA_PROBE_S
        while it does, on the backoff while it does not)."""
        if time.monotonic() < self._next_probe:
            return
        try:
            self._probe.check()
        except DependencyDown as exc:
            self.failed("kafka", exc)
            self._next_probe = time.monotonic() + self._backoff["kafka"].next()
        else:
            self.recovered("kafka")
            self._next_probe = time.monotonic() + KAFKA_PROBE_S

    def failed(self, dependency: str, exc: BaseException) -> None:
        """An attempt failed because ``dependency`` does not answer."""
        now, reason, name = time.monotonic(), _reason(exc), self._names[dependency]
        outage = self._down.get(dependency)
        if outage is None:
            self._down[dependency] = _Outage(now, 1, reason, now + self._log_every)
            self._metrics.dependency(dependency, up=False)
            log.warning("%s is down (%s); waiting it out: retrying with backoff up to %g s, "
                        "logged every %g s while down", name, reason, self._max_s,
                        self._log_every)  # fmt: skip
            return
        outage.attempts += 1
        outage.reason = reason
        if now >= outage.next_log:
            outage.next_log = now + self._log_every
            log.warning("%s still down after %.0f s (%d attempts; latest: %s)",
                        name, now - outage.since, outage.attempts, reason)  # fmt: skip

    def recovered(self, dependency: str) -> None:
        """``dependency`` answered again (or never stopped)."""
        self._backoff[dependency].reset()
        outage = self._down.pop(dependency, None)
        if outage is None:
            return
        self._metrics.dependency(dependency, up=True)
        log.info("%s is back after %.1f s (%d failed attempts); resuming",
                 self._names[dependency], time.monotonic() - outage.since,
                 outage.attempts)  # fmt: skip

    def _wait(self, delay_s: float) -> None:
        if self.deadline is not None:
            delay_s = min(delay_s, max(0.0, self.deadline - time.monotonic()))
        if self._stop.wait(delay_s):
            raise Stopped("the stop flag was set")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise Stopped("the run's time is up")


def within(work: Callable[[], None], timeout_s: float, name: str) -> bool:
    """Run ``work`` on a daemon thread and wait at most ``timeout_s`` for it: True when it
    finished (what it raised is raised here), False when it is still running, left behind."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return False
    if raised:
        raise raised[0]
    return True
