"""One user's failure stays that user's: the batch's history and scoring, guarded per user.

A batch is applied to every user at once (one flatten, one fold-in, one top-N), so anything
wrong with one user (a stored state that cannot be read, an event that cannot be applied, a
feedback total that overflowed, a degenerate solve, non-finite scores) would otherwise fail
the batch, and the same batch again after every restart. Here each step first runs on the
whole batch and is checked cheaply (``np.isfinite`` over the batch's totals, a NaN/+inf test
over its scores); only when something is wrong does it fall back to per-user work, which
finds the users at fault and records them in ``failed`` (user -> reason). The worker then
writes neither their state nor their list (both stay as they were), counts and logs them,
and applies the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from streamrec.als.history import Rules, UserState, flatten
from streamrec.als.scorer import Scored, Scorer
from streamrec.events import Event

#: user -> why their batch could not be applied to them (one line).
Failed = dict[str, str]


def why(stage: str, exc: Exception) -> str:
    """A failure's reason, one short line."""
    return " ".join(f"{stage}: {type(exc).__name__}: {exc}".split())[:300]


def read_states(
    users: Sequence[str], raw: Sequence[bytes | None], failed: Failed
) -> dict[str, UserState]:
    """Every readable state of ``users`` (``raw``: their stored values); an unreadable one is
    left out and its user added to ``failed``."""
    try:
        return {u: UserState.decode(r) for u, r in zip(users, raw, strict=True)}
    except Exception:
        pass
    states = {}
    for u, r in zip(users, raw, strict=True):
        try:
            states[u] = UserState.decode(r)
        except Exception as exc:
            failed[u] = why("stored state", exc)
    return states


def apply_events(
    events: Iterable[Event], states: dict[str, UserState], rules: Rules, failed: Failed
) -> tuple[list[str], int]:
    """Apply ``events`` in order to their users' ``states``; a user whose event cannot be
    applied is added to ``failed`` and skipped from then on. Returns the users whose state
    changed (in order of first change, without the failed ones) and how many events were
    duplicates (an ``event_id`` the user's dedup window already holds)."""
    touched: dict[str, None] = {}
    duplicates = 0
    for ev in events:
        if failed and ev.user_id in failed:
            continue
        try:
            if states[ev.user_id].apply(ev, rules):
                touched[ev.user_id] = None
            else:
                duplicates += 1
        except Exception as exc:
            failed[ev.user_id] = why("history", exc)
    return [u for u in touched if u not in failed], duplicates


def flatten_apart(
    users: list[str], states: dict[str, UserState], half_life_ms: float | None, failed: Failed
) -> tuple[list[str], npt.NDArray[np.int64], list[str], npt.NDArray[np.float64]]:
    """``flatten`` of the users' states, without the users whose state cannot be flattened or
    holds a non-finite total (added to ``failed``): (users kept, counts, item_ids, totals)."""
    try:
        counts, item_ids, totals = flatten([states[u] for u in users], half_life_ms)
        if np.isfinite(totals).all():
            return users, counts, item_ids, totals
    except Exception:
        pass
    kept = []
    for u in users:
        try:
            _, _, mine = flatten([states[u]], half_life_ms)
        except Exception as exc:
            failed[u] = why("history", exc)
            continue
        if np.isfinite(mine).all():
            kept.append(u)
        else:
            failed[u] = "history: a feedback total is not finite (a value overflowed)"
    counts, item_ids, totals = flatten([states[u] for u in kept], half_life_ms)
    return kept, counts, item_ids, totals


def score_apart(
    scorer: Scorer,
    users: list[str],
    counts: npt.NDArray[np.int64],
    rows: npt.NDArray[np.int64],
    totals: npt.NDArray[np.float64],
    failed: Failed,
) -> Scored:
    """``scorer.score_flat`` of the batch, without the users whose fold-in or top-N raises or
    is not finite (added to ``failed``).

    One call for the whole batch when nothing is wrong. A call that raises (a singular
    system fails the whole stacked solve) is split in halves until the users at fault are
    alone; rows with NaN or +inf scores (a non-finite vector: ``score_flat`` makes all its
    scores NaN) are dropped from the result as they are.
    """
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    parts: list[tuple[int, Scored]] = []
    pending = [(0, len(users))]
    while pending:
        lo, hi = pending.pop()
        a, b = int(ptr[lo]), int(ptr[hi])
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # what follows tells, per user
                got = scorer.score_flat(users[lo:hi], counts[lo:hi], rows[a:b], totals[a:b])
        except Exception as exc:
            if hi - lo == 1:
                failed[users[lo]] = why("fold-in/top-N", exc)
            else:
                mid = (lo + hi) // 2
                pending += [(mid, hi), (lo, mid)]
            continue
        parts.append((lo, _finite_only(got, rows[a:b], ptr[lo : hi + 1] - a, failed)))
    if len(parts) == 1:
        return parts[0][1]
    return _concat([p for _, p in sorted(parts, key=lambda p: p[0])], scorer)


def _finite_only(
    scored: Scored, rows: npt.NDArray[np.int64], ptr: npt.NDArray[np.int64], failed: Failed
) -> Scored:
    """``scored`` without its rows holding a NaN or +inf score (-inf pads short lists)."""
    s = scored.scores
    if (s < np.inf).all():  # false for NaN and +inf alone; one pass, the rows only if not
        return scored
    bad = np.isnan(s).any(axis=1) | (s == np.inf).any(axis=1)
    unknown = scored.unknown
    for b in np.flatnonzero(bad).tolist():
        failed[scored.users[b]] = "fold-in/top-N: scores are not finite (a degenerate solve)"
        unknown -= int((rows[ptr[b] : ptr[b + 1]] < 0).sum())
    return replace(scored.take(~bad), unknown=unknown)


def _concat(parts: Sequence[Scored], scorer: Scorer) -> Scored:
    width = min(scorer.n, scorer.model.n_items)
    if not parts:
        return Scored([], np.zeros((0, width), np.int64), np.zeros((0, width), np.float32), 0, 0)
    return Scored(
        [u for p in parts for u in p.users],
        np.vstack([p.items for p in parts]),
        np.vstack([p.scores for p in parts]),
        sum(p.unknown for p in parts),
        sum(p.cold for p in parts),
        sum(p.short for p in parts),
        *Scored.vec_parts(parts),  # type: ignore[arg-type]
    )
