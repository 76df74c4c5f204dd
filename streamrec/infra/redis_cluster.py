"""A local Redis Cluster for tests and the demo: 6 Debian ``redis-server`` nodes on loopback.

``up`` starts the nodes on ports ``P .. P+5``, ``P`` being ``redis_url``'s port, each from
``<home>/redis-cluster-<port>/`` with the single server's configuration (an AOF fsynced every
second, ``noeviction``: README "A Redis fit to hold state") plus ``cluster-enabled``; then, when
they are not a cluster yet, ``redis-cli --cluster create ... --cluster-replicas 1
--cluster-yes`` makes 3 masters with a replica each, and it waits (bounded, polling) until
every node reports ``cluster_state:ok``. A cluster already answering ``ok`` at ``redis_url``
is used as it is. ``kill_node`` / ``start_node`` are for the fault tests (a master SIGKILLed,
its replica promoted).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.errors import InfraError
from streamrec.infra import (
    POLL_S,
    Echo,
    ServiceStatus,
    kill_pid,
    our_pid,
    pid_alive,
    spawn_detached,
    stop_pid,
    wait_port_closed,
    write_pid,
)
from streamrec.infra.redis_server import (
    READY_TIMEOUT_S,
    RedisPaths,
    RedisTarget,
    ensure_redis_server,
    render_conf,
)

if TYPE_CHECKING:
    from redis import Redis

    from streamrec.settings import Settings

log = logging.getLogger(__name__)

NAME = "redis"
NODES = 6  # 3 masters, 3 replicas
REPLICAS = 1
#: How long a master may be unreachable before its replica takes over (redis.conf
#: ``cluster-node-timeout``): short, for a loopback cluster whose nodes die only in tests.
NODE_TIMEOUT_MS = 2000
FORM_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class Node:
    """One node of the local cluster."""

    host: str
    port: int
    home: Path

    @property
    def paths(self) -> RedisPaths:
        return RedisPaths(self.home / f"redis-cluster-{self.port}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def nodes(settings: Settings) -> list[Node]:
    """The local cluster's nodes: ``redis_url``'s port and the next five."""
    target = RedisTarget.parse(settings.redis_url)
    if not target.startable:
        raise InfraError(
            f"redis: the local cluster runs on loopback only, not at {target.address}; "
            "point STREAMREC_REDIS_URL at redis://127.0.0.1:<port>"
        )
    host = "127.0.0.1" if target.host.lower() == "localhost" else target.host
    return [Node(host, target.port + i, settings.home) for i in range(NODES)]


def _password(settings: Settings) -> str | None:
    return settings.redis_password.get_secret_value() if settings.redis_password else None


def _client(node: Node, settings: Settings, timeout_s: float = 1.0) -> Redis:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(
        host=node.host,
        port=node.port,
        password=_password(settings),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def cluster_info(node: Node, settings: Settings) -> dict[str, str] | None:
    """The node's ``CLUSTER INFO`` fields, None when it does not answer."""
    import redis

    client = _client(node, settings)
    try:
        raw = client.execute_command("CLUSTER INFO")
    except redis.RedisError:
        return None
    finally:
        client.close()
    if isinstance(raw, dict):  # redis-py parses it
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _replicas_online(node: Node, settings: Settings) -> int | None:
    """How many replicas a master reports ``state=online`` (synced, streaming); None for a
    node that is not a master or does not answer."""
    import redis

    client = _client(node, settings)
    try:
        info = client.info("replication")
    except redis.RedisError:
        return None
    finally:
        client.close()
    if info.get("role") != "master":
        return None
    return sum(
        1
        for k, v in info.items()
        if str(k).startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
    )


def wait_replicas(settings: Settings, ns: list[Node], timeout_s: float = FORM_TIMEOUT_S) -> float:
    """Poll until every master among ``ns`` has ``REPLICAS`` replicas online; seconds waited.
    A replica still in its first sync cannot take over, so a cluster whose master dies
    before then loses its slots: ``up`` waits for this as well as ``cluster_state:ok``."""
    started = time.monotonic()
    while True:
        counts = {n.address: _replicas_online(n, settings) for n in ns}
        masters = {a: c for a, c in counts.items() if c is not None}
        if masters and all(c >= REPLICAS for c in masters.values()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise InfraError(f"redis: replicas not in sync after {timeout_s:.0f} s: {masters}")
        time.sleep(POLL_S)


def _answers(node: Node, settings: Settings) -> bool:
    import redis

    client = _client(node, settings, 0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _ours(node: Node) -> int | None:
    # Before it renames its process title to "redis-server <host>:<port> [cluster]" its
    # command line is "redis-server <home>/redis-cluster-<port>/redis.conf": both hold these.
    return our_pid(node.paths.pid_file, "redis-server", "cluster", str(node.port))


def node_conf(node: Node, password: str | None) -> str:
    """redis.conf of one node: the single server's, plus cluster mode."""
    paths = node.paths
    lines = [
        render_conf(node.host, node.port, paths, password).rstrip("\n"),
        "cluster-enabled yes",
        f'cluster-config-file "{paths.dir / "nodes.conf"}"',
        f"cluster-node-timeout {NODE_TIMEOUT_MS}",
        # A master whose slots have no replica left keeps serving the others' slots.
        "cluster-require-full-coverage no",
    ]
    if password:
        lines.append(f'masterauth "{password}"')
    return "\n".join(lines) + "\n"


def start_node(settings: Settings, node: Node, echo: Echo) -> int:
    """Start one node (its files kept: it rejoins with its AOF and nodes.conf); its pid."""
    pid = _ours(node)
    if pid is not None:
        return pid
    binary = ensure_redis_server(settings, echo)
    paths = node.paths
    paths.dir.mkdir(parents=True, exist_ok=True)
    paths.conf.touch(mode=0o600, exist_ok=True)
    paths.conf.chmod(0o600)
    paths.conf.write_text(node_conf(node, _password(settings)), encoding="utf-8")
    pid = spawn_detached([binary, str(paths.conf)], paths.stdout_log, paths.dir)
    write_pid(paths.pid_file, pid)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _answers(node, settings):
        if time.monotonic() > deadline or not pid_alive(pid):
            raise InfraError(f"redis: cluster node {node.address} did not start; see {paths.log}")
        time.sleep(POLL_S)
    return pid


def kill_node(settings: Settings, node: Node, echo: Echo) -> None:
    """SIGKILL one node of ours, as a crash would; returns once its port is closed."""
    pid = _ours(node)
    if pid is None:
        raise InfraError(f"redis: no cluster node of ours at {node.address} to kill")
    kill_pid(pid, NAME, echo)
    node.paths.pid_file.unlink(missing_ok=True)
    wait_port_closed(node.host, node.port, NAME)


def _state_ok(ns: list[Node], settings: Settings) -> bool:
    infos = [cluster_info(n, settings) for n in ns]
    return all(i is not None and i.get("cluster_state") == "ok" for i in infos)


def wait_ok(settings: Settings, ns: list[Node], timeout_s: float = FORM_TIMEOUT_S) -> float:
    """Poll until every node in ``ns`` reports ``cluster_state:ok``; seconds waited."""
    started = time.monotonic()
    while not _state_ok(ns, settings):
        if time.monotonic() - started > timeout_s:
            states = {n.address: (cluster_info(n, settings) or {}).get("cluster_state")
                      for n in ns}  # fmt: skip
            raise InfraError(f"redis: cluster not ok after {timeout_s:.0f} s: {states}")
        time.sleep(POLL_S)
    return time.monotonic() - started


def up(settings: Settings, echo: Echo) -> ServiceStatus:
    """Use the cluster answering ok at ``redis_url``, or start and form ours (see module)."""
    ns = nodes(settings)
    seed = ns[0]
    address = f"{seed.address} (+{NODES - 1} nodes)"
    info = cluster_info(seed, settings)
    if info is not None and info.get("cluster_state") == "ok":
        pid = _ours(seed)
        echo(f"redis: cluster already running at {address} ({'ours' if pid else 'external'})")
        return _status(ns, settings, pid)
    echo(f"redis: starting a cluster of {NODES} nodes on {seed.host}:{seed.port}-{ns[-1].port}")
    for n in ns:
        if _ours(n) is None and _answers(n, settings):
            raise InfraError(f"redis: {n.address} is taken by a server that is not ours; "
                             "point STREAMREC_REDIS_URL at another port")  # fmt: skip
        start_node(settings, n, echo)
    infos = [cluster_info(n, settings) or {} for n in ns]
    if all(i.get("cluster_slots_assigned", "0") == "0" for i in infos):
        cli = shutil.which("redis-cli")
        if cli is None:
            raise InfraError("redis: redis-cli not found (Debian package redis-tools)")
        cmd = [cli, "--cluster", "create", *(n.address for n in ns),
               "--cluster-replicas", str(REPLICAS), "--cluster-yes"]  # fmt: skip
        password = _password(settings)
        env = {"REDISCLI_AUTH": password} if password else {}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FORM_TIMEOUT_S,
                                  check=False, env={"PATH": "/usr/bin:/bin", **env})  # fmt: skip
        except subprocess.TimeoutExpired:
            raise InfraError(f"redis: `redis-cli --cluster create` took over "
                             f"{FORM_TIMEOUT_S:.0f} s") from None  # fmt: skip
        if proc.returncode != 0:
            out = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise InfraError(f"redis: `redis-cli --cluster create` failed: {out}")
    waited = wait_ok(settings, ns)
    waited += wait_replicas(settings, ns)
    echo(f"redis: cluster ok at {address} after {waited:.1f} s")
    return _status(ns, settings, _ours(seed))


def _status(ns: list[Node], settings: Settings, pid: int | None) -> ServiceStatus:
    address = f"{ns[0].address} (+{NODES - 1} nodes)"
    ok = _state_ok(ns[:1], settings)
    detail = "cluster" if ok else "cluster_state not ok"
    if pid is not None:
        return ServiceStatus(NAME, ok, address, "ours", pid, ns[0].paths.log, detail)
    return ServiceStatus(NAME, ok, address, "external" if ok else "down", detail=detail)


def status(settings: Settings) -> ServiceStatus:
    """Whether the cluster at ``redis_url`` is ok, and whether it is ours."""
    ns = nodes(settings)
    return _status(ns, settings, _ours(ns[0]))


def down(settings: Settings, echo: Echo) -> None:
    """Stop our nodes (SIGTERM, then SIGKILL); an external cluster is left alone."""
    stopped = 0
    for n in nodes(settings):
        pid = _ours(n)
        if pid is not None:
            stop_pid(pid, NAME, STOP_TIMEOUT_S, echo)
            n.paths.pid_file.unlink(missing_ok=True)
            stopped += 1
    echo(f"redis: stopped {stopped} cluster nodes" if stopped else "redis: no cluster of ours")


def wipe(settings: Settings) -> None:
    """Delete our stopped nodes' files (data, nodes.conf): the next ``up`` forms a new cluster."""
    for n in nodes(settings):
        if _ours(n) is None and n.paths.dir.exists():
            shutil.rmtree(n.paths.dir)
