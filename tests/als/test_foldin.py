"""Fold-in and top-N against implicit's own solve and recommend, on known matrices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from streamrec.als import foldin as foldin_module
from streamrec.als.foldin import FoldIn
from streamrec.als.topn import ROW_STEP, row_step, top_n


def _fitted(n_users: int, n_items: int, k: int, reg: float, alpha: float, seed: int):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < 0.08) * rng.integers(1, 20, (n_users, n_items))
    user_items = sp.csr_matrix(np.log1p(dense).astype(np.float32))
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=k, regularization=reg, alpha=alpha, iterations=6, random_state=seed
        )
        als.fit(user_items, show_progress=False)
    return als, user_items


def _solve(fi: FoldIn, m: sp.csr_matrix, alpha: float) -> np.ndarray:
    return fi.solve(
        m.indptr.astype(np.int64), m.indices.astype(np.int64), (alpha * m.data).astype(np.float32)
    )


@pytest.mark.parametrize(("k", "reg", "alpha"), [(8, 0.1, 1.0), (32, 2.0, 4.0), (64, 20.0, 15.0)])
def test_foldin_equals_implicit_recalculate_user(k: int, reg: float, alpha: float) -> None:
    als, user_items = _fitted(120, 300, k, reg, alpha, seed=k)
    fi = FoldIn.create(als.item_factors, reg)
    mine = _solve(fi, user_items, alpha)
    theirs = als.recalculate_user(np.arange(user_items.shape[0]), user_items)
    assert mine.shape == theirs.shape == (120, k)
    assert mine.dtype == np.float32
    np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def test_negative_confidence_is_a_dislike_as_in_implicit() -> None:
    als, user_items = _fitted(40, 200, 16, 1.0, 2.0, seed=5)
    signed = user_items.copy()
    signed.data[::3] *= -1  # every third entry disliked
    fi = FoldIn.create(als.item_factors, 1.0)
    mine = _solve(fi, signed, 2.0)
    theirs = als.recalculate_user(np.arange(40), signed)
    np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def test_many_blocks_and_uneven_lengths(monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny block budget forces one solve block per few users; results must not change.
    als, user_items = _fitted(90, 250, 16, 0.5, 3.0, seed=11)
    fi = FoldIn.create(als.item_factors, 0.5)
    whole = _solve(fi, user_items, 3.0)
    monkeypatch.setattr(foldin_module, "BLOCK_ROWS", 40)
    blocked = _solve(fi, user_items, 3.0)
    np.testing.assert_allclose(blocked, whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())


def test_user_without_history_gets_zero_vector() -> None:
    y = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    fi = FoldIn.create(y, 0.1)
    out = fi.solve(np.array([0, 0, 2]), np.array([3, 7]), np.array([2.0, 1.0], np.float32))
    assert np.all(out[0] == 0)
    assert np.any(out[1] != 0)


def test_single_item_known_answer() -> None:
    # One item y with confidence c: (YᵀY + (c-1) yyᵀ + λI) x = c y, solved by hand.
    y = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    lam, c = 0.5, 3.0
    a = y.T @ y + (c - 1) * np.outer(y[0], y[0]) + lam * np.eye(2)
    expected = np.linalg.solve(a, c * y[0])  # = [3 / 3.5, 0]
    out = FoldIn.create(y, lam).solve(np.array([0, 1]), np.array([0]), np.array([c], np.float32))
    np.testing.assert_allclose(out[0], expected, rtol=1e-6)
    assert out[0][0] == pytest.approx(3 / 3.5)


def test_top_n_equals_implicit_recommend_with_recalculate_user() -> None:
    als, user_items = _fitted(60, 400, 32, 1.0, 4.0, seed=2)
    fi = FoldIn.create(als.item_factors, 1.0)
    users = np.arange(60)
    vectors = _solve(fi, user_items, 4.0)
    items, scores = top_n(
        vectors,
        als.item_factors,
        20,
        user_items.indptr.astype(np.int64),
        user_items.indices.astype(np.int64),
    )
    ref_items, ref_scores = als.recommend(
        users, user_items, N=20, filter_already_liked_items=True, recalculate_user=True
    )
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-5)
    for u in users:  # nothing the user already has
        assert not set(items[u]) & set(user_items[u].indices)


def test_top_n_pads_when_too_few_items_remain() -> None:
    y = np.eye(3, dtype=np.float32)
    u = np.array([[3.0, 2.0, 1.0]], dtype=np.float32)
    items, scores = top_n(u, y, 5, np.array([0, 1]), np.array([1]))
    assert items.tolist() == [[0, 2, -1]]
    assert scores[0, :2].tolist() == [3.0, 1.0]
    assert scores[0, 2] == -np.inf


def test_top_n_is_sorted_and_exact_against_full_sort(rng: np.random.Generator) -> None:
    u = rng.standard_normal((7, 8)).astype(np.float32)
    y = rng.standard_normal((500, 8)).astype(np.float32)
    items, scores = top_n(u, y, 25)
    full = u @ y.T
    np.testing.assert_array_equal(items, np.argsort(-full, axis=1, kind="stable")[:, :25])
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.mark.parametrize(("n_items", "n"), [(20_000, 50), (5_003, 10), (2_048, 256)])
def test_chunked_selection_equals_full_sort(n_items: int, n: int, rng: np.random.Generator) -> None:
    u = rng.standard_normal((33, 16)).astype(np.float32)
    y = rng.standard_normal((n_items, 16)).astype(np.float32)
    ptr = np.arange(0, 34 * 40, 40, dtype=np.int64)
    excl = rng.integers(0, n_items, size=33 * 40).astype(np.int64)
    blocked = rng.integers(0, n_items, size=25).astype(np.int64)
    items, scores = top_n(u, y, n, ptr, excl, blocked)
    full = u @ y.T
    for r in range(33):
        full[r, excl[ptr[r] : ptr[r + 1]]] = -np.inf
    full[:, blocked] = -np.inf
    want = np.argsort(-full, axis=1, kind="stable")[:, :n]
    np.testing.assert_array_equal(items, want)
    np.testing.assert_array_equal(scores, np.take_along_axis(full, want, axis=1))


def test_woodbury_and_direct_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    als, user_items = _fitted(80, 300, 64, 0.3, 6.0, seed=21)
    signed = user_items.copy()
    signed.data[::4] *= -1
    signed.data[1::9] = 0.1  # |c| < 1: a negative weight in W
    fi = FoldIn.create(als.item_factors, 0.3)
    monkeypatch.setattr(foldin_module, "WOODBURY_RATIO", 1e9)  # never: k x k systems
    direct = _solve(fi, signed, 6.0)
    monkeypatch.setattr(foldin_module, "WOODBURY_RATIO", 1e-9)  # always: h x h systems
    woodbury = _solve(fi, signed, 6.0)
    np.testing.assert_allclose(woodbury, direct, rtol=1e-4, atol=1e-5 * np.abs(direct).max())
    theirs = als.recalculate_user(np.arange(80), signed)
    np.testing.assert_allclose(woodbury, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def test_chunked_selection_with_ties_and_rows_mostly_excluded(rng: np.random.Generator) -> None:
    n_items, n = 4_100, 50
    # Scores on a coarse grid: many exact ties, also at the chunk threshold.
    u = rng.integers(-2, 3, size=(6, 4)).astype(np.float32)
    y = rng.integers(-2, 3, size=(n_items, 4)).astype(np.float32)
    allowed = rng.choice(n_items, size=10, replace=False)
    excl = np.setdiff1d(np.arange(n_items), allowed)  # row 0 may only get 10 items
    ptr = np.array([0, len(excl)] + [len(excl)] * 5, dtype=np.int64)
    items, scores = top_n(u, y, n, ptr, excl)
    full = u @ y.T
    full[0, excl] = -np.inf
    want = -np.sort(-full, axis=1)[:, :n]
    np.testing.assert_array_equal(scores, want)  # the same scores, ties in any order
    finite = np.isfinite(scores)
    picked = np.take_along_axis(full, np.where(finite, items, 0), axis=1)
    np.testing.assert_array_equal(picked[finite], scores[finite])
    assert (items[~finite] == -1).all() and finite[0].sum() == 10
    assert set(items[0][:10].tolist()) == set(allowed.tolist())
    assert all(len(set(r)) == n for r in items[1:].tolist())  # no item twice


def _batch(lengths: np.ndarray, hist: list, conf: list, users: list[int]) -> tuple:
    ptr = np.concatenate([[0], np.cumsum(lengths[users])]).astype(np.int64)
    idx = np.concatenate([hist[u] for u in users]).astype(np.int64)
    return ptr, idx, np.concatenate([conf[u] for u in users]).astype(np.float32)


@pytest.mark.parametrize("block_rows", [foldin_module.BLOCK_ROWS, 50])
def test_a_users_vector_is_bit_identical_in_any_batch(
    block_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's live batches and a clean pass group users differently: each user's vector
    # must not depend on the others (not merely agree to rounding), on both solve paths.
    monkeypatch.setattr(foldin_module, "BLOCK_ROWS", block_rows)
    rng = np.random.default_rng(3)
    y = (rng.standard_normal((3000, 64)) * 0.1).astype(np.float32)
    fi = FoldIn.create(y, 0.05)
    lengths = np.concatenate([rng.integers(1, 60, 150), rng.integers(60, 300, 150)])
    hist = [rng.choice(3000, n, replace=False) for n in lengths]
    conf = [(rng.random(n) * 30 + 1).astype(np.float32) * rng.choice([-1, 1, 1, 1], n)
            for n in lengths]  # fmt: skip
    everyone = fi.solve(*_batch(lengths, hist, conf, list(range(300))))
    for size in (1, 2, 7, 40, 120):
        users = rng.choice(300, size, replace=False).tolist()
        np.testing.assert_array_equal(
            fi.solve(*_batch(lengths, hist, conf, users)), everyone[users]
        )


@pytest.mark.parametrize("n_items", [50, 300, 5000])
def test_scores_with_a_scratch_do_not_depend_on_the_batch(n_items: int) -> None:
    # Without the scratch's fixed row count OpenBLAS takes other kernels for 1 row (gemv) or
    # small products, which sum in another order: the same user would score differently.
    rng = np.random.default_rng(n_items)
    y = (rng.standard_normal((n_items, 64)) * 0.1).astype(np.float32)
    v = rng.standard_normal((64, 64)).astype(np.float32)
    none = np.zeros(65, dtype=np.int64)
    scratch = np.empty((64, n_items), dtype=np.float32)
    items, scores = top_n(v, y, 20, none, none[:0], None, out=scratch)
    for lo, size in [(0, 1), (5, 1), (9, 3), (20, 17), (30, 33)]:
        part_items, part_scores = top_n(v[lo : lo + size], y, 20, none[: size + 1], none[:0],
                                        None, out=scratch)  # fmt: skip
        np.testing.assert_array_equal(part_scores, scores[lo : lo + size])
        np.testing.assert_array_equal(part_items, items[lo : lo + size])


@pytest.mark.parametrize("n_items", [300, 5000, 20000])
@pytest.mark.parametrize("k", [16, 64])
def test_scores_padded_to_the_row_step_do_not_depend_on_the_batch(n_items: int, k: int) -> None:
    """``row_step`` returns a smaller padding only where it gives every row the scores of the
    full scratch: each batch size from 1 to 64, padded so, scores exactly as the full one."""
    rng = np.random.default_rng(n_items + k)
    y = (rng.standard_normal((n_items, k)) * 0.1).astype(np.float32)
    v = rng.standard_normal((64, k)).astype(np.float32)
    none = np.zeros(65, dtype=np.int64)
    scratch = np.empty((64, n_items), dtype=np.float32)
    step = row_step(y, 64)
    assert step in (ROW_STEP, 64)
    items, scores = top_n(v, y, 20, none, none[:0], None, out=scratch)
    for size in range(1, 65):
        lo = (7 * size) % (65 - size)
        part_items, part_scores = top_n(v[lo : lo + size], y, 20, none[: size + 1], none[:0],
                                        None, out=scratch, step=step)  # fmt: skip
        np.testing.assert_array_equal(part_scores, scores[lo : lo + size])
        np.testing.assert_array_equal(part_items, items[lo : lo + size])


def test_row_step_is_the_full_scratch_where_a_step_cannot_save_rows() -> None:
    y = np.ones((100, 8), dtype=np.float32)
    assert row_step(y, 8) == 8
    assert row_step(y, 4) == 4
    assert row_step(y[:0], 64) == 64
