"""The baselines: top-k of dense scores, EASE against a direct solve, popularity lists."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from streamrec.model.baselines import ease_lists, ease_weights, popularity_lists, topk
from streamrec.model.data import synthetic
from streamrec.model.evaluate import evaluate
from streamrec.model.split import split_interactions


def test_topk_excludes_and_pads() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]], dtype=np.float32)
    exclude = sp.csr_matrix(np.array([[0, 1, 0], [1, 1, 1]]))
    assert topk(scores.copy(), 2, exclude).tolist() == [[2, 0], [-1, -1]]
    assert topk(scores.copy(), 4).tolist() == [[1, 2, 0, -1], [0, 1, 2, -1]]


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
