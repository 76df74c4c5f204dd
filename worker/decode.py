"""Decode: message bytes -> events; anything undecodable goes to the dead-letter topic.

A dead letter keeps the original key and value byte for byte; headers say why and where from::

    streamrec.error        the reason (UTF-8)
    streamrec.source       topic[partition]@offset of the original
    streamrec.timestamp    the original message timestamp, epoch ms
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message, Producer

from streamrec.errors import EventError
from streamrec.events import Event, decode
from streamrec.settings import Settings
from streamrec.worker.errors import WorkerError
from streamrec.worker.source import where

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One message and what became of it: an event, or the reason it is not one."""

    msg: Message
    event: Event | None
    reason: str | None = None


def decode_batch(msgs: Sequence[Message]) -> list[Decoded]:
    """Decode every message, in order; failures keep the message for the dead-letter topic."""
    out: list[Decoded] = []
    for m in msgs:
        try:
            out.append(Decoded(m, decode(m.value())))
        except EventError as exc:
            out.append(Decoded(m, None, exc.reason))
    return out


class DeadLetters:
    """Publishes undecodable messages to ``settings.topic_dlq``, delivered before commit."""

    def __init__(self, settings: Settings, flush_timeout_s: float = 30.0) -> None:
        self._topic = settings.topic_dlq
        self._flush_timeout = flush_timeout_s
        self._errors: list[str] = []
        self._producer = Producer(
            {**settings.kafka_common(), "enable.idempotence": True, "linger.ms": 5}, logger=log
        )

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(str(err))

    def send(self, failed: Sequence[tuple[Message, str]]) -> None:
        """Publish and wait until every dead letter is acknowledged; raises WorkerError if not."""
        if not failed:
            return
        for m, reason in failed:
            log.warning("dead-lettering %s: %s", where(m), reason)
            self._producer.produce(
                self._topic,
                key=m.key(),
                value=m.value(),
                headers=[
                    ("streamrec.error", reason.encode()),
                    ("streamrec.source", where(m).encode()),
                    ("streamrec.timestamp", str(m.timestamp()[1]).encode()),
                ],
                on_delivery=self._delivered,
            )
        left = self._producer.flush(self._flush_timeout)
        if left or self._errors:
            errors, self._errors = self._errors, []
            raise WorkerError(f"{left} dead letters undelivered; errors: {errors[:3]}")

    def close(self) -> None:
        self._producer.flush(self._flush_timeout)
