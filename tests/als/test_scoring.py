"""Scoring many users at once: CSR histories give the worker's lists, threads keep the order."""

from __future__ import annotations

import threading

import numpy as np

from streamrec.als.scorer import Scorer
from streamrec.als.scoring import score_csr, scored_in_order
from streamrec.artifact import Model
from streamrec.model.data import synthetic
from streamrec.model.evaluate import als_model, histories, scorer_lists
from streamrec.model.params import Params
from streamrec.model.split import Split, split_interactions


def _model() -> tuple[Model, Split]:
    split = split_interactions(synthetic(300, 120, seed=3))
    return als_model(split, Params(factors=8, iterations=3, regularization=1.0)), split


def test_score_csr_is_score_of_the_same_histories() -> None:
    model, split = _model()
    blocked = np.array([0, 5], dtype=np.int64)
    sc = Scorer.create(model, n=10, history_max=4, blocked=blocked)
    users = np.arange(0, 300, 7, dtype=np.int64)
    totals = split.train_totals()
    got = score_csr(sc, totals, users, split.user_ids, sc.rows_of(split.item_ids))
    want = sc.score(histories(split, users, totals))
    assert got.users == want.users
    assert np.array_equal(got.items, want.items)
    assert np.array_equal(got.scores, want.scores)
    assert (got.unknown, got.cold) == (want.unknown, want.cold)


def test_scored_in_order_keeps_order_and_gives_each_thread_its_own_buffers() -> None:
    model, _ = _model()
    scorer = Scorer.create(model)
    seen: dict[int, set[int]] = {}

    def fn(sc: Scorer, arg: int) -> int:
        seen.setdefault(threading.get_ident(), set()).add(id(sc.buffers))
        return arg * arg

    assert list(scored_in_order(scorer, fn, range(50), threads=2)) == [a * a for a in range(50)]
    buffers = [b for per_thread in seen.values() for b in per_thread]
    assert all(len(s) == 1 for s in seen.values())  # one copy per thread, reused
    assert len(set(buffers)) == len(buffers) and id(scorer.buffers) not in buffers


def test_scorer_lists_do_not_depend_on_the_batch_size() -> None:
    model, split = _model()
    users = split.eval_users()
    one = scorer_lists(split, model, users, 10, batch=4096)
    many = scorer_lists(split, model, users, 10, batch=7)
    assert len(users) > 7 * 4
    assert np.array_equal(one.items, many.items)
    assert (one.unknown, one.cold) == (many.unknown, many.cold)
    assert (one.items >= 0).any()
