"""Clients for the two services, built from settings: Redis, the one librdkafka configuration
every Kafka client takes (``kafka_config``: broker, TLS, SASL, extra settings), Kafka topic
creation (and the durability every producer adds), and reading fixed offset ranges of a
topic."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from streamrec.errors import AuthError, ConfigError, InfraError, TopicsError
from streamrec.keys import Keys
from streamrec.settings import OWN_KAFKA_KEYS, Settings, redact_url

log = logging.getLogger(__name__)

CREATE_TIMEOUT_S = 30.0  # a broker that answers may still take a while to create topics


#: Keys whose values are secrets (``redact`` hides them): librdkafka's passwords, secrets,
#: inline PEM keys and JAAS-like configs.
_SECRET_KEY = re.compile(r"password|secret|\.pem$|oauthbearer\.config|jaas|token", re.I)
#: librdkafka's words for a TLS handshake that failed (it reports them as _TRANSPORT errors).
_TLS_FAILURE = re.compile(r"SSL routines|SSL handshake|certificate", re.IGNORECASE)
#: "sasl_ssl://127.0.0.1:9093/bootstrap: " before, "(after 3ms in state AUTH_REQ)" after.
_BROKER_HEAD = re.compile(r"^\S+://\S+?: ")
_STATE_TAIL = re.compile(r"\s*\(after \d+ms in state [^)]*\)\s*$")
FIRST_CONTACT_SLICE_S = 0.5  # a refusal is told apart from silence within about this


class KafkaRefusals:
    """Authentication and TLS failures librdkafka reported (its ``error_cb``), per bootstrap.

    librdkafka treats a refused login like a broker that is down: it retries, and a metadata
    request just times out. Its error callback, though, says why (``_AUTHENTICATION``, or a
    ``_TRANSPORT`` error from the TLS handshake); ``kafka_config`` gives every client one that
    records it here, and ``kafka_metadata`` turns it into ``AuthError`` (exit 7) at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[float, str]] = {}

    def callback(self, bootstrap: str) -> Callable[[KafkaError], None]:
        """The ``error_cb`` of a client of ``bootstrap``. With one set, librdkafka no longer
        logs its errors itself, so every error also goes to ``KAFKA_LOG`` as it would have
        (an ERROR line, demoted to DEBUG there when it only says a broker is unreachable or
        refused us, and never repeated within its window)."""
        from streamrec.settings import KAFKA_LOG

        def on_error(err: KafkaError) -> None:
            code, text = err.code(), err.str()
            KAFKA_LOG.log(logging.ERROR, "ERROR %s: %s", err.name(), text)
            if code == KafkaError._AUTHENTICATION or (
                code in (KafkaError._SSL, KafkaError._TRANSPORT) and _TLS_FAILURE.search(text)
            ):
                reason = _STATE_TAIL.sub("", _BROKER_HEAD.sub("", text))
                with self._lock:
                    self._latest[bootstrap] = (time.monotonic(), reason)

        return on_error

    def since(self, bootstrap: str, started: float) -> str | None:
        """The latest refusal at ``bootstrap`` reported after ``started`` (monotonic)."""
        with self._lock:
            when, reason = self._latest.get(bootstrap, (0.0, ""))
        return reason if reason and when >= started else None


#: The one ``KafkaRefusals`` of the process (every client's ``error_cb``).
KAFKA_REFUSALS = KafkaRefusals()


def kafka_config(settings: Settings) -> dict[str, Any]:
    """librdkafka settings shared by every client the project makes (worker consumer, dead
    letters, producers, admin, the retrain reader, the web service, model announcements: all
    through ``Settings.kafka_common``).

    The broker, ``security.protocol`` (``kafka_security_protocol``; by default SASL_PLAINTEXT
    when a SASL user is set, else PLAINTEXT), SASL (mechanism, user, password), TLS (CA file,
    client certificate and key for mTLS, the key's password, hostname check), then
    ``kafka_extra`` as given (bools as ``true``/``false``), and librdkafka's log lines routed
    through Python ``logging`` (``KAFKA_LOG``). ``ConfigError`` (one line, naming the setting)
    for a combination that cannot work: a certificate without its key, a file that is not
    there, SASL settings on a protocol without SASL or the reverse. Secrets are in the dict
    (librdkafka needs them); log it only through ``redact``.
    """
    from streamrec.settings import KAFKA_LOG

    protocol = settings.kafka_security_protocol or (
        "SASL_PLAINTEXT" if settings.kafka_sasl_username else "PLAINTEXT"
    )
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": protocol,
        "logger": KAFKA_LOG,
        "error_cb": KAFKA_REFUSALS.callback(settings.kafka_bootstrap),
    }
    sasl = protocol.startswith("SASL_")
    if sasl:
        if not settings.kafka_sasl_username:
            raise ConfigError(f"kafka_security_protocol {protocol} needs kafka_sasl_username")
        password = settings.kafka_sasl_password
        conf.update(
            {
                "sasl.mechanism": settings.kafka_sasl_mechanism,
                "sasl.username": settings.kafka_sasl_username,
                "sasl.password": password.get_secret_value() if password else "",
            }
        )
    elif settings.kafka_sasl_username:
        raise ConfigError(
            f"kafka_sasl_username is set but kafka_security_protocol is {protocol}: "
            "use SASL_SSL or SASL_PLAINTEXT, or unset the user"
        )
    tls = protocol in ("SSL", "SASL_SSL")
    files = {
        "ssl.ca.location": ("kafka_ssl_ca_file", settings.kafka_ssl_ca_file),
        "ssl.certificate.location": ("kafka_ssl_cert_file", settings.kafka_ssl_cert_file),
        "ssl.key.location": ("kafka_ssl_key_file", settings.kafka_ssl_key_file),
    }
    for key, (name, path) in files.items():
        if path is None:
            continue
        if not tls:
            raise ConfigError(f"{name} is set but kafka_security_protocol is {protocol}, no TLS")
        if not path.is_file():
            raise ConfigError(f"{name}={path}: no such file")
        conf[key] = str(path)
    if (settings.kafka_ssl_cert_file is None) != (settings.kafka_ssl_key_file is None):
        raise ConfigError("kafka_ssl_cert_file and kafka_ssl_key_file go together (mTLS)")
    if tls:
        if settings.kafka_ssl_key_password is not None:
            conf["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
        conf["ssl.endpoint.identification.algorithm"] = (
            "https" if settings.kafka_ssl_verify_hostname else "none"
        )
    for key, value in settings.kafka_extra.items():
        if key in OWN_KAFKA_KEYS:  # the settings' validator refuses them; a copy may not
            raise ConfigError(f"kafka_extra: set {key} with {OWN_KAFKA_KEYS[key]}")
        conf[key] = ("true" if value else "false") if isinstance(value, bool) else value
    return conf


def redact(conf: Mapping[str, Any]) -> dict[str, Any]:
    """``conf`` fit for a log line or an error message: every secret value (passwords,
    secrets, inline keys) replaced by ``***``, the logger object by its name."""
    out: dict[str, Any] = {}
    for key, value in conf.items():
        if _SECRET_KEY.search(key):
            out[key] = "***"
        elif callable(value) or key == "logger":
            out[key] = getattr(getattr(value, "logger", value), "name", type(value).__name__)
        else:
            out[key] = value
    return out


def redis_client(settings: Settings, timeout_s: float = 5.0) -> redis.Redis:
    """A Redis client (bytes in, bytes out) for ``settings.redis_url``; checked with PING.

    With ``settings.redis_cluster``, redis-py's ``RedisCluster`` (``redis_url`` names any one
    node; the others are found from it), typed as ``redis.Redis`` for callers: both take the
    same commands, except that a multi-key command must stay in one slot there (readers use
    ``streamrec.keys.mget``), and the worker's sink routes its transactions per slot itself.

    A failed command is retried once, on a fresh connection (a pooled one a restart left
    dead), then raised: redis-py's default of ten retries with growing sleeps would hide an
    outage for seconds inside every call. Whoever waits an outage out does it with its own
    backoff (the worker, ``streamrec.worker.retry``); a command says so in one line.
    """
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    common: dict[str, Any] = {
        "password": password,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "health_check_interval": 30,
        "retry": Retry(ExponentialWithJitterBackoff(cap=0.1, base=0.01), 1),
    }
    client: redis.Redis
    try:
        if settings.redis_cluster:
            client = cast(redis.Redis, _cluster(settings, common))
        else:
            client = redis.Redis.from_url(settings.redis_url, **common)
    except (TypeError, ValueError) as exc:  # e.g. an option redis-py does not know: ?foo=1
        raise _bad_url(settings, exc) from None
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        raise AuthError(
            f"Redis at {settings.redis_address} refused the credentials ({exc}); check "
            "STREAMREC_REDIS_PASSWORD or the user and password in STREAMREC_REDIS_URL"
        ) from None
    except (TypeError, ValueError) as exc:  # an option of the URL refused when connecting
        raise _bad_url(settings, exc) from None
    except (redis.RedisError, RedisClusterException) as exc:
        raise InfraError(
            f"Redis at {settings.redis_address} does not answer ({exc}); "
            "start it with: streamrec infra up"
            + (" --redis-cluster" if settings.redis_cluster else "")
        ) from None
    return client


def _cluster(settings: Settings, common: dict[str, Any]) -> RedisCluster:
    """redis-py's cluster client from one node's URL (cluster mode has database 0 only)."""
    if settings.redis_url.startswith("unix"):
        raise InfraError("redis_cluster needs a redis:// or rediss:// URL, not a socket")
    # On a failover, the client re-reads the slots from a node that answers; while no node
    # serves a slot yet, commands fail (ClusterDownError), and the worker waits that out.
    return RedisCluster.from_url(
        settings.redis_url.rsplit("/", 1)[0] if settings.redis_url.count("/") > 2
        else settings.redis_url,
        require_full_coverage=False,
        **common,
    )  # fmt: skip


def _bad_url(settings: Settings, exc: Exception) -> ConfigError:
    return ConfigError(f"bad setting redis_url {redact_url(settings.redis_url)!r}: {exc}")


def kafka_metadata(
    client: Any, settings: Settings, topic: str | None = None, timeout_s: float | None = None
) -> Any:
    """A client's first contact with the cluster: its metadata (of ``topic``, or of all
    topics), asked for in short slices until ``timeout_s`` (``settings.kafka_timeout_s`` by
    default).

    ``AuthError`` as soon as the broker refused the credentials or the TLS handshake
    (``KafkaRefusals``: usually within a second), one line with librdkafka's reason;
    ``InfraError`` naming the broker when nothing answered in time. ``client``: a Producer or
    AdminClient built from ``kafka_config``, or a Consumer not yet assigned (its ``poll(0)``
    serves the error callback here, and must not hand back a message).
    """
    timeout = settings.kafka_timeout_s if timeout_s is None else timeout_s
    started = time.monotonic()
    deadline = started + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return client.list_topics(topic, timeout=max(0.05, min(FIRST_CONTACT_SLICE_S, left)))
        except KafkaException as exc:
            client.poll(0)  # serves the error callback (and librdkafka's log lines)
            refused = KAFKA_REFUSALS.since(settings.kafka_bootstrap, started - 5.0)
            if refused:
                raise AuthError(
                    f"Kafka at {settings.kafka_bootstrap} refused the connection ({refused}); "
                    "check kafka_security_protocol, kafka_sasl_* and kafka_ssl_*"
                ) from None
            if time.monotonic() >= deadline:
                raise InfraError(
                    f"Kafka at {settings.kafka_bootstrap} does not answer within {timeout:g} s "
                    f"({exc.args[0].str()}); start it with: streamrec infra up"
                ) from None


def _metadata(admin: AdminClient, settings: Settings, timeout_s: float | None) -> Any:
    """The cluster's metadata (brokers, topics); ``InfraError`` naming the broker when it does
    not answer within ``timeout_s`` (``settings.kafka_timeout_s`` by default), ``AuthError``
    when it refuses the credentials or TLS."""
    return kafka_metadata(admin, settings, None, timeout_s)


def topic_specs(settings: Settings) -> dict[str, int]:
    """Topic name -> partitions for every topic streamrec uses."""
    return {
        settings.topic_events: settings.topic_events_partitions,
        settings.topic_dlq: 1,
        settings.topic_models: 1,
        settings.topic_items: 1,
    }


#: What every producer streamrec makes adds to its configuration: an event is acknowledged
#: only once every in-sync replica has it (with ``min.insync.replicas`` 2 of 3, a broker lost
#: right after the acknowledgement loses nothing), and the broker drops the duplicates of
#: retried sends, keeping each partition's order (librdkafka would turn ``acks`` to ``all``
#: with idempotence anyway; written out so no override can weaken it unnoticed).
DURABLE_PRODUCER: dict[str, Any] = {"acks": "all", "enable.idempotence": True}


def replication_factor(setting: int | None, brokers: int) -> int:
    """The replication factor of the topics streamrec creates on a cluster of ``brokers``:
    ``setting`` (``topic_replication_factor``) when given, else 3 with 3 or more brokers
    and 1 below (one broker cannot hold two copies; two would stop writes, at
    ``min.insync.replicas`` 2, as soon as either is down)."""
    if setting is not None:
        return setting
    return 3 if brokers >= 3 else 1


def cluster_brokers(meta: Any) -> set[int]:
    """Ids of the brokers a cluster's metadata (``list_topics()``) knows of: the live ones and
    every replica's. A dead broker is missing from the first, not from the second: one broker
    down must not make streamrec create a topic with one copy, or accept one."""
    replicas = {r for t in meta.topics.values() for p in t.partitions.values() for r in p.replicas}
    return set(meta.brokers) | replicas


def min_insync(replication: int) -> int:
    """``min.insync.replicas`` for a topic of ``replication`` copies: 2 from 3 copies up (an
    acknowledged event is on two brokers, and one broker may be down), else 1."""
    return 2 if replication >= 3 else 1


def topic_configs(settings: Settings, replication: int = 1) -> dict[str, dict[str, str]]:
    """Topic name -> the configs streamrec creates it with: ``min.insync.replicas`` for
    ``replication`` copies (``min_insync``) on every topic, and the events topic's retention
    (``topic_events_retention_s``), the bound on what a rebuild after a loss of Redis can
    restore (``streamrec/worker/rebuild.py``)."""
    retention = settings.topic_events_retention_s
    isr = {"min.insync.replicas": str(min_insync(replication))}
    return {
        settings.topic_events: {
            **isr,
            "retention.ms": str(retention * 1000 if retention > 0 else -1),
        },
        settings.topic_dlq: dict(isr),
        settings.topic_models: dict(isr),
        # The catalog: the latest record per item is its state, kept for ever (compaction);
        # one partition keeps every item's records in order for every reader.
        settings.topic_items: {**isr, "cleanup.policy": "compact"},
    }


def ensure_topics(
    settings: Settings,
    specs: dict[str, int] | None = None,
    timeout_s: float | None = None,
    *,
    create: bool | None = None,
) -> list[str]:
    """Create missing topics (``replication_factor`` copies for the brokers the cluster
    lists, configs of ``topic_configs``); returns those created.

    ``create`` (default ``settings.create_topics``) false: nothing is created, and a missing
    topic raises ``TopicsError`` saying to run ``streamrec topics create``, the one command
    that passes ``create=True`` in production. Existing topics are left as they are; an
    events topic that keeps events for less than ``topic_events_retention_s`` is logged (a
    rebuild restores only what it still holds). Waits, bounded, for the broker's first answer
    (``timeout_s``, else ``settings.kafka_timeout_s``: ``InfraError`` naming it), then until
    each new topic has a leader (``timeout_s``, else ``CREATE_TIMEOUT_S``).
    """
    specs = specs if specs is not None else topic_specs(settings)
    create = settings.create_topics if create is None else create
    admin = AdminClient(settings.kafka_common())
    meta = _metadata(admin, settings, timeout_s)
    existing = set(meta.topics)
    timeout_s = CREATE_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    absent = [t for t in specs if t not in existing]
    if absent and not create:
        why = "" if settings.create_topics else " (STREAMREC_CREATE_TOPICS is false)"
        raise TopicsError(
            f"topic(s) {', '.join(absent)} missing at {settings.kafka_bootstrap}{why}; "
            "create them with: streamrec topics create"
        )
    replicas = replication_factor(settings.topic_replication_factor, len(cluster_brokers(meta)))
    if absent and replicas > len(meta.brokers):
        raise InfraError(
            f"cannot create {', '.join(absent)} with {replicas} replicas: Kafka at "
            f"{settings.kafka_bootstrap} has {len(meta.brokers)} broker(s) up "
            "(STREAMREC_TOPIC_REPLICATION_FACTOR); start the others, or lower it"
        )
    configs = topic_configs(settings, replicas)
    missing = [
        NewTopic(t, num_partitions=p, replication_factor=replicas, config=configs.get(t, {}))
        for t, p in specs.items()
        if t not in existing
    ]
    if settings.topic_events in existing and settings.topic_events in specs:
        _check_retention(admin, settings, timeout_s)
    created: list[str] = []
    if missing:
        for topic, fut in admin.create_topics(missing, operation_timeout=timeout_s).items():
            try:
                fut.result(timeout=timeout_s)
                created.append(topic)
                log.info("created topic %s (%d replicas)", topic, replicas)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise InfraError(f"cannot create topic {topic}: {exc}") from None
    while created:
        meta = admin.list_topics(timeout=max(0.1, deadline - time.monotonic()))
        ready = [
            t
            for t in created
            if t in meta.topics
            and not meta.topics[t].error
            and all(p.leader >= 0 for p in meta.topics[t].partitions.values())
        ]
        if len(ready) == len(created):
            break
        if time.monotonic() > deadline:
            raise InfraError(f"topics {created} have no leader after {timeout_s:.0f}s")
        time.sleep(0.1)
    return created


def _check_retention(admin: AdminClient, settings: Settings, timeout_s: float) -> None:
    """Warn when the existing events topic keeps events for less than the setting says."""
    topic = settings.topic_events
    try:
        res = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
        entries = next(iter(res.values())).result(timeout=timeout_s)
        kept_ms = int(entries["retention.ms"].value)
    except (KafkaException, KeyError, ValueError, TypeError) as exc:
        log.debug("could not read the retention of %s: %s", topic, exc)
        return
    wanted = settings.topic_events_retention_s
    if kept_ms >= 0 and (wanted < 0 or kept_ms < wanted * 1000):
        log.warning(
            "topic %s keeps events for %.1f days, less than topic_events_retention_s (%s): a "
            "rebuild after a loss of Redis can restore only that much of each history "
            "(streamrec does not change existing topics)",
            topic,
            kept_ms / 86_400_000,
            "forever" if wanted < 0 else f"{wanted / 86_400:.1f} days",
        )


def blocked_items(client: redis.Redis, keys: Keys) -> set[str]:
    """The operators' deny set ``<p>:blocked`` as strings."""
    return {b.decode() if isinstance(b, bytes) else b for b in client.smembers(keys.blocked)}


def read_ranges(
    settings: Settings,
    topic: str,
    ranges: Mapping[int, tuple[int, int]],
    group_id: str,
    timeout_s: float,
) -> Iterator[Message]:
    """Every message at offsets ``[start, end)`` of each partition in ``ranges`` (partition ->
    (start, end)), partitions interleaved as the broker serves them.

    A throwaway consumer: it assigns, reads and closes, committing nothing (``group_id`` only
    names it). A partition is done at ``end`` or at its end of log, whichever comes first:
    transaction markers can leave the last message short of ``end``, and a start that
    retention has deleted reads from the earliest offset left. Raises ``InfraError`` when
    ``timeout_s`` passes without a message of the ranges: a bound on a stall, not on the whole
    read, which grows with the window (25M events take ~6 minutes here).
    """
    todo = {p: (start, end) for p, (start, end) in ranges.items() if end > start}
    if not todo:
        return
    consumer = Consumer(
        {
            **settings.kafka_common(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in todo.items()])
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise InfraError(
                    f"reading {topic}: no message for {timeout_s:.0f} s, partitions left "
                    f"(partition: (start, end)) {todo}"
                )
            read = False
            for msg in consumer.consume(num_messages=5000, timeout=0.5):
                p = msg.partition()
                if p is None or p not in todo:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        todo.pop(p, None)
                    else:  # librdkafka retries on its own; the deadline bounds the stall
                        log.warning("reading %s[%d]: %s", topic, p, err)
                    continue
                offset = msg.offset() or 0
                end = todo[p][1]
                read = True
                if offset < end:
                    yield msg
                if offset + 1 >= end:
                    todo.pop(p, None)
            if read:
                deadline = time.monotonic() + timeout_s
    finally:
        consumer.close()
