"""Item-item similarity: cosine of item factors, for the nightly publisher and the web server.

Pure numpy (arrays in, arrays out). Cosine = dot product of unit-length factor rows; a row of
zeros stays zeros (cosine 0 with everything). Big catalogues (items x items x k stops
finishing) take their neighbours from an approximate index of the unit rows instead
(``unit_index``, ``streamrec.als.ann``), reranked by exact cosine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from streamrec.als.ann import SEARCH_ROWS, IvfIndex, rerank
from streamrec.als.scorer import SCORE_ROWS
from streamrec.als.scoring import THREADS, ordered
from streamrec.als.topn import top_n
from streamrec.settings import Settings

#: Candidates beyond ``n`` fetched from the index (``STREAMREC_ANN_OVERFETCH``).
ANN_OVERFETCH: int = Settings.model_fields["ann_overfetch"].default
F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: (item rows (c,), neighbour rows (c, n), cosines (c, n)) for a chunk of items.
Neighbours = tuple[I64, I64, F32]


def unit_rows(factors: npt.ArrayLike) -> F32:
    """(n_items, k) float32 item factors scaled to unit length (zero rows stay zero)."""
    y = np.asarray(factors, dtype=np.float32)
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return np.divide(y, norms, out=np.zeros_like(y), where=norms > 0)


def neighbours(
    unit: F32,
    rows: I64,
    n: int,
    blocked: I64 | None = None,
    out: F32 | None = None,
) -> tuple[I64, F32]:
    """The ``n`` nearest items of each of ``rows`` ((c,) int64) by cosine, best first, each
    item itself and ``blocked`` rows excluded: ``(items, cosines)``, each (c, min(n, n_items)),
    padded with -1 / -inf where fewer items are allowed (``top_n``'s contract). ``unit`` is
    ``unit_rows`` of the factors; ``out``: optional (>= c, n_items) float32 scratch."""
    ptr = np.arange(len(rows) + 1, dtype=np.int64)
    return top_n(unit[rows], unit, n, ptr, rows, blocked, out=out)


def unit_index(factors: npt.ArrayLike, nprobe: int, threads: int | None = None) -> IvfIndex:
    """An approximate index of ``unit_rows(factors)`` for ``similar_items(index=...)``
    (all unit rows have one norm, so its L2 order is the cosine order)."""
    return IvfIndex.build(unit_rows(factors), nprobe=nprobe, threads=threads)


def similar_items(
    factors: npt.ArrayLike,
    n: int,
    blocked: I64 | None = None,
    chunk: int = SCORE_ROWS,
    threads: int = THREADS,
    index: IvfIndex | None = None,
    overfetch: int = ANN_OVERFETCH,
) -> Iterator[Neighbours]:
    """``neighbours`` of every item, a chunk at a time, in row order. Chunks as small as the
    worker's score slices keep the scores in cache for the selection (17.6k items: 0.36 s in
    chunks of 64 vs 0.75 s in chunks of 1024); they are scored on ``threads`` threads, each
    with its own buffer. With ``index`` (``unit_index`` of the factors) the candidates come
    from it, ``n + overfetch`` per item, reranked by exact cosine; an item whose candidates
    run short (many blocked) is scored exactly."""
    unit = unit_rows(factors)
    local = threading.local()
    if index is not None:
        chunk = SEARCH_ROWS

    def one(lo: int) -> Neighbours:
        if index is not None:
            return near(lo)
        buf = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = np.empty((min(chunk, len(unit)), len(unit)), dtype=np.float32)
        rows = np.arange(lo, min(lo + chunk, len(unit)), dtype=np.int64)
        items, scores = neighbours(unit, rows, n, blocked, out=buf)
        return rows, items, scores

    def near(lo: int) -> Neighbours:
        assert index is not None
        rows = np.arange(lo, min(lo + chunk, len(unit)), dtype=np.int64)
        ptr = np.arange(len(rows) + 1, dtype=np.int64)
        items, scores, short = rerank(index, unit, unit[rows], n, overfetch, ptr, rows, blocked)
        if short.any():
            items[short], scores[short] = neighbours(unit, rows[short], n, blocked)
            stats = getattr(index, "stats", None)
            if stats is not None:
                stats.short += int(short.sum())
        return rows, items, scores

    with ThreadPoolExecutor(threads) as pool, threadpool_limits(1, "blas"):
        yield from ordered(pool, one, range(0, len(unit), chunk), 2 * threads)


def closest(unit: F32, rows: I64, candidates: I64) -> tuple[I64, F32]:
    """For each of ``rows`` ((r,) int64), the position in ``candidates`` ((c,) int64, c >= 1)
    of the candidate with the highest cosine, and that cosine: ((r,) int64, (r,) float32)."""
    sims = unit[rows] @ unit[candidates].T
    best = sims.argmax(axis=1).astype(np.int64)
    return best, sims[np.arange(len(rows)), best]


def blend_rows(unit: F32, content: F32, weight: float) -> F32:
    """(n_items, k + d) float32 rows whose dot products are the blended similarity
    ``(1 - weight) * cos(factors) + weight * cos(content)``: ``[√(1-w)·unit, √w·content]``.

    ``unit``: ``unit_rows`` of the factors (n_items, k); ``content``: unit-length content rows
    of the same items (n_items, d) float32 (``streamrec.als.content.content_vectors``; zeros
    for an item without content, whose content cosine is then 0); ``weight`` in [0, 1]. Rows
    of items with both stay unit length, so ``neighbours`` over them ranks by the blend."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    u, c = np.asarray(unit, np.float32), np.asarray(content, np.float32)
    if u.ndim != 2 or c.ndim != 2 or len(u) != len(c):
        raise ValueError(f"factor rows {u.shape} and content rows {c.shape} do not match")
    return np.hstack([np.sqrt(1.0 - weight) * u, np.sqrt(weight) * c]).astype(np.float32)


def blended_neighbours(
    unit: F32,
    content: F32,
    rows: I64,
    n: int,
    weight: float,
    blocked: I64 | None = None,
) -> tuple[I64, F32]:
    """``neighbours`` of ``rows`` ((c,) int64) by the blend of factor and content cosine
    (``blend_rows``): ``(items, scores)``, each (c, min(n, n_items)), the item itself and
    ``blocked`` excluded, padded with -1 / -inf as ``top_n`` pads. For items with few
    interactions, whose factors say little and whose content says more."""
    return neighbours(blend_rows(unit, content, weight), rows, n, blocked)
