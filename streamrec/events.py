"""The event contract: the interaction schema and its two wire encodings.

Avro single-object encoding (the Avro spec's "Single object encoding")::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the schema's canonical form | datum

lets a reader tell schema versions apart without a registry. JSON objects with the same field
names are accepted too (``timestamp`` as epoch milliseconds or an ISO 8601 string).

``Event.timestamp`` is epoch milliseconds everywhere. Files written by others (event CSVs, training
CSVs and Parquet) may hold seconds, milliseconds or ISO 8601 text: ``epoch_ms`` (and
``epoch_ms_array`` for a numeric column) is the one rule that turns them into milliseconds.
"""

from __future__ import annotations

import io
import json
import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from streamrec.errors import EventError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

SCHEMA_VERSION = 1
SCHEMA_FILE = f"interaction-v{SCHEMA_VERSION}.avsc"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
EVENT_TYPES: tuple[str, ...] = (
    "play",
    "click",
    "view",
    "like",
    "dislike",
    "skip",
    "purchase",
    "rating",
)
MAX_ID_LENGTH = 512
#: Epoch numbers below this are seconds, the rest milliseconds (see ``epoch_ms``).
SECONDS_BELOW = 100_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Event:
    """One interaction, as the schema defines it (``timestamp`` in epoch milliseconds)."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    timestamp: int
    value: float | None = None
    context: Mapping[str, str] | None = field(default=None, hash=False)

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "type": self.type,
            "value": self.value,
            "timestamp": self.timestamp,
            "context": dict(self.context) if self.context is not None else None,
        }


def new_event(
    user_id: str,
    item_id: str,
    type: str = "play",
    value: float | None = None,
    timestamp: int | None = None,
    context: Mapping[str, str] | None = None,
    event_id: str | None = None,
) -> Event:
    """An event with a fresh random ``event_id`` and the current time unless given; validated."""
    event = Event(
        event_id=event_id or uuid.uuid4().hex,
        user_id=user_id,
        item_id=item_id,
        type=type,
        value=value,
        timestamp=int(time.time() * 1000) if timestamp is None else timestamp,
        context=context,
    )
    _validate(event)
    return event


def epoch_ms(value: str | float) -> int:
    """A timestamp read from a file, as epoch milliseconds; the one rule for every file reader
    (``produce --csv`` and ``replay``, the training CSV and Parquet loaders).

    * A number below ``SECONDS_BELOW`` (1e11) is epoch seconds, any other number epoch
      milliseconds.
    * Text that is not a number is ISO 8601 (``2023-11-14T22:13:20Z``, ``...+01:00``); without
      a UTC offset it is UTC, so a file means the same on every machine.
    * Fractions are rounded to the nearest millisecond.
    * Negative, infinite or NaN values are refused (``ValueError`` naming the value).

    The unit is decided **per value**, not per file. The two readings never overlap in real
    data: below 1e11, milliseconds would be a date before 1973-03-03 and above it, seconds
    would be after the year 5138. So each row is read alone, and the same row gives the same
    time wherever it is: in a file of seconds merged with one of milliseconds, next to ISO text,
    behind a ``--limit`` or streamed before the rest of the file is read. (A whole-file rule,
    "seconds when every value is below 1e11", agrees on every file that uses one unit and turned
    the seconds of a mixed file into dates in January 1970.)

    JSON events on the wire are not files: there a number is always milliseconds (the schema's
    ``timestamp-millis``); only ISO text goes through ``iso_ms``.
    """
    number = _number(value) if isinstance(value, str) else value
    if number is None:
        assert isinstance(value, str)
        try:
            ms = iso_ms(value)
        except ValueError:
            raise ValueError(f"timestamp {value!r} is not a number or ISO 8601") from None
    elif isinstance(number, int):
        ms = number * 1000 if number < SECONDS_BELOW else number
    elif math.isfinite(number):
        ms = round(number * 1000 if number < SECONDS_BELOW else number)
    else:
        raise ValueError(f"timestamp {value!r} is not finite")
    if ms < 0:
        raise ValueError(f"timestamp {value!r} is negative")
    return ms


def epoch_ms_array(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """``epoch_ms`` on a numeric column at once: (n,) numbers -> (n,) int64 epoch ms."""
    import numpy as np  # not at module level: producers and the JSON decoder need no numpy

    x = np.asarray(values, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError("timestamp is not finite")
    if (x < 0).any():
        raise ValueError(f"timestamp {x[x < 0][0]:g} is negative")
    return np.rint(np.where(x < SECONDS_BELOW, x * 1000, x)).astype(np.int64)


def iso_ms(text: str) -> int:
    """ISO 8601 text as epoch milliseconds (UTC when it has no offset); ValueError if not."""
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return round((when - _EPOCH) / _ONE_MS)


def _number(text: str) -> float | None:
    """``text`` as a number (an int when it is one: exact beyond float precision), else None."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def schema_text() -> str:
    """The ``.avsc`` file shipped with the package, as published to producers."""
    return resources.files("streamrec").joinpath("schema", SCHEMA_FILE).read_text("utf-8")


@cache
def _codec_schema() -> Any:
    # Parsed without the timestamp-millis logical type so fastavro hands back the raw long
    # (the binary encoding is the same; canonical form ignores logical types anyway).
    raw = json.loads(schema_text())
    for f in raw["fields"]:
        if f["name"] == "timestamp":
            f["type"] = "long"
    return fastavro.parse_schema(raw)


@cache
def schema_fingerprint() -> bytes:
    """8-byte little-endian CRC-64-AVRO fingerprint of the schema's parsing canonical form."""
    canonical = to_parsing_canonical_form(json.loads(schema_text()))
    return bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))


def encode_avro(event: Event) -> bytes:
    """Single-object Avro encoding of ``event``."""
    _validate(event)
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC)
    buf.write(schema_fingerprint())
    fastavro.schemaless_writer(buf, _codec_schema(), event.to_record())
    return buf.getvalue()


def encode_json(event: Event) -> bytes:
    _validate(event)
    record = {k: v for k, v in event.to_record().items() if v is not None}
    return json.dumps(record, separators=(",", ":")).encode()


def decode(raw: bytes | None) -> Event:
    """Decode one Kafka message value; raises EventError (keeping ``raw``) on anything wrong."""
    if not raw:
        raise EventError("empty message", raw)
    try:
        if raw[:2] == SINGLE_OBJECT_MAGIC:
            event = _decode_avro(raw)
        elif raw.lstrip()[:1] in (b"{", b"["):
            event = _decode_json(raw)
        else:
            raise EventError("neither Avro single-object encoding (C3 01) nor a JSON object", raw)
        _validate(event)
    except EventError as exc:
        exc.raw = raw
        raise
    return event


def _decode_avro(raw: bytes) -> Event:
    fp = raw[2:10]
    if len(fp) < 8:
        raise EventError("truncated Avro header")
    if fp != schema_fingerprint():
        raise EventError(f"unknown schema fingerprint {fp.hex()} (this reader knows v1 only)")
    try:
        rec = fastavro.schemaless_reader(io.BytesIO(raw[10:]), _codec_schema(), None)
    except Exception as exc:  # fastavro raises many types on corrupt input
        raise EventError(f"corrupt Avro datum: {type(exc).__name__}: {exc}") from None
    assert isinstance(rec, dict)
    return Event(**rec)


def _decode_json(raw: bytes) -> Event:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EventError("JSON event must be an object")
    unknown = set(obj) - {"event_id", "user_id", "item_id", "type", "value", "timestamp", "context"}
    if unknown:
        raise EventError(f"unknown field(s): {', '.join(sorted(unknown))}")
    for name in ("event_id", "user_id", "item_id", "type", "timestamp"):
        if name not in obj:
            raise EventError(f"missing field {name!r}")
    ts = obj["timestamp"]
    if isinstance(ts, str):
        try:
            ts = iso_ms(ts)
        except ValueError:
            raise EventError(f"timestamp {ts!r} is not ISO 8601 or epoch milliseconds") from None
    value = obj.get("value")
    if isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return Event(
        event_id=obj["event_id"],
        user_id=obj["user_id"],
        item_id=obj["item_id"],
        type=obj["type"],
        value=value,
        timestamp=ts,
        context=obj.get("context"),
    )


def _validate(event: Event) -> None:
    for name in ("event_id", "user_id", "item_id"):
        v = getattr(event, name)
        if not isinstance(v, str) or not v:
            raise EventError(f"{name} must be a non-empty string")
        if len(v) > MAX_ID_LENGTH:
            raise EventError(f"{name} longer than {MAX_ID_LENGTH} characters")
    if event.type not in EVENT_TYPES:
        raise EventError(f"type {event.type!r} is not one of {', '.join(EVENT_TYPES)}")
    if not isinstance(event.timestamp, int) or isinstance(event.timestamp, bool):
        raise EventError("timestamp must be epoch milliseconds (integer)")
    if event.timestamp < 0:
        raise EventError("timestamp must not be negative")
    if event.value is not None and (
        not isinstance(event.value, float) or not math.isfinite(event.value)
    ):
        raise EventError("value must be a finite number or null")
    if event.context is not None and (
        not isinstance(event.context, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in event.context.items())
    ):
        raise EventError("context must map strings to strings")
