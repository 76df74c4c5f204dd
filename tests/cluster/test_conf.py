"""The local cluster's node configuration (pure: no server started)."""

from __future__ import annotations

from pathlib import Path

from streamrec.infra import redis_cluster
from streamrec.settings import load_settings


def test_nodes_are_six_loopback_ports_from_the_url_on(tmp_path: Path) -> None:
    s = load_settings(redis_url="redis://127.0.0.1:7000/0", redis_cluster=True, home=tmp_path)
    ns = redis_cluster.nodes(s)
    assert [n.port for n in ns] == list(range(7000, 7006))
    assert ns[3].paths.dir == tmp_path / "redis-cluster-7003"


def test_a_node_holds_state_as_the_single_server_does(tmp_path: Path) -> None:
    node = redis_cluster.Node("127.0.0.1", 7001, tmp_path)
    conf = redis_cluster.node_conf(node, "s3cret").splitlines()
    timeout = f"cluster-node-timeout {redis_cluster.NODE_TIMEOUT_MS}"
    for line in ("appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction",
                 "cluster-enabled yes", "bind 127.0.0.1", "port 7001",
                 'masterauth "s3cret"', timeout):  # fmt: skip
        assert line in conf, line
    assert f'cluster-config-file "{tmp_path / "redis-cluster-7001" / "nodes.conf"}"' in conf
