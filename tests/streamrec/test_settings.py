"""Settings: defaults, env vars, the optional TOML file, secrets, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streamrec.errors import ConfigError
from streamrec.settings import Settings, load_settings


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
