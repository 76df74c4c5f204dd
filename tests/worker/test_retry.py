"""Waiting out outages (``worker/retry.py``), with the errors real clients raise at a port
where nothing listens: what counts as one, the backoff, the logs, the gauge, the stop."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import pytest
import redis
from confluent_kafka import KafkaError, KafkaException
from redis.backoff import NoBackoff
from redis.retry import Retry

from streamrec.settings import Settings, load_settings
from streamrec.worker.errors import DependencyDown
from streamrec.worker.metrics import Metrics
from streamrec.worker.retry import (
    Backoff,
    KafkaProbe,
    Outages,
    Stopped,
    down_dependency,
    within,
)

RETRY = "streamrec.worker.retry"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": f"redis://127.0.0.1:{_closed_port()}/0",
        "kafka_bootstrap": f"127.0.0.1:{_closed_port()}",
        "retry_backoff_max_s": 0.02,
        **overrides,
    }
    return load_settings().model_copy(update=values)


def _dead_redis(s: Settings) -> redis.Redis:
    return redis.Redis.from_url(s.redis_url, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))


class _Failing:
    """A step that asks a Redis nobody runs ``failures`` times, then answers ``value``."""

    def __init__(self, s: Settings, failures: int, value: str = "done") -> None:
        self.client, self.failures, self.value, self.calls = _dead_redis(s), failures, value, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            self.client.get("k")  # raises redis.ConnectionError: connection refused
        return self.value


def test_backoff_doubles_up_to_its_cap_with_jitter_and_starts_over() -> None:
    b = Backoff(max_s=1.0, first_s=0.1)
    waits = [b.next() for _ in range(8)]
    for n, w in enumerate(waits):
        nominal = min(1.0, 0.1 * 2**n)
        assert nominal * 0.5 <= w <= nominal
    b.reset()
    assert b.next() <= 0.1
    assert Backoff(max_s=5.0, failures=10_000).next() <= 5.0  # no overflow


def test_what_counts_as_an_outage() -> None:
    s = _settings()
    with pytest.raises(redis.ConnectionError) as refused:
        _dead_redis(s).get("k")
    assert down_dependency(refused.value) == "redis"
    assert down_dependency(redis.TimeoutError("Timeout reading from socket")) == "redis"
    assert down_dependency(redis.BusyLoadingError("Redis is loading the dataset")) == "redis"
    assert down_dependency(redis.AuthenticationError("invalid password")) is None
    assert down_dependency(ConnectionError("not redis-py's")) is None
    assert down_dependency(KafkaException(KafkaError(KafkaError._TRANSPORT))) == "kafka"
    assert down_dependency(KafkaException(KafkaError(KafkaError._WAIT_COORD))) == "kafka"
    # a partition between leaders (new topic, or its broker died): waited out, not crashed on
    leaderless = KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))
    assert down_dependency(leaderless) == "kafka"
    assert down_dependency(KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE))) == "kafka"
    denied = KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert down_dependency(denied) is None
    assert down_dependency(DependencyDown("kafka", "dead letters undelivered")) == "kafka"
    assert down_dependency(ValueError("a bug")) is None


def test_a_step_is_retried_until_it_gets_through_logged_once_down_once_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=RETRY)
    s = _settings()
    metrics = Metrics()
    outages = Outages(s, metrics, threading.Event())
    seen: list[frozenset[str]] = []
    step = _Failing(s, failures=12)

    def observed() -> str:
        seen.append(metrics.down)
        return step()

    assert outages.call(observed) == "done"
    assert step.calls == 13
    assert seen[0] == frozenset() and all(d == {"redis"} for d in seen[1:])  # down meanwhile
    assert metrics.down == frozenset() and metrics.healthy(60)
    up = metrics.registry.get_sample_value("streamrec_dependency_up", {"dependency": "redis"})
    assert up == 1
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == RETRY]
    assert len(lines) == 2, lines  # not one per attempt
    assert lines[0][0] == logging.WARNING
    assert lines[0][1].startswith(f"Redis at {s.redis_address} is down (")
    assert "Connection refused" in lines[0][1]
    assert lines[1][1].startswith(f"Redis at {s.redis_address} is back after")
    assert "(12 failed attempts)" in lines[1][1]


def test_a_long_outage_is_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=RETRY)
    s = _settings(outage_log_interval_s=0.2, retry_backoff_max_s=0.01)
    outages = Outages(s, Metrics(), threading.Event())
    step = _Failing(s, failures=10**9)
    deadline = time.monotonic() + 0.9
    outages.deadline = deadline
    with pytest.raises(Stopped):
        outages.call(step)
    still = [r for r in caplog.records if r.name == RETRY and "still down" in r.getMessage()]
    assert 2 <= len(still) <= 5, [r.getMessage() for r in still]
    assert step.calls > 10 * len(still)
    assert outages.is_down("redis")


def test_the_stop_flag_ends_the_wait_at_once() -> None:
    s = _settings(retry_backoff_max_s=60.0)
    stop = threading.Event()
    outages = Outages(s, Metrics(), stop)
    step = _Failing(s, failures=10**9)
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Stopped):
        outages.call(step)
    assert time.monotonic() - started < 0.5 + 1.0


def test_what_is_no_outage_is_raised_at_once() -> None:
    outages = Outages(_settings(), Metrics(), threading.Event())
    calls: list[int] = []

    def bug() -> None:
        calls.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        outages.call(bug)
    assert calls == [1] and not outages.is_down("redis")


def test_an_idle_worker_asks_kafka_and_reports_it_down() -> None:
    s = _settings()
    metrics = Metrics()
    outages = Outages(s, metrics, threading.Event(), KafkaProbe(s, timeout_s=0.2))
    started = time.monotonic()
    outages.idle()
    assert time.monotonic() - started < 0.2 + 1.0
    assert outages.is_down("kafka") and metrics.down == {"kafka"}
    assert not metrics.healthy(60)
    outages.idle()  # not due yet (backoff): no second wait
    assert time.monotonic() - started < 0.2 + 1.0
    outages.recovered("kafka")
    assert metrics.down == frozenset() and metrics.healthy(60)


def test_within_waits_a_bounded_time() -> None:
    assert within(lambda: None, 1.0, "quick")

    def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        within(boom, 1.0, "boom")
    release = threading.Event()

    def stuck() -> None:
        release.wait(30)

    started = time.monotonic()
    assert not within(stuck, 0.2, "stuck")
    assert time.monotonic() - started < 1.0
    release.set()
