"""One frozen settings object per process.

Values come from, highest priority first: keyword arguments (the CLI's flags), environment
variables named ``STREAMREC_<FIELD>`` (upper case), an optional TOML file named by
``STREAMREC_CONFIG`` (top-level keys are field names), then the defaults documented below.
Secrets are ``SecretStr`` so they never show up in logs or ``repr``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from streamrec.errors import ConfigError
from streamrec.events import (
    EVENT_TYPES,
    MAX_CONTEXT_BYTES,
    MAX_CONTEXT_ENTRIES,
    MAX_MESSAGE_BYTES,
    Limits,
)
from streamrec.feedback import DEFAULT_WEIGHTS

CONFIG_ENV = "STREAMREC_CONFIG"


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "streamrec"


class Settings(BaseSettings):
    """Every knob of streamrec, with its default. Immutable once built."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMREC_", frozen=True, extra="forbid", validate_default=True
    )

    # --- Kafka -----------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="host:port of the broker (the local broker listens here)"
    )
    kafka_controller_port: int = Field(
        9093, description="KRaft controller port of the local broker"
    )
    kafka_version: str = Field("4.1.1", description="Apache Kafka version the local broker runs")
    kafka_heap: str = Field("768m", description="JVM heap (-Xmx) for the local broker")
    kafka_sasl_username: str | None = Field(None, description="SASL/PLAIN user; None = PLAINTEXT")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL/PLAIN password")
    topic_events: str = Field("streamrec.events", description="interaction events (key = user_id)")
    topic_events_partitions: int = Field(6, ge=1, description="partitions when creating events")
    topic_dlq: str = Field("streamrec.events.dlq", description="undecodable events + reason header")
    topic_models: str = Field("streamrec.models", description="model announcements")
    consumer_group: str = Field("streamrec-worker", description="worker consumer group id")
    instance_id: str | None = Field(
        None,
        description="static group membership (e.g. the pod name): a restarted worker gets its "
        "partitions back at once instead of after the session timeout",
    )
    session_timeout_ms: int = Field(
        45_000,
        ge=6_000,
        description="consumer session timeout: how soon a dead worker's "
        "partitions move to the others",
    )
    kafka_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="longest wait for the broker in one step: a producer's or command's first "
        "contact, a topic check or creation, the worker's last commit and close at stop; with "
        "Kafka down, a command ends (one line, exit 3) after about this long",
    )
    delivery_timeout_s: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="how long a running producer keeps retrying an event the broker has not "
        "acknowledged (librdkafka's message.timeout.ms) before counting it failed: a broker "
        "restart shorter than this loses no event; a producer started while the broker is "
        "down still fails within kafka_timeout_s",
    )

    # --- Redis -----------------------------------------------------------------------------
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis server URL")
    redis_password: SecretStr | None = Field(None, description="overrides any password in the URL")
    redis_prefix: str = Field("streamrec", description="first segment of every key")
    redis_cluster: bool = Field(
        False,
        description="redis_url is one node of a Redis Cluster: every client (worker, publisher, "
        "web API, commands) uses redis-py's cluster client, and streamrec infra up starts a "
        "local cluster of 6 nodes on the ports from redis_url's on (see Running on Redis Cluster)",
    )
    recs_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="TTL of streamrec:recs:<user_id>")
    history_ttl_s: int = Field(90 * 24 * 3600, ge=1, description="TTL of a user's history hash")
    accept_eviction: bool = Field(
        False,
        description="let the worker run on a Redis whose maxmemory-policy can evict its state "
        "(allkeys-*, volatile-*); false = it refuses to start, saying what to set",
    )

    # --- Recommendations -------------------------------------------------------------------
    top_n: int = Field(50, ge=1, le=1000, description="items per list")
    history_max: int = Field(
        500, ge=1, description="most history items per user in the solve (strongest first)"
    )

    # --- Feedback (shared by worker and trainer) --------------------------------------------
    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        description="weight per event type, as JSON (play 1, click 0.5, view 0.25, like 2, "
        "purchase 3, rating 1 x (value - 2.5), skip -0.5 if quick, dislike -2)",
    )
    half_life_days: float = Field(
        60.0, ge=0, description="feedback loses half its weight per this much event time; 0 = off"
    )
    dedup_window: int = Field(
        256, ge=0, description="recent event_ids remembered per user to drop duplicates"
    )

    # --- Bad messages (the worker dead-letters an event past one; README "Bad messages") ----
    max_message_bytes: int = Field(
        MAX_MESSAGE_BYTES,
        ge=1024,
        description="largest message value the worker decodes, in bytes; a larger one is "
        "dead-lettered unparsed (the default holds any event within the other bounds, Avro "
        "or JSON)",
    )
    max_context_entries: int = Field(
        MAX_CONTEXT_ENTRIES, ge=0, description="most entries of an event's context map"
    )
    max_context_bytes: int = Field(
        MAX_CONTEXT_BYTES,
        ge=0,
        description="most bytes of an event's context map: its keys and values in UTF-8",
    )

    # --- Worker ----------------------------------------------------------------------------
    batch_max: int = Field(1000, ge=1, description="most events taken per poll")
    poll_timeout_s: float = Field(
        0.05,
        gt=0,
        le=10,
        description="longest wait for a message when none is waiting (a batch is whatever "
        "arrived while the last one was processed; this only paces an idle loop)",
    )
    batch_linger_s: float = Field(
        0.0,
        ge=0,
        le=10,
        description="longest wait for more messages once a batch has fewer than batch_max: "
        "fewer, larger batches (less CPU per event at a few thousand events/s) for up to this "
        "much more latency; 0 = a batch is what arrived while the last one was processed",
    )
    commit_interval_s: float = Field(
        1.0,
        ge=0,
        le=60,
        description="Kafka offsets are committed at most this often (and when partitions are "
        "revoked or the worker stops); Redis holds the exact applied offsets, so a crash only "
        "re-reads, and skips, up to this much",
    )
    model_path: Path | None = Field(
        None, description="model directory; None = the one the streamrec:model pointer names"
    )
    metrics_bind: str = Field(
        "127.0.0.1:9108", description="host:port of /metrics and /healthz; empty = off"
    )
    retry_backoff_max_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="while Redis or Kafka is unreachable, the worker's longest wait between "
        "two attempts (the wait doubles from 0.1 s up to this); so also how late, at most, "
        "it notices the service is back",
    )
    outage_log_interval_s: float = Field(
        30.0,
        gt=0,
        description="while Redis or Kafka is unreachable, the worker logs that it is still "
        "waiting at most this often (not once per attempt)",
    )

    log_format: Literal["text", "json"] = Field(
        "text", description="stderr log lines: text, or one JSON object per line"
    )

    # --- Local services and files ----------------------------------------------------------
    home: Path = Field(
        default_factory=_default_home,
        description="Kafka jars cache, broker data, logs ($XDG_CACHE_HOME/streamrec)",
    )
    allow_apt: bool = Field(True, description="infra may apt-get install redis-server")

    # --- State recovery (README "Losing Redis") --------------------------------------------
    topic_events_retention_s: int = Field(
        90 * 24 * 3600,
        ge=-1,
        description="retention of the events topic when streamrec creates it (retention.ms; "
        "-1 = forever): the bound on what a rebuild after a loss of Redis can restore, so keep "
        "it no shorter than history_ttl_s (the default equals it)",
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        host, _, port = value.split(",")[0].rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port, got {value!r}")
        return value

    @field_validator("event_weights")
    @classmethod
    def _check_weights(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(EVENT_TYPES)
        if unknown:
            raise ValueError(f"unknown event type(s) {sorted(unknown)}; known: {EVENT_TYPES}")
        return {**DEFAULT_WEIGHTS, **value}

    @field_validator("metrics_bind")
    @classmethod
    def _check_bind(cls, value: str) -> str:
        if value:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port or empty, got {value!r}")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"expected redis://host:port/db, got {value!r}")
        return value

    @field_validator("topic_events_retention_s")
    @classmethod
    def _check_retention(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 would delete events at once; -1 keeps them forever")
        return value

    @field_validator("redis_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        # No braces: the internal keys' Redis Cluster hash tag must be their first "{...}".
        if not value or any(c in ":{}" or c.isspace() for c in value):
            raise ValueError("prefix must be non-empty, without ':', '{', '}' or spaces")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_ENV)
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)

    # --- Derived values --------------------------------------------------------------------
    @property
    def half_life_ms(self) -> float | None:
        return self.half_life_days * 86_400_000 if self.half_life_days > 0 else None

    @property
    def event_limits(self) -> Limits:
        """What ``streamrec.events.decode`` accepts in this process."""
        return Limits(self.max_message_bytes, self.max_context_entries, self.max_context_bytes)

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rpartition(":")[2])

    @property
    def redis_address(self) -> str:
        """``host:port/db`` of ``redis_url`` without credentials: what logs and errors name."""
        url = urlsplit(self.redis_url)
        if url.scheme == "unix":
            return url.path
        host = url.hostname or "localhost"
        return f"{host}:{url.port or 6379}{url.path if url.path not in ('', '/') else '/0'}"

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka settings shared by every client: the broker, SASL, and its log lines
        routed through Python ``logging`` (``KAFKA_LOG``), so they share the process's format
        (``log_format``) and level."""
        conf: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap, "logger": KAFKA_LOG}
        if self.kafka_sasl_username:
            conf.update(
                {
                    "security.protocol": "SASL_PLAINTEXT",
                    "sasl.mechanisms": "PLAIN",
                    "sasl.username": self.kafka_sasl_username,
                    "sasl.password": (
                        self.kafka_sasl_password.get_secret_value()
                        if self.kafka_sasl_password
                        else ""
                    ),
                }
            )
        return conf


class KafkaLog:
    """librdkafka's log lines as records of the ``streamrec.kafka`` logger.

    Given to every client as its ``logger`` (``Settings.kafka_common``); confluent-kafka calls
    ``log(level, "%s [%s] %s", facility, client, text)`` from the thread that polls. librdkafka
    logs a line per failed connection attempt, several a second while a broker is down; those
    lines ("Connect to ... failed", "Disconnected", "brokers are down", ...) go at DEBUG,
    since whoever waits for the broker says so once, naming it (the worker's outage log, a
    command's one-line error). Any other line repeated within ``REPEAT_S`` is dropped and
    counted; the count is added to the next one let through.
    """

    REPEAT_S = 30.0
    _UNREACHABLE = re.compile(
        r"Connect to .* failed|Disconnected|brokers are down|Failed to resolve|timed out"
        r"|Connection refused|Connection reset|Broken pipe|Receive failed|Send failed",
        re.IGNORECASE,
    )
    # The variable tail of a broker error: "(after 12ms in state UP, 3 identical error(s) ...)"
    _TAIL = re.compile(r"\s*\(after \d+ms in state [^)]*\)\s*$")

    def __init__(self, name: str = "streamrec.kafka") -> None:
        self.logger = logging.getLogger(name)
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[float, int]] = {}  # line -> (when let through, dropped)

    def log(self, level: int, fmt: str, *args: object) -> None:
        text = fmt % args if args else fmt
        if level > logging.DEBUG and self._UNREACHABLE.search(text):
            level = logging.DEBUG
        if not self.logger.isEnabledFor(level):
            return
        key = self._TAIL.sub("", text)
        now = time.monotonic()
        with self._lock:
            last, dropped = self._seen.get(key, (-self.REPEAT_S, 0))
            if now - last < self.REPEAT_S:
                self._seen[key] = (last, dropped + 1)
                return
            if len(self._seen) > 1000:  # lines carry ids and offsets: keep the memory bounded
                self._seen.clear()
            self._seen[key] = (now, 0)
        if dropped:
            text += f" ({dropped} more like it in the last {self.REPEAT_S:.0f} s)"
        self.logger.log(level, "%s", text)


#: The one ``KafkaLog`` every client of the process shares (``Settings.kafka_common``).
KAFKA_LOG = KafkaLog()


def load_settings(**overrides: Any) -> Settings:
    """Build the process's settings; a bad value raises ConfigError with one readable line."""
    from pydantic import ValidationError

    path = os.environ.get(CONFIG_ENV)
    if path and not Path(path).is_file():
        raise ConfigError(f"{CONFIG_ENV}={path}: no such file")
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigError(f"bad setting {field}: {first['msg']}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{CONFIG_ENV}={path}: {exc}") from None
