"""Exactly-once effect on a Redis Cluster: the single-Redis tests of
``tests/worker/test_exactly_once.py`` run again on the cluster, and a master is SIGKILLed
mid-stream (its replica promoted). The reference is always a clean pass over the same topic.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from streamrec.connect import ensure_topics, redis_client
from streamrec.infra import redis_cluster
from streamrec.keys import Keys
from streamrec.settings import Settings
from streamrec.worker.loop import Worker
from tests.conftest import committed_total, wait_for
from tests.model import test_publish as publish
from tests.worker import test_exactly_once as single

pytestmark = pytest.mark.integration


def test_the_factory_gives_every_user_the_cluster_client(
    cluster_stack: Callable[..., Settings],
) -> None:
    s = cluster_stack()
    client = redis_client(s)
    assert isinstance(client, redis.RedisCluster)
    assert len(client.get_primaries()) == 3
    info = redis_cluster.cluster_info(redis_cluster.nodes(s)[0], s)
    assert info is not None and (info["cluster_size"], info["cluster_known_nodes"]) == ("3", "6")
    client.close()


def test_sigkill_mid_stream_then_restart_equals_one_clean_pass(
    cluster_stack: Callable[..., Settings], small_model: Path, tmp_path: Path
) -> None:
    single.test_sigkill_mid_stream_then_restart_equals_one_clean_pass(
        cluster_stack, small_model, tmp_path
    )


def test_two_workers_then_one_lose_nothing_and_count_nothing_twice(
    cluster_stack: Callable[..., Settings], small_model: Path, run_worker: Callable[..., Worker]
) -> None:
    single.test_two_workers_then_one_lose_nothing_and_count_nothing_twice(
        cluster_stack, small_model, run_worker
    )


def test_the_nightly_publisher_writes_and_reads_through_the_cluster(
    cluster_stack: Callable[..., Settings], small_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish.test_publish_writes_the_scorers_lists_then_moves_the_pointer(
        cluster_stack, small_model, monkeypatch
    )
    publish.test_live_histories_reads_the_workers_states(cluster_stack)


def _master(client: Any, key: str) -> int:
    """The port of the node serving ``key``'s slot now, as a node that answers says."""
    for node in client.get_nodes():
        try:
            slots = node.redis_connection.execute_command("CLUSTER SLOTS")
        except redis.RedisError:
            continue
        slot = key_slot(key.encode())
        for lo, hi, primary, *_replicas in slots:  # CLUSTER SLOTS' reply, unparsed
            if int(lo) <= slot <= int(hi):
                return int(primary[1])
    raise AssertionError("no node answers CLUSTER SLOTS")


def _applied_through_failover(client: Any, keys: Keys, s: Settings) -> int:
    """``_applied``, or -1 while this client still asks the killed master: its slot table is
    refreshed after the refused connection, and the next poll asks the promoted replica (CI
    once polled in that moment and failed the test, not the worker)."""
    try:
        return single._applied(client, keys, s)
    except (redis.ConnectionError, redis.TimeoutError):
        return -1


def test_a_master_killed_mid_stream_fails_over_and_every_list_equals_a_clean_pass(
    cluster: Settings,
    cluster_stack: Callable[..., Settings],
    small_model: Path,
    run_worker: Callable[..., Worker],
) -> None:
    half = 1500
    s = cluster_stack(model_path=small_model, batch_max=50)
    ensure_topics(s)
    single._produce(s, small_model, half, users=200, seed=61)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    worker = run_worker(s)
    wait_for(lambda: single._applied(client, keys, s) >= half // 3, 60)

    # The master of partition 0's state: its histories, applied offset and marker.
    state_key = keys.applied(s.topic_events, 0)
    port = _master(client, state_key)
    victim = next(n for n in redis_cluster.nodes(cluster) if n.port == port)
    echo: list[str] = []
    redis_cluster.kill_node(cluster, victim, echo.append)
    try:
        single._produce(s, small_model, half, users=200, seed=62, start_ms=1_700_010_000_000)
        # Its replica takes over within a few node timeouts.
        wait_for(lambda: _master(client, state_key) != port, 30, interval_s=0.2)
        wait_for(lambda: _applied_through_failover(client, keys, s) == 2 * half, 90)
        wait_for(lambda: committed_total(s) == 2 * half, 30)  # every batch done, lists too
        assert worker.stats.messages >= 2 * half
    finally:
        redis_cluster.start_node(cluster, victim, echo.append)  # rejoins, as a replica
        redis_cluster.wait_ok(cluster, redis_cluster.nodes(cluster))
        redis_cluster.wait_replicas(cluster, redis_cluster.nodes(cluster))
    worker.stop.set()
    single._assert_same(
        single._snapshot(client, keys), single._clean_pass(s, cluster_stack, 2 * half)
    )
    client.close()
