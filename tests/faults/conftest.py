"""A Kafka broker and a Redis server of the fault tests' own, on spare ports.

The session's shared services (``tests/conftest.py``) are never killed: other tests run on
them. These two are started once per session, the first time a fault test asks for them, and
may be SIGKILLed and restarted (Redis optionally empty) by the tests; at the end they are
stopped. Every test still takes fresh topics and a fresh key prefix from ``own.stack()``.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from streamrec.infra import kafka, port_open, redis_server
from streamrec.infra.redis_server import RedisPaths
from streamrec.settings import Settings, load_settings
from tests.conftest import forget_kafka_run

STOP_WAIT_S = 15.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_closed(port: int, timeout_s: float = STOP_WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while port_open("127.0.0.1", port, 0.2):
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} still open {timeout_s} s after the kill")
        time.sleep(0.05)


@dataclass
class OwnServices:
    """Settings of the fault tests' broker and Redis, and the faults that can befall them."""

    settings: Settings
    log: list[str] = field(default_factory=list)

    @property
    def redis_port(self) -> int:
        return redis_server.RedisTarget.parse(self.settings.redis_url).port

    def stack(self, **overrides: Any) -> Settings:
        """Fresh topic names, consumer group and Redis prefix on these services."""
        tag = uuid.uuid4().hex[:10]
        values: dict[str, Any] = {
            "topic_events": f"f-{tag}.events",
            "topic_dlq": f"f-{tag}.events.dlq",
            "topic_models": f"f-{tag}.models",
            "topic_items": f"f-{tag}.items",
            "topic_events_partitions": 3,
            "consumer_group": f"fg-{tag}",
            "redis_prefix": f"fault-{tag}",
            "poll_timeout_s": 0.1,
            "metrics_bind": "127.0.0.1:0",
            **overrides,
        }
        return self.settings.model_copy(update=values)

    # --- Redis -------------------------------------------------------------------------------

    def kill_redis(self) -> None:
        """SIGKILL the Redis server (no shutdown save); returns once its port is closed."""
        redis_server.kill(self.settings, self.log.append)
        _wait_closed(self.redis_port)

    def start_redis(self, empty: bool = False) -> None:
        """Start the Redis server again; ``empty``: with its data files deleted first, as a
        failover to an empty replica or a lost disk would leave it."""
        paths = RedisPaths.of(self.settings)
        if empty and paths.dir.exists():
            for child in paths.dir.iterdir():
                if child.name.startswith(("appendonly", "dump")) or child.suffix in (
                    ".aof",
                    ".rdb",
                ):
                    if child.is_dir():
                        for f in child.iterdir():
                            f.unlink()
                        child.rmdir()
                    else:
                        child.unlink()
        redis_server.up(self.settings, self.log.append)

    # --- Kafka -------------------------------------------------------------------------------

    def kill_kafka(self) -> None:
        """SIGKILL the broker; returns once its port is closed."""
        kafka.kill(self.settings, self.log.append)
        _wait_closed(self.settings.kafka_port)

    def start_kafka(self) -> None:
        """Start the broker again on the same data (it recovers its log)."""
        kafka.up(self.settings, self.log.append)


@pytest.fixture(scope="session")
def own() -> Iterator[OwnServices]:
    """The fault tests' own broker and Redis (started on first use, stopped at the end)."""
    if os.environ.get("STREAMREC_TEST_SERVICES") == "off":
        pytest.fail("STREAMREC_TEST_SERVICES=off: this run must not start Kafka or Redis")
    base = load_settings()
    port, controller, rport = _free_port(), _free_port(), _free_port()
    settings = base.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{port}",
            "kafka_controller_port": controller,
            "redis_url": f"redis://127.0.0.1:{rport}/0",
        }
    )
    services = OwnServices(settings)
    services.start_redis(empty=True)
    forget_kafka_run(settings)
    services.start_kafka()
    try:
        yield services
    finally:
        kafka.down(settings, services.log.append)
        redis_server.down(settings, services.log.append)
        forget_kafka_run(settings)
