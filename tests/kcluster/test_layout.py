"""Pure parts of the Kafka cluster: the replication factor streamrec chooses, the local
nodes' ports and their server.properties (no broker needed)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from streamrec.connect import cluster_brokers, min_insync, replication_factor, topic_configs
from streamrec.errors import InfraError
from streamrec.infra import kafka
from streamrec.settings import Settings


@pytest.mark.parametrize(
    ("setting", "brokers", "want"),
    [(None, 1, 1), (None, 2, 1), (None, 3, 3), (None, 5, 3), (2, 3, 2), (1, 3, 1), (5, 1, 5)],
)
def test_replication_factor_is_3_from_3_brokers_up_unless_set(
    setting: int | None, brokers: int, want: int
) -> None:
    assert replication_factor(setting, brokers) == want


def test_min_insync_is_2_from_3_replicas_up() -> None:
    assert [min_insync(rf) for rf in (1, 2, 3, 4)] == [1, 1, 2, 2]


def test_topic_configs_carry_min_insync_on_every_topic() -> None:
    s = Settings.model_construct().model_copy(update={"topic_events_retention_s": 60})
    configs = topic_configs(s, 3)
    assert set(configs) == {s.topic_events, s.topic_dlq, s.topic_models, s.topic_items}
    assert all(c["min.insync.replicas"] == "2" for c in configs.values())
    assert configs[s.topic_events]["retention.ms"] == "60000"
    assert topic_configs(s)[s.topic_events]["min.insync.replicas"] == "1"


def _meta(live: list[int], replicas: list[list[int]]) -> SimpleNamespace:
    parts = {n: SimpleNamespace(replicas=r) for n, r in enumerate(replicas)}
    return SimpleNamespace(brokers={b: None for b in live},
                           topics={"t": SimpleNamespace(partitions=parts)})  # fmt: skip


def test_a_dead_broker_still_counts_through_the_replica_lists() -> None:
    # Broker 3 is down: absent from the live brokers, present in the replica lists.
    assert cluster_brokers(_meta([1, 2], [[1, 2, 3], [3, 1, 2]])) == {1, 2, 3}
    assert cluster_brokers(_meta([1], [])) == {1}


def test_cluster_nodes_default_ports_interleave_clients_and_controllers() -> None:
    nodes = kafka.cluster_nodes("127.0.0.1:9092", 9093, 3)
    assert [(n.node_id, n.port, n.controller_port) for n in nodes] == [
        (1, 9092, 9093),
        (2, 9094, 9095),
        (3, 9096, 9097),
    ]
    assert kafka.quorum_voters(nodes) == "1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097"
    assert kafka.cluster_bootstrap(nodes) == "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"


def test_cluster_nodes_take_the_listed_servers_first() -> None:
    nodes = kafka.cluster_nodes("localhost:7000,localhost:7100", 8000, 3)
    assert [(n.host, n.port, n.controller_port) for n in nodes] == [
        ("127.0.0.1", 7000, 8000),
        ("127.0.0.1", 7100, 8002),
        ("127.0.0.1", 7004, 8004),
    ]


def test_cluster_nodes_refuse_colliding_ports_and_mixed_hosts() -> None:
    with pytest.raises(InfraError, match="collide"):
        kafka.cluster_nodes("127.0.0.1:9092", 9094, 3)  # node 2's client = node 1's controller
    with pytest.raises(InfraError, match="one host"):
        kafka.cluster_nodes("127.0.0.1:9092,127.0.0.2:9094", 9093, 2)


def test_cluster_node_properties(tmp_path: Path) -> None:
    nodes = kafka.cluster_nodes("127.0.0.1:29092", 29093, 3)
    text = kafka.render_server_properties(
        "127.0.0.1", 29094, 29095, tmp_path, node_id=2, voters=kafka.quorum_voters(nodes),
        replicas=3,
    )  # fmt: skip
    props = kafka.parse_properties(text)
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == kafka.quorum_voters(nodes)
    assert "controller.quorum.bootstrap.servers" not in props  # static quorum: no --standalone
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29094,CONTROLLER://127.0.0.1:29095"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    single = kafka.parse_properties(kafka.render_server_properties("h", 1, 2, tmp_path))
    assert single["node.id"] == "1" and single["offsets.topic.replication.factor"] == "1"


def test_cluster_heap_is_capped() -> None:
    assert kafka.cluster_heap("768m") == kafka.CLUSTER_HEAP == "512m"
    assert kafka.cluster_heap("256m") == "256m"


def test_cluster_of_reads_the_manifest_and_refuses_another_size(tmp_path: Path) -> None:
    s = Settings.model_construct().model_copy(
        update={"home": tmp_path, "kafka_bootstrap": "127.0.0.1:29092",
                "kafka_controller_port": 29093, "kafka_brokers": 3}
    )  # fmt: skip
    assert kafka.cluster_of(s.model_copy(update={"kafka_brokers": 1})) is None
    fresh = kafka.cluster_of(s)
    assert fresh is not None and fresh.cluster_id is None and len(fresh.nodes) == 3
    kafka.Cluster(fresh.dir, fresh.version_dir, fresh.nodes, "abc").save()
    # status and down find it with the default kafka_brokers (1): no flag needed.
    found = kafka.cluster_of(s.model_copy(update={"kafka_brokers": 1}))
    assert found is not None and found.cluster_id == "abc" and found.nodes == fresh.nodes
    with pytest.raises(InfraError, match="cluster of 3 nodes, not 5"):
        kafka.cluster_of(s.model_copy(update={"kafka_brokers": 5}))


def test_every_producer_of_the_package_is_durable() -> None:
    """Each Kafka ``Producer(`` the package builds (worker, producer, model, the rest) takes
    ``DURABLE_PRODUCER`` (acks=all, idempotence) within its configuration."""
    root = Path(__file__).resolve().parents[2]
    sites = 0
    for folder in ("streamrec", "worker", "producer", "model"):
        for path in (root / folder).rglob("*.py"):
            if path.is_symlink() or any(p.is_symlink() for p in path.parents):
                continue  # streamrec/worker -> ../worker: read once, at the real path
            text = path.read_text(encoding="utf-8")
            for m in re.finditer(r"(?<![\w.])Producer\(", text):
                window = text[m.end() : m.end() + 300]  # its configuration's first lines
                assert "DURABLE_PRODUCER" in window, f"{path}: a producer without it"
                sites += 1
    assert sites >= 3  # EventProducer, the dead letters, the model announcement
