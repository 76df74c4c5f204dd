"""Synthetic load: Zipf-popular users and items, each user active in short session bursts.

At any moment ``sessions`` users are "online"; each next event comes from one of them, picked
at random, so a user's events arrive as a burst interleaved with other users' bursts. A session
lasts a geometric number of events (mean ``burst``); when it ends, a new user (Zipf over
``users``, exponent ``zipf_users``) comes online. Items are Zipf over ``item_ids`` in the
order given (rank 1 first: pass the model's items most popular first). Types are mostly plays,
then clicks, views, likes and skips. The rate is kept by a token schedule (no drift), and the
run is bounded by ``duration_s`` and/or ``max_events``.

    with EventProducer(settings) as p:
        report = run_load(p, LoadSpec(rate=500, users=10_000, items=1500, duration_s=60),
                          item_ids)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from streamrec.errors import ConfigError
from streamrec.events import new_event
from streamrec.producer.replay import Report, finish

if TYPE_CHECKING:
    from streamrec.producer.producer import EventProducer

TYPES = ("play", "click", "view", "like", "skip")
TYPE_P = (0.6, 0.15, 0.1, 0.08, 0.07)
BLOCK = 4096  # random draws are made in blocks


@dataclass(frozen=True)
class LoadSpec:
    rate: float  # events per second
    users: int
    items: int
    duration_s: float | None = None
    max_events: int | None = None
    burst: float = 8.0  # mean events per session
    sessions: int = 32  # users online at once
    zipf_users: float = 1.0
    zipf_items: float = 1.1
    user_prefix: str = "loadgen-user-"
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (self.rate > 0 and self.users >= 1 and self.items >= 1):
            raise ConfigError("loadgen needs rate > 0, users >= 1 and items >= 1")
        if self.burst < 1 or self.sessions < 1:
            raise ConfigError("loadgen needs burst >= 1 and sessions >= 1")
        if self.zipf_users < 0 or self.zipf_items < 0:
            raise ConfigError("Zipf exponents must be >= 0")


class Zipf:
    """Draws ranks 0..n-1 with P(rank r) proportional to 1 / (r + 1) ** a."""

    def __init__(self, n: int, a: float, rng: np.random.Generator) -> None:
        w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** a
        self.cdf = np.cumsum(w / w.sum())
        self.cdf[-1] = 1.0
        self._rng = rng

    def draw(self, k: int) -> npt.NDArray[np.int64]:
        return np.searchsorted(self.cdf, self._rng.random(k), side="right").astype(np.int64)


def events(
    spec: LoadSpec, item_ids: Sequence[str], rng: np.random.Generator
) -> Iterator[tuple[str, str, str, float | None]]:
    """An endless stream of (user_id, item_id, type, value) as the module doc describes."""
    users = Zipf(spec.users, spec.zipf_users, rng)
    items = Zipf(len(item_ids), spec.zipf_items, rng)
    width = len(str(spec.users - 1))
    p_end = 1.0 / spec.burst

    def new_user() -> str:
        return f"{spec.user_prefix}{int(users.draw(1)[0]):0{width}d}"

    online = [new_user() for _ in range(min(spec.sessions, spec.users))]
    while True:
        slot = rng.integers(0, len(online), size=BLOCK)
        item = items.draw(BLOCK)
        kind = rng.choice(len(TYPES), size=BLOCK, p=TYPE_P)
        play_s = rng.integers(30, 300, size=BLOCK)
        skip_s = rng.integers(1, 15, size=BLOCK)
        ends = rng.random(BLOCK) < p_end
        for n in range(BLOCK):
            s = int(slot[n])
            t = TYPES[int(kind[n])]
            value = float(play_s[n]) if t == "play" else float(skip_s[n]) if t == "skip" else None
            yield online[s], item_ids[int(item[n])], t, value
            if ends[n]:
                online[s] = new_user()


def run_load(
    producer: EventProducer,
    spec: LoadSpec,
    item_ids: Sequence[str],
    *,
    echo: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    progress_s: float = 5.0,
    flush_timeout_s: float = 30.0,
    progress: Callable[[float, float], None] | None = None,
) -> Report:
    """Publish ``spec.rate`` events/s until ``duration_s``, ``max_events`` or ``stop``.

    A line goes to ``echo`` every ``progress_s``; ``progress(sent, expected)`` is called after
    each burst sent (the application's bar; ``expected``: ``max_events``, else the rate times
    ``duration_s``, else 0 for an open-ended run)."""
    stop = stop or threading.Event()
    ids = list(item_ids[: spec.items])
    if not ids:
        raise ConfigError("loadgen needs at least one item id")
    stream = events(spec, ids, np.random.default_rng(spec.seed))
    started = time.monotonic()
    end = started + spec.duration_s if spec.duration_s is not None else None
    next_progress = started + progress_s
    sent = 0
    bounds = [spec.max_events, int(spec.rate * spec.duration_s) if spec.duration_s else None]
    expected = min((b for b in bounds if b), default=0)
    while not stop.is_set():
        now = time.monotonic()
        if end is not None and now >= end:
            break
        if spec.max_events is not None and sent >= spec.max_events:
            break
        due = int((now - started) * spec.rate) + 1  # events that should be out by now
        if spec.max_events is not None:
            due = min(due, spec.max_events)
        if due <= sent:
            wait = (sent / spec.rate) - (now - started)
            if end is not None:
                wait = min(wait, end - now)
            stop.wait(max(wait, 0.0005))
            continue
        batch = min(due - sent, 1000)  # behind schedule: catch up, but look at the clock
        for _ in range(batch):
            user, item, t, value = next(stream)
            producer.send(new_event(user, item, t, value))
        sent += batch
        if progress is not None:
            progress(sent, expected)
        if time.monotonic() >= next_progress:
            elapsed = time.monotonic() - started
            echo(
                f"{producer.sent} sent, {producer.delivered} delivered, "
                f"{producer.sent / elapsed:,.0f} events/s (target {spec.rate:g})"
                + (f", {max(0.0, end - time.monotonic()):.0f} s left" if end else "")
            )
            next_progress += progress_s
    return finish(producer, started, flush_timeout_s)


def generated_items(n: int) -> list[str]:
    """Item ids for load without a model: ``item-000000`` ... (rank 0 most popular)."""
    width = max(6, len(str(n - 1)))
    return [f"item-{i:0{width}d}" for i in range(n)]
