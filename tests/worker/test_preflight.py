"""The worker refuses a Redis that can evict its state: real servers, real policies.

Every policy is set on a redis-server of this module's own (started per test on a spare port,
stopped after it), never on the session's shared Redis, which other tests use. Its own rather
than the fault tests' ``own`` services: that fixture lives in tests/faults/conftest.py, and
importing it here would start a second broker in a session that runs both folders. The
fallbacks need such a server anyway: one started with CONFIG (and INFO) renamed away, as
managed services do.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from streamrec.connect import redis_client
from streamrec.errors import ConfigError
from streamrec.infra import redis_server
from streamrec.settings import Settings, redis_address
from streamrec.worker.preflight import check_redis, eviction_risk

EVICTING = (
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
)


def test_every_evicting_policy_is_a_risk_and_noeviction_is_not() -> None:
    assert eviction_risk("noeviction") is None
    for policy in EVICTING:
        assert eviction_risk(policy), policy
    assert "TTL" in str(eviction_risk("volatile-ttl"))  # why volatile-* is refused too


def test_messages_never_show_the_url_password() -> None:
    # The floor's one helper (streamrec.settings.redis_address), which preflight uses.
    assert redis_address("redis://:hunter2@cache.example:6380/1") == "cache.example:6380/1"
    assert redis_address("rediss://user:pw@[::1]/0") == "[::1]:6379/0"
    assert redis_address("unix:///run/redis.sock") == "/run/redis.sock"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Callable[..., Settings]]:
    """Factory: start a redis-server of this test's own with maxmemory-policy ``policy`` and
    the commands in ``hide`` renamed away; settings on it. Each is stopped after the test."""
    binary = redis_server.find_redis_server()
    if binary is None:
        pytest.skip("redis-server is not installed")
    started: list[subprocess.Popen[bytes]] = []

    def start(policy: str = "noeviction", hide: tuple[str, ...] = ()) -> Settings:
        port = _free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(tmp_path),
                "--maxmemory-policy", policy]  # fmt: skip
        for command in hide:
            args += ["--rename-command", command, ""]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        url = f"redis://127.0.0.1:{port}/0"
        probe = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + 15
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, "redis-server exited at start"
                assert time.monotonic() < deadline, "redis-server not answering after 15 s"
                time.sleep(0.05)
        probe.close()
        return Settings.model_construct().model_copy(update={"redis_url": url})

    try:
        yield start
    finally:
        for proc in started:
            proc.terminate()
            proc.wait(timeout=15)


@pytest.mark.integration  # real servers (its own), so not among the pure tests
def test_refuses_each_evicting_policy_in_one_line_saying_what_to_set(
    own_redis: Callable[..., Settings],
) -> None:
    s = own_redis()
    client = redis_client(s)
    for name in EVICTING:
        client.config_set("maxmemory-policy", name)
        with pytest.raises(ConfigError) as refused:
            check_redis(client, s)
        msg = str(refused.value)
        assert "\n" not in msg
        assert f"maxmemory-policy {name} (CONFIG GET)" in msg
        assert "set maxmemory-policy noeviction" in msg
        assert "STREAMREC_ACCEPT_EVICTION=true" in msg
        assert redis_address(s.redis_url) in msg
    client.close()


@pytest.mark.integration
def test_noeviction_runs_and_an_accepted_evicting_policy_runs_with_a_warning(
    own_redis: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    s = own_redis("noeviction")
    client = redis_client(s)
    with caplog.at_level(logging.INFO, logger="streamrec.worker.preflight"):
        assert check_redis(client, s) == "noeviction"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    client.config_set("maxmemory-policy", "allkeys-lru")
    accepting = s.model_copy(update={"accept_eviction": True})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="streamrec.worker.preflight"):
        assert check_redis(client, accepting) == "allkeys-lru"
    client.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "STREAMREC_ACCEPT_EVICTION is true" in warned[0]


def _env(s: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    for name in ("kafka_bootstrap", "redis_url", "redis_prefix", "topic_events", "topic_dlq",
                 "topic_models", "topic_items", "consumer_group", "model_path"):  # fmt: skip
        env[f"STREAMREC_{name.upper()}"] = str(getattr(s, name))
    return {**env, "STREAMREC_METRICS_BIND": "", **extra}


@pytest.mark.integration
def test_streamrec_worker_exits_2_with_one_line_then_runs_once_accepted(
    own_redis: Callable[..., Settings], stack: Callable[..., Settings], small_model: Path
) -> None:
    # The session's broker (fresh topics from ``stack``), this test's own Redis.
    s = stack(redis_url=own_redis("volatile-lru").redis_url, model_path=small_model)
    cmd = [sys.executable, "-m", "streamrec", "worker", "--duration", "1"]
    refused = subprocess.run(cmd, env=_env(s), capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("streamrec: error: Redis at ") and "volatile-lru" in last, last
    assert "Traceback" not in refused.stderr

    accepted = subprocess.run(cmd, env=_env(s, STREAMREC_ACCEPT_EVICTION="true"),
                              capture_output=True, text=True, timeout=90)  # fmt: skip
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert "running anyway because STREAMREC_ACCEPT_EVICTION is true" in accepted.stderr
    assert "worker stopped" in accepted.stderr


# --- a server whose CONFIG (and INFO) are renamed away -------------------------------------


@pytest.mark.integration
def test_config_renamed_falls_back_to_info_memory(own_redis: Callable[..., Settings]) -> None:
    s = own_redis("allkeys-lfu", ("CONFIG",))
    client = redis_client(s)
    with pytest.raises(ConfigError, match=r"maxmemory-policy allkeys-lfu \(INFO memory\)"):
        check_redis(client, s)
    client.close()


@pytest.mark.integration
def test_neither_config_nor_info_answers_says_so_and_runs(
    own_redis: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    s = own_redis("allkeys-lru", ("CONFIG", "INFO"))
    client = redis_client(s)
    with caplog.at_level(logging.WARNING, logger="streamrec.worker.preflight"):
        assert check_redis(client, s) is None
    client.close()
    (warned,) = [r.getMessage() for r in caplog.records]
    assert "cannot read maxmemory-policy" in warned and "noeviction" in warned
