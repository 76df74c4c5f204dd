"""Contract 3, the item catalog: the item record, its schema versions and its wire encodings.

The one place a catalog record is read and written. Topic ``Settings.topic_items``
(``streamrec.items``, compacted), key = ``item_id`` (UTF-8); a tombstone (a null value) removes
the item. Values are either

* **Avro single-object encoding**, as events are (``streamrec.events``)::

      C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the schema's canonical form | datum

  Every version of the schema is a file ``streamrec/schema/item-v<N>.avsc`` (today: v1); a
  datum is read with the version its fingerprint names and resolved into the newest (the
  reader schema) by Avro's resolution rules, so adding a field with a default is not a
  breaking change (the rules of contract 1 apply); or
* **JSON**: an object with the same field names (``updated_at`` as epoch milliseconds or ISO
  8601 text), told apart by its first byte ``{``.

``decode_item`` is total: whatever a value holds it returns an ``Item`` or raises
``CatalogError`` (keeping the raw bytes, for the dead-letter topic) with a one-line reason.
Sizes are bounded (the constants below): an item's record is small, and a catalog of 200k
items is held in memory by every worker and web process.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.read import SchemaResolutionError

from streamrec.errors import CatalogError
from streamrec.events import (
    MAX_ID_LENGTH,
    SINGLE_OBJECT_MAGIC,
    avro_fingerprint,
    iso_ms,
    quote_value,
    reason_line,
)

SCHEMA_VERSION = 1  # the reader schema's: the newest item-v<N>.avsc of streamrec/schema/
SCHEMA_FILE = f"item-v{SCHEMA_VERSION}.avsc"
SCHEMA_NAME = "streamrec.Item"
_SCHEMA_FILE = re.compile(r"^item-v(\d+)\.avsc$")
#: Bounds of contract 3 (every producer checks them too, as ``encode_item`` does).
MAX_ITEM_BYTES = 65_536  # the whole value, checked before parsing
MAX_NAME_LENGTH = 1024  # characters of ``name``
MAX_CATEGORIES = 64
MAX_CATEGORY_LENGTH = 256  # characters of each category, and of each feature name
MAX_FEATURES = 256
YEAR_RANGE = (0, 9999)
MAX_TIMESTAMP = 2**63 - 1
FIELDS = ("item_id", "name", "categories", "year", "available", "features", "updated_at")


@dataclass(frozen=True, slots=True)
class Item:
    """One catalog item (``updated_at_ms``: the record's ``updated_at``, epoch milliseconds)."""

    item_id: str
    name: str
    categories: tuple[str, ...]
    year: int | None
    available: bool
    features: Mapping[str, float] = field(hash=False)
    updated_at_ms: int

    def to_record(self) -> dict[str, Any]:
        """The record as the schema names its fields (what ``encode_item`` writes)."""
        return {
            "item_id": self.item_id,
            "name": self.name,
            "categories": list(self.categories),
            "year": self.year,
            "available": self.available,
            "features": dict(self.features),
            "updated_at": self.updated_at_ms,
        }

    def to_json(self) -> dict[str, Any]:
        """The JSON form (the same fields; ``updated_at`` as epoch milliseconds)."""
        return self.to_record()


@dataclass(frozen=True, slots=True)
class _Version:
    version: int
    fingerprint: bytes
    parsed: Any


def schema_text() -> str:
    """The reader schema's ``.avsc`` file, as published to producers."""
    return resources.files("streamrec").joinpath("schema", SCHEMA_FILE).read_text("utf-8")


def _plain_timestamp(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with ``updated_at`` as a plain long: fastavro hands back the long itself."""
    raw = json.loads(json.dumps(raw))
    for f in raw.get("fields", []):
        if f.get("name") == "updated_at" and isinstance(f.get("type"), dict):
            f["type"] = f["type"].get("type", "long")
    return raw


@cache
def schema_versions() -> dict[bytes, _Version]:
    """Every ``item-v<N>.avsc`` the package ships, by fingerprint (``ValueError`` on a file
    that is not the record ``streamrec.Item``, or two different files of one version)."""
    folder = resources.files("streamrec").joinpath("schema")
    out: dict[bytes, _Version] = {}
    numbers: dict[int, bytes] = {}
    for entry in folder.iterdir():
        m = _SCHEMA_FILE.match(entry.name)
        if not m or not entry.is_file():
            continue
        raw = json.loads(entry.read_text("utf-8"))
        full = raw.get("name", "")
        full = full if "." in full else f"{raw.get('namespace', '')}.{full}".lstrip(".")
        if raw.get("type") != "record" or full != SCHEMA_NAME:
            raise ValueError(f"streamrec/schema/{entry.name}: not the record {SCHEMA_NAME}")
        v = _Version(int(m.group(1)), avro_fingerprint(raw), fastavro.parse_schema(
            _plain_timestamp(raw)))  # fmt: skip
        if numbers.get(v.version, v.fingerprint) != v.fingerprint:
            raise ValueError(f"two different item schemas are version {v.version}")
        numbers[v.version] = v.fingerprint
        out[v.fingerprint] = v
    if not out:
        raise ValueError("streamrec/schema holds no item-v<N>.avsc")
    return out


def _reader() -> _Version:
    return max(schema_versions().values(), key=lambda v: v.version)


def schema_fingerprint() -> bytes:
    """8-byte CRC-64-AVRO fingerprint of the reader schema (what ``encode_item`` writes)."""
    return _reader().fingerprint


def encode_item(item: Item) -> bytes:
    """Single-object Avro encoding of ``item`` (validated first: ``CatalogError``)."""
    validate(item)
    reader = _reader()
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC)
    buf.write(reader.fingerprint)
    fastavro.schemaless_writer(buf, reader.parsed, item.to_record())
    return buf.getvalue()


def encode_item_json(item: Item) -> bytes:
    """The JSON form of ``item`` (validated first)."""
    validate(item)
    return json.dumps(item.to_json(), separators=(",", ":"), ensure_ascii=False).encode()


def decode_item(value: bytes | None) -> Item:
    """One Kafka message value of the items topic as an ``Item``: Avro single-object
    encoding, or JSON (a value starting with ``{``). ``CatalogError`` (keeping ``value``) on
    anything wrong, whatever it holds; never anything else. A tombstone (None) is not a
    record: the caller removes the item its key names."""
    if not value:
        raise CatalogError("empty record (a tombstone has no value at all)", value)
    try:
        if len(value) > MAX_ITEM_BYTES:
            raise CatalogError(f"record of {len(value)} bytes is over the limit of "
                               f"{MAX_ITEM_BYTES}")  # fmt: skip
        if value[:2] == SINGLE_OBJECT_MAGIC:
            item = _decode_avro(value)
        elif value.lstrip()[:1] == b"{":
            try:
                obj = json.loads(value)
            except RecursionError:
                raise CatalogError("invalid JSON: nested too deeply") from None
            except ValueError as exc:
                raise CatalogError(f"invalid JSON: {exc}") from None
            item = item_from_json(obj)
        else:
            raise CatalogError("neither Avro single-object encoding (C3 01) nor a JSON object")
        validate(item)
    except CatalogError as exc:
        raise CatalogError(reason_line(exc.reason), value) from None
    except Exception as exc:  # a parser's or a library's own error: still a bad record
        raise CatalogError(
            reason_line(f"undecodable: {type(exc).__name__}: {exc}"), value
        ) from None
    return item


def _decode_avro(raw: bytes) -> Item:
    fp = raw[2:10]
    if len(fp) < 8:
        raise CatalogError("truncated Avro header")
    versions = schema_versions()
    writer = versions.get(fp)
    if writer is None:
        known = ", ".join(f"v{v.version}" for v in versions.values())
        raise CatalogError(f"unknown item schema fingerprint {fp.hex()} (this reader knows "
                           f"{known})")  # fmt: skip
    reader = _reader()
    datum = io.BytesIO(raw[10:])
    try:
        resolve = None if writer is reader else reader.parsed
        rec = fastavro.schemaless_reader(datum, writer.parsed, resolve)
    except SchemaResolutionError as exc:
        raise CatalogError(f"written with an item schema that cannot be read as v"
                           f"{reader.version}: {exc}") from None  # fmt: skip
    except Exception as exc:
        raise CatalogError(f"corrupt Avro datum: {type(exc).__name__}: {exc}") from None
    if datum.tell() != len(raw) - 10:
        raise CatalogError(f"corrupt Avro datum: {len(raw) - 10 - datum.tell()} bytes after it")
    if not isinstance(rec, dict):
        raise CatalogError("corrupt Avro datum: not a record")
    return Item(
        item_id=rec["item_id"],
        name=rec["name"],
        categories=tuple(rec["categories"]),
        year=rec["year"],
        available=rec["available"],
        features=rec["features"],
        updated_at_ms=rec["updated_at"],
    )


def item_from_json(obj: Mapping[str, Any], *, default_updated_at_ms: int | None = None) -> Item:
    """An ``Item`` from its JSON form (a parsed object): the schema's field names, each but
    ``item_id`` optional with the schema's default (``name`` "", no categories, no year,
    available, no features); ``updated_at`` epoch milliseconds or ISO 8601 text, required
    unless ``default_updated_at_ms`` is given (a form or a file loader passes the time now).
    ``CatalogError`` naming what is wrong."""
    if not isinstance(obj, Mapping):
        raise CatalogError("a JSON item must be an object")
    unknown = set(obj) - set(FIELDS)
    if unknown:
        names = ", ".join(quote_value(n)[1:-1] for n in sorted(map(str, unknown))[:5])
        raise CatalogError(f"unknown field(s): {names}" + (" ..." if len(unknown) > 5 else ""))
    if "item_id" not in obj:
        raise CatalogError("missing field 'item_id'")
    updated = obj.get("updated_at", default_updated_at_ms)
    if updated is None:
        raise CatalogError("missing field 'updated_at'")
    if isinstance(updated, str):
        try:
            updated = iso_ms(updated)
        except ValueError:
            raise CatalogError(f"updated_at {quote_value(updated)} is not ISO 8601 or epoch "
                               "milliseconds") from None  # fmt: skip
    categories = obj.get("categories", ())
    if not isinstance(categories, list | tuple):
        raise CatalogError("categories must be a list of strings")
    features = obj.get("features", {})
    if not isinstance(features, Mapping):
        raise CatalogError("features must map strings to numbers")
    feats: dict[str, float] = {}
    for k, v in features.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise CatalogError(f"feature {quote_value(k)} must be a number")
        try:
            feats[k] = float(v)
        except OverflowError:
            raise CatalogError(f"feature {quote_value(k)} must be a finite number") from None
    item = Item(
        item_id=obj["item_id"],
        name=obj.get("name", ""),
        categories=tuple(categories),
        year=obj.get("year"),
        available=obj.get("available", True),
        features=feats,
        updated_at_ms=updated,
    )
    validate(item)
    return item


def validate(item: Item) -> None:
    """``CatalogError`` naming the first field of ``item`` that breaks contract 3."""
    iid = item.item_id
    if not isinstance(iid, str) or not iid:
        raise CatalogError("item_id must be a non-empty string")
    if len(iid) > MAX_ID_LENGTH:
        raise CatalogError(f"item_id longer than {MAX_ID_LENGTH} characters")
    _text(iid, "item_id")
    if not isinstance(item.name, str):
        raise CatalogError("name must be a string")
    if len(item.name) > MAX_NAME_LENGTH:
        raise CatalogError(f"name longer than {MAX_NAME_LENGTH} characters")
    _text(item.name, "name")
    if not isinstance(item.categories, tuple):
        raise CatalogError("categories must be a list of strings")
    if len(item.categories) > MAX_CATEGORIES:
        raise CatalogError(f"{len(item.categories)} categories, more than {MAX_CATEGORIES}")
    for c in item.categories:
        if not isinstance(c, str) or not c:
            raise CatalogError("each category must be a non-empty string")
        if len(c) > MAX_CATEGORY_LENGTH:
            raise CatalogError(f"a category longer than {MAX_CATEGORY_LENGTH} characters")
        _text(c, "a category")
    y = item.year
    if y is not None and (
        not isinstance(y, int) or isinstance(y, bool) or not YEAR_RANGE[0] <= y <= YEAR_RANGE[1]
    ):
        raise CatalogError(f"year {quote_value(y)} must be an integer from {YEAR_RANGE[0]} to "
                           f"{YEAR_RANGE[1]} or null")  # fmt: skip
    if not isinstance(item.available, bool):
        raise CatalogError("available must be true or false")
    if not isinstance(item.features, Mapping):
        raise CatalogError("features must map strings to numbers")
    if len(item.features) > MAX_FEATURES:
        raise CatalogError(f"{len(item.features)} features, more than {MAX_FEATURES}")
    for k, v in item.features.items():
        if not isinstance(k, str) or not k or len(k) > MAX_CATEGORY_LENGTH:
            raise CatalogError(f"a feature name must be a string of 1 to {MAX_CATEGORY_LENGTH} "
                               "characters")  # fmt: skip
        _text(k, "a feature name")
        if not isinstance(v, float) or not math.isfinite(v):
            raise CatalogError(f"feature {quote_value(k)} must be a finite number")
    t = item.updated_at_ms
    if not isinstance(t, int) or isinstance(t, bool) or not 0 <= t <= MAX_TIMESTAMP:
        raise CatalogError("updated_at must be epoch milliseconds from 0 to 2**63-1")


def now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: str, what: str) -> None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise CatalogError(f"{what} is not valid Unicode (a lone surrogate)") from None
