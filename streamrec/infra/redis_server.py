"""The local Redis server: used when one answers at ``redis_url``, else started on loopback.

Ours runs from ``<home>/redis-<port>/`` with a generated ``redis.conf`` (mode 0600, so a
password never shows up in ``ps``), logging to ``redis.log`` there. It holds the worker's state
(histories, applied offsets), not just a cache of lists, so it is configured the way README "A
Redis fit to hold state" asks of any Redis streamrec uses: an append-only file, fsynced every
second, and ``noeviction``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from streamrec.errors import InfraError
from streamrec.infra import (
    POLL_S,
    Action,
    Echo,
    ServiceStatus,
    decide,
    is_loopback,
    kill_pid,
    our_pid,
    pid_alive,
    port_open,
    spawn_detached,
    stop_pid,
    tail,
    wait_port_closed,
    write_pid,
)
from streamrec.settings import redact_url

if TYPE_CHECKING:
    from streamrec.settings import Settings

log = logging.getLogger(__name__)

NAME = "redis"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
APT_TIMEOUT_S = 300.0
PROBE_TIMEOUT_S = 1.0
SEARCH_PATH = ("/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server")
INSTALL_HINT = "apt-get update && apt-get install -y redis-server"


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where ``redis_url`` points, as far as starting a local server is concerned."""

    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> RedisTarget:
        parts = urlsplit(url)
        try:
            port = parts.port or 6379
        except ValueError:
            raise InfraError(f"redis: bad port in redis_url {redact_url(url)!r}") from None
        return cls(parts.scheme, parts.hostname or "127.0.0.1", port)

    @property
    def address(self) -> str:
        if self.scheme == "unix":
            return "unix socket"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def startable(self) -> bool:
        """Only plain ``redis://`` on a loopback host is started locally (no TLS, no sockets)."""
        return self.scheme == "redis" and is_loopback(self.host)


@dataclass(frozen=True, slots=True)
class RedisPaths:
    """The files of our server for one port."""

    dir: Path

    @classmethod
    def of(cls, settings: Settings) -> RedisPaths:
        return cls(settings.home / f"redis-{RedisTarget.parse(settings.redis_url).port}")

    @property
    def conf(self) -> Path:
        return self.dir / "redis.conf"

    @property
    def pid_file(self) -> Path:
        return self.dir / "redis.pid"

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    @property
    def stdout_log(self) -> Path:
        """redis-server's stdout/stderr (config errors before the log file opens land here)."""
        return self.dir / "stdout.log"


def _quote(value: str) -> str:
    """A redis.conf double-quoted string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def render_conf(bind: str, port: int, paths: RedisPaths, password: str | None) -> str:
    """redis.conf of our server: loopback only, an AOF fsynced every second, never evicting,
    foreground, own log file."""
    lines = [
        "# Written by streamrec.infra.redis_server; rewritten on every start.",
        f"bind {bind}",
        f"port {port}",
        # The AOF is the persistence; RDB snapshots on top would only add fork pauses.
        'save ""',
        "appendonly yes",
        "appendfsync everysec",
        # Each event rewrites its user's list (~2.3 kB at N=50), so the AOF grows ~2.5 kB an
        # event, almost all of it superseded values. A rewrite serializes the whole dataset,
        # and at the default 100% growth it ran every ~2 s at 10k events/s here, ~2 s of a
        # core each (bench/e2e.py): 400% rewrites 4x less often for up to 5x the data on disk.
        "auto-aof-rewrite-percentage 400",
        "maxmemory-policy noeviction",
        "daemonize no",
        f"dir {_quote(str(paths.dir))}",
        f"logfile {_quote(str(paths.log))}",
        f"pidfile {_quote(str(paths.pid_file))}",
    ]
    if password:
        lines.append(f"requirepass {_quote(password)}")
    return "\n".join(lines) + "\n"


def _password(settings: Settings) -> str | None:
    return settings.redis_password.get_secret_value() if settings.redis_password else None


def ping(settings: Settings, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None if the server at ``redis_url`` answers PING, else why not (one line)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    password = _password(settings)
    if password is not None:  # the setting overrides a password in the URL
        client.connection_pool.connection_kwargs["password"] = password
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        client.close()
    return None


def probe(settings: Settings) -> tuple[bool, bool, str]:
    """(healthy, port_busy, reason) for the server at ``redis_url``."""
    target = RedisTarget.parse(settings.redis_url)
    busy = target.scheme != "unix" and port_open(target.host, target.port)
    if target.scheme != "unix" and not busy:
        return False, False, "connection refused"
    why = ping(settings)
    return why is None, busy, why or ""


def find_redis_server() -> str | None:
    """redis-server on PATH or in the usual Debian places."""
    found = shutil.which("redis-server")
    if found:
        return found
    return next((p for p in SEARCH_PATH if os.access(p, os.X_OK)), None)


def _apt_install(echo: Echo) -> None:
    """apt-get install redis-server (bounded); InfraError with the output's tail on failure."""
    echo("redis: redis-server not found; installing it with apt-get (allow_apt=true)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "redis-server"],
    ):
        try:
            proc = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise InfraError(
                f"redis: `{' '.join(cmd)}` did not finish in {APT_TIMEOUT_S:.0f} s"
            ) from None
        if proc.returncode != 0:
            out = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
            raise InfraError(f"redis: `{' '.join(cmd)}` failed (exit {proc.returncode}): {out}")


def ensure_redis_server(settings: Settings, echo: Echo) -> str:
    """The redis-server binary, installed with apt-get when allowed; InfraError otherwise."""
    found = find_redis_server()
    if found:
        return found
    can_apt = settings.allow_apt and os.geteuid() == 0 and shutil.which("apt-get") is not None
    if not can_apt:
        why = "allow_apt is false" if not settings.allow_apt else "apt-get needs root"
        raise InfraError(
            f"redis: redis-server not found and not installed automatically ({why}); run "
            f"`{INSTALL_HINT}`, or set STREAMREC_REDIS_URL to a running server"
        )
    _apt_install(echo)
    found = find_redis_server()
    if not found:
        raise InfraError(f"redis: apt-get ran but redis-server is still missing; {INSTALL_HINT}")
    return found


def wait_ready(
    settings: Settings, paths: RedisPaths, alive: Callable[[], bool], timeout_s: float
) -> float:
    """Poll PING until it answers; seconds waited. InfraError if the server dies or stalls."""
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        if not alive():
            raise InfraError(
                f"redis: redis-server exited during startup; see {paths.log}\n" + _log_tails(paths)
            )
        why = ping(settings, timeout_s=0.5)
        if why is None:
            return time.monotonic() - started
        if time.monotonic() >= deadline:
            raise InfraError(
                f"redis: not answering after {timeout_s:.0f} s ({why}); see {paths.log}\n"
                + _log_tails(paths)
            )
        time.sleep(POLL_S / 2)


def _log_tails(paths: RedisPaths) -> str:
    parts = []
    for path in (paths.log, paths.stdout_log):
        text = tail(path, 20)
        if text:
            parts.append(f"--- last lines of {path} ---\n{text}")
    return "\n".join(parts) or "(no log output)"


def _ours(settings: Settings, paths: RedisPaths) -> int | None:
    port = RedisTarget.parse(settings.redis_url).port
    return our_pid(paths.pid_file, "redis-server", f":{port}")


def status(settings: Settings) -> ServiceStatus:
    """Whether Redis answers at ``redis_url``, and whether it is ours."""
    target = RedisTarget.parse(settings.redis_url)
    paths = RedisPaths.of(settings)
    pid = _ours(settings, paths) if target.startable else None
    healthy, busy, why = probe(settings)
    if pid is not None:
        detail = "" if healthy else f"process alive but not answering: {why}"
        return ServiceStatus(NAME, healthy, target.address, "ours", pid, paths.log, detail)
    if healthy:
        return ServiceStatus(NAME, True, target.address, "external")
    return ServiceStatus(NAME, False, target.address, "down", detail=why if busy else "")


def up(settings: Settings, echo: Echo) -> ServiceStatus:
    """Use the Redis answering at ``redis_url``, or start ours when the URL is loopback."""
    target = RedisTarget.parse(settings.redis_url)
    paths = RedisPaths.of(settings)
    pid = _ours(settings, paths) if target.startable else None
    healthy, busy, why = probe(settings)
    action = decide(
        service=NAME,
        address=target.address,
        healthy=healthy,
        ours_alive=pid is not None,
        port_busy=busy,
        local=target.startable,
        reason=why,
    )
    if action is Action.USE:
        if pid is None:
            echo(f"redis: already running at {target.address} (external)")
            return ServiceStatus(NAME, True, target.address, "external")
        echo(f"redis: already running at {target.address} (ours, pid {pid})")
        return ServiceStatus(NAME, True, target.address, "ours", pid, paths.log)
    if action is Action.WAIT and pid is not None:
        echo(f"redis: our server (pid {pid}) is not answering yet; waiting")
        wait_ready(settings, paths, lambda: pid_alive(pid), READY_TIMEOUT_S)
        return ServiceStatus(NAME, True, target.address, "ours", pid, paths.log)

    binary = ensure_redis_server(settings, echo)
    # apt's post-install may have started a system service on the default port.
    healthy, _, _ = probe(settings)
    if healthy:
        echo(f"redis: a server answers at {target.address} now (external)")
        return ServiceStatus(NAME, True, target.address, "external")

    paths.dir.mkdir(parents=True, exist_ok=True)
    paths.conf.touch(mode=0o600, exist_ok=True)
    paths.conf.chmod(0o600)
    bind = "127.0.0.1" if target.host.lower() == "localhost" else target.host
    paths.conf.write_text(
        render_conf(bind, target.port, paths, _password(settings)), encoding="utf-8"
    )
    echo(f"redis: starting redis-server on {target.address}, log {paths.log}")
    new_pid = spawn_detached([binary, str(paths.conf)], paths.stdout_log, paths.dir)
    write_pid(paths.pid_file, new_pid)
    try:
        waited = wait_ready(settings, paths, lambda: pid_alive(new_pid), READY_TIMEOUT_S)
    except InfraError:
        if not pid_alive(new_pid):
            paths.pid_file.unlink(missing_ok=True)
        raise
    echo(f"redis: ready at {target.address} after {waited:.2f} s (pid {new_pid})")
    return ServiceStatus(NAME, True, target.address, "ours", new_pid, paths.log)


def down(settings: Settings, echo: Echo) -> None:
    """Stop our redis-server (SIGTERM, then SIGKILL); an external one is left alone."""
    paths = RedisPaths.of(settings)
    pid = _ours(settings, paths)
    if pid is None:
        echo(f"redis: no server of ours for {RedisTarget.parse(settings.redis_url).address}")
        return
    stop_pid(pid, NAME, STOP_TIMEOUT_S, echo)
    paths.pid_file.unlink(missing_ok=True)
    echo("redis: stopped")


def kill(settings: Settings, echo: Echo) -> None:
    """SIGKILL our redis-server, as a crash would (no save, no shutdown); for fault tests and
    the soak benchmark. A server that is not ours is never touched."""
    paths = RedisPaths.of(settings)
    pid = _ours(settings, paths)
    if pid is None:
        raise InfraError(
            f"redis: no server of ours at {RedisTarget.parse(settings.redis_url).address} to kill"
        )
    kill_pid(pid, NAME, echo)
    paths.pid_file.unlink(missing_ok=True)
    target = RedisTarget.parse(settings.redis_url)
    if target.scheme != "unix":
        wait_port_closed(target.host, target.port, NAME)
