"""Local infrastructure: a real Apache Kafka broker (KRaft; or a cluster of them) and a Redis
server.

Public API::

    up(settings, echo=print) -> InfraStatus   ensure both services run; idempotent
    status(settings) -> InfraStatus            what runs where, starts nothing
    down(settings, echo=print) -> None         stop what *we* started; external servers stay

A service is either ``"ours"`` (a process this module started, recorded in a pid file under
``settings.home``), ``"external"`` (something else already answers at the configured address:
it is used, never started twice, never stopped) or ``"down"``. Processes are started in their
own session with output going to log files, so they outlive the ``streamrec infra up`` that
started them.

Layout under ``settings.home``::

    kafka/<version>/libs/            broker jars fetched with Maven (complete once libs.ok exists)
    kafka/run-<port>/                server.properties, log4j2.properties, kafka.pid,
                                     data/ (KRaft storage), logs/server.log, logs/stdout.log
    kafka/cluster-<port>/            a cluster (``kafka_brokers`` > 1): cluster.json (id and
                                     nodes), node-<id>/ laid out as run-<port>/ is
    redis-<port>/                    redis.conf (0600), redis.pid, redis.log
    redis-cluster-<port>/            the same per node of a local Redis Cluster (redis_cluster),
                                     plus nodes.conf

This package holds the shared vocabulary (statuses, pid files, process checks, the start/use
decision); ``kafka`` and ``redis_server`` hold what is specific to each service.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from streamrec.errors import InfraError

if TYPE_CHECKING:
    from streamrec.settings import Settings

__all__ = [
    "Action",
    "Echo",
    "How",
    "InfraStatus",
    "ServiceStatus",
    "decide",
    "down",
    "status",
    "up",
]

log = logging.getLogger(__name__)

Echo = Callable[[str], None]
"""Where progress lines for a person go (the CLI passes ``print``)."""

How = Literal["ours", "external", "down"]

POLL_S = 0.1
"""Interval of every readiness/stop poll loop."""

LOCK_TIMEOUT_S = 900.0
"""Longest wait for another ``up``/``down`` holding the infra lock (a cold Maven fetch)."""


# --- Statuses ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """One service: whether it answers at ``address``, and who started it."""

    name: str
    running: bool
    address: str
    how: How
    pid: int | None = None
    log: Path | None = None
    detail: str = ""

    def line(self) -> str:
        """One human-readable line, e.g. ``kafka  running  127.0.0.1:9092  ours pid 42 ...``."""
        parts = [f"{self.name:<6}", f"{'running' if self.running else 'DOWN':<8}", self.address]
        if self.how == "ours":
            parts.append(f"ours pid {self.pid}" if self.pid is not None else "ours")
        elif self.how == "external":
            parts.append("external")
        if self.log is not None:
            parts.append(f"log {self.log}")
        if self.detail:
            parts.append(f"({self.detail})")
        return "  ".join(parts)


@dataclass(frozen=True, slots=True)
class InfraStatus:
    """Kafka and Redis together; ``kafka_nodes``: each node of a local Kafka cluster (empty
    for the single node)."""

    kafka: ServiceStatus
    redis: ServiceStatus
    kafka_nodes: tuple[ServiceStatus, ...] = ()

    @property
    def ok(self) -> bool:
        """True when both services answer (a cluster: every one of its nodes)."""
        nodes_ok = all(n.running for n in self.kafka_nodes)
        return self.kafka.running and nodes_ok and self.redis.running

    def lines(self) -> list[str]:
        """One line per service (and per Kafka node), for printing."""
        return [self.kafka.line(), *(n.line() for n in self.kafka_nodes), self.redis.line()]


# --- The start/use decision (pure) ---------------------------------------------------------


class Action(enum.Enum):
    """What ``up`` does about one service."""

    USE = "use"  # it answers: use it (ours or external)
    WAIT = "wait"  # our process is alive but not answering yet: wait for it
    START = "start"  # nothing there and the address is on this machine: start ours


def decide(
    *,
    service: str,
    address: str,
    healthy: bool,
    ours_alive: bool,
    port_busy: bool,
    local: bool,
    reason: str = "",
) -> Action:
    """Decide what ``up`` does, from facts gathered beforehand (no I/O here).

    ``healthy``: the service answers properly at ``address``; ``ours_alive``: the process in our
    pid file is alive; ``port_busy``: something accepts connections at ``address``; ``local``:
    ``address`` is a loopback address we may start a server on; ``reason``: why the probe
    failed, quoted in errors. Raises InfraError when there is nothing sensible to do.
    """
    if healthy:
        return Action.USE
    if ours_alive:
        return Action.WAIT
    why = f": {reason}" if reason else ""
    if port_busy:
        raise InfraError(
            f"{service}: something listens at {address} but is not a working {service}{why}; "
            f"stop it or configure another port"
        )
    if not local:
        raise InfraError(
            f"{service} at {address} does not answer{why}; it is not a loopback address, so "
            f"streamrec won't start one there: start it, or point the setting at a loopback address"
        )
    return Action.START


# --- Small helpers shared by both services ------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (no DNS lookup)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if a TCP connection to host:port succeeds within ``timeout_s``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def parse_pid(text: str) -> int | None:
    """The pid in a pid file's text, or None when it isn't a positive integer."""
    first = text.strip().split("\n", 1)[0].strip()
    if not first.isdigit():
        return None
    pid = int(first)
    return pid if pid > 0 else None


def read_pid(path: Path) -> int | None:
    """The pid recorded in ``path``, or None when the file is missing or garbage."""
    try:
        return parse_pid(path.read_text(encoding="ascii", errors="replace"))
    except OSError:
        return None


def write_pid(path: Path, pid: int) -> None:
    """Record ``pid`` in ``path`` (written whole, then renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{pid}\n", encoding="ascii")
    tmp.replace(path)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) process. Reaps it if it is our exited child."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid`` from /proc, or None when unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def our_pid(pid_file: Path, *markers: str) -> int | None:
    """The pid in ``pid_file`` if that process is alive and its command line holds every marker.

    The markers guard against pid reuse: a recycled pid running something else is not ours.
    A pid file naming a dead or foreign process is stale and is removed.
    """
    pid = read_pid(pid_file)
    if pid is None:
        if pid_file.exists():
            log.info("removing unreadable pid file %s", pid_file)
            pid_file.unlink(missing_ok=True)
        return None
    if pid_alive(pid):
        argv = cmdline(pid)
        joined = " ".join(argv) if argv is not None else None
        if joined is None or all(m in joined for m in markers):
            return pid
        log.info("pid %d from %s now runs something else: %s", pid, pid_file, joined)
    else:
        log.info("removing stale pid file %s (pid %d is gone)", pid_file, pid)
    pid_file.unlink(missing_ok=True)
    return None


def stop_pid(pid: int, name: str, timeout_s: float, echo: Echo) -> None:
    """SIGTERM ``pid``, poll until it is gone (at most ``timeout_s``), then SIGKILL it."""
    echo(f"{name}: stopping pid {pid}")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            log.info("%s pid %d stopped", name, pid)
            return
        time.sleep(POLL_S)
    echo(f"{name}: pid {pid} still alive after {timeout_s:.0f} s, killing it")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(POLL_S)
    if pid_alive(pid):
        raise InfraError(f"{name}: pid {pid} survived SIGKILL")


def kill_pid(pid: int, name: str, echo: Echo, timeout_s: float = 10.0) -> None:
    """SIGKILL ``pid`` (no shutdown: a crash, for fault tests and the soak benchmark) and poll
    until it is gone (at most ``timeout_s``)."""
    echo(f"{name}: killing pid {pid}")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(POLL_S)
    if pid_alive(pid):
        raise InfraError(f"{name}: pid {pid} survived SIGKILL")


def wait_port_closed(host: str, port: int, name: str, timeout_s: float = 10.0) -> None:
    """Poll until nothing accepts at ``host:port`` (a killed server's listening socket can
    outlive its pid by a moment, and a restart must not find it busy)."""
    deadline = time.monotonic() + timeout_s
    while port_open(host, port, 0.2):
        if time.monotonic() > deadline:
            raise InfraError(
                f"{name}: {host}:{port} still accepts {timeout_s:.0f} s after the kill"
            )
        time.sleep(POLL_S)


_TRAMPOLINE = '"$@" >>"$0" 2>&1 </dev/null & echo $!'


def spawn_detached(argv: list[str], log_path: Path, cwd: Path) -> int:
    """Start ``argv`` detached from this process; its pid.

    A short-lived ``/bin/sh`` in a new session backgrounds the command (stdout and stderr
    appended to ``log_path``, stdin from /dev/null) and prints its pid. The service is then
    not our child: it outlives us, and init reaps it, so no zombie or ResourceWarning is left
    behind in a long-running caller such as a test session.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            ["/bin/sh", "-c", _TRAMPOLINE, str(log_path), *argv],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            start_new_session=True,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InfraError(f"could not start {argv[0]}: {exc}") from None
    pid = parse_pid(proc.stdout)
    if proc.returncode != 0 or pid is None:
        raise InfraError(f"could not start {argv[0]}: {proc.stderr.strip() or proc.stdout!r}")
    return pid


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a text file ('' if it is missing)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


@contextlib.contextmanager
def _infra_lock(home: Path, echo: Echo, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialize ``up``/``down`` across processes (e.g. parallel test workers) with flock."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "infra.lock"
    with path.open("a") as f:
        deadline = time.monotonic() + timeout_s
        told = False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    echo(f"infra: waiting for another streamrec infra command ({path})")
                    told = True
                if time.monotonic() > deadline:
                    raise InfraError(
                        f"infra: {path} stayed locked for {timeout_s:.0f} s by another process"
                    ) from None
                time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# --- Public API ----------------------------------------------------------------------------
# The service modules import the helpers above from this package, so they are imported inside
# the functions (this also keeps confluent_kafka and redis out of a bare ``import``).


def up(settings: Settings, echo: Echo = print, *, timeout_s: float = 60.0) -> InfraStatus:
    """Ensure Kafka and Redis answer at their configured addresses, starting local ones if needed.

    Idempotent: servers that already answer are used as they are. ``timeout_s`` bounds the wait
    for the broker to become ready (the one-time Maven fetch has its own bound). Raises
    InfraError with a one-line reason (plus the log tail if a started process died).
    """
    from streamrec.infra import kafka, redis_cluster, redis_server

    with _infra_lock(settings.home, echo):
        # Redis first: it is quick, and a missing redis-server should fail before a JVM starts.
        if settings.redis_cluster:
            r = redis_cluster.up(settings, echo)
        else:
            r = redis_server.up(settings, echo)
        k, nodes = kafka.up_service(settings, echo, timeout_s=timeout_s)
    return InfraStatus(kafka=k, redis=r, kafka_nodes=nodes)


def status(settings: Settings) -> InfraStatus:
    """Report what runs where, starting and stopping nothing."""
    from streamrec.infra import kafka, redis_cluster, redis_server

    redis = redis_cluster if settings.redis_cluster else redis_server
    k, nodes = kafka.status_service(settings)
    return InfraStatus(kafka=k, redis=redis.status(settings), kafka_nodes=nodes)


def down(settings: Settings, echo: Echo = print) -> None:
    """Stop the Kafka broker and Redis server this module started; leave external ones alone."""
    from streamrec.infra import kafka, redis_cluster, redis_server

    with _infra_lock(settings.home, echo):
        kafka.down_service(settings, echo)
        (redis_cluster if settings.redis_cluster else redis_server).down(settings, echo)
