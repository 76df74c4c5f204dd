"""A generated listening log with a known drift, for the live evaluation (``streamrec replay
--evaluate``): needs nothing outside the repo.

Items belong to genres, with Zipf-like popularity inside each. Users join at a uniform time
over ``days``; each listens in a few sessions (a session: ``session_events`` plays a minute
apart, sessions a few days apart) and each session sticks to one genre, the first the user's
own and every later one switching genre with probability ``switch`` (the drift); a tenth of
the plays come from the global charts. No user plays an item twice. So between two nightly
retrains a model without fold-in has nothing to go on for users who joined since (they get
the popular list) and the old genre for users who switched; the real-time fold-in learns both
from a session's first plays. Ids look like ``user-00042`` and ``g03-track-0117``.

    python -m streamrec.model.drift drift.csv      # 'user_id,item_id,type,timestamp' rows
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

T0_MS = 1_700_000_000_000
MINUTE_MS = 60_000
DAY_MS = 86_400_000


@dataclass(frozen=True)
class DriftLog:
    """(n,) columns in time order: ``users``/``items`` str ids (object), ``timestamps`` int64
    epoch ms."""

    users: npt.NDArray[np.object_]
    items: npt.NDArray[np.object_]
    timestamps: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.users)


def drifting_log(
    n_users: int = 600,
    n_items: int = 800,
    n_genres: int = 8,
    days: float = 30.0,
    sessions: tuple[int, int] = (1, 4),
    session_events: tuple[int, int] = (6, 20),
    switch: float = 0.6,
    seed: int = 0,
) -> DriftLog:
    """The log of the module doc, deterministic for a seed; ``sessions`` and
    ``session_events`` are inclusive ranges drawn uniformly per user and per session."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, n_genres, size=n_items)
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    pop = pop[rng.permutation(n_items)]
    global_p = pop / pop.sum()
    by_genre = [np.where(genre == g, pop, 0.0) for g in range(n_genres)]
    by_genre = [p / p.sum() if p.sum() > 0 else global_p for p in by_genre]
    item_ids = np.asarray([f"g{genre[i]:02d}-track-{i:04d}" for i in range(n_items)], dtype=object)
    users: list[str] = []
    items: list[str] = []
    stamps: list[int] = []
    for u in range(n_users):
        t = T0_MS + int(rng.uniform(0, days) * DAY_MS)
        g = int(rng.integers(n_genres))
        heard: set[int] = set()
        for s in range(int(rng.integers(sessions[0], sessions[1] + 1))):
            if s > 0:
                t += int(rng.exponential(3.0) * DAY_MS) + 6 * 3_600_000
                if rng.random() < switch:
                    g = int((g + rng.integers(1, n_genres)) % n_genres)
            p = 0.9 * by_genre[g] + 0.1 * global_p
            for _ in range(int(rng.integers(session_events[0], session_events[1] + 1))):
                if len(heard) >= n_items:
                    break
                q = p.copy()
                q[list(heard)] = 0.0
                i = int(rng.choice(n_items, p=q / q.sum()))
                heard.add(i)
                users.append(f"user-{u:05d}")
                items.append(str(item_ids[i]))
                stamps.append(t)
                t += int(rng.uniform(0.5, 1.5) * MINUTE_MS)
    order = np.argsort(np.asarray(stamps, dtype=np.int64), kind="stable")
    return DriftLog(
        np.asarray(users, dtype=object)[order],
        np.asarray(items, dtype=object)[order],
        np.asarray(stamps, dtype=np.int64)[order],
    )


def write_csv(path: Path, log: DriftLog | None = None) -> int:
    """Write ``log`` (default ``drifting_log()``) as an event CSV ``user_id,item_id,type,
    timestamp`` (play events, epoch ms) that ``streamrec replay`` reads; the row count."""
    log = drifting_log() if log is None else log
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "type", "timestamp"])
        for u, i, t in zip(log.users, log.items, log.timestamps.tolist(), strict=True):
            w.writerow([u, i, "play", t])
    return len(log)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m streamrec.model.drift", description=__doc__)
    p.add_argument("out", type=Path, help="the CSV to write")
    p.add_argument("--users", type=int, default=600)
    p.add_argument("--items", type=int, default=800)
    p.add_argument("--days", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    n = write_csv(a.out, drifting_log(a.users, a.items, days=a.days, seed=a.seed))
    print(f"wrote {n} events to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
