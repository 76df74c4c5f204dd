"""Publish the item catalog (contract 3): ``CatalogProducer`` and the catalog-CSV reader.

with CatalogProducer(settings) as p:
    p.send(item)          # key = item_id, value = Avro single-object (or JSON)
    p.remove("item-9")    # a tombstone: the item leaves the catalog
# leaving the block flushes and raises DeliveryError if anything was not delivered

``read_catalog_csv`` turns a CSV (``.gz`` allowed; comma, tab or semicolon separated) into
items, by a column mapping (``Columns``): an id column, a name (``name``/``title``), a
categories column (split on ``|`` or ``;``), a year, an availability, and features: the
numeric columns named, or else every other column whose values are all numbers. The whole file
is read and checked before anything is sent: a bad row is one line (``InputError``, exit 4)
naming the file, the line and what is wrong, and nothing is published.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from confluent_kafka import KafkaError, Message, Producer

from streamrec.catalog import Item, encode_item, encode_item_json, now_ms, validate
from streamrec.connect import DURABLE_PRODUCER, kafka_metadata
from streamrec.errors import CatalogError, InputError
from streamrec.events import MAX_ID_LENGTH
from streamrec.producer.errors import DeliveryError
from streamrec.settings import Settings

log = logging.getLogger(__name__)

Format = Literal["avro", "json"]
FLUSH_MARGIN_S = 2.0
#: Columns tried, in order, when the mapping names none (MovieLens ``movies.csv``: movieId,
#: title, genres; Last.fm ``artists.dat``: id, name; Spotify-style files: name, genre, year).
ID_COLUMNS = ("item_id", "id", "movieId", "track_id", "itemId")
NAME_COLUMNS = ("name", "title")
CATEGORY_COLUMNS = ("categories", "genres", "genre", "tags", "category")
YEAR_COLUMNS = ("year", "release_year")
AVAILABLE_COLUMNS = ("available",)
CATEGORY_SEP = re.compile(r"[|;]")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


@dataclass(frozen=True, slots=True)
class Columns:
    """The column mapping of a catalog CSV; None = the first of the usual names present
    (``ID_COLUMNS``, ...), and for ``features`` every remaining all-numeric column."""

    id: str | None = None
    name: str | None = None
    categories: str | None = None
    year: str | None = None
    available: str | None = None
    features: tuple[str, ...] | None = None


def read_catalog_csv(
    path: Path, columns: Columns = Columns(), updated_at_ms: int | None = None
) -> list[Item]:
    """Every row of the catalog CSV at ``path`` as an ``Item`` (``updated_at``: the time now
    unless given). ``InputError``, one line, for a missing file, a mapping naming a column
    the header lacks, or the first bad row (``PATH:LINE: reason``)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    stamp = now_ms() if updated_at_ms is None else updated_at_ms
    try:
        text = _read_text(path)
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    reader = csv.reader(io.StringIO(text), dialect=_dialect(text))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError(f"{path}: empty file (a header row is needed)") from None
    except csv.Error as exc:
        raise InputError(f"{path}:1: {exc}") from None
    col = {h: j for j, h in enumerate(header)}
    id_col = _pick(path, col, columns.id, ID_COLUMNS, "id", required=True)
    name_col = _pick(path, col, columns.name, NAME_COLUMNS, "name")
    cat_col = _pick(path, col, columns.categories, CATEGORY_COLUMNS, "categories")
    year_col = _pick(path, col, columns.year, YEAR_COLUMNS, "year")
    avail_col = _pick(path, col, columns.available, AVAILABLE_COLUMNS, "available")
    assert id_col is not None  # required: _pick raised otherwise
    used = {c for c in (id_col, name_col, cat_col, year_col, avail_col) if c is not None}
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if not row or all(not v.strip() for v in row):
                continue
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise InputError(f"{path}:{reader.line_num}: {exc}") from None
    if columns.features is not None:
        missing = [f for f in columns.features if f not in col]
        if missing:
            raise InputError(f"{path}: no column {missing[0]!r} for --features (the header "
                             f"has {', '.join(header)})")  # fmt: skip
        features = list(columns.features)
    else:
        features = [h for h in header if h not in used and _numeric(rows, col[h])]
    out: list[Item] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        if len(row) != len(header):
            raise InputError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
        try:
            item = _item(row, col, id_col, name_col, cat_col, year_col, avail_col, features,
                         stamp)  # fmt: skip
        except (CatalogError, ValueError) as exc:
            raise InputError(f"{path}:{line}: {exc}") from None
        if item.item_id in seen:
            raise InputError(f"{path}:{line}: item_id {item.item_id[:40]!r} again (first on line "
                             f"{seen[item.item_id]})")  # fmt: skip
        seen[item.item_id] = line
        out.append(item)
    return out


def _read_text(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as f:
            return f.read()
    return path.read_text(encoding="utf-8-sig")


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    first = text.split("\n", 1)[0]
    delimiter = max(",\t;", key=first.count)
    return type("_D", (csv.excel,), {"delimiter": delimiter})


def _pick(
    path: Path,
    col: dict[str, int],
    given: str | None,
    usual: Sequence[str],
    what: str,
    *,
    required: bool = False,
) -> str | None:
    if given is not None:
        if given not in col:
            raise InputError(f"{path}: no column {given!r} for the {what} (the header has "
                             f"{', '.join(col)})")  # fmt: skip
        return given
    found = next((c for c in usual if c in col), None)
    if found is None and required:
        raise InputError(f"{path}: no {what} column (looked for {', '.join(usual)}; name it "
                         f"with --{what}-col)")  # fmt: skip
    return found


def _numeric(rows: list[tuple[int, list[str]]], j: int) -> bool:
    """Whether column ``j`` holds numbers only (empty cells allowed) and at least one."""
    any_value = False
    for _, row in rows:
        v = row[j].strip() if j < len(row) else ""
        if not v:
            continue
        try:
            if not math.isfinite(float(v)):
                return False
        except ValueError:
            return False
        any_value = True
    return any_value


def _item(
    row: list[str],
    col: dict[str, int],
    id_col: str,
    name_col: str | None,
    cat_col: str | None,
    year_col: str | None,
    avail_col: str | None,
    features: Sequence[str],
    stamp: int,
) -> Item:
    def cell(name: str | None) -> str:
        return row[col[name]].strip() if name is not None else ""

    item_id = cell(id_col)
    if not item_id:
        raise ValueError(f"empty {id_col}")
    if len(item_id) > MAX_ID_LENGTH:
        raise ValueError(f"{id_col} longer than {MAX_ID_LENGTH} characters")
    cats = tuple(dict.fromkeys(c.strip() for c in CATEGORY_SEP.split(cell(cat_col)) if c.strip()))
    year: int | None = None
    if cell(year_col):
        text = cell(year_col)
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{year_col} {text[:40]!r} is not a year") from None
        if not number.is_integer():
            raise ValueError(f"{year_col} {text[:40]!r} is not a whole year")
        year = int(number)
    available = True
    if cell(avail_col):
        flag = cell(avail_col).lower()
        if flag not in _TRUE | _FALSE:
            raise ValueError(f"{avail_col} {cell(avail_col)[:40]!r} is not true or false")
        available = flag in _TRUE
    feats: dict[str, float] = {}
    for name in features:
        text = cell(name)
        if not text:
            continue  # a missing feature: the content map reads it as the mean
        try:
            feats[name] = float(text)
        except ValueError:
            raise ValueError(f"feature {name} {text[:40]!r} is not a number") from None
    item = Item(item_id, cell(name_col), cats, year, available, feats, stamp)
    validate(item)
    return item


class CatalogProducer:
    """An idempotent Kafka producer of catalog records (``acks=all``, key = item_id) with
    delivery accounting, like ``EventProducer``."""

    def __init__(self, settings: Settings, fmt: Format = "avro", **overrides: Any) -> None:
        self.topic = settings.topic_items
        self._bootstrap = settings.kafka_bootstrap
        self._delivery_s = settings.delivery_timeout_s
        self._encode = encode_item if fmt == "avro" else encode_item_json
        self._producer = Producer(
            {
                **settings.kafka_common(),
                **DURABLE_PRODUCER,  # acks=all, idempotent: see streamrec.connect
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.timeout.ms": int(self._delivery_s * 1000),
                **overrides,
            }
        )
        kafka_metadata(self._producer, settings, self.topic)  # InfraError naming the broker
        self.sent = 0
        self.delivered = 0
        self.failed: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed.append(f"{msg.key()!r}: {err.str()}")

    def _produce(self, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(self.topic, key=key, value=value,
                                       on_delivery=self._on_delivery)  # fmt: skip
                break
            except BufferError:  # the local queue is full: serve deliveries until there is room
                self._producer.poll(0.1)
        self.sent += 1
        self._producer.poll(0)

    def send(self, item: Item) -> None:
        """Queue one item record (validated and encoded first: ``CatalogError``)."""
        self._produce(item.item_id.encode(), self._encode(item))

    def remove(self, item_id: str) -> None:
        """Queue a tombstone: the item leaves the catalog (and every list)."""
        if not item_id or len(item_id) > MAX_ID_LENGTH:
            raise CatalogError(f"item_id must be 1 to {MAX_ID_LENGTH} characters")
        self._produce(item_id.encode(), None)

    def report(self) -> str:
        return f"sent {self.sent}, delivered {self.delivered}, failed {len(self.failed)}"

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait for every queued record; ``DeliveryError`` (one line) if any failed."""
        timeout = self._delivery_s + FLUSH_MARGIN_S if timeout_s is None else timeout_s
        left = self._producer.flush(timeout)
        if left or self.failed:
            raise DeliveryError(
                f"Kafka at {self._bootstrap}: {len(self.failed) + left} catalog record(s) not "
                f"delivered ({self.report()}, {left} unacknowledged after {timeout:g} s)"
                + (f"; first: {self.failed[0]}" if self.failed else "")
            )

    def __enter__(self) -> CatalogProducer:
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
