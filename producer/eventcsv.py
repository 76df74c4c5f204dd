"""The event CSV: the one reader of interaction files, for ``streamrec produce --csv`` and
``streamrec replay`` alike, so both send the same events for the same file.

A CSV file with a header row, plain or gzip (``.gz``), in one of two layouts::

    MovieLens ratings.csv    userId,movieId,rating,timestamp   -> "rating" events, value =
                             the rating
    generic                  user_id,item_id[,type][,value][,timestamp]

and two MovieLens files without a header, told apart by name (``.gz`` allowed too)::

    u.data (MovieLens 100k)  user<TAB>item<TAB>rating<TAB>timestamp   -> "rating" events
    ratings.dat (MovieLens 1M, 10M)  user::item::rating::timestamp    -> "rating" events

Header names are matched ignoring case and surrounding spaces. A generic file starts with
``user_id,item_id``; ``type``, ``value`` and ``timestamp`` may follow in any order, and other
columns are ignored. In each row:

* ids are stripped, non-empty and at most ``MAX_ID_LENGTH`` characters;
* ``type`` is one of ``EVENT_TYPES`` (empty: ``play``); ``value`` a finite number, or empty for
  none; a MovieLens rating is required;
* ``timestamp``, where the column exists, is required in every row: epoch seconds, epoch
  milliseconds or ISO 8601, read by ``streamrec.events.epoch_ms`` (a number below 1e11 is
  seconds, decided per value; ISO without an offset is UTC). MovieLens seconds are read by the
  same rule. A file without the column gets the time each event is sent.

Blank rows are skipped; a row that stops before a column the layout reads is bad.

``read`` keeps file order and ``limit`` takes the first N rows (``produce --csv``); with
``by_time`` it sorts by timestamp, stable (ties keep file order), and ``limit`` takes the
earliest N events (``replay``; a file without timestamps stays in file order).

    rows = read(Path("ratings.csv.gz"), by_time=True)
    for event in events(rows):
        producer.send(event)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from streamrec.errors import EventError, InputError
from streamrec.events import EVENT_TYPES, MAX_ID_LENGTH, Event, epoch_ms, new_event
from streamrec.files import open_text

MOVIELENS_HEADER = ["userid", "movieid", "rating", "timestamp"]
#: MovieLens rating files without a header: file name -> field separator.
PLAIN_RATINGS = {"u.data": "\t", "ratings.dat": "::"}


@dataclass(frozen=True)
class Rows:
    """Parsed rows in send order (see ``read``); parallel lists, one entry per event."""

    kind: str  # "movielens" or "generic"
    users: list[str]
    items: list[str]
    types: list[str]
    values: list[float | None]
    timestamps: list[int] | None  # epoch ms; None when the file has no timestamp column

    def __len__(self) -> int:
        return len(self.users)


def events(rows: Rows) -> Iterator[Event]:
    """One validated event per row, in order (fresh event ids; the current time without
    timestamps)."""
    for n in range(len(rows)):
        ts = rows.timestamps[n] if rows.timestamps is not None else None
        yield new_event(rows.users[n], rows.items[n], rows.types[n], rows.values[n], ts)


def _check_id(value: str, name: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"empty {name}")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name} longer than {MAX_ID_LENGTH} characters")
    return value


def read(path: Path, limit: int | None = None, *, by_time: bool = False) -> Rows:
    """Read and validate an event CSV (see the module doc) in file order, or in time order with
    ``by_time``; ``limit``: the first N rows (the earliest N events with ``by_time``).

    Raises InputError if the file is missing (exit 4, as every command's missing input),
    EventError (naming file and line) if a row or the header is not what the format needs.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    sep = PLAIN_RATINGS.get(path.name.lower().removesuffix(".gz"))
    if sep is not None:
        return _read_plain_ratings(path, sep, limit, by_time)
    users: list[str] = []
    items: list[str] = []
    types: list[str] = []
    values: list[float | None] = []
    stamps: list[int] = []
    try:
        with open_text(path) as f:
            reader = csv.reader(f)
            header = [h.strip().lower() for h in next(reader, [])]
            movielens = header[:4] == MOVIELENS_HEADER
            if not movielens and header[:2] != ["user_id", "item_id"]:
                raise EventError(
                    f"{path}: header must be userId,movieId,rating,timestamp (MovieLens) or "
                    f"start with user_id,item_id (got {','.join(header)[:80]!r})"
                )
            col = {name: n for n, name in enumerate(header)}
            it, iv = col.get("type"), col.get("value")
            its = 3 if movielens else col.get("timestamp")
            # Time order needs every row before the earliest N are known; file order doesn't.
            stop_at = None if by_time and its is not None else limit
            for lineno, row in enumerate(reader, start=2):
                if stop_at is not None and len(users) >= stop_at:
                    break
                if not row or not any(c.strip() for c in row):
                    continue
                try:
                    u = _check_id(row[0], "user id")
                    i = _check_id(row[1], "item id")
                    v: float | None
                    if movielens:
                        t, v = "rating", float(row[2])
                    else:
                        t = row[it].strip() if it is not None and row[it].strip() else "play"
                        v = float(row[iv]) if iv is not None and row[iv].strip() else None
                    if t not in EVENT_TYPES:
                        raise ValueError(f"type {t!r} is not one of {', '.join(EVENT_TYPES)}")
                    if v is not None and not math.isfinite(v):
                        raise ValueError("value is not finite")
                    if its is not None:
                        if not row[its].strip():
                            raise ValueError("missing timestamp")
                        stamps.append(epoch_ms(row[its]))
                except (ValueError, IndexError) as exc:
                    raise EventError(f"{path}:{lineno}: bad row {row!r} ({exc})") from None
                users.append(u)
                items.append(i)
                types.append(t)
                values.append(v)
    except (OSError, UnicodeDecodeError, EOFError, csv.Error) as exc:
        raise EventError(f"{path}: unreadable ({exc})") from None
    if not users:
        raise EventError(f"{path}: no rows")
    kind = "movielens" if movielens else "generic"
    return _rows(kind, users, items, types, values, stamps if its is not None else None,
                 by_time, limit)  # fmt: skip


def _read_plain_ratings(path: Path, sep: str, limit: int | None, by_time: bool) -> Rows:
    """``u.data`` / ``ratings.dat``: ``user, item, rating, timestamp`` split by ``sep``."""
    users: list[str] = []
    items: list[str] = []
    values: list[float | None] = []
    stamps: list[int] = []
    try:
        with open_text(path, encoding="latin-1") as f:
            for lineno, line in enumerate(f, start=1):
                if not by_time and limit is not None and len(users) >= limit:
                    break
                if not line.strip():
                    continue
                parts = line.rstrip("\r\n").split(sep)
                try:
                    if len(parts) < 4:
                        raise ValueError(f"expected 4 fields separated by {sep!r}")
                    u, i = _check_id(parts[0], "user id"), _check_id(parts[1], "item id")
                    v = float(parts[2])
                    if not math.isfinite(v):
                        raise ValueError("value is not finite")
                    t = epoch_ms(parts[3].strip())
                except ValueError as exc:
                    raise EventError(f"{path}:{lineno}: bad row {line.strip()!r} ({exc})") from None
                users.append(u)
                items.append(i)
                values.append(v)
                stamps.append(t)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise EventError(f"{path}: unreadable ({exc})") from None
    if not users:
        raise EventError(f"{path}: no rows")
    return _rows("movielens", users, items, ["rating"] * len(users), values, stamps, by_time,
                 limit)  # fmt: skip


def _rows(
    kind: str,
    users: list[str],
    items: list[str],
    types: list[str],
    values: list[float | None],
    stamps: list[int] | None,
    by_time: bool,
    limit: int | None,
) -> Rows:
    """The parsed columns as ``Rows``: sorted by time (stable) and cut to the earliest
    ``limit`` with ``by_time`` and timestamps, else as read."""
    if stamps is None:
        return Rows(kind, users, items, types, values, None)
    if not by_time:
        return Rows(kind, users, items, types, values, stamps)
    order = sorted(range(len(stamps)), key=stamps.__getitem__)[:limit]  # stable
    return Rows(
        kind,
        [users[n] for n in order],
        [items[n] for n in order],
        [types[n] for n in order],
        [values[n] for n in order],
        [stamps[n] for n in order],
    )
