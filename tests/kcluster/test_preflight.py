"""The worker's topic preflight on the real three-node cluster: a missing topic, one with too
few replicas and one whose in-sync replicas fell below its min.insync.replicas are refused in
one line with exit 6 (``streamrec.exits.Exit.TOPICS``); ``streamrec topics create`` makes
what it refuses without."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource, NewTopic

from streamrec.connect import ensure_topics
from streamrec.errors import TopicsError
from streamrec.exits import Exit
from streamrec.worker.preflight import check_events_topic, preflight_topics
from tests.kcluster.conftest import KCluster
from tests.worker.test_exactly_once import _env

pytestmark = pytest.mark.integration

FENCE_TIMEOUT_S = 60.0  # the broker's session timeout (9 s) plus a controller failover, loaded


def _streamrec(s_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamrec", *args],
        env=s_env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _create(kc: KCluster, topic: str, replicas: int, **config: str) -> None:
    admin = kc.admin()  # kept: results of a destroyed client never come
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=replicas, config=config)]
    )
    for fut in futures.values():
        fut.result(timeout=30)
    deadline = time.monotonic() + 30
    while not all(
        p.leader >= 0
        for p in kc.admin().list_topics(topic, timeout=10).topics[topic].partitions.values()
    ):
        assert time.monotonic() < deadline, f"{topic} has no leader"
        time.sleep(0.1)  # fmt: skip


def test_missing_topics_refuse_the_worker_until_topics_create(
    kcluster: KCluster, small_model: Path
) -> None:
    s = kcluster.stack(model_path=small_model, create_topics=False)
    env = _env(s, STREAMREC_CREATE_TOPICS="false", STREAMREC_METRICS_BIND="")
    worker = _streamrec(env, "worker", "--duration", "1")
    assert worker.returncode == Exit.TOPICS == 6, worker.stderr[-2000:]
    last = worker.stderr.strip().splitlines()[-1]
    assert last.startswith(f"streamrec: topic(s) {s.topic_events}, ")
    assert "(STREAMREC_CREATE_TOPICS is false); create them with: streamrec topics create" in last
    assert _streamrec(env, "topics", "check").returncode == Exit.TOPICS

    made = _streamrec(env, "topics", "create")
    assert made.returncode == 0, made.stderr[-2000:]
    assert f"{s.topic_events}: created" in made.stdout
    assert "3 replicas each (wanted 3 on 3 brokers), min.insync.replicas 2" in made.stdout
    md = kcluster.admin().list_topics(timeout=10)
    for topic in (s.topic_events, s.topic_dlq, s.topic_models):
        assert {len(p.replicas) for p in md.topics[topic].partitions.values()} == {3}, topic
    admin = kcluster.admin()
    res = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, s.topic_events)])
    assert next(iter(res.values())).result(10)["min.insync.replicas"].value == "2"
    again = _streamrec(env, "topics", "create")
    assert again.returncode == 0 and f"{s.topic_events}: exists, left as it is" in again.stdout
    health = preflight_topics(s)  # what the worker runs: now it starts
    assert (health.replicas, health.wanted, health.min_isr) == (3, 3, 2)


def test_an_events_topic_with_one_replica_is_refused_on_three_brokers(kcluster: KCluster) -> None:
    s = kcluster.stack()
    _create(kcluster, s.topic_events, 1)
    ensure_topics(s)  # the other two, with 3 replicas; the events topic is left as it is
    with pytest.raises(TopicsError) as caught:
        preflight_topics(s)
    message = str(caught.value)
    assert "\n" not in message
    want = f"topic {s.topic_events} at {s.kafka_bootstrap} has 1 replica(s) "
    assert message.startswith(want + "per partition, fewer than 3 (the cluster has 3 brokers)")
    assert "STREAMREC_TOPIC_REPLICATION_FACTOR=1 to run on it anyway" in message
    accepted = check_events_topic(s.model_copy(update={"topic_replication_factor": 1}))
    assert accepted.replicas == 1


def test_in_sync_replicas_below_min_insync_are_refused_while_a_broker_is_down(
    kcluster: KCluster,
) -> None:
    strict = kcluster.stack()  # min.insync.replicas 3: one broker down is one too many
    _create(kcluster, strict.topic_events, 3, **{"min.insync.replicas": "3"})
    usual = kcluster.stack()
    ensure_topics(usual)  # 3 replicas, min.insync.replicas 2
    victim = kcluster.leader(strict.topic_events, 0)
    kcluster.kill(victim)
    try:
        deadline = time.monotonic() + FENCE_TIMEOUT_S
        while True:  # until the controller fences the dead broker and shrinks the ISRs
            try:
                check_events_topic(strict)
            except TopicsError as exc:
                message = str(exc)
                break
            assert time.monotonic() < deadline, "the dead broker never left the ISRs"
            time.sleep(0.5)
        assert "\n" not in message
        assert message.startswith(f"topic {strict.topic_events} at {strict.kafka_bootstrap} is "
                                  "under-replicated: partition(s) 0 (in sync: [")  # fmt: skip
        assert "below min.insync.replicas 3" in message
        assert message.endswith(f"start broker(s) {victim} again and wait until they are in sync")
        # Two of three in sync meets min.insync.replicas 2: the usual topic still passes, and
        # the dead broker still counts, so 3 replicas are still what is wanted.
        health = check_events_topic(usual)
        assert (health.replicas, health.wanted, health.brokers) == (3, 3, 3)
    finally:
        kcluster.start()
        kcluster.wait_in_sync()
    check_events_topic(strict)
