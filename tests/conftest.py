"""Shared fixtures.

The real Kafka broker and Redis server are started once per test session (``infra``); each
integration test gets its own topics, consumer group and Redis prefix from the ``stack``
factory, so tests never see each other's data and the services are never restarted.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.events import Event
from streamrec.settings import Settings, load_settings

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: Fixtures that reach the real services: a test using one must carry the integration mark,
#: so ``pytest -m "not integration"`` runs on a machine with no broker and no Redis.
SERVICE_FIXTURES = frozenset({"infra", "stack", "run_worker", "own"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "tests that use Kafka or Redis need @pytest.mark.integration: " + ", ".join(unmarked)
        )


def forget_kafka_run(settings: Settings) -> None:
    """Delete the run directory (data, logs) of a broker a test starts on a spare port: one an
    earlier session left there was formatted for other ports, and the broker would refuse it."""
    import shutil

    from streamrec.infra import kafka

    shutil.rmtree(kafka.KafkaPaths.of(settings).run_dir, ignore_errors=True)


# Test topics on the shared broker are named ``<kind>-<tag>.<role>``, the tag starting with
# the hex epoch second it was made (``fresh_tag``). Teardown deletes them; ones a killed session
# left behind are swept at the next session's start once older than ``STALE_TOPIC_S``: a broker
# holding thousands of dead test partitions takes minutes to restart.
_TEST_TOPIC = re.compile(r"^[tc]-([0-9a-f]{10}|[0-9a-f]{14})\.(?:events|events\.dlq|models|items)$")
STALE_TOPIC_S = 6 * 3600


def fresh_tag() -> str:
    """A fresh 14-hex tag: the epoch second it was made (8 hex), then 6 random hex digits."""
    return f"{int(time.time()):08x}{uuid.uuid4().hex[:6]}"


def stale_test_topic(name: str, now: float) -> bool:
    """Whether ``name`` is a test topic older than ``STALE_TOPIC_S`` (an untimed, pre-tag
    name of the old 10-hex form counts as stale)."""
    m = _TEST_TOPIC.match(name)
    if m is None:
        return False
    tag = m.group(1)
    return len(tag) == 10 or now - int(tag[:8], 16) > STALE_TOPIC_S


def drop_topics(settings: Settings, topics: list[str], timeout_s: float = 30.0) -> None:
    """Delete ``topics`` from the settings' broker (missing ones are fine), bounded."""
    if not topics:
        return
    from confluent_kafka.admin import AdminClient

    from streamrec.connect import kafka_config

    admin = AdminClient(kafka_config(settings))
    futures = admin.delete_topics(topics, operation_timeout=timeout_s, request_timeout=timeout_s)
    for future in futures.values():
        # an unknown topic (one the test never created) has nothing to delete
        with contextlib.suppress(Exception):
            future.result(timeout=timeout_s)


def sweep_stale_topics(settings: Settings) -> int:
    """Delete the test topics a killed session left on the shared broker; how many."""
    from confluent_kafka.admin import AdminClient

    from streamrec.connect import kafka_config

    names = AdminClient(kafka_config(settings)).list_topics(timeout=30).topics
    now = time.time()
    stale = sorted(t for t in names if stale_test_topic(t, now))
    for lo in range(0, len(stale), 500):
        drop_topics(settings, stale[lo : lo + 500], timeout_s=60.0)
    return len(stale)


@pytest.fixture(scope="session")
def infra() -> Settings:
    """Settings of the session's real Kafka broker and Redis, started (or found) once."""
    from streamrec import infra as services

    if os.environ.get("STREAMREC_TEST_SERVICES") == "off":
        pytest.fail("STREAMREC_TEST_SERVICES=off: this run must not start Kafka or Redis")
    settings = load_settings()
    services.up(settings, echo=lambda line: print(f"[infra] {line}"))
    swept = sweep_stale_topics(settings)
    if swept:
        print(f"[infra] deleted {swept} test topics an earlier session left behind")
    return settings


@pytest.fixture()
def stack(infra: Settings) -> Iterator[Callable[..., Settings]]:
    """Factory: settings with fresh topic names, consumer group and Redis prefix; the
    prefixes' Redis keys and the topics are deleted at teardown."""
    prefixes: list[str] = []
    topics: list[str] = []

    def make(**overrides: Any) -> Settings:
        tag = fresh_tag()
        prefixes.append(f"test-{tag}")
        topics.extend(f"t-{tag}.{role}" for role in ("events", "events.dlq", "models", "items"))
        values: dict[str, Any] = {
            "topic_events": f"t-{tag}.events",
            "topic_dlq": f"t-{tag}.events.dlq",
            "topic_models": f"t-{tag}.models",
            "topic_items": f"t-{tag}.items",
            "topic_events_partitions": 3,
            "consumer_group": f"g-{tag}",
            "redis_prefix": f"test-{tag}",
            "poll_timeout_s": 0.1,
            "metrics_bind": "127.0.0.1:0",  # an ephemeral port each: workers run side by side
            **overrides,
        }
        return infra.model_copy(update=values)

    yield make
    from streamrec.connect import redis_client

    client = redis_client(infra)
    for prefix in prefixes:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for lo in range(0, len(keys), 1000):
            client.unlink(*keys[lo : lo + 1000])
    client.close()
    drop_topics(infra, topics)


@pytest.fixture()
def run_worker() -> Iterator[Callable[..., Any]]:
    """Factory: start a Worker in a thread; every one started is stopped at teardown."""
    from streamrec.worker.loop import Worker

    started: list[tuple[Worker, threading.Thread]] = []
    errors: list[BaseException] = []

    def start(settings: Settings) -> Worker:
        w = Worker(settings)

        def target() -> None:
            try:
                w.run()
            except BaseException as exc:
                errors.append(exc)
                raise

        t = threading.Thread(target=target, name="worker", daemon=True)
        t.start()
        started.append((w, t))
        return w

    yield start
    for w, _t in started:
        w.stop.set()
    for _w, t in started:
        t.join(timeout=30)
        assert not t.is_alive(), "worker did not stop within 30 s"
    assert not errors, f"worker raised: {errors!r}"


def export_settings(monkeypatch: pytest.MonkeyPatch, s: Settings, *names: str) -> None:
    """Set ``STREAMREC_<NAME>`` to ``s``'s value for each field in ``names``: the CLI and the
    processes it starts read their settings from the environment, not from a test's stack."""
    for name in names:
        monkeypatch.setenv(f"STREAMREC_{name.upper()}", str(getattr(s, name)))


def wait_for(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained on the generated dataset (small, fast), written once per session."""
    from streamrec.model.data import build_matrix, synthetic
    from streamrec.model.params import Params
    from streamrec.model.train import train

    out = tmp_path_factory.mktemp("models") / "small"
    train(build_matrix(synthetic(400, 300, seed=3)), Params(factors=16, iterations=8), out)
    return out


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test saying what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present (the shared datasets live beside the repo)")
    return path


def committed_total(s: Settings) -> int:
    """Sum of the worker group's committed offsets on ``s.topic_events`` (read without
    joining the group)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**s.kafka_common(), "group.id": s.consumer_group})
    try:
        parts = [TopicPartition(s.topic_events, p) for p in range(s.topic_events_partitions)]
        return sum(max(0, tp.offset) for tp in consumer.committed(parts, timeout=10))
    finally:
        consumer.close()


def consume_events(
    s: Settings, count: int, timeout_s: float = 30
) -> list[tuple[bytes | None, Event]]:
    """The first ``count`` (key, event) pairs of ``s.topic_events`` (all partitions), read by a
    fresh consumer group from the earliest offset; fails the test after ``timeout_s``."""
    from confluent_kafka import Consumer

    from streamrec.events import decode

    c = Consumer(
        {**s.kafka_common(), "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
    )
    c.subscribe([s.topic_events])
    got: list[tuple[bytes | None, Event]] = []
    try:

        def more() -> bool:
            got.extend((m.key(), decode(m.value())) for m in c.consume(1000, 0.5) if not m.error())
            return len(got) >= count

        wait_for(more, timeout_s=timeout_s)
    finally:
        c.close()
    return got


def log_end(s: Settings, topic: str, partition: int = 0) -> int:
    """The log-end offset of ``topic[partition]``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**s.kafka_common(), "group.id": "g-log-end"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)[1])
    finally:
        consumer.close()
