"""Top-N: score every item for a batch of users and keep the best N, minus excluded items.

Pure numpy: one matrix product for the whole batch (``top_n``), then an exact selection
(``select_top_n``, also for score matrices computed elsewhere, e.g. the offline baselines) that
avoids partitioning every row in full:

1. split each row's scores into chunks and take each chunk's maximum (one fast reduction);
2. the N-th largest chunk maximum ``T`` is a lower bound of the N-th largest score, because N
   different chunks each hold a score >= ``T``;
3. only scores >= ``T`` (a few times N per row) are gathered and sorted.

The result is the same as a full sort (``argpartition`` + sort) up to the order of exact ties.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: Below this many items per row a plain argpartition is as fast.
CHUNKED_MIN_ITEMS = 2048
#: A short batch's product is padded to a multiple of this many rows, where ``row_step``
#: finds that the BLAS gives each row the same scores in any such product.
ROW_STEP = 8


def top_n(
    user_factors: F32,
    item_factors: F32,
    n: int,
    exclude_indptr: I64 | None = None,
    exclude_indices: I64 | None = None,
    exclude_all: I64 | None = None,
    out: F32 | None = None,
    step: int | None = None,
) -> tuple[I64, F32]:
    """The ``n`` highest-scoring items per user, best first.

    Args:
        user_factors: (B, k) float32.
        item_factors: (n_items, k) float32.
        n: list length (>= 1).
        exclude_indptr, exclude_indices: CSR rows (B + 1,) / (nnz,) int64 of item indices
            never to return for each user (their history).
        exclude_all: (m,) int64 item indices never to return to anyone (blocked items).
        out: optional float32 scratch of (R, n_items), R >= B, C-contiguous, for the scores;
            reusing one saves a fresh allocation (and its page faults) per batch. With it,
            the product always has R rows (zero rows pad a short batch), so each user's
            scores are bit-identical whichever batch they come in.
        step: with ``out``, pad a short batch only to the next multiple of ``step`` rows (at
            most R): what ``row_step`` returned for these item factors, for which that gives
            the same scores as R rows for less work (a batch of 5 users: 8 rows, not 64).

    Returns:
        ``(items, scores)``, each (B, min(n, n_items)): int64 item indices and float32 scores.
        Where fewer than that many items are allowed, the tail is padded with index -1 and
        score -inf.
    """
    u = np.asarray(user_factors, dtype=np.float32)
    y = np.asarray(item_factors)
    b, n_items = u.shape[0], y.shape[0]
    if out is not None and out.shape[0] >= b and out.shape[1] == n_items:
        rows = out.shape[0] if step is None else min(out.shape[0], -(-b // step) * step)
        out = out[:rows]
        if b < rows:
            # The product always spans the whole scratch: OpenBLAS computes a row's scores
            # in another order when few rows share the call (gemv for one, a small-matrix
            # kernel for small products), so a user's scores would depend on their batch.
            padded = np.zeros((rows, u.shape[1]), dtype=np.float32)
            padded[:b] = u
            u = padded
        scores = np.matmul(u, y.T, out=out)[:b]
    else:
        scores = u @ y.T
    return select_top_n(scores, n, exclude_indptr, exclude_indices, exclude_all)


def row_step(item_factors: F32, rows: int, step: int = ROW_STEP, items: int = 4096) -> int:
    """``step`` if this machine's BLAS scores each row of a product of any multiple of ``step``
    rows (up to ``rows``) exactly as in a product of ``rows`` rows, else ``rows``.

    OpenBLAS picks its kernel by the shape of a product (gemv for one row, a small-matrix path
    for small ones), and another kernel may sum a row's products in another order, which would
    make a user's list depend on who shared their batch. Checked on random vectors against the
    first ``items`` rows of ``item_factors`` ((n_items, k) float32): the order of a row's sum
    depends on the kernel, not on how many items the product spans. A few small products,
    ~1 ms at k=64."""
    y = np.ascontiguousarray(np.asarray(item_factors, dtype=np.float32)[:items])
    if step >= rows or not len(y):
        return rows
    u = np.random.default_rng(0).standard_normal((rows, y.shape[1])).astype(np.float32)
    full = np.matmul(u, y.T, out=np.empty((rows, len(y)), dtype=np.float32))
    for r in range(step, rows, step):
        part = np.matmul(u[:r], y.T, out=np.empty((r, len(y)), dtype=np.float32))
        if not np.array_equal(part, full[:r]):
            return rows
    return step


def select_top_n(
    scores: F32,
    n: int,
    exclude_indptr: I64 | None = None,
    exclude_indices: I64 | None = None,
    exclude_all: I64 | None = None,
    *,
    chunked: bool = True,
) -> tuple[I64, F32]:
    """The ``n`` highest-scoring columns per row of a precomputed score matrix, best first.

    Args:
        scores: (B, n_items) float32; modified in place (excluded cells become -inf), so
            pass a copy to keep it.
        n: list length (>= 1).
        exclude_indptr, exclude_indices: CSR rows (B + 1,) / (nnz,) int64 (int32 is fine) of
            column indices never to return for each row, e.g. a ``csr_matrix``'s
            ``indptr``/``indices``.
        exclude_all: (m,) int64 column indices never to return for any row.
        chunked: use the chunked selection where it is faster (long rows, small ``n``).
            ``False``: always the plain ``argpartition``, slower there, but exact ties are
            kept and ordered as ``argpartition`` keeps them whatever the row length (the
            offline baselines, whose scores tie often and whose figures were measured so).

    Returns:
        ``(items, scores)``, each (B, min(n, n_items)): int64 column indices and float32 scores.
        Where fewer than that many columns are allowed, the tail is padded with index -1 and
        score -inf (any selected non-finite score gets index -1).
    """
    b, n_items = scores.shape
    if exclude_indptr is not None and exclude_indices is not None:
        rows = np.repeat(np.arange(b), np.diff(exclude_indptr))
        scores[rows, exclude_indices] = -np.inf
    if exclude_all is not None and len(exclude_all):
        scores[:, exclude_all] = -np.inf
    m = min(n, n_items)
    if b == 0:
        return np.zeros((0, m), np.int64), np.zeros((0, m), np.float32)
    if chunked and n_items >= CHUNKED_MIN_ITEMS and m * 16 * 2 <= n_items:
        items, top = _select_chunked(scores, m)
    else:
        items, top = _select_partition(scores, m)
    items[~np.isfinite(top)] = -1
    return items, top


def _select_partition(scores: F32, m: int) -> tuple[I64, F32]:
    n_items = scores.shape[1]
    if m < n_items:
        # Selecting the m largest directly is ~4x faster than partitioning negated scores.
        part = np.argpartition(scores, n_items - m, axis=1)[:, n_items - m :]
    else:
        part = np.broadcast_to(np.arange(n_items), scores.shape).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return (
        np.take_along_axis(part, order, axis=1).astype(np.int64),
        np.take_along_axis(part_scores, order, axis=1),
    )


def _select_chunked(scores: F32, m: int) -> tuple[I64, F32]:
    b, n_items = scores.shape
    # Column j belongs to chunk j % chunks (a strided view, so the maxima are one fast
    # reduction); 16m chunks put the threshold near the m-th score (measured best of 8m-32m).
    chunks = 16 * m
    width = n_items // chunks
    full = width * chunks
    grid = scores[:, :full].reshape(b, width, chunks)
    maxima = grid.max(axis=1)  # (b, chunks)
    # The m best chunks hold m scores >= the m-th best chunk maximum, so they hold the top m
    # (up to exact ties at that maximum, which may sit in a chunk left out).
    best = np.argpartition(maxima, chunks - m, axis=1)[:, chunks - m :]  # (b, m)
    rows = np.arange(b)[:, None]
    cand = grid[rows, :, best].reshape(b, m * width)  # (b, m, width) flattened
    if full < n_items:  # the few columns past the last full stripe are always candidates
        cand = np.concatenate([cand, scores[:, full:]], axis=1)
    top, top_scores = _select_partition(cand, m)
    # Candidate t is column (t % width) * chunks + best[t // width] of the row, or, past
    # m * width, one of the tail columns.
    in_grid = top < m * width
    chunk_of = np.where(in_grid, top // width, 0)
    cols = np.where(
        in_grid,
        (top % width) * chunks + np.take_along_axis(best, chunk_of, axis=1),
        full + top - m * width,
    )
    return cols.astype(np.int64), top_scores
