"""One frozen settings object per process.

Values come from, highest priority first: keyword arguments (the CLI's flags), environment
variables named ``STREAMREC_<FIELD>`` (upper case), files named by ``STREAMREC_<FIELD>_FILE``
(the file holds the value: Docker's and Kubernetes' way of passing secrets), files in the
directory ``STREAMREC_SECRETS_DIR`` (one per setting, named like its variable, e.g.
``STREAMREC_REDIS_PASSWORD``: a mounted Kubernetes Secret), an optional TOML file named by
``STREAMREC_CONFIG`` (top-level keys are field names), then the defaults documented below.
Secrets are ``SecretStr`` so they never show up in logs or ``repr``; a URL that may carry a
password is printed only through ``redact_url`` (or ``Settings.redis_address``).

``load_settings`` turns every bad value into one ``ConfigError`` line naming the setting and
warns once about a ``STREAMREC_*`` variable that is no setting (a typo such as
``STREAMREC_TOPN`` would otherwise be ignored), suggesting the closest name. The known names
are the model's fields, so a new field needs no list kept by hand.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    SettingsError,
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

ENV_PREFIX = "STREAMREC_"
CONFIG_ENV = "STREAMREC_CONFIG"
#: A directory of files, one per setting, each named like its variable (a mounted Secret).
SECRETS_DIR_ENV = "STREAMREC_SECRETS_DIR"
#: ``STREAMREC_<NAME>_FILE=path``: the setting's value is that file's content.
FILE_SUFFIX = "_FILE"
#: ``STREAMREC_*`` variables the project reads that are not settings (the test harness's);
#: every setting's name comes from ``Settings.model_fields``, never from a list like this.
OTHER_VARIABLES = frozenset(
    {
        CONFIG_ENV,
        SECRETS_DIR_ENV,
        "STREAMREC_TEST_SERVICES",
        "STREAMREC_REQUIRE_BROWSER",
        "STREAMREC_ARTIFACTS",
        "STREAMREC_CHROMIUM",
    }
)

log = logging.getLogger(__name__)

_REDACTED = "***"
# A query parameter whose value is a credential (redis-py reads ?password=...).
_SECRET_PARAM = re.compile(r"pass|secret|token|key|auth|credential", re.IGNORECASE)


def redis_address(url: str) -> str:
    """``host:port/db`` of a Redis URL (a unix socket's path), without user or password: how
    logs and errors name the server. Never raises: a URL it cannot read is shown redacted."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return parts.path
        host = parts.hostname or "localhost"
        host = f"[{host}]" if ":" in host else host
        db = parts.path if parts.path not in ("", "/") else "/0"
        return f"{host}:{parts.port or 6379}{db}"
    except ValueError:
        return redact_url(url)


def redact_url(url: str) -> str:
    """``url`` with its password, and the value of any query parameter that looks like a
    credential (``password=``, ``token=``, ...), replaced by ``***``; the user, host, port and
    path are kept. The one way a URL is printed: it never raises, whatever ``url`` holds (a bad
    port, an unclosed ``[``), so an error message about a malformed URL cannot leak it.

    >>> redact_url("redis://svc:hunter2@cache:6380/2?password=x&db=1")
    'redis://svc:***@cache:6380/2?password=***&db=1'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    # The authority ends at the first '/', '?' or '#' after the last '@' of the part before
    # any query: a password holding a raw '/' or '?' is still cut out whole.
    head, qmark, query = rest.partition("?")
    at = head.rfind("@")
    if at >= 0:
        user, colon, _ = head[:at].partition(":")
        head = f"{user}{':' + _REDACTED if colon else ''}{head[at:]}"
    if qmark:
        query, hashmark, fragment = query.partition("#")
        params = []
        for pair in query.split("&"):
            name, eq, _ = pair.partition("=")
            params.append(f"{name}={_REDACTED}" if eq and _SECRET_PARAM.search(name) else pair)
        query = "&".join(params) + hashmark + fragment
    return f"{scheme}{sep}{head}{qmark}{query}"


#: librdkafka keys that ``kafka_config`` sets from a setting of their own (key -> that setting):
#: ``kafka_extra`` may not set them, so one value never hides behind another.
OWN_KAFKA_KEYS: dict[str, str] = {
    "bootstrap.servers": "kafka_bootstrap",
    "metadata.broker.list": "kafka_bootstrap",
    "security.protocol": "kafka_security_protocol",
    "sasl.mechanism": "kafka_sasl_mechanism",
    "sasl.mechanisms": "kafka_sasl_mechanism",
    "sasl.username": "kafka_sasl_username",
    "sasl.password": "kafka_sasl_password",
    "ssl.ca.location": "kafka_ssl_ca_file",
    "ssl.certificate.location": "kafka_ssl_cert_file",
    "ssl.key.location": "kafka_ssl_key_file",
    "ssl.key.password": "kafka_ssl_key_password",
    "ssl.endpoint.identification.algorithm": "kafka_ssl_verify_hostname",
    "logger": "log_format",
}


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
    # --- Kafka security (README "Security"; every client gets it from connect.kafka_config) ---
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = (
        Field(
            None,
            description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL; None = SASL_PLAINTEXT when "
            "kafka_sasl_username is set, else PLAINTEXT",
        )
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user; None = no SASL")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password")
    kafka_ssl_ca_file: Path | None = Field(
        None,
        description="PEM file of the CA(s) that signed the brokers' certificates; None = "
        "the system's CA store",
    )
    kafka_ssl_cert_file: Path | None = Field(
        None, description="PEM client certificate (mTLS); needs kafka_ssl_key_file"
    )
    kafka_ssl_key_file: Path | None = Field(None, description="PEM private key of the client cert")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="password of an encrypted kafka_ssl_key_file"
    )
    kafka_ssl_verify_hostname: bool = Field(
        True, description="check that the broker's certificate names the host connected to"
    )
    kafka_extra: dict[str, str | bool | int | float] = Field(
        default_factory=dict,
        repr=False,  # may hold a secret (e.g. sasl.oauthbearer.client.secret): never printed
        description="any further librdkafka setting for every client: JSON in the environment "
        '(e.g. {"socket.keepalive.enable": true}) or a [kafka_extra] table in the TOML file; '
        "a key that has a setting of its own here is refused",
    )
    topic_events: str = Field("streamrec.events", description="interaction events (key = user_id)")
    topic_events_partitions: int = Field(6, ge=1, description="partitions when creating events")
    topic_dlq: str = Field("streamrec.events.dlq", description="undecodable events + reason header")
    topic_models: str = Field("streamrec.models", description="model announcements")
    topic_items: str = Field(
        "streamrec.items",
        description="the item catalog (contract 3; key = item_id, compacted: the latest record "
        "of each item is kept, a tombstone removes it)",
    )
    # --- A Kafka cluster (README "Running on a multi-broker Kafka") ------------------------
    kafka_brokers: int = Field(
        1,
        ge=1,
        le=9,
        description="KRaft nodes (each broker and controller) `streamrec infra up` runs on "
        "loopback; node k (from 0) listens at the k-th kafka_bootstrap server, or at the "
        "first one's port + 2k, and its controller at kafka_controller_port + 2k",
    )
    topic_replication_factor: int | None = Field(
        None,
        ge=1,
        description="replication factor of the topics streamrec creates; None = 3 when the "
        "cluster has 3 or more brokers, else 1; min.insync.replicas is 2 when it is 3 or more",
    )
    create_topics: bool = Field(
        True,
        description="the worker, the producing commands, the demo and the nightly job create "
        "missing topics (dev, tests); false (production): only `streamrec topics create` does, "
        "and a worker missing one refuses to start (exit 6)",
    )
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
    ann_min_items: int = Field(
        100_000,
        ge=0,
        description="catalogues of at least this many items get their lists from the model's "
        "norm-ordered top-N index (exact, stored by the nightly job) and their similar items "
        "from an approximate IVF index (README Big catalogs); 0 = never",
    )
    ann_nprobe: int = Field(
        32,
        ge=1,
        description="IVF lists searched per item for similar items (more: higher recall, slower)",
    )
    ann_overfetch: int = Field(
        20,
        ge=0,
        description="similar-item candidates fetched beyond the list length, from which the item "
        "and blocked items are dropped; an item left short is scored exactly",
    )

    # --- New items from their content (README "New items from their content") ------------
    content_regularization: float = Field(
        10.0,
        ge=0,
        description="ridge λ of the nightly job's content->factor map (standardized features "
        "and category columns -> item factors; the bias is not penalized)",
    )
    content_min_category_count: int = Field(
        1,
        ge=1,
        description="categories carried by fewer of the model's items get no column in the "
        "content map (they are ignored when an item is mapped)",
    )
    content_similar_min_interactions: int = Field(
        5,
        ge=0,
        description="items with fewer users than this in the nightly job's data get similar "
        "items from cosine over content blended with cosine over factors; 0 = never",
    )
    content_similar_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="weight of the content cosine in those items' blend (1 - it: the factor "
        "cosine); 0 = factors only",
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

    # --- Event schemas (README "Contract 1": versions and the registry framing) -----------
    event_schemas_dir: Path | None = Field(
        None,
        description="a directory of further interaction-v<N>.avsc versions (newer producers' "
        "writer schemas) read into the package's newest by Avro's resolution rules",
    )
    schema_registry_url: str | None = Field(
        None,
        description="Confluent-compatible Schema Registry URL for values framed 00 + schema "
        "id; None = such values are dead-lettered",
    )
    schema_registry_username: str | None = Field(None, description="registry basic-auth user")
    schema_registry_password: SecretStr | None = Field(
        None, description="registry basic-auth password"
    )
    schema_registry_ca_file: Path | None = Field(
        None, description="PEM CA file for an https registry; None = the system's CA store"
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
    prefetch_messages: int = Field(
        10_000,
        ge=1,
        le=10_000_000,
        description="messages per partition the consumer fetches ahead of the worker "
        "(librdkafka queued.min.messages; its default of 100000 held up to 100 MiB more while "
        "the worker was behind, bench/soak.py)",
    )
    prefetch_kb: int = Field(
        16_384,
        ge=1,
        le=2_097_151,
        description="most kilobytes of fetched-ahead messages the consumer holds "
        "(librdkafka queued.max.messages.kbytes)",
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
    model_wait_s: float = Field(
        0.0,
        ge=0,
        description="a worker started before any model is published waits up to this long "
        "for the streamrec:model pointer (polling each second, /healthz 503 'waiting for a "
        "model' meanwhile) instead of exiting at once (exit 3); 0 = exit at once",
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

    @field_validator("kafka_extra")
    @classmethod
    def _check_kafka_extra(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = sorted(set(value) & set(OWN_KAFKA_KEYS))
        if taken:
            own = ", ".join(f"{k} ({OWN_KAFKA_KEYS[k]})" for k in taken)
            raise ValueError(f"set these with their own settings, not kafka_extra: {own}")
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
        # Checked whole here, so a bad URL is one line at start, never a traceback from the
        # client later; the message shows it redacted (it may hold a password).
        shown = redact_url(value)
        try:
            url = urlsplit(value)
            url.port  # noqa: B018 - raises ValueError for a port that is no number or too big
        except ValueError as exc:
            raise ValueError(f"{exc} in {shown!r}") from None
        if url.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"expected redis://host:port/db, got {shown!r}")
        db = url.path.strip("/")
        if url.scheme != "unix" and db and not db.isdigit():
            raise ValueError(f"the database must be a number (redis://host:port/0), got {shown!r}")
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
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            _FileVariables(settings_cls),
        ]
        secrets_dir = os.environ.get(SECRETS_DIR_ENV)
        if secrets_dir:
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=Path(secrets_dir)))
        path = os.environ.get(CONFIG_ENV)
        if path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(path)))
        return tuple(sources)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr() must not show a password inside a URL (redis_url, and any *_url field added).
        for name, value in super().__repr_args__():
            is_url = isinstance(value, str) and name is not None and name.endswith("_url")
            yield name, redact_url(value) if is_url else value

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
        return redis_address(self.redis_url)

    def kafka_common(self) -> dict[str, Any]:
        """librdkafka settings shared by every client: ``streamrec.connect.kafka_config`` (the
        broker, security, ``kafka_extra`` and the log routing); kept here so every client
        keeps asking its settings for them."""
        from streamrec.connect import kafka_config  # same layer; connect imports settings

        return kafka_config(self)


class KafkaLog:
    """librdkafka's log lines as records of the ``streamrec.kafka`` logger.

    Given to every client as its ``logger`` (``Settings.kafka_common``); confluent-kafka calls
    ``log(level, "%s [%s] %s", facility, client, text)`` from the thread that polls. librdkafka
    logs a line per failed connection attempt, several a second while a broker is down; those
    lines ("Connect to ... failed", "Disconnected", "brokers are down", ...) go at DEBUG,
    since whoever waits for the broker says so once, naming it (the worker's outage log, a
    command's one-line error), and so do a refused login's or TLS handshake's (the first
    contact's ``AuthError`` says it). Any other line repeated within ``REPEAT_S`` is dropped and
    counted; the count is added to the next one let through.
    """

    REPEAT_S = 30.0
    _UNREACHABLE = re.compile(
        r"Connect to .* failed|Disconnected|brokers are down|Failed to resolve|timed out"
        r"|Connection refused|Connection reset|Broken pipe|Receive failed|Send failed"
        # A refused login or TLS handshake: the first contact says so, once, and exits 6
        # (``streamrec.connect.kafka_metadata``); librdkafka repeats it per attempt.
        r"|SASL authentication error|SSL handshake failed|SSL routines",
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


def _file_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """Field name -> the ``STREAMREC_<NAME>_FILE`` variable set for it. A field whose own name
    ends in ``_file`` keeps its variable: ``STREAMREC_X_FILE`` is field ``x_file`` when there
    is one, and the value of ``x`` read from a file only when there is not."""
    fields = Settings.model_fields
    out = {}
    for name in fields:
        var = f"{ENV_PREFIX}{name.upper()}{FILE_SUFFIX}"
        if f"{name}{FILE_SUFFIX.lower()}" not in fields and environ.get(var):
            out[name] = var
    return out


class _FileVariables(EnvSettingsSource):
    """``STREAMREC_<NAME>_FILE=path``: the setting's value is the file's content, trailing
    newline stripped, parsed as the variable ``STREAMREC_<NAME>`` would be (JSON for a table
    such as ``event_weights``)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        values: dict[str, str | None] = {}
        for name, var in _file_variables(os.environ).items():
            path = Path(os.environ[var])
            try:
                text = path.read_text("utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ConfigError(f"{var}={path}: cannot read it ({reason})") from None
            values[f"{ENV_PREFIX}{name}".lower()] = text.rstrip("\r\n")
        return values


def known_variables() -> frozenset[str]:
    """Every ``STREAMREC_*`` name the project reads: a variable per setting (from the model's
    fields), its ``_FILE`` form, and ``OTHER_VARIABLES``."""
    names = {f"{ENV_PREFIX}{n.upper()}" for n in Settings.model_fields}
    return frozenset(names | {n + FILE_SUFFIX for n in names} | OTHER_VARIABLES)


_warned: set[str] = set()


def warn_unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Log a warning, once per process and name, for each ``STREAMREC_*`` variable that is no
    setting, with the closest known name when one is close (``STREAMREC_TOPN``: did you mean
    ``STREAMREC_TOP_N``?). Returns the unknown names."""
    env = os.environ if environ is None else environ
    known = known_variables()
    unknown = sorted(n for n in env if n.upper().startswith(ENV_PREFIX) and n.upper() not in known)
    for name in unknown:
        if name in _warned:
            continue
        _warned.add(name)
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]}?" if close else ""
        log.warning("ignoring %s: no streamrec setting has that name%s", name, hint)
    return unknown


def _source_of(field: str, environ: Mapping[str, str]) -> str:
    """Where a bad value of ``field`` most likely came from, for the error line."""
    var = f"{ENV_PREFIX}{field.upper()}"
    if var in environ:
        return var
    if _file_variables(environ).get(field):
        return f"{var}{FILE_SUFFIX}={environ[var + FILE_SUFFIX]}"
    secrets_dir = environ.get(SECRETS_DIR_ENV)
    if secrets_dir and Path(secrets_dir).is_dir():
        for f in Path(secrets_dir).iterdir():
            if f.name.upper() == var:
                return f"{SECRETS_DIR_ENV}: {f}"
    return f"{CONFIG_ENV}={environ[CONFIG_ENV]}" if environ.get(CONFIG_ENV) else var


def load_settings(**overrides: Any) -> Settings:
    """Build the process's settings; a bad value raises ConfigError with one readable line
    naming the setting and where it came from, never its value (it may be a secret).
    Warns about unknown ``STREAMREC_*`` variables (``warn_unknown_variables``)."""
    from pydantic import ValidationError

    env = dict(os.environ)
    path = env.get(CONFIG_ENV)
    if path and not Path(path).is_file():
        raise ConfigError(f"{CONFIG_ENV}={path}: no such file")
    secrets_dir = env.get(SECRETS_DIR_ENV)
    if secrets_dir and not Path(secrets_dir).is_dir():
        raise ConfigError(f"{SECRETS_DIR_ENV}={secrets_dir}: no such directory")
    for name, var in _file_variables(env).items():
        if env.get(f"{ENV_PREFIX}{name.upper()}"):
            raise ConfigError(f"both {ENV_PREFIX}{name.upper()} and {var} are set; set one")
    warn_unknown_variables(env)
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        top = str(first["loc"][0]) if first["loc"] else ""
        where = "" if top in given or top not in Settings.model_fields else _source_of(top, env)
        raise ConfigError(
            f"bad setting {field}{f' ({where})' if where else ''}: "
            + str(first["msg"]).removeprefix("Value error, ")
        ) from None
    except SettingsError as exc:
        # pydantic-settings' own parse failure (a table that is not JSON): name the setting,
        # say what was expected, and drop its 40-line traceback.
        m = re.search(r'field "([^"]+)"', str(exc))
        field = m.group(1) if m else "settings"
        cause = exc.__cause__ or exc.__context__
        why = f" ({cause})" if isinstance(cause, ValueError) else ""
        raise ConfigError(
            f"bad setting {field} ({_source_of(field, env)}): expected JSON{why}, "
            f"e.g. {_json_example(field)}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{CONFIG_ENV}={path}: {exc}") from None


def _json_example(field: str) -> str:
    """A JSON value of ``field``'s shape for its error line: one entry of its default."""
    import json

    info = Settings.model_fields.get(field)
    default = info.get_default(call_default_factory=True) if info is not None else None
    if isinstance(default, dict) and default:
        default = dict([next(iter(default.items()))])
    elif isinstance(default, list | tuple) and default:
        default = [default[0]]
    try:
        return json.dumps(default) if default else "{}"
    except TypeError:
        return "{}"
