"""Top-N: ``top_n`` against a full sort (known answers, exclusions, padding, both selection
paths), and ``select_top_n``, the same selection on score matrices computed elsewhere.

For ``top_n``, user factors are rows of the identity, so a user's scores are exactly one
column of the item factors (products with 1 and sums with 0 are exact in float32): the
reference sees the very numbers ``top_n`` sees, and distinct random values leave no ties.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import scipy.sparse as sp

from streamrec.als import topn
from streamrec.als.topn import select_top_n, top_n

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def _factors(rng: np.random.Generator, n_items: int, k: int, users: int) -> tuple[F32, F32]:
    items = rng.permutation(n_items * k).reshape(n_items, k) / (n_items * k) - 0.5
    return np.eye(k, dtype=np.float32)[np.arange(users) % k], items.astype(np.float32)


def _full_sort(scores: F32, n: int, excluded: list[set[int]], blocked: set[int]) -> tuple[I64, F32]:
    """The reference: every row sorted in full, best first, disallowed items dropped, then
    padded with -1 / -inf."""
    m = min(n, scores.shape[1])
    items = np.full((len(scores), m), -1, dtype=np.int64)
    top = np.full((len(scores), m), -np.inf, dtype=np.float32)
    for b, row in enumerate(scores):
        order = [int(i) for i in np.argsort(-row, kind="stable")
                 if i not in excluded[b] and i not in blocked][:m]  # fmt: skip
        items[b, : len(order)] = order
        top[b, : len(order)] = row[order]
    return items, top


def _csr(excluded: list[set[int]]) -> tuple[I64, I64]:
    indptr = np.cumsum([0] + [len(e) for e in excluded]).astype(np.int64)
    indices = np.array([i for e in excluded for i in sorted(e)], dtype=np.int64)
    return indptr, indices


def test_a_known_answer() -> None:
    items = np.array([[0.1], [0.9], [0.5], [-0.3], [0.7]], dtype=np.float32)
    users = np.array([[1.0], [-1.0]], dtype=np.float32)
    got, scores = top_n(users, items, 3)
    assert got.tolist() == [[1, 4, 2], [3, 0, 2]]
    np.testing.assert_array_equal(
        scores, np.array([[0.9, 0.7, 0.5], [0.3, -0.1, -0.5]], dtype=np.float32)
    )
    assert got.dtype == np.int64 and scores.dtype == np.float32


@pytest.mark.parametrize("n_items", [50, 1000, 2047])
def test_partition_path_equals_a_full_sort(rng: np.random.Generator, n_items: int) -> None:
    users, items = _factors(rng, n_items, 8, 12)
    got = top_n(users, items, 20)
    want = _full_sort(users @ items.T, 20, [set()] * 12, set())
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize(("n_items", "n"), [(2048, 10), (5000, 50), (20_011, 100), (4096, 128)])
def test_chunked_path_equals_a_full_sort(rng: np.random.Generator, n_items: int, n: int) -> None:
    # The chunked selection is taken from CHUNKED_MIN_ITEMS items when n is small beside them;
    # 20_011 leaves columns past the last full stripe of chunks (a tail always a candidate).
    assert n_items >= topn.CHUNKED_MIN_ITEMS and n * 32 <= n_items
    users, items = _factors(rng, n_items, 16, 40)
    got = top_n(users, items, n)
    want = _full_sort(users @ items.T, n, [set()] * 40, set())
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_the_best_items_in_the_tail_columns_are_found(rng: np.random.Generator) -> None:
    n_items, n = 20_011, 10
    users, items = _factors(rng, n_items, 4, 4)
    items[-5:] = 1.0 + np.arange(5 * 4, dtype=np.float32).reshape(5, 4)  # the 5 best: the tail
    got, _ = top_n(users, items, n)
    want, _ = _full_sort(users @ items.T, n, [set()] * 4, set())
    np.testing.assert_array_equal(got, want)
    assert set(got[0, :5].tolist()) == set(range(n_items - 5, n_items))


@pytest.mark.parametrize("n_items", [300, 6000])
def test_exclusions_per_user_and_for_all(rng: np.random.Generator, n_items: int) -> None:
    users, items = _factors(rng, n_items, 8, 16)
    scores = users @ items.T
    best = np.argsort(-scores, axis=1)
    # Each user's own best few (and some random ones) excluded, the first user's none.
    excluded = [set()] + [
        set(best[b, : b % 7].tolist()) | set(rng.choice(n_items, 5, replace=False).tolist())
        for b in range(1, 16)
    ]
    blocked = {int(best[0, 0]), int(best[3, 1]), n_items - 1}
    indptr, indices = _csr(excluded)
    got = top_n(users, items, 25, indptr, indices, np.array(sorted(blocked), dtype=np.int64))
    want = _full_sort(scores, 25, excluded, blocked)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    for b in range(16):
        assert not (set(got[0][b].tolist()) & (excluded[b] | blocked))


@pytest.mark.parametrize("n_items", [40, 4000])
def test_fewer_allowed_items_than_n_are_padded(rng: np.random.Generator, n_items: int) -> None:
    users, items = _factors(rng, n_items, 4, 3)
    allowed = [3, 0, 7]  # items each user may still get
    excluded = [set(range(allowed[b], n_items)) for b in range(3)]
    got, scores = top_n(users, items, 10, *_csr(excluded))
    assert got.shape == scores.shape == (3, 10)
    for b, k in enumerate(allowed):
        assert sorted(got[b, :k].tolist()) == list(range(k))
        assert np.isfinite(scores[b, :k]).all()
        assert (got[b, k:] == -1).all() and (scores[b, k:] == -np.inf).all()


def test_n_past_the_catalogue_is_cut_to_it(rng: np.random.Generator) -> None:
    users, items = _factors(rng, 6, 2, 2)
    got, scores = top_n(users, items, 50, exclude_all=np.array([2], dtype=np.int64))
    assert got.shape == (2, 6)
    want = _full_sort(users @ items.T, 50, [set(), set()], {2})
    np.testing.assert_array_equal(got, want[0])
    assert (got[:, -1] == -1).all() and (scores[:, -1] == -np.inf).all()


def test_no_users(rng: np.random.Generator) -> None:
    _, items = _factors(rng, 100, 4, 0)
    got, scores = top_n(np.zeros((0, 4), np.float32), items, 10)
    assert got.shape == scores.shape == (0, 10)


def test_a_reused_buffer_gives_the_same_lists(rng: np.random.Generator) -> None:
    users, items = _factors(rng, 3000, 8, 20)
    out = np.empty((32, 3000), dtype=np.float32)
    fresh = top_n(users, items, 15)
    first = top_n(users, items, 15, out=out)
    again = top_n(users[:7], items, 15, out=out)  # a smaller batch in the same buffer
    np.testing.assert_array_equal(first[0], fresh[0])
    np.testing.assert_array_equal(again[0], fresh[0][:7])
    np.testing.assert_array_equal(again[1], fresh[1][:7])


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
