"""Offline evaluation: the split, the metrics on hand-made cases, the baselines, the served path."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from streamrec.als.scorer import Scorer
from streamrec.artifact import write_model
from streamrec.model.data import Interactions, load_lastfm, synthetic
from streamrec.model.evaluate import (
    aggregate,
    als_model,
    ease_lists,
    ease_weights,
    evaluate,
    evaluate_model,
    histories,
    hit_matrix,
    holdout_mask,
    popularity_lists,
    ranking_metrics,
    scorer_lists,
    split_interactions,
    topk,
)
from streamrec.model.train import Params
from tests.conftest import shared_file


def _rows(rows: list[tuple[str, str, float, int]]) -> Interactions:
    u, i, w, t = zip(*rows, strict=True)
    return Interactions(
        np.asarray(u, dtype=np.object_),
        np.asarray(i, dtype=np.object_),
        np.asarray(w, dtype=np.float32),
        np.asarray(t, dtype=np.int64),
    )


def _relevant(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = sp.lil_matrix((len(rows), n_items), dtype=np.bool_)
    for b, items in enumerate(rows):
        for i in items:
            r[b, i] = True
    return r.tocsr()


# --- metrics on cases worked out by hand ---------------------------------------------------------


def test_metrics_of_a_known_ranking() -> None:
    # One user, list [0, 1, 2, 3], relevant {1, 3}: hits at ranks 2 and 4.
    recs = np.array([[0, 1, 2, 3]])
    m = ranking_metrics(recs, _relevant([[1, 3]], 5), ks=(4,))
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@4"] == pytest.approx(dcg / idcg)  # 0.6509...
    assert m["ndcg@4"] == pytest.approx(0.65092, abs=1e-5)
    assert m["precision@4"] == pytest.approx(0.5)
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["map@4"] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert m["coverage@4"] == pytest.approx(4 / 5)
    assert m["users"] == 1


def test_metrics_average_over_users_cut_at_k_and_skip_users_without_relevant_items() -> None:
    recs = np.array([[2, 0, 1], [4, -1, -1], [0, 1, 2]])
    rel = _relevant([[2, 1, 3, 4], [0], []], 6)  # the third user has nothing relevant
    m = ranking_metrics(recs, rel, ks=(1, 3))
    assert m["users"] == 2
    # user 0: hit, miss, hit (4 relevant); user 1: miss, then a short list.
    assert m["precision@1"] == pytest.approx((1 + 0) / 2)
    assert m["precision@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["recall@3"] == pytest.approx((2 / 4 + 0) / 2)
    ndcg0 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    assert m["ndcg@3"] == pytest.approx(ndcg0 / 2)
    assert m["map@3"] == pytest.approx(((1 + 2 / 3) / 3) / 2)
    # coverage: items listed to the evaluated users, {0, 1, 2, 4} of 6 at 3, {2, 4} at 1
    assert m["coverage@3"] == pytest.approx(4 / 6)
    assert m["coverage@1"] == pytest.approx(2 / 6)


def test_perfect_and_empty_rankings() -> None:
    rel = _relevant([[3, 1]], 4)
    assert ranking_metrics(np.array([[1, 3, 0]]), rel, ks=(3,))["ndcg@3"] == pytest.approx(1.0)
    assert ranking_metrics(np.array([[-1, -1, -1]]), rel, ks=(3,))["ndcg@3"] == 0.0
    with pytest.raises(ValueError, match="shorter"):
        ranking_metrics(np.array([[1]]), rel, ks=(3,))


def test_hit_matrix_ignores_padding() -> None:
    rel = _relevant([[0], [2]], 3)
    hits = hit_matrix(np.array([[0, -1], [-1, 2]]), rel)
    assert hits.tolist() == [[True, False], [False, True]]


def test_topk_excludes_and_pads() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]], dtype=np.float32)
    exclude = sp.csr_matrix(np.array([[0, 1, 0], [1, 1, 1]]))
    assert topk(scores.copy(), 2, exclude).tolist() == [[2, 0], [-1, -1]]
    assert topk(scores.copy(), 4).tolist() == [[1, 2, 0, -1], [0, 1, 2, -1]]


# --- the split ---------------------------------------------------------------------------------


def test_aggregate_sums_repeats_keeps_first_time_and_drops_zero_totals() -> None:
    data = _rows(
        [
            ("u", "a", 1, 30),
            ("u", "a", 2, 10),
            ("u", "b", 1.5, 5),
            ("u", "b", -1.5, 6),
            ("v", "a", 1, 1),
        ]
    )
    users, items, pairs = aggregate(data)
    assert users == ("u", "v") and items == ("a", "b")
    assert list(zip(pairs.users.tolist(), pairs.items.tolist(), strict=True)) == [(0, 0), (1, 0)]
    assert pairs.totals.tolist() == [3.0, 1.0]
    assert pairs.times is not None and pairs.times.tolist() == [10, 1]


def test_time_split_holds_out_each_users_latest_fifth() -> None:
    data = synthetic(300, 200, seed=11)
    split = split_interactions(data)
    assert split.method == "time"
    assert split.train.times is not None and split.test.times is not None
    counts = np.bincount(np.concatenate([split.train.users, split.test.users]), minlength=300)
    n_test = np.bincount(split.test.users, minlength=300)
    n_train = np.bincount(split.train.users, minlength=300)
    small = counts < 5
    assert (n_test[small] == 0).all()
    assert (n_test[~small] == np.maximum(1, counts[~small] // 5)).all()
    assert (n_train[counts > 0] >= 1).all()  # nobody loses all training pairs
    # time order: every held-out pair is no earlier than every training pair of its user
    last_train = np.full(300, np.iinfo(np.int64).min)
    np.maximum.at(last_train, split.train.users, split.train.times)
    first_test = np.full(300, np.iinfo(np.int64).max)
    np.minimum.at(first_test, split.test.users, split.test.times)
    has = n_test > 0
    assert has.any() and (first_test[has] >= last_train[has]).all()
    # train and test are disjoint
    key = lambda p: set(zip(p.users.tolist(), p.items.tolist(), strict=True))  # noqa: E731
    assert not key(split.train) & key(split.test)


def test_random_split_without_timestamps_is_seeded() -> None:
    data = synthetic(100, 80, seed=2)
    data = Interactions(data.users, data.items, data.weights, None)
    a, b, c = (split_interactions(data, seed=s) for s in (5, 5, 6))
    assert a.method == "random"
    assert np.array_equal(a.test.items, b.test.items) and np.array_equal(a.test.users, b.test.users)
    assert not np.array_equal(a.test.items, c.test.items)


def test_holdout_mask_small_users_and_ties() -> None:
    users = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], dtype=np.int64)
    times = np.array([1, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5, 9, 8], dtype=np.int64)
    mask = holdout_mask(users, times, 2, 0.2, 5, seed=0)
    assert not mask[:4].any()  # user 0 has 4 < 5 pairs
    assert mask[4:].sum() == 2 and mask[12] and mask[13]  # the two latest of user 1
    assert not holdout_mask(users, times, 2, 0.0).any()


def test_only_positive_held_out_items_are_relevant() -> None:
    rows = [("u", f"i{n}", 1.0, n) for n in range(8)] + [("u", "bad", -2.0, 100)]
    rows += [("u", "late", 1.0, 99)]
    split = split_interactions(_rows(rows))
    held = {split.item_ids[i] for i in split.test.items}
    assert held == {"bad", "late"}  # the two latest of 10
    rel = split.relevant()
    assert {split.item_ids[i] for i in rel.indices} == {"late"}


def test_validation_is_carved_from_training_pairs_only() -> None:
    split = split_interactions(synthetic(200, 150, seed=3))
    valid = split.validation()
    key = lambda p: set(zip(p.users.tolist(), p.items.tolist(), strict=True))  # noqa: E731
    assert key(valid.train) | key(valid.test) == key(split.train)
    assert not (key(valid.train) | key(valid.test)) & key(split.test)
    everything = split_interactions(synthetic(200, 150, seed=3), 0.0)
    assert len(everything.test) == 0 and len(everything.validation().test) > 0


# --- models ------------------------------------------------------------------------------------


def test_ease_matches_a_direct_solve() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((30, 7)) < 0.4).astype(np.float64)
    lam = 3.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(7))
    expected = -p / np.diag(p)[None, :]
    np.fill_diagonal(expected, 0.0)
    got = ease_weights(sp.csr_matrix(x), lam)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)
    # the defining property: B = argmin ||X - XB||² + λ||B||² with diag(B) = 0, i.e. the
    # off-diagonal gradient (XᵀX + λI) B - XᵀX vanishes
    grad = (x.T @ x + lam * np.eye(7)) @ got - x.T @ x
    off = ~np.eye(7, dtype=bool)
    np.testing.assert_allclose(grad[off], 0.0, atol=1e-9)


def test_ease_skips_above_the_item_limit_and_lists_exclude_training() -> None:
    split = split_interactions(synthetic(150, 120, seed=8))
    users = split.eval_users()
    recs = ease_lists(split, users, 10, lam=50.0)
    seen = split.train_totals()
    for b, u in enumerate(users[:20]):
        assert not set(recs[b].tolist()) & set(seen[u].indices.tolist())
    report = evaluate(split, models=("ease",), ease_max_items=10)
    assert report.result("ease").skipped is not None
    assert "limit 10" in report.result("ease").skipped  # type: ignore[operator]


def test_popularity_lists_skip_training_items() -> None:
    split = split_interactions(synthetic(120, 90, seed=4))
    users = split.eval_users()
    recs = popularity_lists(split, users, 5)
    seen = split.train_totals()
    pop = np.asarray(split.train_confidence().maximum(0).sum(axis=0)).ravel()
    for b, u in enumerate(users.tolist()):
        allowed = [i for i in np.argsort(-pop, kind="stable") if i not in set(seen[u].indices)]
        assert recs[b].tolist() == allowed[:5]
    # A catalog smaller than k plus a history: the tail is padded with -1.
    small = split_interactions(synthetic(60, 30, seed=2))
    users = small.eval_users()
    recs = popularity_lists(small, users, len(small.item_ids) + 5)
    seen = small.train_totals()
    for b, u in enumerate(users.tolist()):
        left = len(small.item_ids) - len(seen[u].indices)
        assert (recs[b][left:] == -1).all() and (recs[b][:left] >= 0).all()


def test_als_lists_are_the_workers_lists(tmp_path: Path) -> None:
    split = split_interactions(synthetic(200, 150, seed=6))
    params = Params(factors=8, iterations=4, regularization=2.0)
    model = als_model(split, params)
    users = split.eval_users()[:40]
    got = scorer_lists(split, model, users, 10)
    lists, _, _ = Scorer.create(model).recommend(histories(split, users), 10)
    index = {item: n for n, item in enumerate(split.item_ids)}
    assert got.items.tolist() == [[index[i] for i, _ in ranked] for _, ranked in lists]
    # the same model through a directory ("live") gives the same metrics
    write_model(
        tmp_path / "m",
        model.item_ids,
        model.item_factors,
        model.item_popularity,
        asdict(params),
    )
    live = evaluate_model(split, tmp_path / "m", users=users)
    direct = ranking_metrics(got.items, split.relevant()[users], (10, 20)[:1], len(split.item_ids))
    assert live.metrics["ndcg@10"] == pytest.approx(direct["ndcg@10"])
    assert live.note is not None and live.note.startswith("0 of")


def test_live_model_skips_unknown_items(small_model: Path) -> None:
    # small_model knows synthetic(400, 300, seed=3)'s items, not these
    data = synthetic(60, 50, seed=9)
    renamed = Interactions(
        data.users, np.asarray([f"x-{i}" for i in data.items], dtype=np.object_), data.weights
    )
    split = split_interactions(renamed)
    result = evaluate_model(split, small_model, ks=(5,))
    assert result.metrics["ndcg@5"] == 0.0
    assert result.note is not None and "cold users" in result.note


def test_evaluate_report_shape() -> None:
    split = split_interactions(synthetic(200, 150, seed=5))
    report = evaluate(
        split,
        models=("popularity", "itemknn", "ease", "als"),
        params=Params(factors=8, iterations=4),
        tuned=Params(factors=8, iterations=4, regularization=10.0),
        ks=(5, 10),
        ease_lambda=50.0,
    )
    names = [r.name for r in report.results]
    assert names == ["popularity", "itemknn", "ease", "als", "als-tuned"]
    for r in report.results:
        assert set(r.metrics) >= {"ndcg@5", "precision@10", "recall@5", "map@10", "coverage@5"}
        assert 0 <= r.metrics["ndcg@10"] <= 1
    d = report.to_dict()
    assert d["ks"] == [5, 10] and d["split"]["method"] == "time"
    assert "als-tuned" in report.table()


def test_als_beats_popularity_on_lastfm() -> None:
    path = shared_file("hetrec2011-lastfm-2k", "user_artists.dat.gz")
    split = split_interactions(load_lastfm(path.parent))
    assert split.method == "random"
    report = evaluate(
        split, models=("popularity", "als"), params=Params(factors=32, iterations=8), ks=(10,)
    )
    als = report.result("als").metrics["ndcg@10"]
    pop = report.result("popularity").metrics["ndcg@10"]
    assert als >= 1.5 * pop, (als, pop)
    assert (
        report.result("als").metrics["coverage@10"]
        > 5 * report.result("popularity").metrics["coverage@10"]
    )


@pytest.mark.parametrize("span", [50, 2**61])
def test_holdout_order_is_lexsort_by_user_time_and_random_key(span: int) -> None:
    from streamrec.model.evaluate import _by_user_time_tiebreak

    rng = np.random.default_rng(8)
    users = rng.integers(0, 40, size=3000).astype(np.int64)
    times = rng.integers(0, 50, size=3000).astype(np.int64) * (span // 50)  # many ties
    tiebreak = rng.random(3000)
    want = np.lexsort((tiebreak, times, users))
    assert np.array_equal(_by_user_time_tiebreak(users, times, tiebreak, 40), want)
    no_times = np.lexsort((tiebreak, users))
    assert np.array_equal(_by_user_time_tiebreak(users, None, tiebreak, 40), no_times)
