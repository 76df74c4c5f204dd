"""Preflight: is this Redis fit to hold the worker's state? Checked once, when ``Worker.run``
starts.

The worker keeps in Redis what nothing else holds: each user's history (``<p>:user:*``, with
the TTL ``history_ttl_s``) and each partition's last applied offset (``<p>:applied:*``, no
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

import redis

from streamrec.errors import ConfigError, InfraError
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
