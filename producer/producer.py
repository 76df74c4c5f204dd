"""EventProducer: publish interaction events to Kafka (key = user_id), for any service to import.

with EventProducer(settings) as p:
    p.send(new_event("user-1", "track-9", "play", value=184.0))
# leaving the block flushes and raises DeliveryError if anything was not delivered

With the broker down, building the producer ends within about ``settings.kafka_timeout_s`` (it
asks for the topic's metadata first: ``InfraError`` naming the broker). Once running, an event
the broker does not acknowledge is retried for ``settings.delivery_timeout_s`` (librdkafka's
``message.timeout.ms``), so a broker restart shorter than that loses nothing; then it fails,
and ``flush`` waits about as long.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any, Literal

from confluent_kafka import KafkaError, Message, Producer

from streamrec.connect import DURABLE_PRODUCER, kafka_metadata
from streamrec.events import Event, encode_avro, encode_json
from streamrec.producer.errors import DeliveryError
from streamrec.settings import Settings

log = logging.getLogger(__name__)

Format = Literal["avro", "json"]

FLUSH_MARGIN_S = 2.0  # flush waits this much past the delivery timeout: failures, not "left"
FAILURE_LOG_S = 30.0  # while sending, undelivered events are logged at most this often


class EventProducer:
    """An idempotent Kafka producer of ``Event``s (``acks=all``) with delivery accounting."""

    def __init__(self, settings: Settings, fmt: Format = "avro", **overrides: Any) -> None:
        self.topic = settings.topic_events
        self._bootstrap = settings.kafka_bootstrap
        self._timeout_s = settings.kafka_timeout_s
        self._delivery_s = settings.delivery_timeout_s
        self._encode = encode_avro if fmt == "avro" else encode_json
        self._producer = Producer(
            {
                **settings.kafka_common(),
                **DURABLE_PRODUCER,  # acks=all, idempotent: see streamrec.connect
                "linger.ms": 5,
                "compression.type": "lz4",
                # An event not acknowledged within this fails (librdkafka's default is 5 min).
                "message.timeout.ms": int(self._delivery_s * 1000),
                **overrides,
            }
        )
        # InfraError naming the broker, or AuthError (exit 7) when it refuses the credentials.
        kafka_metadata(self._producer, settings, self.topic)
        self.sent = 0
        self.delivered = 0
        self.failed: list[str] = []  # every failure so far (for the delivery report)
        #: partition -> the highest offset the broker acknowledged there (a caller waiting
        #: for consumers to catch up compares it with their applied offsets)
        self.acked: dict[int, int] = {}
        self._reported = 0  # failures already raised by an earlier flush()
        self._logged = 0  # failures already logged while sending
        self._next_log = 0.0

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        # Counted, not logged one by one: a broker outage fails every event in flight.
        if err is None:
            self.delivered += 1
            part, offset = msg.partition(), msg.offset()
            if part is not None and offset is not None and offset > self.acked.get(part, -1):
                self.acked[part] = offset
        else:
            self.failed.append(f"{msg.key()!r}: {err.str()}")

    def _log_failures(self) -> None:
        """While sending: the failures since the last such line, at most every FAILURE_LOG_S
        (``flush`` raises them instead)."""
        now = time.monotonic()
        if len(self.failed) > self._logged and now >= self._next_log:
            log.warning("Kafka at %s: %d event(s) not delivered so far (latest: %s)",
                        self._bootstrap, len(self.failed), self.failed[-1])  # fmt: skip
            self._logged, self._next_log = len(self.failed), now + FAILURE_LOG_S

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
        self._log_failures()

    def send_raw(self, key: bytes | None, value: bytes) -> None:
        """Publish bytes as they are (for tests and tools that craft messages)."""
        self._producer.produce(self.topic, key=key, value=value, on_delivery=self._on_delivery)
        self.sent += 1
        self._producer.poll(0)
        self._log_failures()

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports for up to ``timeout_s``; the events still waiting for one
        (neither acknowledged nor failed)."""
        self._producer.poll(timeout_s)
        return self.sent - self.delivered - len(self.failed)

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for every queued event (by default a little past the delivery timeout, so an
        unacknowledged event has failed by then); raises DeliveryError, one line naming the
        broker, if any failed or is still waiting."""
        timeout = self._delivery_s + FLUSH_MARGIN_S if timeout_s is None else timeout_s
        left = self._producer.flush(timeout)
        new = self.failed[self._reported :]
        self._reported = self._logged = len(self.failed)
        if left or new:
            raise DeliveryError(
                f"Kafka at {self._bootstrap}: {len(new) + left} event(s) not delivered "
                f"({len(new)} failed, {left} unacknowledged after {timeout:g} s)"
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
