"""``select_top_n``: the selection ``top_n`` makes, on score matrices computed elsewhere."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from streamrec.als.topn import select_top_n, top_n


def test_select_top_n_is_top_n_after_the_product(rng: np.random.Generator) -> None:
    u = rng.standard_normal((9, 8)).astype(np.float32)
    y = rng.standard_normal((5_000, 8)).astype(np.float32)  # large enough to be chunked
    history = sp.random(9, 5_000, density=0.01, format="csr", random_state=3)  # int32 indices
    blocked = rng.integers(0, 5_000, size=12).astype(np.int64)
    scores = u @ y.T
    items, top = select_top_n(scores, 30, history.indptr, history.indices, blocked)
    want_items, want_top = top_n(
        u, y, 30, history.indptr.astype(np.int64), history.indices.astype(np.int64), blocked
    )
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_array_equal(top, want_top)
    # In place: the excluded cells of the caller's matrix are -inf now.
    rows = np.repeat(np.arange(9), np.diff(history.indptr))
    assert np.isneginf(scores[rows, history.indices]).all()
    assert np.isneginf(scores[:, blocked]).all()
    assert not set(items.ravel().tolist()) & set(blocked.tolist())


def test_unchunked_selection_keeps_argpartitions_choice_among_ties(
    rng: np.random.Generator,
) -> None:
    n_items, n = 4_096, 20
    scores = rng.integers(0, 4, size=(16, n_items)).astype(np.float32)  # ties everywhere
    items, top = select_top_n(scores.copy(), n, chunked=False)
    # What the evaluation's own top-k did before it used select_top_n.
    part = np.argpartition(scores, n_items - n, axis=1)[:, n_items - n :]
    vals = np.take_along_axis(scores, part, axis=1)
    want = np.take_along_axis(part, np.argsort(-vals, axis=1, kind="stable"), axis=1)
    np.testing.assert_array_equal(items, want)
    # The chunked path finds the same scores (its own choice of tied items).
    _, chunked_top = select_top_n(scores.copy(), n)
    np.testing.assert_array_equal(chunked_top, top)
