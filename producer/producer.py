"""EventProducer: publish interaction events to Kafka (key = user_id), for any service to import.

with EventProducer(settings) as p:
    p.send(new_event("user-1", "track-9", "play", value=184.0))
# leaving the block flushes and raises ProducerError if anything was not delivered
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any, Literal

from confluent_kafka import KafkaError, Message, Producer

from streamrec.events import Event, encode_avro, encode_json
from streamrec.producer.errors import DeliveryError
from streamrec.settings import Settings

log = logging.getLogger(__name__)

Format = Literal["avro", "json"]


class EventProducer:
    """An idempotent Kafka producer of ``Event``s with delivery accounting."""

    def __init__(self, settings: Settings, fmt: Format = "avro", **overrides: Any) -> None:
        self.topic = settings.topic_events
        self._encode = encode_avro if fmt == "avro" else encode_json
        self._producer = Producer(
            {
                **settings.kafka_common(),
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
                **overrides,
            },
            logger=log,
        )
        self.sent = 0
        self.delivered = 0
        self.failed: list[str] = []  # every failure so far (for the delivery report)
        self._reported = 0  # failures already raised by an earlier flush()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed.append(f"{msg.key()!r}: {err}")
            log.error("delivery failed for key %r: %s", msg.key(), err)

    def send(self, event: Event) -> None:
        """Queue one event (validated and encoded first: EventError for an invalid one)."""
        value = self._encode(event)
        while True:
            try:
                # The message keeps the broker-side CreateTime (now), not the event's own time:
                # replayed history (years old) would otherwise fall to time-based retention.
                self._producer.produce(
                    self.topic,
                    key=event.user_id.encode(),
                    value=value,
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                # Local queue full: serve delivery callbacks until there is room.
                self._producer.poll(0.1)
        self.sent += 1
        self._producer.poll(0)

    def send_raw(self, key: bytes | None, value: bytes) -> None:
        """Publish bytes as they are (for tests and tools that craft messages)."""
        self._producer.produce(self.topic, key=key, value=value, on_delivery=self._on_delivery)
        self.sent += 1
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait for every queued event; raises DeliveryError if any failed or timed out."""
        left = self._producer.flush(timeout_s)
        new = self.failed[self._reported :]
        self._reported = len(self.failed)
        if left or new:
            raise DeliveryError(
                f"{len(new)} failed, {left} undelivered after {timeout_s:.0f}s"
                + (f"; first: {new[0]}" if new else "")
            )

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()
        else:
            self._producer.flush(5.0)
