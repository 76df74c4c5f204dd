"""Preflight, checked once when ``Worker.run`` starts: is this Redis fit to hold the worker's
state, and are its Kafka topics there and fully replicated (``preflight_topics``, at the end)?

The worker keeps in Redis what nothing else holds: each user's history (``<p>:{..}:user:*``, with
the TTL ``history_ttl_s``) and each partition's last applied offset (``<p>:{..}:applied``, no
TTL). A Redis that evicts keys when it reaches ``maxmemory`` silently drops them: an evicted
history loses that user's past events from every later list, and an evicted applied offset
makes the worker apply again what the key said was done. So the worker reads the server's
``maxmemory-policy`` and refuses to start when it can evict state:

- ``noeviction``: fine (writes fail loudly when memory is full; nothing is lost silently);
- ``allkeys-*``: can evict any key, state included: refused;
- ``volatile-*``: can evict keys with a TTL, and every history has one: refused;

unless ``settings.accept_eviction`` says to run anyway (then it warns). The policy comes from
``CONFIG GET``, or, where CONFIG is renamed or forbidden (managed services often do that),
from ``INFO memory``; when neither answers the worker says it cannot tell, and runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from streamrec.connect import cluster_brokers, ensure_topics, min_insync, replication_factor
from streamrec.errors import ConfigError, InfraError, TopicsError
from streamrec.settings import Settings

log = logging.getLogger(__name__)

SAFE = "noeviction"


def eviction_risk(policy: str) -> str | None:
    """What ``policy`` may evict of the worker's state, or None when it evicts nothing."""
    if policy == SAFE:
        return None
    if policy.startswith("allkeys-"):
        return "any key, the worker's user histories and applied offsets included"
    if policy.startswith("volatile-"):
        return "keys with a TTL, and every user history has one (STREAMREC_HISTORY_TTL_S)"
    return None  # not a policy this module knows: ``check_redis`` says it cannot tell


def read_policy(client: redis.Redis) -> tuple[str | None, str]:
    """(``maxmemory-policy``, where it was read), the policy None when the server says nothing.

    ``CONFIG GET`` first; a ``ResponseError`` there (unknown command: renamed or disabled;
    NOPERM: an ACL) falls back to ``INFO memory``'s ``maxmemory_policy``.
    """
    try:
        value = client.config_get("maxmemory-policy").get("maxmemory-policy")
        if value:
            return _text(value), "CONFIG GET"
    except redis.ResponseError as exc:
        log.debug("CONFIG GET maxmemory-policy refused (%s); trying INFO memory", exc)
    try:
        value = client.info("memory").get("maxmemory_policy")
        if value:
            return _text(value), "INFO memory"
    except redis.ResponseError as exc:
        log.debug("INFO memory refused (%s)", exc)
    return None, "neither CONFIG GET nor INFO memory answered"


def check_redis(client: redis.Redis, settings: Settings) -> str | None:
    """Refuse (``ConfigError``, one line: why and what to set) a Redis whose
    ``maxmemory-policy`` can evict the worker's state, unless ``settings.accept_eviction``.

    Returns the policy (None: it could not be read; logged, and the worker runs).
    """
    where = settings.redis_address  # never the URL: it may hold a password
    try:
        policy, source = read_policy(client)
    except redis.RedisError as exc:
        raise InfraError(f"Redis at {where}: reading its maxmemory-policy failed ({exc})") from None
    if policy is None:
        log.warning(
            "Redis at %s: cannot read maxmemory-policy (%s), so cannot check that it never "
            "evicts the worker's state; make sure it is %s",
            where,
            source,
            SAFE,
        )
        return None
    risk = eviction_risk(policy)
    if risk is None:
        if policy != SAFE:
            log.warning("Redis at %s: unknown maxmemory-policy %r (%s); streamrec needs %s",
                        where, policy, source, SAFE)  # fmt: skip
        else:
            log.info("Redis at %s: maxmemory-policy %s (%s)", where, policy, source)
        return policy
    if settings.accept_eviction:
        log.warning(
            "Redis at %s: maxmemory-policy %s can evict %s; running anyway because "
            "STREAMREC_ACCEPT_EVICTION is true (histories and applied offsets may be lost)",
            where,
            policy,
            risk,
        )
        return policy
    raise ConfigError(
        f"Redis at {where} has maxmemory-policy {policy} ({source}), which can evict {risk}; "
        f"set maxmemory-policy {SAFE} on the server (redis.conf, or CONFIG SET "
        f"maxmemory-policy {SAFE}), or STREAMREC_ACCEPT_EVICTION=true to run anyway"
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# --- Topics --------------------------------------------------------------------------------
#
# On a cluster, the events topic is the one copy of every event: a worker that started on a
# topic created with one replica (as streamrec itself did before replication_factor), or on
# one whose in-sync replicas fell below min.insync.replicas (every producer's acks=all send
# is then refused), would run while events are a broker away from being lost, or while
# nothing can be written. So it refuses to start instead, in one line saying what to do;
# TopicsError exits 6 (``streamrec.exits``). The DLQ and models topics are only checked to
# exist: losing one loses no event.


@dataclass(frozen=True, slots=True)
class TopicHealth:
    """The events topic as the cluster describes it at the check."""

    topic: str
    partitions: int
    replicas: int  # the fewest replicas of any partition
    wanted: int  # what ``replication_factor`` asks for on this cluster
    min_isr: int  # the topic's min.insync.replicas
    brokers: int  # brokers the cluster knows of: the live ones and every replica's


def preflight_topics(settings: Settings, timeout_s: float | None = None) -> TopicHealth:
    """The worker's topic check at start: create the missing topics when
    ``settings.create_topics`` (dev), else refuse a missing one (``TopicsError``: run
    ``streamrec topics create``); then ``check_events_topic``."""
    ensure_topics(settings, timeout_s=timeout_s)
    return check_events_topic(settings, timeout_s)


def check_events_topic(settings: Settings, timeout_s: float | None = None) -> TopicHealth:
    """Refuse (``TopicsError``, one line) an events topic that is missing or under-replicated:
    fewer replicas than ``replication_factor`` asks for on this cluster, or a partition with
    no leader or fewer in-sync replicas than its ``min.insync.replicas``. InfraError when
    the broker does not answer within ``timeout_s`` (``settings.kafka_timeout_s``)."""
    timeout = settings.kafka_timeout_s if timeout_s is None else timeout_s
    topic, where = settings.topic_events, settings.kafka_bootstrap
    admin = AdminClient(settings.kafka_common())
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise InfraError(
            f"Kafka at {where} does not answer within {timeout:g} s ({exc.args[0].str()})"
        ) from None
    if topic not in meta.topics or meta.topics[topic].error is not None:
        raise TopicsError(
            f"topic {topic} missing at {where}; create it with: streamrec topics create"
        )
    parts = meta.topics[topic].partitions
    known = cluster_brokers(meta)  # a broker down does not lower the replication wanted
    wanted = replication_factor(settings.topic_replication_factor, len(known))
    replicas = min((len(p.replicas) for p in parts.values()), default=0)
    if replicas < wanted:
        why = (
            "STREAMREC_TOPIC_REPLICATION_FACTOR"
            if settings.topic_replication_factor is not None
            else f"the cluster has {len(known)} brokers"
        )
        raise TopicsError(
            f"topic {topic} at {where} has {replicas} replica(s) per partition, fewer than "
            f"{wanted} ({why}): one broker lost would lose events; raise it with "
            "kafka-reassign-partitions.sh (streamrec never changes an existing topic), or set "
            f"STREAMREC_TOPIC_REPLICATION_FACTOR={replicas} to run on it anyway"
        )
    min_isr = _min_isr(admin, topic, timeout)
    if min_isr is None:
        min_isr = min_insync(replicas)
        log.warning("topic %s: cannot read min.insync.replicas; checking against %d",
                    topic, min_isr)  # fmt: skip
    elif min_isr < min_insync(replicas):
        log.warning("topic %s: min.insync.replicas %d with %d replicas: an acknowledged event "
                    "may be on one broker only (streamrec creates it with %d)",
                    topic, min_isr, replicas, min_insync(replicas))  # fmt: skip
    short = {n: p for n, p in sorted(parts.items()) if p.leader < 0 or len(p.isrs) < min_isr}
    if short:
        out = sorted({r for p in short.values() for r in p.replicas} - {
            r for p in short.values() for r in p.isrs})  # fmt: skip
        listed = ", ".join(
            f"{n} ({'no leader' if p.leader < 0 else f'in sync: {sorted(p.isrs)}'})"
            for n, p in short.items()
        )
        raise TopicsError(
            f"topic {topic} at {where} is under-replicated: partition(s) {listed} below "
            f"min.insync.replicas {min_isr}, so producers' acks=all sends are refused there; "
            f"start broker(s) {', '.join(map(str, out)) or '?'} again and wait until they "
            "are in sync"
        )
    health = TopicHealth(topic, len(parts), replicas, wanted, min_isr, len(known))
    log.info("topic %s: %d partitions, %d replicas each, min.insync.replicas %d, in sync "
             "(%d brokers)", topic, health.partitions, replicas, min_isr,
             health.brokers)  # fmt: skip
    return health


def _min_isr(admin: Any, topic: str, timeout_s: float) -> int | None:
    """The topic's ``min.insync.replicas`` (its own or the broker's default), None when the
    broker does not say within ``timeout_s`` (e.g. DescribeConfigs denied by an ACL, or sent
    to a broker that just died and is not fenced yet)."""
    try:
        res = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
        entries = next(iter(res.values())).result(timeout=timeout_s)
        return int(entries["min.insync.replicas"].value)
    except (KafkaException, TimeoutError, KeyError, ValueError, TypeError) as exc:
        log.debug("could not read min.insync.replicas of %s: %r", topic, exc)
        return None
