"""Decode: message bytes -> events; anything undecodable goes to the dead-letter topic.

A dead letter keeps the original key and value byte for byte; headers say why and where from::

    streamrec.error        the reason (UTF-8)
    streamrec.source       topic[partition]@offset of the original
    streamrec.timestamp    the original message timestamp, epoch ms
    streamrec.dropped      only when the value itself could not go: why (its size)

No message stops the worker: ``streamrec.events.decode`` turns anything a value holds into an
event or an ``EventError``, and ``decode_batch`` keeps even an error it could not foresee as
a reason, so the decode stage never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamrec.errors import EventError
from streamrec.events import LIMITS, Event, Limits, decode
from streamrec.settings import Settings
from streamrec.worker.errors import WorkerError
from streamrec.worker.source import where

log = logging.getLogger(__name__)

#: A dead letter: key, value, headers.
_Header = tuple[str, str | bytes | None]
_Letter = tuple[bytes | None, bytes | None, list[_Header]]

#: librdkafka's own bound on a message it sends (``message.max.bytes``, 1,000,000 by default) is
#: below the broker's (1 MiB): a value just under the broker's bound plus the dead letter's
#: headers would be refused in ``produce`` and stop the worker. Well above any broker default;
#: a dead letter its topic still refuses is sent again without its value (``streamrec.dropped``).
DLQ_MESSAGE_MAX_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class Decoded:
    """One message and what became of it: an event, or the reason it is not one."""

    msg: Message
    event: Event | None
    reason: str | None = None


def decode_batch(msgs: Sequence[Message], limits: Limits = LIMITS) -> list[Decoded]:
    """Decode every message, in order; failures keep the message for the dead-letter topic.

    ``limits``: the bounds of ``decode`` (the worker's: ``Settings.event_limits``)."""
    out: list[Decoded] = []
    for m in msgs:
        try:
            out.append(Decoded(m, decode(m.value(), limits)))
        except EventError as exc:
            out.append(Decoded(m, None, exc.reason))
        except Exception as exc:  # decode raises EventError alone; a bug there must not stop us
            log.exception("decoder failed on %s", where(m))
            out.append(Decoded(m, None, f"decoder failed: {type(exc).__name__}"))
    return out


class DeadLetters:
    """Publishes undecodable messages to ``settings.topic_dlq``, delivered before commit."""

    def __init__(self, settings: Settings, flush_timeout_s: float = 30.0) -> None:
        self._topic = settings.topic_dlq
        self._flush_timeout = flush_timeout_s
        self._producer = Producer(
            {
                **settings.kafka_common(),
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.max.bytes": DLQ_MESSAGE_MAX_BYTES,
                "compression.type": "lz4",
            },
            logger=log,
        )

    def send(self, failed: Sequence[tuple[Message, str]]) -> None:
        """Publish and wait until every dead letter is acknowledged; raises WorkerError if not."""
        if not failed:
            return
        letters: list[_Letter] = []
        for m, reason in failed:
            log.warning("dead-lettering %s: %s", where(m), reason)
            headers: list[_Header] = [
                ("streamrec.error", reason.encode()),
                ("streamrec.source", where(m).encode()),
                ("streamrec.timestamp", str(m.timestamp()[1]).encode()),
            ]
            letters.append((m.key(), m.value(), headers))
        # The broker refuses a whole batch over the topic's max.message.bytes: the letters of
        # such a batch go again one by one, and one still refused goes without its value (the
        # key, the reason and the source still do: the original is at its offset).
        for key, value, headers in self._deliver(letters):
            if self._deliver([(key, value, headers)]):
                log.warning("dead letter of %d bytes too large for %s; sent without its value",
                            len(value or b""), self._topic)  # fmt: skip
                self._deliver([(key, None, [*headers, _dropped(value or b"")])])

    def _deliver(self, letters: Sequence[_Letter]) -> list[_Letter]:
        """Produce and flush; the letters refused as too large, WorkerError on any other
        failure."""
        refused: list[_Letter] = []
        errors: list[str] = []

        def delivered(letter: _Letter, err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                return
            if err.code() == KafkaError.MSG_SIZE_TOO_LARGE and letter[1]:
                refused.append(letter)
            else:
                errors.append(str(err))

        for letter in letters:
            key, value, headers = letter
            try:
                self._producer.produce(
                    self._topic,
                    key=key,
                    value=value,
                    headers=headers,
                    on_delivery=partial(delivered, letter),
                )
            except KafkaException as exc:  # over librdkafka's own bound: refused before sending
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE or not value:
                    raise
                refused.append(letter)
        left = self._producer.flush(self._flush_timeout)
        if left or errors:
            raise WorkerError(f"{left} dead letters undelivered; errors: {errors[:3]}")
        return refused

    def close(self) -> None:
        self._producer.flush(self._flush_timeout)


def _dropped(value: bytes) -> _Header:
    return ("streamrec.dropped", f"value of {len(value)} bytes too large to send".encode())
