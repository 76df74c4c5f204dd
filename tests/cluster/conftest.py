"""A Redis Cluster of the cluster tests' own: 6 local nodes (3 masters, 3 replicas) on spare
ports, formed once per session by ``streamrec.infra.redis_cluster`` (what ``streamrec infra up
--redis-cluster`` runs), stopped and deleted at the end. Kafka is the session's shared broker.
Every test takes fresh topics and a fresh key prefix from ``cluster_stack``.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamrec.infra import redis_cluster
from streamrec.settings import Settings
from tests.conftest import drop_topics, fresh_tag


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _spare_base() -> int:
    """A port P with P..P+5 and their cluster bus ports (+10000) free."""
    for _ in range(200):
        base = random.randint(21000, 29000)
        ports = [base + i for i in range(redis_cluster.NODES)]
        if all(_free(p) and _free(p + 10000) for p in ports):
            return base
    raise RuntimeError("no 6 consecutive free ports found for the test cluster")


@pytest.fixture(scope="session")
def cluster(infra: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings of the session's Redis Cluster (redis_cluster on; Kafka the shared broker)."""
    if os.environ.get("STREAMREC_TEST_SERVICES") == "off":
        pytest.fail("STREAMREC_TEST_SERVICES=off: this run must not start Redis")
    home: Path = tmp_path_factory.mktemp("redis-cluster")
    settings = infra.model_copy(
        update={
            "redis_url": f"redis://127.0.0.1:{_spare_base()}/0",
            "redis_cluster": True,
            "home": home,
        }
    )
    log: list[str] = []
    try:
        redis_cluster.up(settings, log.append)
        yield settings
    finally:
        redis_cluster.down(settings, log.append)
        redis_cluster.wipe(settings)


@pytest.fixture()
def cluster_stack(cluster: Settings) -> Iterator[Callable[..., Settings]]:
    """As ``stack``, on the cluster: fresh topics, group and prefix; the prefixes' keys are
    deleted at teardown."""
    prefixes: list[str] = []
    topics: list[str] = []

    def make(**overrides: Any) -> Settings:
        tag = fresh_tag()
        prefixes.append(f"ctest-{tag}")
        topics.extend(f"c-{tag}.{role}" for role in ("events", "events.dlq", "models", "items"))
        values: dict[str, Any] = {
            "topic_events": f"c-{tag}.events",
            "topic_dlq": f"c-{tag}.events.dlq",
            "topic_models": f"c-{tag}.models",
            "topic_items": f"c-{tag}.items",
            "topic_events_partitions": 3,
            "consumer_group": f"cg-{tag}",
            "redis_prefix": f"ctest-{tag}",
            "poll_timeout_s": 0.1,
            "metrics_bind": "127.0.0.1:0",
            **overrides,
        }
        return cluster.model_copy(update=values)

    yield make
    from streamrec.connect import redis_client

    drop_topics(cluster, topics)
    try:
        client = redis_client(cluster)
    except Exception:  # a test that left the cluster broken says so itself
        return
    for prefix in prefixes:
        for key in list(client.scan_iter(match=f"{prefix}:*", count=1000)):
            client.unlink(key)
    client.close()
