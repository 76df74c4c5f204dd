"""streamrec.infra: pure helpers without I/O, then the real services the session started.

The integration tests rely on the session fixture ``infra`` (tests/conftest.py), which has
already run ``up(load_settings())`` and returns those settings. Nothing here talks to anything
but loopback addresses.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

import streamrec.infra as infra_api
from streamrec.errors import InfraError
from streamrec.infra import (
    Action,
    InfraStatus,
    ServiceStatus,
    cmdline,
    decide,
    is_loopback,
    our_pid,
    parse_pid,
    redis_server,
    write_pid,
)
from streamrec.infra import kafka as kafka_infra
from streamrec.settings import Settings

# --- helpers -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def _settings(**update: object) -> Settings:
    """Defaults plus ``update``, without reading the environment."""
    return Settings.model_construct().model_copy(update=update)


# --- pure helpers --------------------------------------------------------------------------


def test_render_server_properties_has_ports_and_single_kraft_node(tmp_path: Path) -> None:
    text = kafka_infra.render_server_properties("127.0.0.1", 29092, 29093, tmp_path / "data")
    props = kafka_infra.parse_properties(text)
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:29093"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"


def test_kafka_paths_follow_settings(tmp_path: Path) -> None:
    s = _settings(home=tmp_path, kafka_bootstrap="127.0.0.1:29092", kafka_version="4.1.1")
    paths = kafka_infra.KafkaPaths.of(s)
    assert paths.libs == tmp_path / "kafka" / "4.1.1" / "libs"
    assert paths.server_properties == tmp_path / "kafka" / "run-29092" / "server.properties"
    assert paths.server_log == tmp_path / "kafka" / "run-29092" / "logs" / "server.log"
    with pytest.raises(InfraError, match="kafka_version"):
        kafka_infra.KafkaPaths.of(_settings(home=tmp_path, kafka_version="../4.1.1"))


def test_split_bootstrap() -> None:
    assert kafka_infra.split_bootstrap("127.0.0.1:9092") == ("127.0.0.1", 9092, True)
    assert kafka_infra.split_bootstrap("a:1,b:2") == ("a", 1, False)
    assert kafka_infra.split_bootstrap("[::1]:9092") == ("[::1]", 9092, True)
    assert kafka_infra.listen_host("localhost") == "127.0.0.1"


def test_shipped_pom_and_log4j_config() -> None:
    files = resources.files("streamrec.infra")
    pom = kafka_infra.render_pom(files.joinpath("pom.xml").read_text("utf-8"), "4.1.1")
    assert "<version>4.1.1</version>" in pom
    assert "@KAFKA_VERSION@" not in pom
    assert "log4j-slf4j-impl" in pom
    log4j = files.joinpath("log4j2.properties").read_text("utf-8")
    assert "${sys:kafka.logs.dir}/server.log" in log4j
    with pytest.raises(InfraError):
        kafka_infra.render_pom("<project/>", "4.1.1")


def test_first_maven_error_skips_ansi_and_blank_error_lines() -> None:
    out = "\x1b[0m\x1b[0m[ERROR] Failed to execute goal: kafka_2.13:jar:0.0.99 was not found\n"
    out += "[ERROR] \n[ERROR] Re-run Maven using the -X switch\n"
    assert kafka_infra.first_maven_error(out) == (
        "Failed to execute goal: kafka_2.13:jar:0.0.99 was not found"
    )
    assert kafka_infra.first_maven_error("") == "no output"


def test_write_run_dir_renders_files_and_refuses_a_controller_port_change(tmp_path: Path) -> None:
    s = _settings(home=tmp_path, kafka_bootstrap="127.0.0.1:29092", kafka_controller_port=29093)
    paths = kafka_infra.KafkaPaths.of(s)
    kafka_infra.write_run_dir(s, paths, "127.0.0.1", 29092)
    assert "CONTROLLER://127.0.0.1:29093" in paths.server_properties.read_text()
    assert "server.log" in paths.log4j.read_text()
    assert paths.logs.is_dir()

    paths.data.mkdir()
    (paths.data / "meta.properties").write_text("node.id=1\n")  # "formatted" for 29093
    moved = s.model_copy(update={"kafka_controller_port": 29094})
    with pytest.raises(InfraError, match=r"formatted for controller 127\.0\.0\.1:29093"):
        kafka_infra.write_run_dir(moved, paths, "127.0.0.1", 29092)
    kafka_infra.write_run_dir(s, paths, "127.0.0.1", 29092)  # same port: fine


def test_java_command_heap(tmp_path: Path) -> None:
    paths = kafka_infra.KafkaPaths(tmp_path / "v", tmp_path / "run")
    cmd = kafka_infra.java_command("java", paths, "768m")
    assert cmd[:3] == ["java", "-Xmx768m", "-Xms256m"]
    assert cmd[-2:] == ["kafka.Kafka", str(paths.server_properties)]
    assert f"-Dkafka.logs.dir={paths.logs}" in cmd
    assert kafka_infra.java_command("java", paths, "128m")[2] == "-Xms128m"  # Xms <= Xmx
    assert kafka_infra.parse_heap("2g") == 2 * 1024**3
    with pytest.raises(InfraError, match="kafka_heap"):
        kafka_infra.parse_heap("lots")


def test_parse_java_major() -> None:
    assert kafka_infra.parse_java_major('openjdk version "17.0.15" 2025-04-15') == 17
    assert kafka_infra.parse_java_major('java version "1.8.0_402"') == 8
    assert kafka_infra.parse_java_major('openjdk version "21" 2023-09-19') == 21
    assert kafka_infra.parse_java_major("garbage") is None


@pytest.mark.parametrize(
    ("healthy", "ours_alive", "port_busy", "local", "expected"),
    [
        (True, True, True, True, Action.USE),
        (True, False, True, False, Action.USE),  # external, even remote
        (False, True, True, True, Action.WAIT),  # ours, still starting
        (False, False, False, True, Action.START),
    ],
)
def test_decide(
    healthy: bool, ours_alive: bool, port_busy: bool, local: bool, expected: Action
) -> None:
    got = decide(
        service="redis",
        address="127.0.0.1:6379",
        healthy=healthy,
        ours_alive=ours_alive,
        port_busy=port_busy,
        local=local,
    )
    assert got is expected


def test_decide_refuses_remote_and_busy_ports() -> None:
    with pytest.raises(InfraError, match="not a loopback address"):
        decide(
            service="redis",
            address="cache.example:6379",
            healthy=False,
            ours_alive=False,
            port_busy=False,
            local=False,
            reason="timeout",
        )
    with pytest.raises(InfraError, match="not a working kafka: metadata"):
        decide(
            service="kafka",
            address="127.0.0.1:9092",
            healthy=False,
            ours_alive=False,
            port_busy=True,
            local=True,
            reason="metadata timed out",
        )


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.3.4.5")
    assert is_loopback("localhost")
    assert is_loopback("[::1]")
    assert not is_loopback("192.0.2.1")
    assert not is_loopback("redis.example.com")


def test_parse_pid() -> None:
    assert parse_pid("123\n") == 123
    assert parse_pid("  42  ") == 42
    assert parse_pid("") is None
    assert parse_pid("abc") is None
    assert parse_pid("0") is None
    assert parse_pid("-5") is None


def test_our_pid_drops_stale_garbage_and_foreign_pid_files(tmp_path: Path) -> None:
    pid_file = tmp_path / "x.pid"
    write_pid(pid_file, _dead_pid())
    assert our_pid(pid_file, "kafka.Kafka") is None
    assert not pid_file.exists()

    pid_file.write_text("not a pid")
    assert our_pid(pid_file, "kafka.Kafka") is None
    assert not pid_file.exists()

    write_pid(pid_file, os.getpid())  # alive, but this is pytest, not a broker
    assert our_pid(pid_file, "kafka.Kafka") is None
    assert not pid_file.exists()

    argv = cmdline(os.getpid())
    assert argv
    write_pid(pid_file, os.getpid())
    assert our_pid(pid_file, argv[0]) == os.getpid()
    assert pid_file.exists()


def test_redis_target() -> None:
    t = redis_server.RedisTarget.parse("redis://127.0.0.1:26379/0")
    assert (t.host, t.port, t.address, t.startable) == ("127.0.0.1", 26379, "127.0.0.1:26379", True)
    assert redis_server.RedisTarget.parse("redis://localhost/1").port == 6379
    assert not redis_server.RedisTarget.parse("redis://192.0.2.1:6379/0").startable
    assert not redis_server.RedisTarget.parse("rediss://127.0.0.1:6380/0").startable
    assert not redis_server.RedisTarget.parse("unix:///run/redis.sock").startable
    assert redis_server.RedisTarget.parse("redis://[::1]:6379").address == "[::1]:6379"


def _conf_values(conf: str) -> dict[str, str]:
    """directive -> value of a rendered redis.conf (comments skipped)."""
    pairs = (line.split(" ", 1) for line in conf.splitlines() if line and line[0] != "#")
    return {k: v for k, v in pairs}


def test_redis_conf_holds_state_with_aof_every_second_and_no_eviction(tmp_path: Path) -> None:
    paths = redis_server.RedisPaths(tmp_path)
    conf = _conf_values(redis_server.render_conf("127.0.0.1", 1, paths, None))
    assert conf["appendonly"] == "yes"
    assert conf["appendfsync"] == "everysec"
    assert conf["auto-aof-rewrite-percentage"] == "400"  # rewrites cost a core at 100 %
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["save"] == '""'  # the AOF is the persistence: no RDB fork pauses on top
    assert conf["dir"] == f'"{tmp_path}"'  # where the AOF goes


def test_redis_conf_quotes_and_password(tmp_path: Path) -> None:
    paths = redis_server.RedisPaths(tmp_path / "my dir")
    conf = redis_server.render_conf("127.0.0.1", 26379, paths, 'pa"ss word')
    assert "port 26379\n" in conf
    assert 'save ""\n' in conf
    assert f'dir "{tmp_path}/my dir"\n' in conf
    assert 'requirepass "pa\\"ss word"\n' in conf
    assert "requirepass" not in redis_server.render_conf("127.0.0.1", 1, paths, None)


def test_infra_status_lines_and_ok(tmp_path: Path) -> None:
    k = ServiceStatus("kafka", True, "127.0.0.1:9092", "ours", 42, tmp_path / "server.log")
    r = ServiceStatus("redis", False, "127.0.0.1:6379", "down", detail="connection refused")
    st = InfraStatus(kafka=k, redis=r)
    assert not st.ok
    kline, rline = st.lines()
    assert "running" in kline and "ours pid 42" in kline and str(tmp_path) in kline
    assert "DOWN" in rline and "connection refused" in rline
    assert InfraStatus(kafka=k, redis=k).ok


def test_status_with_nothing_running_cleans_stale_pid_files(tmp_path: Path) -> None:
    kport, rport = _free_port(), _free_port()
    s = _settings(
        home=tmp_path,
        kafka_bootstrap=f"127.0.0.1:{kport}",
        redis_url=f"redis://127.0.0.1:{rport}/0",
    )
    kpid = kafka_infra.KafkaPaths.of(s).pid_file
    rpid = redis_server.RedisPaths.of(s).pid_file
    for pid_file in (kpid, rpid):
        pid_file.parent.mkdir(parents=True)
        write_pid(pid_file, _dead_pid())
    st = infra_api.status(s)
    assert not st.ok
    assert (st.kafka.how, st.redis.how) == ("down", "down")
    assert not kpid.exists() and not rpid.exists()


# --- the real services ---------------------------------------------------------------------


@pytest.mark.integration
def test_status_after_up_reports_both_running(infra: Settings) -> None:
    st = infra_api.status(infra)
    assert st.ok, st.lines()
    assert st.kafka.address == infra.kafka_bootstrap
    target = redis_server.RedisTarget.parse(infra.redis_url)
    assert st.redis.address == target.address
    for svc in (st.kafka, st.redis):
        assert svc.how in ("ours", "external")
        if svc.how == "ours":
            assert svc.pid is not None and svc.log is not None


@pytest.mark.integration
def test_second_up_is_idempotent_and_fast(infra: Settings) -> None:
    before = infra_api.status(infra)
    said: list[str] = []
    started = time.monotonic()
    after = infra_api.up(infra, echo=said.append)
    elapsed = time.monotonic() - started
    assert after.ok
    assert elapsed < 5.0, f"second up took {elapsed:.1f} s"
    assert (after.kafka.how, after.kafka.pid) == (before.kafka.how, before.kafka.pid)
    assert (after.redis.how, after.redis.pid) == (before.redis.how, before.redis.pid)
    assert any(line.startswith("kafka: already running") for line in said), said
    assert not any("starting" in line for line in said), said


@pytest.mark.integration
def test_running_broker_uses_the_configured_ports(infra: Settings) -> None:
    st = infra_api.status(infra)
    if st.kafka.how != "ours":
        pytest.skip("the broker is external; its configuration is not ours")
    paths = kafka_infra.KafkaPaths.of(infra)
    props = kafka_infra.parse_properties(paths.server_properties.read_text())
    port, cport = infra.kafka_port, infra.kafka_controller_port
    assert f"PLAINTEXT://127.0.0.1:{port}" in props["listeners"]
    assert f"CONTROLLER://127.0.0.1:{cport}" in props["listeners"]
    assert paths.server_log.stat().st_size > 0, "the broker logs nothing: log4j2 config unused"


@pytest.fixture
def spare_redis(infra: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Settings for a password-protected Redis of ours on a free port, under a temp home."""
    if redis_server.find_redis_server() is None:
        pytest.skip("redis-server is not installed (the session uses an external Redis)")
    s = infra.model_copy(
        update={
            "home": tmp_path,
            "redis_url": f"redis://127.0.0.1:{_free_port()}/0",
            "redis_password": SecretStr("s3cret pass"),
        }
    )
    yield s
    redis_server.down(s, echo=lambda _: None)  # if the test failed halfway


@pytest.mark.integration
def test_redis_of_ours_starts_detached_and_down_leaves_external_kafka_alone(
    infra: Settings, spare_redis: Settings
) -> None:
    s = spare_redis
    started = redis_server.up(s, echo=lambda _: None)
    assert (started.running, started.how) == (True, "ours")
    assert started.pid is not None
    assert _ppid(started.pid) != os.getpid(), "the server must not be our child"
    paths = redis_server.RedisPaths.of(s)
    assert paths.conf.stat().st_mode & 0o077 == 0, "redis.conf holds the password"

    target = redis_server.RedisTarget.parse(s.redis_url)
    with pytest.raises(redis.AuthenticationError):
        no_retry = Retry(NoBackoff(), 0)  # AuthenticationError is a ConnectionError: no retries
        redis.Redis(host=target.host, port=target.port, socket_timeout=2, retry=no_retry).ping()
    assert redis_server.ping(s) is None

    st = infra_api.status(s)  # Kafka: the session's broker, seen from a home without its pid file
    assert st.ok
    assert (st.kafka.how, st.redis.how, st.redis.pid) == ("external", "ours", started.pid)

    said: list[str] = []
    infra_api.down(s, echo=said.append)
    assert not paths.pid_file.exists()
    after = infra_api.status(s)
    assert (after.redis.running, after.redis.how) == (False, "down")
    assert after.kafka.running, "down() must leave a broker it did not start alone"
    assert any(line.startswith("kafka: no broker of ours") for line in said), said


@pytest.mark.integration
def test_redis_of_ours_keeps_acknowledged_writes_across_a_sigkill(spare_redis: Settings) -> None:
    """AOF: a write Redis acknowledged is in the append-only file (written before the reply;
    fsynced within a second), so a SIGKILLed server comes back with it."""
    s = spare_redis
    started = redis_server.up(s, echo=lambda _: None)
    assert started.pid is not None
    client = redis.Redis.from_url(s.redis_url, password="s3cret pass", socket_timeout=5)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    client.set("state:u1", b"history")
    client.close()
    os.kill(started.pid, signal.SIGKILL)  # no shutdown, no final save
    deadline = time.monotonic() + 15
    port = redis_server.RedisTarget.parse(s.redis_url).port
    # Gone, and its listening socket with it (the kernel may close it after the pid is gone).
    while infra_api.pid_alive(started.pid) or infra_api.port_open("127.0.0.1", port, 0.2):
        assert time.monotonic() < deadline, "redis-server survived SIGKILL for 15 s"
        time.sleep(0.05)

    again = redis_server.up(s, echo=lambda _: None)
    assert again.pid not in (None, started.pid)
    client = redis.Redis.from_url(s.redis_url, password="s3cret pass", socket_timeout=5)
    try:
        assert client.get("state:u1") == b"history"
    finally:
        client.close()
