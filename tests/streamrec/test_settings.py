"""Settings: defaults, env vars, the optional TOML file, secrets, and one-line errors."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamrec import settings as settings_module
from streamrec.errors import ConfigError
from streamrec.settings import (
    KAFKA_LOG,
    KafkaLog,
    Settings,
    known_variables,
    load_settings,
    redact_url,
    redis_address,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("STREAMREC_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(settings_module, "_warned", set())  # each test sees its own warnings


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
        ("STREAMREC_EVENT_WEIGHTS", "like=3", "event_weights"),
        ("STREAMREC_EVENT_WEIGHTS", '{"like": "lots"}', "event_weights"),
        ("STREAMREC_REDIS_URL", "redis://h:99999/0", "redis_url"),
        ("STREAMREC_REDIS_URL", "redis://h:port/0", "redis_url"),
        ("STREAMREC_REDIS_URL", "redis://h:6379/zero", "redis_url"),
    ],
)
def test_bad_values_are_one_line_config_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str | None
) -> None:
    monkeypatch.setenv(name, value)
    if message is None:  # an unknown variable is warned about (below), not refused
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
    got = [(r.levelno, r.getMessage()) for r in caplog.records]
    # Unreachable: DEBUG (whoever waits says so, naming the broker); repeats dropped.
    assert got[0][0] == logging.DEBUG and "Connection refused" in got[0][1]
    assert got[1] == (
        logging.ERROR,
        "FAIL [rdkafka#consumer-1] SASL authentication error: Authentication failed",
    )
    assert len(got) == 2
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


# --- Secrets from files -----------------------------------------------------------------------


def test_a_setting_from_a_file_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """STREAMREC_<NAME>_FILE: the file's content (trailing newline dropped), parsed like the
    variable itself (JSON for a table)."""
    (tmp_path / "pw").write_text("hunter2\n")
    (tmp_path / "weights.json").write_text('{"like": 3}\n')
    (tmp_path / "url").write_text("redis://:s3cret@cache.internal:6380/2\n")
    monkeypatch.setenv("STREAMREC_REDIS_PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("STREAMREC_EVENT_WEIGHTS_FILE", str(tmp_path / "weights.json"))
    monkeypatch.setenv("STREAMREC_REDIS_URL_FILE", str(tmp_path / "url"))
    s = load_settings()
    assert s.redis_password is not None and s.redis_password.get_secret_value() == "hunter2"
    assert s.event_weights["like"] == 3 and s.event_weights["play"] == 1
    assert s.redis_url == "redis://:s3cret@cache.internal:6380/2"
    assert "hunter2" not in repr(s) and "s3cret" not in repr(s)


def test_file_variable_errors_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("STREAMREC_REDIS_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"STREAMREC_REDIS_PASSWORD_FILE=.*absent: cannot read"):
        load_settings()
    (tmp_path / "pw").write_text("x")
    monkeypatch.setenv("STREAMREC_REDIS_PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("STREAMREC_REDIS_PASSWORD", "y")
    with pytest.raises(ConfigError, match=r"both STREAMREC_REDIS_PASSWORD and .*_FILE"):
        load_settings()
    monkeypatch.delenv("STREAMREC_REDIS_PASSWORD")
    (tmp_path / "n").write_text("many\n")
    monkeypatch.setenv("STREAMREC_TOP_N_FILE", str(tmp_path / "n"))
    with pytest.raises(ConfigError, match=r"top_n \(STREAMREC_TOP_N_FILE=") as info:
        load_settings()
    assert "\n" not in str(info.value)


def test_a_secrets_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """STREAMREC_SECRETS_DIR: a file per setting named like its variable (a mounted Secret);
    the environment beats it, it beats the TOML file."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "STREAMREC_REDIS_PASSWORD").write_text("from-dir\n")
    (secrets / "STREAMREC_KAFKA_SASL_PASSWORD").write_text("sasl-pw")
    (secrets / "STREAMREC_TOP_N").write_text("7")
    cfg = tmp_path / "c.toml"
    cfg.write_text("top_n = 9\nbatch_max = 5\n")
    monkeypatch.setenv("STREAMREC_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("STREAMREC_CONFIG", str(cfg))
    monkeypatch.setenv("STREAMREC_KAFKA_SASL_PASSWORD", "from-env")
    s = load_settings()
    assert s.redis_password is not None and s.redis_password.get_secret_value() == "from-dir"
    assert s.kafka_sasl_password is not None
    assert s.kafka_sasl_password.get_secret_value() == "from-env"  # env beats the directory
    assert s.top_n == 7 and s.batch_max == 5  # the directory beats the file
    (secrets / "STREAMREC_TOP_N").write_text("lots")
    with pytest.raises(ConfigError, match=r"top_n .STREAMREC_SECRETS_DIR: .*STREAMREC_TOP_N"):
        load_settings()
    monkeypatch.setenv("STREAMREC_SECRETS_DIR", str(tmp_path / "none"))
    with pytest.raises(ConfigError, match="no such directory"):
        load_settings()


# --- Unknown variables --------------------------------------------------------------------------


def test_an_unknown_variable_is_warned_about_once_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("STREAMREC_TOPN", "20")
    monkeypatch.setenv("STREAMREC_ZZZ_UNRELATED", "1")
    caplog.set_level(logging.WARNING, logger="streamrec.settings")
    assert load_settings().top_n == 50  # ignored, as before: but no longer silently
    load_settings()
    lines = [r.getMessage() for r in caplog.records if r.name == "streamrec.settings"]
    assert lines == [
        "ignoring STREAMREC_TOPN: no streamrec setting has that name; did you mean "
        "STREAMREC_TOP_N?",
        "ignoring STREAMREC_ZZZ_UNRELATED: no streamrec setting has that name",
    ]


def test_known_names_come_from_the_fields(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every field, its _FILE form and the project's other variables are known: no warning."""
    known = known_variables()
    for name in Settings.model_fields:
        assert f"STREAMREC_{name.upper()}" in known
        assert f"STREAMREC_{name.upper()}_FILE" in known
    monkeypatch.setenv("STREAMREC_TOP_N", "20")
    monkeypatch.setenv("STREAMREC_TEST_SERVICES", "on")
    caplog.set_level(logging.WARNING, logger="streamrec.settings")
    load_settings()
    assert not [r for r in caplog.records if r.name == "streamrec.settings"]


# --- Passwords in URLs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@cache:6380/2", "redis://:***@cache:6380/2"),
        ("rediss://svc:hunter2@cache/0", "rediss://svc:***@cache/0"),
        ("redis://svc@cache/0", "redis://svc@cache/0"),  # a user alone is no secret
        ("redis://cache:6379/0?password=hunter2&db=1", "redis://cache:6379/0?password=***&db=1"),
        ("redis://:hun/ter@2@cache:1/0", "redis://:***@cache:1/0"),  # raw '/' and '@' in it
        ("redis://:hunter2@cache:99999/0", "redis://:***@cache:99999/0"),  # a bad port
        ("redis://u:hunter2@[::1:6379/0", "redis://u:***@[::1:6379/0"),  # unclosed [
        ("https://u:hunter2@registry/x?token=abc#f", "https://u:***@registry/x?token=***#f"),
        ("no url at all", "no url at all"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "http://:hunter2@cache:6379/0",
        "redis://:hunter2@cache:99999/0",
        "redis://:hunter2@cache:port/0",
        "redis://:hunter2@cache:6379/zero",
        "redis://u:hunter2@[::1:6379/0",
    ],
)
def test_a_malformed_url_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("STREAMREC_REDIS_URL", url)
    with pytest.raises(ConfigError, match="redis_url") as info:
        load_settings()
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)


def test_repr_and_address_hide_the_url_password() -> None:
    s = load_settings(redis_url="redis://svc:hunter2@cache.internal:6380/2")
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    assert "redis://svc:***@cache.internal:6380/2" in repr(s)
    assert redis_address(s.redis_url) == s.redis_address == "cache.internal:6380/2"
    assert redis_address("redis://:hunter2@cache:99999/0") == "redis://:***@cache:99999/0"
