"""A three-node Kafka cluster of the cluster tests' own, on spare ports (the session's shared
broker is never touched), started once per session the first time a test asks for it, and
stopped (its data deleted) at the end. Nodes may be SIGKILLed and started again by the tests;
every test takes fresh topics, consumer group and Redis prefix (the session's Redis) from
``kcluster.stack()``.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from streamrec.infra import kafka
from streamrec.settings import Settings

BROKERS = 3
IN_SYNC_TIMEOUT_S = 90.0


def _free_range(count: int) -> int:
    """A port p with p .. p + count - 1 all free on loopback, below the ephemeral range (where
    other tests' random ports come from)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - count)
        try:
            socks = []
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError(f"no {count} consecutive free ports found")


@dataclass
class KCluster:
    """Settings of the tests' cluster, and the faults that can befall its nodes."""

    settings: Settings
    log: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)

    def stack(self, **overrides: Any) -> Settings:
        """Fresh topic names, consumer group and Redis prefix on the cluster."""
        tag = uuid.uuid4().hex[:10]
        self.prefixes.append(f"kc-{tag}")
        values: dict[str, Any] = {
            "topic_events": f"kc-{tag}.events",
            "topic_dlq": f"kc-{tag}.events.dlq",
            "topic_models": f"kc-{tag}.models",
            "topic_items": f"kc-{tag}.items",
            "topic_events_partitions": 3,
            "consumer_group": f"kcg-{tag}",
            "redis_prefix": f"kc-{tag}",
            "poll_timeout_s": 0.1,
            "metrics_bind": "127.0.0.1:0",
            **overrides,
        }
        return self.settings.model_copy(update=values)

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.settings.kafka_bootstrap})

    def leader(self, topic: str, partition: int) -> int:
        """The node leading ``topic[partition]`` now."""
        md = self.admin().list_topics(topic, timeout=10)
        return int(md.topics[topic].partitions[partition].leader)

    def kill(self, node_id: int) -> None:
        """SIGKILL one node; returns once its port is closed."""
        kafka.kill_node(self.settings, node_id, self.log.append)

    def start(self) -> None:
        """Start the nodes that are down (on their data) and wait until all answer."""
        kafka.up_service(self.settings, self.log.append)

    def wait_in_sync(self, timeout_s: float = IN_SYNC_TIMEOUT_S) -> None:
        """Poll until every partition of every topic has all its replicas in sync."""
        deadline = time.monotonic() + timeout_s
        while True:
            md = self.admin().list_topics(timeout=10)
            behind = [
                f"{t}[{n}]"
                for t, tm in md.topics.items()
                for n, p in tm.partitions.items()
                if sorted(p.isrs) != sorted(p.replicas)
            ]
            if not behind and len(md.brokers) == BROKERS:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not in sync after {timeout_s} s: {behind[:5]}")
            time.sleep(0.25)


@pytest.fixture(scope="session")
def kcluster(infra: Settings) -> Iterator[KCluster]:
    """The cluster tests' own three KRaft nodes (and the session's Redis)."""
    if os.environ.get("STREAMREC_TEST_SERVICES") == "off":
        pytest.fail("STREAMREC_TEST_SERVICES=off: this run must not start Kafka")
    base = _free_range(2 * BROKERS)  # clients at base + 2k, controllers at base + 1 + 2k
    nodes = [f"127.0.0.1:{base + 2 * k}" for k in range(BROKERS)]
    settings = infra.model_copy(
        update={
            "kafka_bootstrap": ",".join(nodes),
            "kafka_controller_port": base + 1,
            "kafka_brokers": BROKERS,
        }
    )
    kc = KCluster(settings)
    cluster = kafka.cluster_of(settings)
    assert cluster is not None
    try:
        kc.start()
        yield kc
    finally:
        kafka.down_service(settings, kc.log.append)
        shutil.rmtree(cluster.dir, ignore_errors=True)
        from streamrec.connect import redis_client

        client = redis_client(infra)
        for prefix in kc.prefixes:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for lo in range(0, len(keys), 1000):
                client.unlink(*keys[lo : lo + 1000])
        client.close()
