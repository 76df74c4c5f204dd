"""Top-N by inner product for big catalogues, behind a small ``TopNIndex`` protocol.

Measured side by side (README "Big catalogs", ``bench/bigcatalog.py``): on item factors trained
by the project, the graph indexes with an inner-product metric (faiss HNSW, hnswlib, usearch)
stop at recall@50 0.3-0.43 whatever their ``ef``, and faiss IVF-Flat over the MIPS-to-L2
augmented rows falls from 0.998 at 200k items to 0.26 at 1M: ALS item norms spread over three
orders of magnitude (popular items are long), which breaks both the graphs' neighbourhoods and
the augmented k-means. The same spread makes an exact search cheap:

* ``NormIndex`` (the one user lists use): items in decreasing norm order; a batch of users is
  scored a block of rows at a time, and a user is done once its ``n``-th best score is at least
  ``|u| * |y|`` of the next row (Cauchy-Schwarz: no later row can beat it). On trained factors
  every user stops within the first ~5,000 rows of 1M: exact lists (recall 1.0), history and
  blocked rows excluded inside the scan, 14-20k users/s per core. Its stored form is the norm
  order (``INDEX``, int64 ``.npy``, memory-mapped, checksummed with the model). Where norms do
  not spread (random factors) a user's first block already shows the scan would run to the
  end, and it is handed to brute force (item order, 64 users per product): about brute
  force's own speed, never wrong lists. A user's list does not depend on its batch.
* ``IvfIndex`` (the one similar items use): faiss IVF-Flat over augmented rows. Unit-length rows
  (cosine) have one norm, the case where norm pruning gives nothing and IVF does well; its
  candidates, ``n + overfetch`` per query, are reranked exactly (``rerank``), the query item and
  blocked rows dropped, and a query left with fewer than ``n`` is scored exactly, counted in
  ``AnnStats.short``.

Augmentation (Bachrach et al. 2014): each row ``y`` becomes ``[y, sqrt(M^2 - |y|^2)]`` with
``M`` the largest norm, a query ``u`` becomes ``[u, 0]``, so ``|u' - y'|^2 = |u|^2 + M^2 - 2
u.y``: the nearest rows in L2 are the highest inner products.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from streamrec.als.topn import select_top_n
from streamrec.artifact import INDEX, Model
from streamrec.errors import ArtifactError
from streamrec.settings import Settings

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: ``IvfIndex.meta()["kind"]``.
KIND = "faiss-ivf-flat-mips-l2"
#: k-means training points per IVF list (faiss warns below 39; more buys little recall).
TRAIN_PER_LIST = 64
#: Users per faiss search call (bounds the candidate arrays: B x fetch x k floats).
SEARCH_ROWS = 1024


def default_nlist(n_items: int) -> int:
    """IVF lists for a catalogue: ``4 sqrt(n)``, faiss's usual choice (200k: 1789, 1M: 4000)."""
    return max(1, min(n_items, round(4 * math.sqrt(n_items))))


@dataclass
class AnnStats:
    """Counters of one index's use: users searched; users whose IVF candidates ran short and
    users a ``NormIndex`` scan handed to brute force (both scored exactly instead). Plain
    ints: a race between two threads may lose a count, never a list."""

    searched: int = 0
    short: int = 0
    exact: int = 0  # NormIndex: users handed to brute force (no early stop)
    scanned: int = 0  # NormIndex: (user, row) scores of the norm-order scan, brute force apart


class TopNIndex(Protocol):
    """Top-N by inner product with exclusions: ``topn.top_n``'s contract."""

    stats: AnnStats

    @property
    def n_items(self) -> int: ...

    def top_n(
        self,
        queries: F32,
        n: int,
        exclude_indptr: I64 | None = None,
        exclude_indices: I64 | None = None,
        exclude_all: I64 | None = None,
    ) -> tuple[I64, F32]:
        """As ``streamrec.als.topn.top_n(queries, item_factors, n, ...)``."""
        ...

    def save(self, path: Path) -> None:
        """Write what the index stores to ``path`` (no pickle)."""
        ...

    def meta(self) -> dict[str, Any]:
        """What the manifest records about it (JSON, with ``kind``)."""
        ...


#: ``manifest["index"]["kind"]`` of ``NormIndex``.
NORM_KIND = "norm-order-mips"
#: Rows in the first block of a ``NormIndex`` scan; each next block is twice as long, up to
#: ``NORM_BLOCK_MAX`` (1024 measured as fast as 4096 on trained factors, 2x less scanned).
NORM_BLOCK = 1024
NORM_BLOCK_MAX = 65536
#: Query rows of every product (zero rows pad the last): a user's scores must not depend on
#: the other users of its batch (OpenBLAS sums small products in another order).
#: NORM_CHUNK x NORM_BLOCK_MAX float32 = 16 MiB of scores at most.
NORM_CHUNK = 64
#: Leading rows (in norm order) kept as a contiguous copy; past them blocks are gathered.
NORM_HEAD = 65536
#: Users still scanning past this fraction of the rows are scored by brute force instead, as
#: are users whose m-th best after a block is below even the last row's bound (norms that do
#: not spread: random factors, handed over after the first block), so the worst case stays
#: near brute force. 1/16 sent 0.3% of trained users at 200k to brute force (each a full
#: pass padded to ``NORM_CHUNK`` rows: 6.2k users/s); at 1/4 none went (13k users/s).
NORM_GIVE_UP = 1 / 4


@dataclass
class NormIndex:
    """Exact top-N by inner product, scanning rows in decreasing norm order with an early stop
    (see the module's docstring). ``order`` (n_items,) int64 rows by decreasing norm; ``norms``
    (n_items,) float32 their norms in that order; ``head`` the first rows' factors, copied."""

    factors: F32
    order: I64
    norms: F32
    head: F32
    position: I64  # (n_items,) int64: where each row sits in ``order``
    stats: AnnStats = field(default_factory=AnnStats)

    @classmethod
    def build(cls, item_factors: npt.ArrayLike) -> NormIndex:
        """From (n_items, k) float32 factors."""
        y = np.asarray(item_factors, dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", y, y, dtype=np.float64))
        return cls.from_order(y, np.argsort(-norms, kind="stable").astype(np.int64))

    @classmethod
    def from_order(cls, item_factors: F32, order: I64) -> NormIndex:
        """From factors and a stored order; ArtifactError if it is not their norm order."""
        y = item_factors
        order = np.asarray(order)
        n = len(y)
        if order.dtype != np.int64 or order.shape != (n,):
            raise ArtifactError(f"norm order must be ({n},) int64, got {order.dtype} {order.shape}")
        if n and (order.min() < 0 or order.max() >= n or len(np.unique(order)) != n):
            raise ArtifactError("norm order is not a permutation of the item rows")
        norms = np.sqrt(np.einsum("ij,ij->i", y, y, dtype=np.float64))[order]
        if n > 1 and (np.diff(norms) > 1e-6 * (1 + norms[:-1])).any():
            raise ArtifactError("norm order does not sort the items by decreasing norm")
        head = np.ascontiguousarray(y[order[:NORM_HEAD]])
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n, dtype=np.int64)
        return cls(y, np.ascontiguousarray(order), norms.astype(np.float32), head, position)

    @property
    def n_items(self) -> int:
        return len(self.order)

    def _rows(self, lo: int, hi: int) -> F32:
        if hi <= len(self.head):
            return self.head[lo:hi]
        return np.asarray(self.factors)[self.order[lo:hi]]

    def top_n(
        self,
        queries: F32,
        n: int,
        exclude_indptr: I64 | None = None,
        exclude_indices: I64 | None = None,
        exclude_all: I64 | None = None,
    ) -> tuple[I64, F32]:
        """See ``TopNIndex.top_n``: exact (equal to brute force up to the order of exact ties
        and float rounding of the products)."""
        q = np.asarray(queries, dtype=np.float32)
        b, n_items = len(q), self.n_items
        m = min(n, n_items)
        self.stats.searched += b
        if b == 0 or m == 0:
            return np.full((b, m), -1, dtype=np.int64), np.full((b, m), -np.inf, np.float32)
        ex_user = np.zeros(0, dtype=np.int64)
        ex_row = np.zeros(0, dtype=np.int64)
        if exclude_indptr is not None and exclude_indices is not None and len(exclude_indices):
            ex_user = np.repeat(np.arange(b, dtype=np.int64), np.diff(exclude_indptr))
            ex_row = np.asarray(exclude_indices, dtype=np.int64)
        never = np.zeros(0, dtype=np.int64)
        if exclude_all is not None and len(exclude_all):
            never = np.asarray(exclude_all, dtype=np.int64)
        finite = np.isfinite(q).all(axis=1)
        qnorm = np.linalg.norm(q, axis=1)
        # In norm order, with the early stop: positions, mapped back to rows below.
        best, where, gave_up, scanned = _scan(q, np.flatnonzero(finite), m, n_items, self._rows,
                                     ex_user, self.position[ex_row], self.position[never],
                                     (qnorm, self.norms), NORM_BLOCK, NORM_CHUNK)  # fmt: skip
        self.stats.scanned += scanned
        items = np.where(where >= 0, self.order[np.maximum(where, 0)], -1)
        if len(gave_up):
            # Norms that do not spread: brute force for these (the rows they scanned are
            # scored again: a first block, 1024 rows, for the hopeless ones).
            self.stats.exact += len(gave_up)
            best[gave_up], items[gave_up] = self._brute(q, m, gave_up, ex_user, ex_row, never)
        order = np.argsort(-best, axis=1, kind="stable")
        best = np.take_along_axis(best, order, axis=1)
        items = np.take_along_axis(items, order, axis=1)
        items[~np.isfinite(best)] = -1
        best[~finite] = np.nan
        items[~finite] = -1
        return items, best

    def _brute(
        self, q: F32, m: int, users: I64, ex_user: I64, ex_row: I64, never: I64
    ) -> tuple[F32, I64]:
        """Brute force for the queries ``users`` of ``q`` (with their (query, row)
        exclusions): every row, in item order (contiguous, no gather), ``NORM_BLOCK_MAX`` rows
        by ``NORM_CHUNK`` users per product, so a user's list does not depend on its batch
        and a big batch streams the factors once per ``NORM_CHUNK`` users."""
        y = np.asarray(self.factors)
        best, rows, _, _ = _scan(q, users, m, self.n_items, lambda lo, hi: y[lo:hi], ex_user,
                              ex_row, never, None, NORM_BLOCK_MAX, NORM_CHUNK)  # fmt: skip
        return best[users], rows[users]

    def save(self, path: Path) -> None:
        np.save(path, self.order, allow_pickle=False)

    def meta(self) -> dict[str, Any]:
        return {"kind": NORM_KIND, "n_items": self.n_items}


def _scan(
    q: F32,
    active: I64,
    m: int,
    n_rows: int,
    rows: Callable[[int, int], F32],
    ex_user: I64,
    ex_pos: I64,
    never: I64,
    bound: tuple[npt.NDArray[np.floating[Any]], F32] | None,
    block: int,
    chunk: int,
) -> tuple[F32, I64, I64, int]:
    """The best ``m`` of ``rows(lo, hi)`` (blocks of the catalogue, in the scan's order) for
    the queries ``active`` of ``q``: ``(best, where, gave_up, scanned)``: (B, m) scores and
    positions (unsorted; -inf / -1 for the other queries); with ``bound``, the queries given
    up on (left for the caller): still scanning past ``NORM_GIVE_UP`` of the rows, or, after
    any block, with an ``m``-th best so low that even the last row's bound beats it (the scan
    would run to the end: norms that do not spread); ``scanned``: the (query, row) scores
    computed. ``ex_user``/``ex_pos``: excluded (query, position) pairs; ``never``: positions
    excluded for all. ``bound``: (query norms, row norms in scan order) for the early stop;
    None = scan everything.

    Batch-independent: the blocks follow a fixed schedule (``block`` doubling up to
    ``NORM_BLOCK_MAX``) and every product has ``chunk`` query rows (zero rows pad the last),
    so every product a query is in has one shape whatever its batch: its scores, list and
    stop do not depend on the other queries (OpenBLAS sums products of other shapes in
    another order: measured, 1-3 rows, or 4-8 rows by a narrow block, differ)."""
    b = len(q)
    best = np.full((b, m), -np.inf, dtype=np.float32)
    where = np.full((b, m), -1, dtype=np.int64)
    sort = np.argsort(ex_pos, kind="stable")
    ex_user, ex_pos = ex_user[sort], ex_pos[sort]
    never = np.sort(never)
    gave_up: list[I64] = []
    pad = np.zeros((chunk, q.shape[1]), dtype=np.float32)
    scratch = np.empty(chunk * min(NORM_BLOCK_MAX, n_rows), dtype=np.float32)
    local = np.full(b, -1, dtype=np.int64)
    lo = scanned = 0
    while lo < n_rows and len(active):
        if bound is not None and lo >= n_rows * NORM_GIVE_UP:
            gave_up.append(active)
            active = active[:0]
            break
        hi = min(n_rows, lo + block)
        y = rows(lo, hi)
        a, z = np.searchsorted(ex_pos, [lo, hi])
        blk_user, blk_pos = ex_user[a:z], ex_pos[a:z] - lo
        a, z = np.searchsorted(never, [lo, hi])
        blk_never = never[a:z] - lo
        scanned += len(active) * (hi - lo)
        w = hi - lo
        # One reused scratch of a fixed row count (no fresh 16 MiB, and its page faults, per
        # product; the same kernel whatever the batch).
        scores = scratch[: chunk * w].reshape(chunk, w)
        for c0 in range(0, len(active), chunk):
            users = active[c0 : c0 + chunk]
            c = len(users)
            pad[:c] = q[users]
            pad[c:] = 0
            np.matmul(pad, y.T, out=scores)
            if len(blk_user):
                local[users] = np.arange(c)
                mine = local[blk_user]
                keep = mine >= 0
                scores[mine[keep], blk_pos[keep]] = -np.inf
                local[users] = -1
            if len(blk_never):
                scores[:, blk_never] = -np.inf
            # The block's best m per user (topn's selection: chunk maxima first, as brute
            # force does it), then merged with the best so far (2m columns).
            top, top_scores = select_top_n(scores[:c], m)
            cand = np.concatenate([best[users], top_scores], axis=1)
            cpos = np.concatenate([where[users], np.where(top >= 0, lo + top, -1)], axis=1)
            pick = np.argpartition(cand, cand.shape[1] - m, axis=1)[:, cand.shape[1] - m :]
            best[users] = np.take_along_axis(cand, pick, axis=1)
            where[users] = np.take_along_axis(cpos, pick, axis=1)
        lo, block = hi, min(NORM_BLOCK_MAX, 2 * block)
        if bound is not None and lo < n_rows:
            # Done: the m-th best already beats any later row's Cauchy-Schwarz bound.
            qnorm, norms = bound
            kth = best[active].min(axis=1)
            active = active[kth < qnorm[active] * norms[lo]]
            # Hopeless: not even the last row's bound is met yet, so (unless the m-th best
            # rises a lot) the scan runs through every row; brute force does that cheaper.
            kth = best[active].min(axis=1)
            hopeless = kth < qnorm[active] * norms[n_rows - 1]
            if hopeless.any():
                gave_up.append(active[hopeless])
                active = active[~hopeless]
    out = np.sort(np.concatenate(gave_up)) if gave_up else np.zeros(0, dtype=np.int64)
    return best, where, out, scanned


def _faiss() -> Any:
    import faiss  # imported here: a worker on a small catalogue never loads it

    return faiss


def augment(factors: npt.ArrayLike) -> tuple[F32, float]:
    """((n, k + 1) float32 rows ``[y, sqrt(M^2 - |y|^2)]``, M): the MIPS-to-L2 augmentation."""
    y = np.asarray(factors, dtype=np.float32)
    norms2 = np.einsum("ij,ij->i", y, y, dtype=np.float64)
    top = float(norms2.max()) if len(y) else 0.0
    extra = np.sqrt(np.maximum(top - norms2, 0.0)).astype(np.float32)
    return np.hstack([y, extra[:, None]]), math.sqrt(top)


@dataclass
class IvfIndex:
    """faiss IVF-Flat over augmented item factors (``augment``); ``nprobe`` lists per query.
    ``search(queries, k)``: (B, k) int64 candidate rows, about best first, -1 where fewer."""

    index: Any  # faiss.IndexIVFFlat
    nprobe: int
    info: dict[str, Any] = field(default_factory=dict)
    stats: AnnStats = field(default_factory=AnnStats)

    @classmethod
    def build(
        cls,
        item_factors: npt.ArrayLike,
        *,
        nlist: int | None = None,
        nprobe: int = 32,
        threads: int | None = None,
        seed: int = 0,
        niter: int = 10,
    ) -> IvfIndex:
        """Train the coarse quantizer (k-means, ``niter`` rounds, on ``TRAIN_PER_LIST`` points
        per list) and add every item. ``item_factors`` (n_items, k) float32; ``threads``: None =
        every core (the nightly job builds with what it has)."""
        faiss = _faiss()
        started = time.perf_counter()
        x, top = augment(item_factors)
        n, dim = x.shape
        nlist = default_nlist(n) if nlist is None else max(1, min(int(nlist), n))
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
        try:
            quantizer = faiss.IndexFlatL2(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_L2)
            index.cp.niter = niter
            index.cp.seed = seed
            rng = np.random.default_rng(seed)
            sample = x if n <= nlist * TRAIN_PER_LIST else x[
                np.sort(rng.choice(n, nlist * TRAIN_PER_LIST, replace=False))]  # fmt: skip
            index.train(np.ascontiguousarray(sample))
            index.add(x)
        finally:
            faiss.omp_set_num_threads(before)
        index.nprobe = nprobe
        built = time.perf_counter() - started
        info = {"kind": KIND, "nlist": nlist, "max_norm": top, "dim": dim,
                "build_s": round(built, 3)}  # fmt: skip
        log.info("ANN index: IVF-Flat, %d items, %d lists, built in %.1f s", n, nlist, built)
        return cls(index, nprobe, info)

    @classmethod
    def load(cls, path: Path, meta: dict[str, Any], nprobe: int, mmap: bool = True) -> IvfIndex:
        """Read an index ``save`` wrote (memory-mapped with ``mmap``); ArtifactError if it is
        not one or disagrees with ``meta`` (the manifest's entry)."""
        faiss = _faiss()
        try:
            flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
            index = faiss.read_index(str(path), flags)
        except RuntimeError as exc:
            raise ArtifactError(
                f"{path}: not a faiss index ({str(exc).splitlines()[-1]})"
            ) from None
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is None or index.d != meta.get("dim") or index.metric_type != faiss.METRIC_L2:
            raise ArtifactError(f"{path}: not the IVF-Flat L2 index of dimension "
                                f"{meta.get('dim')} the manifest describes")  # fmt: skip
        ivf.nprobe = nprobe
        return cls(index, nprobe, dict(meta))

    @property
    def n_items(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: F32, k: int) -> I64:
        """See ``TopNIndex.search``; runs on the calling thread only (faiss's OpenMP would
        spread one batch over every core: the worker's budget is one core)."""
        q = np.asarray(queries, dtype=np.float32)
        q = np.hstack([q, np.zeros((len(q), 1), np.float32)])
        # OpenMP's thread count is per calling thread: this one only, no restore needed.
        _faiss().omp_set_num_threads(1)
        _, rows = self.index.search(q, k)
        self.stats.searched += len(q)
        return rows.astype(np.int64, copy=False)

    def save(self, path: Path) -> None:
        _faiss().write_index(self.index, str(path))

    def meta(self) -> dict[str, Any]:
        return dict(self.info)


def rerank(
    index: IvfIndex,
    item_factors: F32,
    queries: F32,
    n: int,
    overfetch: int,
    exclude_indptr: I64 | None = None,
    exclude_indices: I64 | None = None,
    exclude_all: I64 | None = None,
) -> tuple[I64, F32, npt.NDArray[np.bool_]]:
    """``topn.top_n``'s answer from the index's candidates: ``(items, scores, short)``.

    Args:
        index: proposes ``n + overfetch`` candidate rows per query.
        item_factors: (n_items, k) float32, the rows the index was built on.
        queries: (B, k) float32 user (or unit item) vectors.
        exclude_indptr, exclude_indices: CSR (B + 1,) / (nnz,) int64 rows never returned per
            query; exclude_all: (m,) int64 rows never returned to anyone.

    Returns:
        items (B, m) int64 and scores (B, m) float32 with m = min(n, n_items), best first,
        scores the exact inner products; short (B,) bool: rows left with fewer than m
        candidates, whose items are not to be trusted (score them exactly). A query that is
        not finite gets items -1 and scores NaN (as ``top_n`` gives it), and is not short.
    """
    q = np.asarray(queries, dtype=np.float32)
    b, n_items = len(q), len(item_factors)
    m = min(n, n_items)
    fetch = min(n_items, m + max(0, overfetch))
    finite = np.isfinite(q).all(axis=1)
    cand = np.full((b, fetch), -1, dtype=np.int64)
    if finite.any():
        cand[finite] = index.search(q[finite], fetch)
    bad = cand < 0
    if exclude_all is not None and len(exclude_all):
        bad |= np.isin(cand, exclude_all)
    if exclude_indptr is not None and exclude_indices is not None and len(exclude_indices):
        # One key per (query, row) pair: a row is excluded for this query iff its key is listed.
        owner = np.repeat(np.arange(b, dtype=np.int64), np.diff(exclude_indptr))
        keys = np.arange(b, dtype=np.int64)[:, None] * n_items + cand
        bad |= np.isin(keys, owner * n_items + np.asarray(exclude_indices, dtype=np.int64))
    safe = np.where(bad, 0, cand)
    scores = np.einsum("bfk,bk->bf", np.asarray(item_factors)[safe], q, optimize=False)
    scores = scores.astype(np.float32, copy=False)
    scores[bad] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :m]
    items = np.take_along_axis(cand, order, axis=1)
    top = np.take_along_axis(scores, order, axis=1)
    items[~np.isfinite(top)] = -1
    short = finite & ((~bad).sum(axis=1) < m)
    top[~finite] = np.nan
    items[~finite] = -1
    return items, top, short


def wanted(n_items: int, settings: Settings) -> bool:
    """Whether a catalogue of ``n_items`` is served through an index: at least
    ``settings.ann_min_items`` items (0 = never)."""
    return 0 < settings.ann_min_items <= n_items


def build_for(factors: F32, settings: Settings) -> NormIndex:
    """The index the nightly job stores with a model of these (n_items, k) float32 factors."""
    started = time.perf_counter()
    index = NormIndex.build(factors)
    log.info("top-N index: norm order of %d items in %.2f s", index.n_items,
             time.perf_counter() - started)  # fmt: skip
    return index


def load_for(model: Model, settings: Settings) -> NormIndex | None:
    """The model's stored index when ``wanted`` (else None): verified by its checksum with the
    model (``artifact.load_model``), memory-mapped, checked to be the factors' norm order. A
    big model stored without one gets it built here (a second or two), with a warning.
    ArtifactError if the stored one is unreadable or wrong."""
    if not wanted(model.n_items, settings):
        return None
    meta = model.manifest.get("index")
    if not isinstance(meta, dict):
        log.warning("model %s has %d items but no stored top-N index: building it",
                    model.version, model.n_items)  # fmt: skip
        return NormIndex.build(model.item_factors)
    if meta.get("kind") != NORM_KIND:
        raise ArtifactError(
            f"{model.path}: index kind {meta.get('kind')!r}, expected {NORM_KIND!r}"
        )
    try:
        order = np.load(model.path / INDEX, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ArtifactError(f"{model.path}: unreadable {INDEX} ({exc})") from None
    return NormIndex.from_order(model.item_factors, order)
