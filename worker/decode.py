"""Decode: message bytes -> events; anything undecodable goes to the dead-letter topic.

A dead letter keeps the original key and value byte for byte; headers say why and where from::

    streamrec.error        the reason (UTF-8)
    streamrec.source       topic[partition]@offset of the original
    streamrec.timestamp    the original message timestamp, epoch ms
    streamrec.dropped      only when the value itself could not go: why (its size)

No message stops the worker: the decoder (``streamrec.events.EventDecoder``: every known schema
version, the Confluent registry framing when a registry is set) turns anything a value holds
into an event or an ``EventError``, and ``decode_batch`` keeps even an error it could not
foresee as a reason. The one exception is not a message's fault: a schema registry that does
not answer while a new schema id is looked up raises ``DependencyDown`` (the loop waits it out
and redoes the batch; ids already seen are cached, so only a new writer version waits).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamrec.connect import DURABLE_PRODUCER
from streamrec.errors import AuthError, EventError, InfraError
from streamrec.events import LIMITS, Event, EventDecoder, Limits, default_decoder
from streamrec.settings import Settings
from streamrec.worker.errors import DependencyDown, WorkerError
from streamrec.worker.source import where

log = logging.getLogger(__name__)

#: A dead letter: the original's ``where``, key, value, headers.
_Header = tuple[str, str | bytes | None]
_Letter = tuple[str, bytes | None, bytes | None, list[_Header]]

#: librdkafka's own bound on a message it sends (``message.max.bytes``, 1,000,000 by default) is
#: below the broker's (1 MiB): a value just under the broker's bound plus the dead letter's
#: headers would be refused in ``produce`` and stop the worker. Well above any broker default;
#: a dead letter its topic still refuses is sent again without its value (``streamrec.dropped``).
DLQ_MESSAGE_MAX_BYTES = 16 << 20

DONE_KEPT = 10_000  # delivered dead letters remembered, so a redone batch skips them

#: Delivery errors that mean "no broker to deliver to (yet)", not "refused".
UNREACHABLE = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One message and what became of it: an event, or the reason it is not one."""

    msg: Message
    event: Event | None
    reason: str | None = None


def decode_batch(msgs: Sequence[Message], decoder: EventDecoder | Limits = LIMITS) -> list[Decoded]:
    """Decode every message, in order; failures keep the message for the dead-letter topic.

    ``decoder``: the worker's (``streamrec.registry.event_decoder``), or bounds alone
    (``Settings.event_limits``) for the package's schema versions without a registry.
    ``DependencyDown`` when the schema registry does not answer (see the module)."""
    decode = (decoder if isinstance(decoder, EventDecoder) else default_decoder(decoder)).event
    out: list[Decoded] = []
    for m in msgs:
        try:
            out.append(Decoded(m, decode(m.value())))
        except EventError as exc:
            out.append(Decoded(m, None, exc.reason))
        except AuthError:
            raise  # the registry refused the credentials: a setting to fix (exit 7)
        except InfraError as exc:  # the registry, looking up a new schema id
            raise DependencyDown("kafka", str(exc)) from None
        except Exception as exc:  # decode raises EventError alone; a bug there must not stop us
            log.exception("decoder failed on %s", where(m))
            out.append(Decoded(m, None, f"decoder failed: {type(exc).__name__}"))
    return out


class DeadLetters:
    """Publishes undecodable messages to ``settings.topic_dlq``, delivered before commit.

    While the broker is down, ``send`` raises ``DependencyDown`` after ``flush_timeout_s``
    and the loop redoes the batch later (``worker/retry.py``). A batch redone (after an
    outage of either service, or a race) sends only the dead letters not delivered or queued
    yet: those of the earlier attempt are waited for, not produced again, so within one
    process a message goes to the DLQ once (across a crash, at least once).
    """

    def __init__(self, settings: Settings, flush_timeout_s: float = 5.0) -> None:
        self._topic = settings.topic_dlq
        self._bootstrap = settings.kafka_bootstrap
        self._flush_timeout = flush_timeout_s
        self._queued: set[str] = set()  # ``where`` of each dead letter produced, not yet settled
        self._done: dict[str, None] = {}  # ``where`` of the latest ones delivered, oldest first
        # Delivery reports since the last flush: letters too large, errors of no broker, others.
        self._too_large: list[_Letter] = []
        self._unreachable: list[KafkaError] = []
        self._errors: list[KafkaError] = []
        self._producer = Producer(
            {
                **settings.kafka_common(),
                **DURABLE_PRODUCER,  # acks=all, idempotent: see streamrec.connect
                "linger.ms": 5,
                "message.max.bytes": DLQ_MESSAGE_MAX_BYTES,
                "compression.type": "lz4",
            }
        )

    def send(self, failed: Sequence[tuple[Message, str]]) -> None:
        """Publish and wait until every dead letter is acknowledged.

        Raises ``DependencyDown`` when some are not acknowledged within the flush timeout or
        failed for want of a broker (redo the batch later), ``WorkerError`` when the broker
        refused one for another reason than its size.
        """
        if not failed:
            return
        letters: list[_Letter] = []
        for m, reason in failed:
            source = where(m)
            if source in self._done or source in self._queued:
                continue  # sent by an earlier attempt at this batch (waited for below)
            log.warning("dead-lettering %s: %s", source, reason)
            headers: list[_Header] = [
                ("streamrec.error", reason.encode()),
                ("streamrec.source", source.encode()),
                ("streamrec.timestamp", str(m.timestamp()[1]).encode()),
            ]
            letters.append((source, m.key(), m.value(), headers))
        # The broker refuses a whole batch over the topic's max.message.bytes: the letters of
        # such a batch go again one by one, and one still refused goes without its value (the
        # key, the reason and the source still do: the original is at its offset).
        for source, key, value, headers in self._deliver(letters):
            if self._deliver([(source, key, value, headers)]):
                log.warning("dead letter of %d bytes too large for %s; sent without its value",
                            len(value or b""), self._topic)  # fmt: skip
                self._deliver([(source, key, None, [*headers, _dropped(value or b"")])])

    def _delivered(self, letter: _Letter, err: KafkaError | None, _msg: Message) -> None:
        source = letter[0]
        self._queued.discard(source)
        if err is None:
            self._done[source] = None
            if len(self._done) > DONE_KEPT:
                del self._done[next(iter(self._done))]
        elif err.code() == KafkaError.MSG_SIZE_TOO_LARGE and letter[2]:
            self._too_large.append(letter)
        elif err.code() in UNREACHABLE:
            self._unreachable.append(err)
        else:
            self._errors.append(err)

    def _deliver(self, letters: Sequence[_Letter]) -> list[_Letter]:
        """Produce and flush (with whatever earlier attempts left queued); the letters refused
        as too large. DependencyDown when the broker is not there, WorkerError on any other
        failure."""
        refused: list[_Letter] = []
        for letter in letters:
            source, key, value, headers = letter
            try:
                self._producer.produce(
                    self._topic,
                    key=key,
                    value=value,
                    headers=headers,
                    on_delivery=partial(self._delivered, letter),
                )
            except KafkaException as exc:  # over librdkafka's own bound: refused before sending
                if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE or not value:
                    raise
                refused.append(letter)
                continue
            self._queued.add(source)
        left = self._producer.flush(self._flush_timeout)
        errors, self._errors = self._errors, []
        unreachable, self._unreachable = self._unreachable, []
        too_large, self._too_large = self._too_large, []
        if errors:
            raise WorkerError(f"{len(errors)} dead letters refused; errors: {errors[:3]}")
        if left or unreachable:
            raise DependencyDown(
                "kafka",
                f"{left + len(unreachable)} dead letters undelivered: Kafka at {self._bootstrap} "
                f"did not acknowledge them within {self._flush_timeout:g} s"
                + (f" ({unreachable[0].str()})" if unreachable else ""),
            )
        return refused + too_large

    def close(self) -> None:
        self._producer.flush(self._flush_timeout)


def _dropped(value: bytes) -> _Header:
    return ("streamrec.dropped", f"value of {len(value)} bytes too large to send".encode())
