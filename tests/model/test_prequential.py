"""The live evaluation's pure parts: per-event metrics, rounds, the clustered bootstrap, the
summary, the generated drift log and the report page (known answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrec.model import prequential as pq
from streamrec.model.drift import drifting_log, write_csv
from streamrec.model.replay_report import render


def test_rank_of() -> None:
    assert pq.rank_of(["a", "b", "c"], "a") == 0
    assert pq.rank_of(["a", "b", "c"], "c") == 2
    assert pq.rank_of(["a", "b", "c"], "z") == -1
    assert pq.rank_of([], "a") == -1


def test_per_event_known_answers() -> None:
    got = pq.per_event(np.array([0, 1, 9, 10, 49, 50, -1], dtype=np.int64))
    assert got[:, 0].tolist() == [1, 1, 1, 0, 0, 0, 0]  # hr@10
    assert got[:, 1].tolist() == [1, 1, 1, 1, 1, 0, 0]  # hr@50
    want = [1.0, 1 / math.log2(3), 1 / math.log2(11), 0, 0, 0, 0]  # ndcg@10, ideal DCG 1
    assert got[:, 2] == pytest.approx(want)


def test_rounds_count_each_users_earlier_events() -> None:
    assert pq.rounds(["a", "b", "a", "a", "c", "b"]).tolist() == [0, 0, 1, 2, 0, 1]


def test_schedule_periods_rounds_and_order() -> None:
    users = ["a", "b", "a", "c", "a", "b", "b"]
    ts = np.array([0, 1, 2, 10, 11, 12, 25], dtype=np.int64)
    plan = pq.schedule(users, ts, start_ms=0, every_ms=10)
    assert plan == [(0, [[0, 1], [2]]), (1, [[3, 4, 5]]), (2, [[6]])]
    flat = sorted(i for _, groups in plan for g in groups for i in g)
    assert flat == list(range(len(users)))  # every event exactly once
    for _, groups in plan:  # no user twice in one round, and rounds keep each user's order
        for g in groups:
            assert len({users[i] for i in g}) == len(g)
            assert g == sorted(g)


def test_schedule_refuses_unsorted_times() -> None:
    with pytest.raises(ValueError, match="ascending"):
        pq.schedule(["a", "b"], np.array([20, 5], dtype=np.int64), 0, 10)
    with pytest.raises(ValueError):
        pq.periods(np.array([1], dtype=np.int64), 0, 0)


def test_periods_before_start_are_the_first() -> None:
    ts = np.array([-5, 0, 9, 10, 35], dtype=np.int64)
    assert pq.periods(ts, 0, 10).tolist() == [0, 0, 0, 1, 3]


def test_caught_up() -> None:
    assert pq.caught_up({0: 5, 1: 3}, {0: 5, 1: 2})
    assert not pq.caught_up({0: 4, 1: 3}, {0: 5})
    assert not pq.caught_up({}, {2: 0})  # nothing applied on a partition that got an event
    assert pq.caught_up({}, {})


def test_percentiles() -> None:
    v = np.array([1.0, 2.0, 3.0, 4.0, math.nan, 100.0])
    got = pq.percentiles(v, (50, 99))
    assert got["p50"] == 3.0 and got["max"] == 100.0 and got["n"] == 5
    assert got["p99"] == pytest.approx(np.percentile([1, 2, 3, 4, 100], 99))
    assert math.isnan(pq.percentiles(np.array([math.nan]))["p50"])


def test_user_sums() -> None:
    v = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    sums, counts = pq.user_sums(v, np.array([7, 3, 7], dtype=np.int64))
    assert sums.tolist() == [[0.0, 1.0], [2.0, 1.0]]  # clusters in sorted code order: 3, 7
    assert counts.tolist() == [1.0, 2.0]


def test_bootstrap_draws_whole_users() -> None:
    # Two users: one always hits (4 events), one never (1 event). A draw takes 2 users with
    # replacement, so every resampled mean is one of 1, 0 or 4/5: never anything else.
    sums = np.array([[4.0], [0.0]])
    counts = np.array([4.0, 1.0])
    draws = pq.resample_means(sums, counts, n_boot=500, seed=1)
    assert set(np.round(draws[:, 0], 9).tolist()) <= {1.0, 0.0, 0.8}
    assert 0.8 in set(np.round(draws[:, 0], 9).tolist())
    # seeded: the same draws again, whatever the chunking
    again = pq.resample_means(sums, counts, n_boot=500, seed=1, chunk_cells=10_000)
    assert np.array_equal(draws, again)


def test_bootstrap_interval_covers_the_mean_and_narrows_with_users(
    rng: np.random.Generator,
) -> None:
    def width(n_users: int) -> tuple[float, float, float]:
        users = np.repeat(np.arange(n_users), 5)
        p = rng.uniform(0, 0.6, size=n_users)[users]  # users differ: clustering matters
        hits = (rng.random(len(users)) < p).astype(np.float64)[:, None]
        sums, counts = pq.user_sums(hits, users)
        lo, hi = pq.interval(pq.resample_means(sums, counts, 400, seed=0)[:, 0])
        return lo, hi, float(hits.mean())

    lo, hi, mean = width(40)
    assert lo < mean < hi
    lo2, hi2, mean2 = width(1000)
    assert lo2 < mean2 < hi2
    assert hi2 - lo2 < (hi - lo) / 2


def test_clustering_widens_the_interval_of_correlated_events() -> None:
    # 50 users, each either hits all 20 of its events or none: the events are as good as 50
    # observations, not 1000; an interval over events would be far too narrow.
    users = np.repeat(np.arange(50), 20)
    hits = (users % 2 == 0).astype(np.float64)[:, None]
    sums, counts = pq.user_sums(hits, users)
    lo, hi = pq.interval(pq.resample_means(sums, counts, 1000, seed=0)[:, 0])
    sums1, counts1 = pq.user_sums(hits, np.arange(len(users)))  # every event its own cluster
    lo1, hi1 = pq.interval(pq.resample_means(sums1, counts1, 1000, seed=0)[:, 0])
    assert (hi - lo) > 3 * (hi1 - lo1)


def test_ratio_interval_paired() -> None:
    num = np.array([2.0, 4.0, 6.0, math.nan])
    den = np.array([1.0, 2.0, 0.0, 1.0])
    lo, hi = pq.ratio_interval(num, den)
    assert lo == pytest.approx(2.0) and hi == pytest.approx(2.0)  # inf and NaN left out


def test_summarize_known_answers() -> None:
    ranks = {
        "live": np.array([0, 3, 20, -1], dtype=np.int64),
        "static": np.array([-1, -1, 20, 0], dtype=np.int64),
        "popularity": np.array([-1, -1, -1, -1], dtype=np.int64),
    }
    users = np.array([0, 0, 1, 2], dtype=np.int64)
    known = np.array([True, True, False, False])
    got = pq.summarize(ranks, users, {"user_known": known, "user_new": ~known}, n_boot=200)
    live, static = got["policies"]["live"], got["policies"]["static"]
    assert live["hr10"] == 0.5 and live["hr50"] == 0.75 and live["events"] == 4
    assert live["ndcg10"] == pytest.approx((1 + 1 / math.log2(5)) / 4)
    assert static["hr10"] == 0.25 and static["hr50"] == 0.5
    assert got["policies"]["popularity"]["hr50"] == 0.0
    assert got["lift"]["live_over_static"]["hr10"]["value"] == pytest.approx(2.0)
    assert math.isnan(got["lift"]["live_over_popularity"]["hr10"]["value"])
    seg = live["segments"]["user_known"]
    assert seg["hr10"] == 1.0 and seg["events"] == 2
    assert live["segments"]["user_new"]["hr10"] == 0.0
    lo, hi = live["ci"]["hr10"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    assert "ci" in got["lift"]["live_over_static"]["hr10"]


def test_over_time() -> None:
    ts = np.arange(10, dtype=np.int64) * 1000
    ranks = {"live": np.array([0] * 5 + [-1] * 5, dtype=np.int64)}
    got = pq.over_time(ts, ranks, bins=2)
    assert got["t_ms"] == [0, 5000] and got["events"] == [5, 5] and got["live"] == [1.0, 0.0]


def test_drift_log_is_deterministic_sorted_and_drifts(tmp_path: object) -> None:
    a, b = drifting_log(60, 120, days=10, seed=4), drifting_log(60, 120, days=10, seed=4)
    assert np.array_equal(a.timestamps, b.timestamps) and list(a.items) == list(b.items)
    assert np.all(np.diff(a.timestamps) >= 0)
    pairs = list(zip(a.users, a.items, strict=True))
    assert len(set(pairs)) == len(pairs)  # nobody plays an item twice
    # users join over the whole window: the second half holds users the first never saw
    half = len(a) // 2
    assert set(a.users[half:]) - set(a.users[:half])
    # sessions stick to a genre (most plays), and some users change genre between sessions
    genres: dict[str, list[str]] = {}
    for u, i in pairs:
        genres.setdefault(u, []).append(i[:3])
    assert sum(len(set(g)) > 1 for g in genres.values()) > len(genres) / 3


def test_write_csv_reads_back_as_an_event_file(tmp_path: object) -> None:
    from pathlib import Path

    from streamrec.producer.replay import read_rows

    path = Path(str(tmp_path)) / "drift.csv"
    n = write_csv(path, drifting_log(20, 50, days=5, seed=1))
    rows = read_rows(path)
    assert len(rows) == n and rows.kind == "generic" and set(rows.types) == {"play"}
    assert rows.timestamps == sorted(rows.timestamps or [])


def test_report_page_is_self_contained() -> None:
    ranks = {p: np.array([0, -1, 5, 60], dtype=np.int64) for p in pq.POLICIES}
    users = np.array([0, 1, 1, 2], dtype=np.int64)
    report = pq.summarize(ranks, users, {"user_known": np.array([1, 0, 1, 0], bool)}, 50)
    report["over_time"] = pq.over_time(np.arange(4, dtype=np.int64), ranks, 2)
    report["freshness_ms"] = pq.percentiles(np.array([3.0, 5.0, 40.0]))
    report["freshness_sample_ms"] = [3.0, 5.0, 40.0]
    page = render(report)
    assert page.startswith("<!doctype html>") and page.count("<svg") == 3
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "live over static" in page
