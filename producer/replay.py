"""Replay timestamped interactions to Kafka in event-time order, optionally at real-time pace.

Files (CSV with a header row, ``.gz`` allowed)::

    MovieLens ratings.csv    userId,movieId,rating,timestamp   -> "rating" events (value =
                             the rating, timestamp in epoch seconds)
    generic                  user_id,item_id[,type][,value][,timestamp]
                             (type defaults to play; timestamp epoch ms, epoch seconds when
                             every value is below 1e11, or ISO 8601)

Rows are sorted by timestamp (stable: ties keep file order); a file without timestamps is
sent in file order with the current time. Events keep their original timestamps. ``speed``
is how many times faster than real time the gaps between consecutive events are slept
(``None``: no sleeping at all); ``max_gap_s`` caps one sleep so quiet years pass quickly.

    with EventProducer(settings) as p:
        report = replay(p, read_rows(Path("ratings.csv")), speed=60.0)
"""

from __future__ import annotations

import contextlib
import csv
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.errors import ConfigError, EventError
from streamrec.events import EVENT_TYPES, MAX_ID_LENGTH, new_event
from streamrec.files import open_text

if TYPE_CHECKING:
    from streamrec.producer.producer import EventProducer

MOVIELENS_HEADER = ["userid", "movieid", "rating", "timestamp"]
SECONDS_BELOW = 100_000_000_000  # epoch values below this are seconds, not milliseconds
PROGRESS_S = 10.0


@dataclass(frozen=True)
class Report:
    """What a producer run did. ``failed`` counts events not acknowledged by the broker."""

    sent: int
    delivered: int
    failed: int
    elapsed_s: float

    @property
    def events_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        return (
            f"sent {self.sent}, delivered {self.delivered}, failed {self.failed}, "
            f"elapsed {self.elapsed_s:.1f} s, {self.events_per_s:,.0f} events/s"
        )


def finish(producer: EventProducer, started: float, flush_timeout_s: float = 30.0) -> Report:
    """Flush ``producer`` and account for every event it was given (never raises)."""
    from streamrec.producer.errors import DeliveryError

    with contextlib.suppress(DeliveryError):  # counted as failed below; the caller decides
        producer.flush(flush_timeout_s)
    return Report(
        sent=producer.sent,
        delivered=producer.delivered,
        failed=producer.sent - producer.delivered,
        elapsed_s=time.monotonic() - started,
    )


@dataclass(frozen=True)
class Rows:
    """Parsed rows in send order (chronological when ``timestamps`` is not None)."""

    kind: str  # "movielens" or "generic"
    users: list[str]
    items: list[str]
    types: list[str]
    values: list[float | None]
    timestamps: list[int] | None  # epoch ms

    def __len__(self) -> int:
        return len(self.users)


def _timestamp(text: str) -> float:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not a number or ISO 8601") from None


def _check_id(value: str, name: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError(f"empty {name}")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name} longer than {MAX_ID_LENGTH} characters")
    return value


def read_rows(path: Path, limit: int | None = None) -> Rows:
    """Read and validate a replay file (see the module doc); ``limit``: the earliest N events
    (the first N rows of a file without timestamps).

    Raises ConfigError if the file is missing, EventError (naming file and line) if a row or
    the header is not what the format needs.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    users: list[str] = []
    items: list[str] = []
    types: list[str] = []
    values: list[float | None] = []
    stamps: list[float] = []
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
            for lineno, row in enumerate(reader, start=2):
                if its is None and limit is not None and len(users) >= limit:
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
                        ts = _timestamp(row[its])
                        if not math.isfinite(ts) or ts < 0:
                            raise ValueError("timestamp must be a non-negative number")
                        stamps.append(ts)
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
    if its is None:
        return Rows("generic", users, items, types, values, None)
    scale = 1000 if movielens or max(stamps) < SECONDS_BELOW else 1
    ms = [round(s * scale) for s in stamps]
    order = sorted(range(len(ms)), key=ms.__getitem__)[:limit]  # stable: ties keep file order
    return Rows(
        "movielens" if movielens else "generic",
        [users[n] for n in order],
        [items[n] for n in order],
        [types[n] for n in order],
        [values[n] for n in order],
        [ms[n] for n in order],
    )


def replay(
    producer: EventProducer,
    rows: Rows,
    speed: float | None = None,
    *,
    max_gap_s: float | None = None,
    progress_every: int = 10_000,
    echo: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    flush_timeout_s: float = 30.0,
) -> Report:
    """Send ``rows`` in order; sleep ``gap / speed`` between event times (never with None).

    Progress goes to ``echo`` every ``progress_every`` events (and every 10 s while there is
    news); the final ``Report`` is returned after a flush. ``stop`` ends the run early.
    """
    stop = stop or threading.Event()
    total = len(rows)
    started = time.monotonic()
    ts = rows.timestamps
    paced = speed is not None and ts is not None
    skipped_s = 0.0  # wall time removed by max_gap_s
    next_progress = started + PROGRESS_S
    last_shown = 0
    for n in range(total):
        t = ts[n] if ts is not None else None
        if paced and t is not None and ts is not None and n > 0:
            assert speed is not None
            gap = (t - ts[n - 1]) / 1000.0 / speed
            if max_gap_s is not None and gap > max_gap_s:
                skipped_s += gap - max_gap_s
            due = started + (t - ts[0]) / 1000.0 / speed - skipped_s
            while (wait := due - time.monotonic()) > 0 and not stop.is_set():
                stop.wait(min(wait, 1.0))
                if time.monotonic() >= next_progress and producer.sent > last_shown:
                    last_shown = _progress(echo, producer, total, started, t)
                    next_progress = time.monotonic() + PROGRESS_S
        if stop.is_set():
            break
        producer.send(new_event(rows.users[n], rows.items[n], rows.types[n], rows.values[n], t))
        if (n + 1) % progress_every == 0 or time.monotonic() >= next_progress:
            last_shown = _progress(echo, producer, total, started, t)
            next_progress = time.monotonic() + PROGRESS_S
    return finish(producer, started, flush_timeout_s)


def _progress(
    echo: Callable[[str], None],
    producer: EventProducer,
    total: int,
    started: float,
    event_ms: int | None,
) -> int:
    elapsed = time.monotonic() - started
    when = (
        f", event time {datetime.fromtimestamp(event_ms / 1000).isoformat(timespec='seconds')}"
        if event_ms is not None
        else ""
    )
    echo(
        f"{producer.sent}/{total} sent ({100 * producer.sent / total:.0f}%), "
        f"{producer.delivered} delivered, {producer.sent / max(elapsed, 1e-9):,.0f} events/s{when}"
    )
    return producer.sent
