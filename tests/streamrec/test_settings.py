"""Settings: defaults, env vars, the optional TOML file, secrets, and one-line errors."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamrec.errors import ConfigError
from streamrec.settings import KAFKA_LOG, KafkaLog, Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("STREAMREC_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = load_settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.topic_events == "streamrec.events" and s.topic_events_partitions == 6
    assert s.topic_dlq == "streamrec.events.dlq" and s.topic_models == "streamrec.models"
    assert s.redis_prefix == "streamrec"
    assert s.kafka_port == 9092


def test_env_file_and_kwargs_priority(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "streamrec.toml"
    cfg.write_text('top_n = 20\nredis_prefix = "fromfile"\nbatch_max = 7\n')
    monkeypatch.setenv("STREAMREC_CONFIG", str(cfg))
    monkeypatch.setenv("STREAMREC_TOP_N", "30")
    s = load_settings(batch_max=9)
    assert s.redis_prefix == "fromfile"  # file
    assert s.top_n == 30  # env beats file
    assert s.batch_max == 9  # kwargs beat env


def test_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.top_n = 3


def test_secrets_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMREC_REDIS_PASSWORD", "hunter2")
    monkeypatch.setenv("STREAMREC_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("STREAMREC_KAFKA_SASL_PASSWORD", "s3cret")
    s = load_settings()
    assert "hunter2" not in repr(s) and "s3cret" not in repr(s)
    assert s.redis_password is not None and s.redis_password.get_secret_value() == "hunter2"
    assert s.kafka_common()["sasl.password"] == "s3cret"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("STREAMREC_KAFKA_BOOTSTRAP", "nohost", "kafka_bootstrap"),
        ("STREAMREC_REDIS_URL", "http://x", "redis_url"),
        ("STREAMREC_TOP_N", "0", "top_n"),
        ("STREAMREC_REDIS_PREFIX", "a:b", "redis_prefix"),
        ("STREAMREC_NOT_A_SETTING", "1", None),
    ],
)
def test_bad_values_are_one_line_config_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str | None
) -> None:
    monkeypatch.setenv(name, value)
    if message is None:  # unknown env vars are ignored (other tools share the prefix space)
        load_settings()
        return
    with pytest.raises(ConfigError, match=message) as info:
        load_settings()
    assert "\n" not in str(info.value)


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMREC_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="no such file"):
        load_settings()


def test_unknown_key_in_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("topn = 5\n")
    monkeypatch.setenv("STREAMREC_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="topn"):
        load_settings()


def test_every_field_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`STREAMREC_{name.upper()}`" in readme, f"README lacks STREAMREC_{name.upper()}"


def test_redis_address_names_the_server_without_credentials() -> None:
    def address(url: str) -> str:
        return load_settings(redis_url=url).redis_address

    assert address("redis://:hunter2@cache.internal:6380/2") == "cache.internal:6380/2"
    assert address("redis://svc:hunter2@127.0.0.1/0") == "127.0.0.1:6379/0"
    assert address("redis://127.0.0.1:6379") == "127.0.0.1:6379/0"
    assert address("unix:///run/redis.sock") == "/run/redis.sock"


def _kafka_line(log: KafkaLog, level: int, text: str) -> None:
    """What confluent-kafka calls on its ``logger`` for one librdkafka line."""
    log.log(level, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", text)


def test_kafka_log_lines_go_through_logging(caplog: pytest.LogCaptureFixture) -> None:
    assert load_settings().kafka_common()["logger"] is KAFKA_LOG
    log = KafkaLog("test.kafka")
    log.REPEAT_S = 0.2
    caplog.set_level(logging.DEBUG, logger="test.kafka")
    refused = "127.0.0.1:9/bootstrap: Connect to ipv4#127.0.0.1:9 failed: Connection refused"
    for ms in range(5):  # librdkafka's line per attempt: only the suffix changes
        _kafka_line(log, logging.ERROR, f"{refused} (after {ms}ms in state CONNECT)")
    _kafka_line(log, logging.ERROR, "SASL authentication error: Authentication failed")
    _kafka_line(log, logging.ERROR, "Topic authorization failed")
    got = [(r.levelno, r.getMessage()) for r in caplog.records]
    # Unreachable: DEBUG (whoever waits says so, naming the broker); repeats dropped. A refused
    # login too: the first contact's AuthError says it once (exit 7), the worker's outage log
    # names it (streamrec.connect.KAFKA_REFUSALS).
    assert got[0][0] == logging.DEBUG and "Connection refused" in got[0][1]
    assert got[1] == (
        logging.DEBUG,
        "FAIL [rdkafka#consumer-1] SASL authentication error: Authentication failed",
    )
    assert got[2] == (logging.ERROR, "FAIL [rdkafka#consumer-1] Topic authorization failed")
    assert len(got) == 3
    time.sleep(0.25)
    _kafka_line(log, logging.ERROR, f"{refused} (after 9ms in state CONNECT)")
    assert caplog.records[-1].getMessage().endswith("(4 more like it in the last 0 s)")


def test_a_real_client_logs_through_the_streamrec_kafka_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """librdkafka's lines reach Python logging (so STREAMREC_LOG_FORMAT=json formats them)."""
    import json
    import socket

    from confluent_kafka import Consumer

    from streamrec.app.cli import JsonFormatter

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    s = load_settings(kafka_bootstrap=f"127.0.0.1:{port}")
    caplog.set_level(logging.DEBUG, logger="streamrec.kafka")
    consumer = Consumer({**s.kafka_common(), "group.id": "g-log"})
    try:
        consumer.subscribe(["t"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not caplog.records:
            consumer.consume(1, 0.2)
    finally:
        consumer.close()
    records = [r for r in caplog.records if r.name == "streamrec.kafka"]
    assert records and f"127.0.0.1:{port}" in records[0].getMessage()
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["logger"] == "streamrec.kafka" and line["level"] == "DEBUG"
