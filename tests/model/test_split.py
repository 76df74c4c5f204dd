"""The per-user holdout split: pairs, the time and random holdouts, relevance, validation."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.data import Interactions, synthetic
from streamrec.model.split import aggregate, holdout_mask, split_interactions


def _rows(rows: list[tuple[str, str, float, int]]) -> Interactions:
    u, i, w, t = zip(*rows, strict=True)
    return Interactions(
        np.asarray(u, dtype=np.object_),
        np.asarray(i, dtype=np.object_),
        np.asarray(w, dtype=np.float32),
        np.asarray(t, dtype=np.int64),
    )


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


@pytest.mark.parametrize("span", [50, 2**61])
def test_holdout_order_is_lexsort_by_user_time_and_random_key(span: int) -> None:
    from streamrec.model.split import _by_user_time_tiebreak

    rng = np.random.default_rng(8)
    users = rng.integers(0, 40, size=3000).astype(np.int64)
    times = rng.integers(0, 50, size=3000).astype(np.int64) * (span // 50)  # many ties
    tiebreak = rng.random(3000)
    want = np.lexsort((tiebreak, times, users))
    assert np.array_equal(_by_user_time_tiebreak(users, times, tiebreak, 40), want)
    no_times = np.lexsort((tiebreak, users))
    assert np.array_equal(_by_user_time_tiebreak(users, None, tiebreak, 40), no_times)
