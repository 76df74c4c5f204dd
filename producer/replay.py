"""Replay timestamped interactions to Kafka in event-time order, optionally at real-time pace.

Files are event CSVs (MovieLens ``ratings.csv`` or ``user_id,item_id[,type][,value][,timestamp]``,
``.gz`` allowed), read by ``streamrec.producer.eventcsv``, which documents the format and is
also what ``produce --csv`` reads. ``read_rows`` gives them in send order: sorted by timestamp
(stable: ties keep file order); a file without timestamps is sent in file order with the current
time. Events keep their original timestamps. ``speed`` is how many times faster than real time
the gaps between consecutive events are slept (``None``: no sleeping at all); ``max_gap_s`` caps
one sleep so quiet years pass quickly.

    with EventProducer(settings) as p:
        report = replay(p, read_rows(Path("ratings.csv")), speed=60.0)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.events import new_event
from streamrec.producer.eventcsv import Rows, read

if TYPE_CHECKING:
    from streamrec.producer.producer import EventProducer

PROGRESS_S = 10.0
#: How often (in events) a ``progress`` callback hears how far the replay got.
TICK = 500


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


def read_rows(path: Path, limit: int | None = None) -> Rows:
    """A replay file's rows in send order; ``limit``: the earliest N events (the first N rows
    of a file without timestamps). Raises what ``eventcsv.read`` raises."""
    return read(path, limit, by_time=True)


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
    progress: Callable[[float, float], None] | None = None,
) -> Report:
    """Send ``rows`` in order; sleep ``gap / speed`` between event times (never with None).

    Progress goes to ``echo`` every ``progress_every`` events (and every 10 s while there is
    news), and to ``progress(sent, total)`` every ``TICK`` events and while sleeping (the
    application's bar); the final ``Report`` is returned after a flush. ``stop`` ends the
    run early.
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
                stop.wait(min(wait, 1.0 if progress is None else 0.2))
                if progress is not None:
                    progress(producer.sent, total)
                if time.monotonic() >= next_progress and producer.sent > last_shown:
                    last_shown = _progress(echo, producer, total, started, t)
                    next_progress = time.monotonic() + PROGRESS_S
        if stop.is_set():
            break
        producer.send(new_event(rows.users[n], rows.items[n], rows.types[n], rows.values[n], t))
        if progress is not None and (n + 1) % TICK == 0:
            progress(n + 1, total)
        if (n + 1) % progress_every == 0 or time.monotonic() >= next_progress:
            last_shown = _progress(echo, producer, total, started, t)
            next_progress = time.monotonic() + PROGRESS_S
    if progress is not None:
        progress(producer.sent, total)
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
