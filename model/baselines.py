"""The baselines the ALS candidate is compared with, each a list maker on a ``Split``.

``popularity_lists`` (the same summed positive confidence the worker's ``popular`` list uses),
``itemknn_lists`` (implicit's ``CosineRecommender``) and ``ease_lists`` (Steck 2019, closed form,
``ease_weights``). Every list maker takes the split, the users to serve ((B,) int64 split user
indices) and the list length k, and returns (B, k) int64 split item indices, best first, each
user's training items excluded, -1 padding a short list: what ``metrics.ranking_metrics`` takes.

Dense scores are made in batches of at most ``SCORE_CELLS`` cells and cut to lists by
``topk``: the worker's top-N selection (``streamrec.als.topn.select_top_n``).
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import numpy.typing as npt
import scipy.linalg
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from streamrec.als.topn import select_top_n
from streamrec.model.errors import ModelError
from streamrec.model.metrics import hit_matrix
from streamrec.model.split import Split

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]

#: EASE inverts an items x items matrix; above this many (trained) items it is skipped.
EASE_MAX_ITEMS = 20_000
#: EASE's L2 penalty (Steck used 500 on ML-20M; smaller data wants less, see ``tune_ease``).
EASE_LAMBDA = 200.0
#: Neighbours kept per item by item-kNN.
KNN_NEIGHBOURS = 100
#: Scores held at once: users per batch = this / n_items (64 MiB of float32).
SCORE_CELLS = 1 << 24


def topk(scores: npt.NDArray[np.float32], k: int, exclude: sp.csr_matrix | None = None) -> I64:
    """Best ``k`` columns per row of ``scores`` (B, n_items) float32, excluding ``exclude``'s
    pattern (B, n_items CSR); (B, k) int64, -1 where fewer than ``k`` items are allowed (also
    past the catalog's end: every list is k long, as the metrics want). Modifies ``scores`` in
    place (excluded cells become -inf)."""
    ptr, idx = (None, None) if exclude is None else (exclude.indptr, exclude.indices)
    # Not chunked: item-kNN scores tie often and the chunked path keeps other tied items than
    # argpartition (692 of 1877 Last.fm lists differ), which would move the recorded figures.
    items, _ = select_top_n(scores, k, ptr, idx, chunked=False)
    if items.shape[1] < k:  # select_top_n stops at the catalog's size
        pad = np.full((items.shape[0], k - items.shape[1]), -1, np.int64)
        items = np.concatenate([items, pad], axis=1)
    return items


def _batches(users: I64, n_items: int) -> list[I64]:
    size = max(1, SCORE_CELLS // max(n_items, 1))
    return [users[s : s + size] for s in range(0, len(users), size)]


def positive_confidence(split: Split) -> sp.csr_matrix:
    """(n_users, n_items) float32 CSR: positive log confidences of the training pairs, the
    input of the non-ALS baselines (a dislike is not evidence of similarity)."""
    m = split.train_confidence("log")
    m.data = np.maximum(m.data, 0)
    m.eliminate_zeros()
    return m


def popularity_lists(split: Split, users: I64, k: int) -> I64:
    """(len(users), k): the catalog by summed positive training confidence (the worker's
    ``popular`` ranking) minus each user's training items."""
    pop = np.asarray(positive_confidence(split).sum(axis=0), dtype=np.float64).ravel()
    # Unseen items rank below every seen one, but stay eligible: ties broken by item index.
    order = np.argsort(-pop, kind="stable")
    seen = split.train_totals()[users]
    seen.sort_indices()
    longest = int(np.diff(seen.indptr).max()) if len(users) else 0
    # A user's list is the first k of the global order they have not seen: within its first
    # k + (their history length) entries; no dense score row per user.
    head = order[: min(len(order), k + longest)]
    allowed = ~hit_matrix(np.broadcast_to(head, (len(users), len(head))), seen)
    # Stable: the allowed candidates first, in global order; then the first k of them.
    pick = np.argsort(~allowed, axis=1, kind="stable")[:, :k]
    out = np.where(np.take_along_axis(allowed, pick, axis=1), head[pick], -1)
    if out.shape[1] < k:
        out = np.concatenate([out, np.full((len(users), k - out.shape[1]), -1)], axis=1)
    return out.astype(np.int64)


def itemknn_lists(split: Split, users: I64, k: int, neighbours: int = KNN_NEIGHBOURS) -> I64:
    """(len(users), k) from implicit's ``CosineRecommender`` (``neighbours`` per item):
    scores = user's positive confidences @ item-item similarity, training items excluded."""
    from implicit.nearest_neighbours import CosineRecommender

    x = positive_confidence(split)
    with threadpool_limits(1, "blas"), warnings.catch_warnings():
        # implicit normalises into a COO matrix itself, then warns that it is not CSR.
        warnings.filterwarnings("ignore", message="Method expects CSR input")
        knn = CosineRecommender(K=neighbours)
        knn.fit(x, show_progress=False)
    sim = knn.similarity.tocsr()
    seen = split.train_totals()
    out = []
    for batch in _batches(users, x.shape[1]):
        scores = np.asarray((x[batch] @ sim).toarray(), dtype=np.float32)
        out.append(topk(scores, k, seen[batch]))
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def ease_weights(x: sp.csr_matrix, lam: float) -> npt.NDArray[np.floating]:
    """EASE item-item weights: ``B = I - P / diag(P)`` with the diagonal zeroed,
    ``P = (XᵀX + λI)⁻¹``.

    Args:
        x: (n_users, n) sparse user x item matrix (binary or weighted).
        lam: λ > 0.

    Returns (n, n): float64 for n <= 4096, float32 above (half the memory and time; the ranking
    is unaffected). ``P`` comes from a Cholesky factorisation (LAPACK potrf + potri).
    """
    if lam <= 0:
        raise ValueError("EASE needs lambda > 0")
    n = x.shape[1]
    dtype = np.float64 if n <= 4096 else np.float32
    xs = sp.csr_matrix(x, dtype=dtype)
    g: npt.NDArray[np.floating] = np.asarray((xs.T @ xs).toarray(), dtype=dtype, order="F")
    g[np.diag_indices(n)] = g[np.diag_indices(n)] + lam
    potrf, potri = scipy.linalg.lapack.get_lapack_funcs(("potrf", "potri"), (g,))
    c, info = potrf(g, lower=False, overwrite_a=True, clean=True)
    if info != 0:
        raise ModelError(f"EASE: Gram matrix not positive definite (potrf info {info})")
    p, info = potri(c, lower=False, overwrite_c=True)
    if info != 0:
        raise ModelError(f"EASE: inversion failed (potri info {info})")
    full: npt.NDArray[np.floating] = np.triu(p)
    np.add(full, np.triu(full, 1).T, out=full)  # potri fills the upper triangle only
    diag = np.diag(full).copy()
    full /= -diag[None, :]
    full[np.diag_indices(n)] = 0.0
    return full


def ease_lists(
    split: Split,
    users: I64,
    k: int,
    lam: float = EASE_LAMBDA,
    binary: bool = True,
    max_items: int = EASE_MAX_ITEMS,
) -> I64:
    """(len(users), k) from EASE fitted on the training items (items never trained on score
    0 under EASE exactly, so they are left out of the solve). ``binary``: X = 1 for positive
    pairs, else X = positive log confidence. Raises ModelError above ``max_items``."""
    x = positive_confidence(split)
    active = np.flatnonzero(np.diff(x.tocsc().indptr) > 0)
    if len(active) > max_items:
        raise ModelError(f"EASE skipped: {len(active)} items > limit {max_items}")
    xa = x[:, active]
    if binary:
        xa.data = np.ones_like(xa.data)
    started = time.perf_counter()
    b = ease_weights(xa, lam)
    log.info(
        "EASE: %d items, lambda %g, solved in %.1fs",
        len(active),
        lam,
        time.perf_counter() - started,
    )
    seen = split.train_totals()
    n_items = x.shape[1]
    out = []
    for batch in _batches(users, len(active)):
        part = np.asarray(xa[batch] @ b, dtype=np.float32)
        scores = np.full((len(batch), n_items), -np.inf, dtype=np.float32)
        scores[:, active] = part
        out.append(topk(scores, k, seen[batch]))
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)
