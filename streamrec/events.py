"""The event contract: the interaction schema, its versions and its wire encodings.

Avro single-object encoding (the Avro spec's "Single object encoding")::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the schema's canonical form | datum

lets a reader tell schema versions apart without a registry: every version in
``streamrec/schema/interaction-v<N>.avsc`` (and in ``Settings.event_schemas_dir``) is known by
its fingerprint, and a datum written with one is read into the newest (the reader schema) by
Avro's schema resolution rules (``SchemaSet``; README, contract 1's changelog). The Confluent
Schema Registry framing::

    00 | 4-byte big-endian schema id | datum

is read the same way, the writer schema fetched by id (``EventDecoder``'s ``registry``, in the
worker ``streamrec.registry.RegistrySchemas``). JSON objects with the same field names are
accepted too (``timestamp`` as epoch milliseconds or an ISO 8601 string).

``decode`` is total: whatever a message holds (any bytes, any nesting, any number, broken UTF-8
or text no encoder can write), it returns an ``Event`` or raises ``EventError`` with a one-line
reason, never anything else. Sizes are bounded (``Limits``): the whole message, each id
(``MAX_ID_LENGTH``, part of the contract) and the context map.

``Event.timestamp`` is epoch milliseconds everywhere. Files written by others (event CSVs, training
CSVs and Parquet) may hold seconds, milliseconds or ISO 8601 text: ``epoch_ms`` (and
``epoch_ms_array`` for a numeric column) is the one rule that turns them into milliseconds.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import fingerprint, to_parsing_canonical_form

from streamrec.errors import EventError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

SCHEMA_VERSION = 1  # the reader schema's: the newest file of streamrec/schema/
SCHEMA_FILE = f"interaction-v{SCHEMA_VERSION}.avsc"
SCHEMA_NAME = "streamrec.Interaction"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"  # then a 4-byte big-endian schema id
_SCHEMA_FILE = re.compile(r"^interaction-v(\d+)\.avsc$")
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
#: Characters of an id (event, user, item): a contract bound every producer checks too (the
#: user id is the Kafka key and a Redis key segment), so not a setting a worker could disagree on.
MAX_ID_LENGTH = 512
#: The defaults of ``Limits`` (the worker's come from settings: ``Settings.event_limits``).
#: 64 KiB holds any event within the other bounds in either encoding: three ids of 512
#: astral characters written as JSON escapes are 18 KiB, a 4 KiB context escaped at most
#: 6 bytes per byte 24 KiB.
MAX_MESSAGE_BYTES = 65_536
MAX_CONTEXT_ENTRIES = 32
MAX_CONTEXT_BYTES = 4096
#: Timestamps are Avro longs: JSON may say more, and an int past 64 bits is no time.
MAX_TIMESTAMP = 2**63 - 1
#: Longest repr of a bad value quoted in a reason (reasons are one short line).
_QUOTE = 40
_REASON = 300
#: Epoch numbers below this are seconds, the rest milliseconds (see ``epoch_ms``).
SECONDS_BELOW = 100_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what ``decode`` accepts; anything past one is an ``EventError`` naming it.

    ``message_bytes``: the raw value, checked before any parsing; ``context_entries`` and
    ``context_bytes``: the context map's entries and the UTF-8 bytes of its keys and values.
    """

    message_bytes: int = MAX_MESSAGE_BYTES
    context_entries: int = MAX_CONTEXT_ENTRIES
    context_bytes: int = MAX_CONTEXT_BYTES


LIMITS = Limits()


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


def _plain_timestamp(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (a parsed .avsc) with ``timestamp`` as a plain long: fastavro then hands back
    the raw long (the binary encoding is the same; canonical form ignores logical types)."""
    raw = json.loads(json.dumps(raw))
    for f in raw.get("fields", []):
        if f.get("name") == "timestamp" and isinstance(f.get("type"), dict):
            f["type"] = f["type"].get("type", "long")
    return raw


def avro_fingerprint(schema: Mapping[str, Any] | str) -> bytes:
    """8-byte little-endian CRC-64-AVRO fingerprint of a schema's parsing canonical form."""
    raw = json.loads(schema) if isinstance(schema, str) else dict(schema)
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(raw), "CRC-64-AVRO"))


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One known version of the event schema: its number, fingerprint and parsed form."""

    version: int
    fingerprint: bytes
    parsed: Any  # fastavro's parsed schema (timestamp as a plain long)
    fields: frozenset[str]
    source: str  # the file it came from


class SchemaSet:
    """Every version of the event schema a reader knows, by fingerprint, and the reader schema
    (the newest) that each is resolved into.

    Versions are ``interaction-v<N>.avsc`` files: the package's folder ``streamrec/schema/``,
    then any ``extra_dirs`` (``Settings.event_schemas_dir``: versions newer producers write,
    known before this reader is upgraded). A datum written with version W is read as the
    reader schema R by Avro's resolution rules (fastavro's ``schemaless_reader(fo, W, R)``):
    a field of W that R lacks is skipped, a field of R that W lacks takes R's default, an
    int/long/float becomes the wider number R says. Two files of one version number that
    differ, or a writer whose record is not ``streamrec.Interaction``, are refused here
    (``ValueError``), not at the first event.
    """

    def __init__(self, versions: Iterable[SchemaVersion], reader: SchemaVersion) -> None:
        self.by_fingerprint = {v.fingerprint: v for v in versions}
        self.by_fingerprint.setdefault(reader.fingerprint, reader)
        self.reader = reader
        #: JSON events may carry any field of any known version (those R lacks are dropped).
        self.json_fields = frozenset().union(*(v.fields for v in self.by_fingerprint.values()))

    @classmethod
    def load(cls, extra_dirs: Iterable[Path] = ()) -> SchemaSet:
        """The package's versions plus those in ``extra_dirs``; the reader is the package's
        newest (an extra directory adds writers, never a new reader)."""
        package = resources.files("streamrec").joinpath("schema")
        texts = [(e.name, e.read_text("utf-8")) for e in package.iterdir() if e.is_file()]
        own = _versions(texts, "streamrec/schema")
        if not own:
            raise ValueError("streamrec/schema holds no interaction-v<N>.avsc")
        reader = max(own, key=lambda v: v.version)
        extra: list[SchemaVersion] = []
        for d in extra_dirs:
            if not Path(d).is_dir():
                raise ValueError(f"event_schemas_dir {d}: no such directory")
            texts = [(p.name, p.read_text("utf-8")) for p in sorted(Path(d).iterdir())]
            extra += _versions(texts, str(d))
        seen: dict[int, SchemaVersion] = {}
        for v in [*own, *extra]:
            if v.version in seen and seen[v.version].fingerprint != v.fingerprint:
                raise ValueError(
                    f"two different schemas are version {v.version}: {seen[v.version].source} "
                    f"and {v.source}"
                )
            seen.setdefault(v.version, v)
        return cls(seen.values(), reader)

    def writer(self, fp: bytes) -> SchemaVersion | None:
        return self.by_fingerprint.get(fp)


def _versions(files: Iterable[tuple[str, str]], where: str) -> list[SchemaVersion]:
    out = []
    for name, text in files:
        m = _SCHEMA_FILE.match(name)
        if not m:
            continue
        raw = json.loads(text)
        full = raw.get("name", "")
        full = full if "." in full else f"{raw.get('namespace', '')}.{full}".lstrip(".")
        if raw.get("type") != "record" or full != SCHEMA_NAME:
            raise ValueError(f"{where}/{name}: not the record {SCHEMA_NAME}")
        out.append(
            SchemaVersion(
                int(m.group(1)),
                avro_fingerprint(raw),
                fastavro.parse_schema(_plain_timestamp(raw)),
                frozenset(f["name"] for f in raw["fields"]),
                f"{where}/{name}",
            )
        )
    return out


@cache
def known_schemas() -> SchemaSet:
    """The package's schema versions (no extra directory): what ``decode`` reads by default."""
    return SchemaSet.load()


def _codec_schema() -> Any:
    """The reader schema, parsed (what ``encode_avro`` writes)."""
    return known_schemas().reader.parsed


def schema_fingerprint() -> bytes:
    """8-byte little-endian CRC-64-AVRO fingerprint of the reader schema's canonical form."""
    return known_schemas().reader.fingerprint


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


#: A registry lookup: schema id -> the writer schema's text (raises ``EventError`` for an id
#: the registry does not have; anything else it raises propagates: an outage, not a bad event).
RegistryLookup = Callable[[int], str]


class EventDecoder:
    """``decode`` with a given set of schema versions and, for the Confluent framing, a
    registry lookup; writer schemas fetched by id are parsed once and kept (ids are
    immutable in a registry)."""

    def __init__(
        self,
        limits: Limits = LIMITS,
        schemas: SchemaSet | None = None,
        registry: RegistryLookup | None = None,
    ) -> None:
        self.limits = limits
        self.schemas = schemas if schemas is not None else known_schemas()
        self._registry = registry
        self._by_id: dict[int, Any] = {}

    def __call__(self, raw: bytes | None) -> Event:
        """One Kafka message value as an ``Event``; ``EventError`` (keeping ``raw``) on
        anything wrong with it, whatever it holds. Only the registry lookup's own failure
        (the registry not answering) propagates as something else."""
        if not raw:
            raise EventError("empty message", raw)
        try:
            if len(raw) > self.limits.message_bytes:
                raise EventError(
                    f"message of {len(raw)} bytes is over the limit of {self.limits.message_bytes}"
                )
            if raw[:2] == SINGLE_OBJECT_MAGIC:
                event = self._single_object(raw)
            elif raw[:1] == CONFLUENT_MAGIC:
                event = self._confluent(raw)
            elif raw.lstrip()[:1] in (b"{", b"["):
                event = _decode_json(raw, self.schemas)
            else:
                raise EventError(
                    "neither Avro single-object encoding (C3 01), Confluent Schema Registry "
                    "framing (00 + schema id) nor a JSON object"
                )
            _validate(event, self.limits)
        except EventError as exc:
            raise EventError(reason_line(exc.reason), raw) from None
        except _RegistryFailure as exc:
            raise exc.cause from None  # not the event's fault: the caller waits it out
        except Exception as exc:  # a parser's or a library's own error: still a bad message
            raise EventError(
                reason_line(f"undecodable: {type(exc).__name__}: {exc}"), raw
            ) from None
        return event

    def _single_object(self, raw: bytes) -> Event:
        fp = raw[2:10]
        if len(fp) < 8:
            raise EventError("truncated Avro header")
        writer = self.schemas.writer(fp)
        if writer is None:
            known = ", ".join(f"v{v.version}" for v in self.schemas.by_fingerprint.values())
            raise EventError(f"unknown schema fingerprint {fp.hex()} (this reader knows {known})")
        return _read_datum(raw, 10, writer.parsed, self.schemas.reader)

    def _confluent(self, raw: bytes) -> Event:
        if len(raw) < 5:
            raise EventError("truncated Confluent framing (00 + 4-byte schema id)")
        schema_id = int.from_bytes(raw[1:5], "big")
        if self._registry is None:
            raise EventError(
                f"Confluent Schema Registry framing (schema id {schema_id}) but no "
                "schema_registry_url is set"
            )
        writer = self._by_id.get(schema_id)
        if writer is None:
            try:
                text = self._registry(schema_id)
            except EventError:
                raise
            except Exception as exc:
                raise _RegistryFailure(exc) from None
            writer = self._parse_writer(schema_id, text)
            self._by_id[schema_id] = writer
        return _read_datum(raw, 5, writer, self.schemas.reader)

    def fields(self, raw: bytes | None) -> EventFields:
        """What ``self(raw)`` decodes, as (event_id, user_id, item_id, type, value, timestamp)
        without the context, for a reader that keeps columns (the nightly job's): the same
        accept/reject as ``self(raw)`` and the same fields, raising what it raises.

        The common message (Avro single-object, written and read with the package's v1, no
        context, every field plainly inside the bounds) is read by ``_fields_v1``, a
        hand-written reader of v1's layout; anything else it is not sure of (another
        version, a context, a bound near, corrupt bytes) goes through ``self(raw)``, which
        decides. ``tests/streamrec/test_fast_fields.py`` holds the two together.
        """
        fast = None
        if raw is not None and self._v1_fast and len(raw) <= self.limits.message_bytes:
            fast = _fields_v1(raw)
        if fast is not None:
            return fast
        e = self(raw)
        return (e.event_id, e.user_id, e.item_id, e.type, e.value, e.timestamp)

    def event(self, raw: bytes | None) -> Event:
        """``self(raw)``, with the common message read by ``fields``' hand-written reader:
        the same ``Event`` (that message has no context), for the worker, which decodes every
        message and spent ~17 µs of its ~100 a message in the general reader."""
        fast = None
        if raw is not None and self._v1_fast and len(raw) <= self.limits.message_bytes:
            fast = _fields_v1(raw)
        if fast is None:
            return self(raw)
        event_id, user_id, item_id, type_, value, timestamp = fast
        return Event(event_id, user_id, item_id, type_, timestamp, value)

    @property
    def _v1_fast(self) -> bool:
        """v1 is both a known writer and the reader: its datum is read as written."""
        ok = self.__dict__.get("_v1_ok")
        if ok is None:
            reader = self.schemas.reader
            ok = reader.fingerprint == _package_v1_fingerprint() and (
                self.schemas.writer(reader.fingerprint) is reader
            )
            self.__dict__["_v1_ok"] = ok
        return bool(ok)

    @staticmethod
    def _parse_writer(schema_id: int, text: str) -> Any:
        try:
            raw = json.loads(text)
        except ValueError:
            raise EventError(f"schema id {schema_id} is not an Avro schema (not JSON)") from None
        if not isinstance(raw, dict) or raw.get("type") != "record":
            raise EventError(f"schema id {schema_id} is not the record {SCHEMA_NAME}")
        try:
            parsed = fastavro.parse_schema(_plain_timestamp(raw))
        except Exception as exc:
            raise EventError(
                f"schema id {schema_id} is not an Avro schema: {type(exc).__name__}"
            ) from None
        if not isinstance(parsed, dict) or parsed.get("name") != SCHEMA_NAME:
            raise EventError(f"schema id {schema_id} is not the record {SCHEMA_NAME}")
        return parsed


#: (event_id, user_id, item_id, type, value, timestamp): an event without its context.
EventFields = tuple[str, str, str, str, float | None, int]


@cache
def _package_v1_fingerprint() -> bytes:
    """The fingerprint of the package's ``interaction-v1.avsc``: the layout ``_fields_v1``
    reads (string, string, string, enum of 8, union null/double, long, union null/map)."""
    return next(v.fingerprint for v in known_schemas().by_fingerprint.values() if v.version == 1)


_V1_PREFIX = SINGLE_OBJECT_MAGIC  # + the 8-byte fingerprint, checked per message
_V1_SYMBOLS = ("play", "click", "view", "like", "dislike", "skip", "purchase", "rating")
_unpack_double = struct.Struct("<d").unpack_from


def _fields_v1(raw: bytes) -> EventFields | None:
    """``raw``'s fields if it is a plainly valid v1 single-object message without context,
    else None (the general decoder then decides; None is never a verdict).

    Avro binary: strings and the enum index, union branch and long are zigzag varints; the
    double is 8 bytes little-endian. Only what ``_validate`` would pass without doubt is
    returned: ids non-empty, at most MAX_ID_LENGTH characters, valid UTF-8 (which holds no
    lone surrogate); a finite value; a timestamp from 0 to MAX_TIMESTAMP; nothing after the
    datum.
    """
    if raw[:2] != _V1_PREFIX or raw[2:10] != _package_v1_fingerprint():
        return None
    n_raw = len(raw)
    pos = 10
    ids: list[str] = []
    try:
        for _ in range(3):
            b = raw[pos]
            if b >= 0x80 or b & 1:  # a length of 64+ bytes or a negative one: the slow path
                return None
            n = b >> 1
            pos += 1
            end = pos + n
            if n == 0 or end > n_raw:
                return None
            text = raw[pos:end].decode("utf-8")
            if len(text) > MAX_ID_LENGTH:
                return None
            ids.append(text)
            pos = end
        b = raw[pos]  # the enum index, 0..7: one byte
        if b >= 0x80 or b & 1 or (b >> 1) >= len(_V1_SYMBOLS):
            return None
        kind = _V1_SYMBOLS[b >> 1]
        branch = raw[pos + 1]
        pos += 2
        value: float | None
        if branch == 0:
            value = None
        elif branch == 2:  # zigzag 1: the double
            if pos + 8 > n_raw:
                return None
            value = _unpack_double(raw, pos)[0]
            if not math.isfinite(value):
                return None
            pos += 8
        else:
            return None
        ts = 0
        shift = 0
        while True:
            b = raw[pos]
            pos += 1
            ts |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 63:
                return None
        if ts & 1:  # negative
            return None
        ts >>= 1
        if ts > MAX_TIMESTAMP:
            return None
        if raw[pos] != 0 or pos + 1 != n_raw:  # context null, and the datum ends here
            return None
    except (IndexError, UnicodeDecodeError):
        return None
    if kind not in EVENT_TYPES:
        return None
    return (ids[0], ids[1], ids[2], kind, value, ts)


class _RegistryFailure(Exception):
    """Carries a registry lookup's own failure past the decoder's catch-all."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _read_datum(raw: bytes, start: int, writer: Any, reader: SchemaVersion) -> Event:
    """The Avro binary datum at ``raw[start:]``, written with ``writer``, read as ``reader``."""
    datum = io.BytesIO(raw[start:])
    try:
        # Resolution only when they differ: reading with the writer alone is faster.
        resolve = None if writer is reader.parsed else reader.parsed
        rec = fastavro.schemaless_reader(datum, writer, resolve)
    except SchemaResolutionError as exc:  # the writer broke a rule (README, contract 1)
        raise EventError(
            f"written with a schema that cannot be read as the reader schema v{reader.version}: "
            f"{exc}"
        ) from None
    except Exception as exc:  # fastavro raises many types on corrupt input or bad resolution
        raise EventError(f"corrupt Avro datum: {type(exc).__name__}: {exc}") from None
    if datum.tell() != len(raw) - start:
        raise EventError(f"corrupt Avro datum: {len(raw) - start - datum.tell()} bytes after it")
    if not isinstance(rec, dict):
        raise EventError("corrupt Avro datum: not a record")
    return Event(**rec)


@cache
def default_decoder(limits: Limits = LIMITS) -> EventDecoder:
    """The decoder of ``limits`` with the package's schema versions and no registry."""
    return EventDecoder(limits)


def decode(raw: bytes | None, limits: Limits = LIMITS) -> Event:
    """Decode one Kafka message value with the package's schema versions (no registry);
    raises EventError (keeping ``raw``) on anything wrong, and nothing else, whatever ``raw``
    holds (see the module docstring)."""
    return default_decoder(limits)(raw)


def reason_line(reason: str) -> str:
    """``reason`` fit for a log line and a Kafka header: one line, short, valid UTF-8."""
    text = " ".join(reason.split())
    if len(text) > _REASON:
        text = text[: _REASON - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def quote_value(value: object) -> str:
    """A bad value's repr for a reason, cut short (the value may be as long as the message)."""
    text = repr(value)
    return text if len(text) <= _QUOTE else text[: _QUOTE - 3] + "..."


def _decode_json(raw: bytes, schemas: SchemaSet) -> Event:
    try:
        obj = json.loads(raw)
    except RecursionError:
        raise EventError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an int of too many digits
        raise EventError(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EventError("JSON event must be an object")
    unknown = set(obj) - schemas.json_fields  # a field of a newer known version is dropped
    if unknown:
        names = ", ".join(quote_value(n)[1:-1] for n in sorted(unknown)[:5])
        raise EventError(f"unknown field(s): {names}" + (" ..." if len(unknown) > 5 else ""))
    for name in ("event_id", "user_id", "item_id", "type", "timestamp"):
        if name not in obj:
            raise EventError(f"missing field {name!r}")
    ts = obj["timestamp"]
    if isinstance(ts, str):
        try:
            ts = iso_ms(ts)
        except ValueError:
            raise EventError(
                f"timestamp {quote_value(ts)} is not ISO 8601 or epoch milliseconds"
            ) from None
    value = obj.get("value")
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise EventError("value must be a finite number or null") from None
    return Event(
        event_id=obj["event_id"],
        user_id=obj["user_id"],
        item_id=obj["item_id"],
        type=obj["type"],
        value=value,
        timestamp=ts,
        context=obj.get("context"),
    )


def _validate(event: Event, limits: Limits = LIMITS) -> None:
    for name in ("event_id", "user_id", "item_id"):
        v = getattr(event, name)
        if not isinstance(v, str) or not v:
            raise EventError(f"{name} must be a non-empty string")
        if len(v) > MAX_ID_LENGTH:
            raise EventError(f"{name} longer than {MAX_ID_LENGTH} characters")
        if _utf8_len(v) is None:
            raise EventError(f"{name} is not valid Unicode (a lone surrogate)")
    if not isinstance(event.type, str) or event.type not in EVENT_TYPES:
        raise EventError(f"type {quote_value(event.type)} is not one of {', '.join(EVENT_TYPES)}")
    if not isinstance(event.timestamp, int) or isinstance(event.timestamp, bool):
        raise EventError("timestamp must be epoch milliseconds (integer)")
    if event.timestamp < 0:
        raise EventError("timestamp must not be negative")
    if event.timestamp > MAX_TIMESTAMP:
        raise EventError("timestamp is past the largest Avro long")
    if event.value is not None and (
        not isinstance(event.value, float) or not math.isfinite(event.value)
    ):
        raise EventError("value must be a finite number or null")
    if event.context is not None:
        _validate_context(event.context, limits)


def _validate_context(context: object, limits: Limits) -> None:
    if not isinstance(context, Mapping):
        raise EventError("context must map strings to strings")
    if len(context) > limits.context_entries:
        raise EventError(f"context has {len(context)} entries, more than {limits.context_entries}")
    size = 0
    for k, v in context.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise EventError("context must map strings to strings")
        nk, nv = _utf8_len(k), _utf8_len(v)
        if nk is None or nv is None:
            raise EventError("context is not valid Unicode (a lone surrogate)")
        size += nk + nv
    if size > limits.context_bytes:
        raise EventError(f"context holds {size} bytes, more than {limits.context_bytes}")


def _utf8_len(text: str) -> int | None:
    """Bytes of ``text`` in UTF-8; None when it cannot be written (JSON's ``\\ud800`` escapes
    decode to lone surrogates, which Redis keys and Kafka headers could not hold)."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None
