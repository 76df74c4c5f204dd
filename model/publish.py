"""Publish a model: the popular list first, then the ``<p>:model`` pointer, then an announcement
on ``settings.topic_models``, so a worker that follows either finds everything in place."""

from __future__ import annotations

import logging
import time

import redis
from confluent_kafka import Producer

from streamrec.artifact import Model
from streamrec.connect import ensure_topics
from streamrec.errors import InfraError
from streamrec.keys import Keys, model_value, popular_value
from streamrec.settings import Settings

log = logging.getLogger(__name__)


def publish(model: Model, settings: Settings, client: redis.Redis, announce: bool = True) -> None:
    """Write ``<p>:popular`` (without blocked items), move ``<p>:model``, announce on Kafka."""
    keys = Keys(settings.redis_prefix)
    blocked = {b.decode() if isinstance(b, bytes) else b for b in client.smembers(keys.blocked)}
    popular = [p for p in model.popular(settings.top_n + len(blocked)) if p[0] not in blocked]
    now = int(time.time() * 1000)
    client.set(keys.popular, popular_value(popular[: settings.top_n], model.version, now))
    value = model_value(model.summary())
    client.set(keys.model, value)
    if announce:
        ensure_topics(settings, {settings.topic_models: 1})
        producer = Producer(settings.kafka_common())
        producer.produce(settings.topic_models, key=model.version.encode(), value=value)
        if producer.flush(30):
            raise InfraError(f"model announcement not delivered to {settings.topic_models}")
    log.info("published model %s", model.version)
