"""Prequential evaluation of a replay: the pure part (arrays in, numbers out).

Every replayed interaction is a test case: just before an event (user u, item i) is sent, the
list a front-end would show u is read, and the event scores by where i stands in it
(``rank_of``: 0-based, -1 absent). Per event, from that rank r::

    hr@10   = [0 <= r < 10]        hr@50 = [0 <= r < 50]
    ndcg@10 = 1 / log2(r + 2)  if 0 <= r < 10, else 0   (one relevant item: the ideal DCG is 1)

and a policy's figure is the mean over events. Confidence intervals are a bootstrap clustered
by user (``resample_means``): users are drawn with replacement, each bringing all their events,
because one user's events are not independent of each other; every policy and metric is
computed on the same draws, so a ratio of two policies (``ratio_interval``) is paired.

Pacing (``schedule``): within one retrain period a user's list depends only on that user's own
events and the serving model, so the events of a period may be sent in *rounds*: round r holds
every user's r-th event of the period (in time order), so no user repeats within a round, and
one wait for the worker per round (``caught_up``) makes each list read reflect every earlier
event of its user. The reads of a round equal reads made one event at a time in time order.

``summarize`` turns per-event ranks into the report's ``policies`` block, overall and per
segment (user known / new to the serving model, item known / new), with intervals;
``percentiles`` the freshness figures; ``over_time`` hit rate per slice of event time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

#: The policies one replay measures: the lists in Redis as the worker keeps them, the lists of
#: the last nightly publish (no fold-in since), and the popular list of that publish.
POLICIES: tuple[str, ...] = ("live", "static", "popularity")
#: The per-event metrics, in column order of ``per_event``.
METRICS: tuple[str, ...] = ("hr10", "hr50", "ndcg10")
#: Segments of the events, by what the serving model knew when the event was read.
SEGMENTS: tuple[str, ...] = ("user_known", "user_new", "item_known", "item_new")


def rank_of(items: Sequence[str], item: str) -> int:
    """0-based position of ``item`` in ``items`` (a list, best first), -1 when absent."""
    try:
        return items.index(item)
    except ValueError:
        return -1


def per_event(ranks: I64) -> F64:
    """(n,) int64 ranks (-1 = absent) -> (n, 3) float64: hr@10, hr@50, ndcg@10 per event."""
    r = np.asarray(ranks, dtype=np.int64)
    out = np.zeros((len(r), len(METRICS)), dtype=np.float64)
    found = r >= 0
    out[:, 0] = found & (r < 10)
    out[:, 1] = found & (r < 50)
    top = found & (r < 10)
    out[top, 2] = 1.0 / np.log2(r[top] + 2.0)
    return out


def rounds(users: Sequence[str]) -> I64:
    """(n,) int64: for each event, how many earlier events of the same user ``users`` holds
    (the round it is sent in)."""
    seen: dict[str, int] = {}
    out = np.empty(len(users), dtype=np.int64)
    for n, u in enumerate(users):
        k = seen.get(u, 0)
        out[n] = k
        seen[u] = k + 1
    return out


def periods(timestamps: I64, start_ms: int, every_ms: int) -> I64:
    """(n,) int64 retrain period of each event: ``(t - start) // every``, 0 before ``start``."""
    if every_ms <= 0:
        raise ValueError("every_ms must be positive")
    t = np.asarray(timestamps, dtype=np.int64)
    return np.maximum(0, (t - int(start_ms)) // int(every_ms))


def schedule(
    users: Sequence[str], timestamps: I64, start_ms: int, every_ms: int
) -> list[tuple[int, list[list[int]]]]:
    """The send plan of events in time order: ``[(period, rounds), ...]`` for each period that
    holds events, ascending; ``rounds[r]`` the indices of the period's events that are their
    user's r-th in it, ascending (time order), so no user repeats within a round. Every index
    appears exactly once."""
    per = periods(timestamps, start_ms, every_ms)
    plan: list[tuple[int, list[list[int]]]] = []
    n = len(users)
    lo = 0
    while lo < n:
        hi = lo
        while hi < n and per[hi] == per[lo]:
            hi += 1
        if hi < n and per[hi] < per[lo]:
            raise ValueError("timestamps are not in ascending order")
        r = rounds(users[lo:hi])
        groups: list[list[int]] = [[] for _ in range(int(r.max()) + 1)]
        for off, k in enumerate(r.tolist()):
            groups[k].append(lo + off)
        plan.append((int(per[lo]), groups))
        lo = hi
    return plan


def caught_up(applied: Mapping[int, int], acked: Mapping[int, int]) -> bool:
    """Whether every partition's applied offset has reached the last offset the broker
    acknowledged there (a partition absent from ``applied`` has applied nothing)."""
    return all(applied.get(p, -1) >= o for p, o in acked.items())


def percentiles(values: F64, qs: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": .., "p95": .., "p99": .., "max": .., "n": ..}`` of the finite ``values``
    (NaN left out); NaN figures when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    out: dict[str, float] = {}
    for q in qs:
        out[f"p{q:g}"] = float(np.percentile(v, q)) if len(v) else math.nan
    out["max"] = float(v.max()) if len(v) else math.nan
    out["n"] = float(len(v))
    return out


# --- the clustered bootstrap ----------------------------------------------------------------------


def user_sums(values: F64, clusters: I64) -> tuple[F64, F64]:
    """``values`` (n, m) per event and ``clusters`` (n,) int64 codes 0..U-1 -> (U, m) float64
    sums per cluster and (U,) float64 event counts (clusters with no event dropped)."""
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(clusters, dtype=np.int64)
    _, dense = np.unique(c, return_inverse=True)
    dense = dense.reshape(-1)
    u = int(dense.max()) + 1 if len(dense) else 0
    sums = np.zeros((u, v.shape[1]), dtype=np.float64)
    np.add.at(sums, dense, v)
    counts = np.bincount(dense, minlength=u).astype(np.float64)
    return sums, counts


def resample_means(
    sums: F64, counts: F64, n_boot: int = 1000, seed: int = 0, chunk_cells: int = 4_000_000
) -> F64:
    """(n_boot, m) float64: the mean per event of each column over ``n_boot`` draws of the U
    clusters with replacement (each draw U clusters; its mean = Σ sums / Σ counts of the drawn
    clusters). ``sums`` (U, m), ``counts`` (U,) from ``user_sums``; seeded, and drawn in
    chunks of about ``chunk_cells`` indices."""
    u, m = sums.shape
    out = np.full((n_boot, m), math.nan, dtype=np.float64)
    if u == 0:
        return out
    rng = np.random.default_rng(seed)
    step = max(1, chunk_cells // u)
    for lo in range(0, n_boot, step):
        b = min(step, n_boot - lo)
        idx = rng.integers(0, u, size=(b, u))
        total = counts[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo : lo + b] = sums[idx].sum(axis=1) / total[:, None]
    return out


def interval(draws: F64, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of (n_boot,) ``draws`` (non-finite draws left out)."""
    d = np.asarray(draws, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not len(d):
        return (math.nan, math.nan)
    a = (1 - level) / 2 * 100
    return (float(np.percentile(d, a)), float(np.percentile(d, 100 - a)))


def ratio_interval(num: F64, den: F64, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of ``num / den`` over paired (n_boot,) draws (a draw with a
    zero denominator is left out)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return interval(np.asarray(num) / np.asarray(den), level)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def summarize(
    ranks: Mapping[str, I64],
    users: I64,
    segments: Mapping[str, Bools] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """The report's figures from per-event ranks.

    Args:
        ranks: per policy, (n,) int64 rank of each event's item in the list read for it.
        users: (n,) int64 user code of each event (the bootstrap's clusters).
        segments: per segment name, (n,) bool mask of the events in it.
        n_boot: bootstrap draws (0: no intervals).

    Returns ``{"policies": {policy: {"hr10", "hr50", "ndcg10", "events", "ci": {metric:
    [lo, hi]}, "segments": {segment: {... the same, without segments}}}}, "lift":
    {"live_over_static": {metric: {"value", "ci"}}, "live_over_popularity": ...}}``; the
    lifts overall and per segment.
    """
    names = [p for p in POLICIES if p in ranks]
    groups: dict[str, Bools] = {"all": np.ones(len(users), dtype=np.bool_)}
    groups.update(segments or {})
    out: dict[str, Any] = {"policies": {p: {} for p in names}, "lift": {}}
    for group, mask in groups.items():
        cols = np.concatenate([per_event(np.asarray(ranks[p])[mask]) for p in names], axis=1)
        n = int(mask.sum())
        point = cols.mean(axis=0) if n else np.full(cols.shape[1], math.nan)
        draws = None
        if n_boot > 0 and n:
            sums, counts = user_sums(cols, np.asarray(users)[mask])
            draws = resample_means(sums, counts, n_boot, seed)
        m = len(METRICS)
        for j, p in enumerate(names):
            block: dict[str, Any] = {k: float(point[j * m + i]) for i, k in enumerate(METRICS)}
            block["events"] = n
            if draws is not None:
                block["ci"] = {k: list(interval(draws[:, j * m + i], level))
                               for i, k in enumerate(METRICS)}  # fmt: skip
            if group == "all":
                out["policies"][p].update(block)
            else:
                out["policies"][p].setdefault("segments", {})[group] = block
        for base in ("static", "popularity"):
            if "live" not in names or base not in names:
                continue
            jl, jb = names.index("live"), names.index(base)
            lift: dict[str, Any] = {}
            for i, k in enumerate(METRICS):
                entry: dict[str, Any] = {"value": _ratio(point[jl * m + i], point[jb * m + i])}
                if draws is not None:
                    entry["ci"] = list(ratio_interval(draws[:, jl * m + i], draws[:, jb * m + i]))
                lift[k] = entry
            key = f"live_over_{base}"
            if group == "all":
                out["lift"].setdefault(key, {}).update(lift)
            else:
                out["lift"].setdefault(key, {}).setdefault("segments", {})[group] = lift
    return out


def over_time(timestamps: I64, ranks: Mapping[str, I64], bins: int = 40) -> dict[str, Any]:
    """HR@10 per policy in ``bins`` slices of equal event count, in time order:
    ``{"t_ms": [slice's first event time], "events": [...], policy: [hr10, ...]}``."""
    t = np.asarray(timestamps, dtype=np.int64)
    n = len(t)
    edges = np.unique(np.linspace(0, n, min(bins, n) + 1).astype(np.int64)) if n else [0]
    out: dict[str, Any] = {"t_ms": [], "events": []}
    for p in ranks:
        out[p] = []
    for lo, hi in itertools.pairwise(edges):
        out["t_ms"].append(int(t[lo]))
        out["events"].append(int(hi - lo))
        for p, r in ranks.items():
            rr = np.asarray(r)[lo:hi]
            out[p].append(float(np.mean((rr >= 0) & (rr < 10))))
    return out
