"""Ranking metrics @K of recommended lists against each user's relevant items.

For users with at least one relevant item, averaged over users; ``hits[b, j]`` = the j-th item
recommended to user b is relevant, ``R_b`` = the user's relevant count::

    precision@K = Σ_j<K hits / K                   recall@K = Σ_j<K hits / R_b
    NDCG@K      = Σ_j<K hits / log2(j + 2)  /  Σ_j<min(K, R_b) 1 / log2(j + 2)
    MAP@K       = Σ_j<K hits[j] · precision@(j+1)  /  min(K, R_b)
    coverage@K  = |items in any evaluated user's top K| / n_items   (the split's catalog)

Pure arrays: lists are (B, K) int64 item indices (-1 pads a short list), relevance a (B, n_items)
bool CSR over the same users; no models, no split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

I64 = npt.NDArray[np.int64]

#: List lengths reported by default.
KS: tuple[int, ...] = (10, 20)


def hit_matrix(recs: I64, relevant: sp.csr_matrix) -> npt.NDArray[np.bool_]:
    """``recs`` (B, K) int64 item indices (-1 = no item) and ``relevant`` (B, n_items) bool
    CSR for the same users -> (B, K) bool, True where the recommended item is relevant."""
    rel = relevant.tocsr()
    rel.sort_indices()
    n_items = rel.shape[1]
    rows = np.repeat(np.arange(rel.shape[0], dtype=np.int64), np.diff(rel.indptr))
    rel_keys = rows * n_items + rel.indices.astype(np.int64)  # sorted: CSR order
    rec_keys = np.arange(recs.shape[0], dtype=np.int64)[:, None] * n_items + recs
    if len(rel_keys) == 0:
        return np.zeros(recs.shape, dtype=np.bool_)
    pos = np.minimum(np.searchsorted(rel_keys, rec_keys), len(rel_keys) - 1)
    return (rel_keys[pos] == rec_keys) & (recs >= 0)


def ranking_metrics(
    recs: I64, relevant: sp.csr_matrix, ks: Sequence[int] = KS, n_items: int | None = None
) -> dict[str, float]:
    """Precision, recall, NDCG, MAP and catalog coverage at each K in ``ks`` (module doc).

    Args:
        recs: (B, >= max(ks)) int64 item indices, best first; -1 pads a short list.
        relevant: (B, n_items) bool CSR, the relevant items of the same B users; users with
            none are left out of the averages.
        n_items: catalog size for coverage (default ``relevant.shape[1]``).

    Returns ``{"precision@10": ..., "recall@10": ..., "ndcg@10": ..., "map@10": ...,
    "coverage@10": ..., ...}`` (plain floats) plus ``"users"``.
    """
    recs = np.asarray(recs, dtype=np.int64)
    if recs.ndim != 2 or recs.shape[0] != relevant.shape[0]:
        raise ValueError(f"recs {recs.shape} do not match relevant {relevant.shape}")
    if max(ks) > recs.shape[1]:
        raise ValueError(f"lists of {recs.shape[1]} are shorter than K={max(ks)}")
    n_items = relevant.shape[1] if n_items is None else n_items
    n_rel = np.diff(relevant.tocsr().indptr)
    keep = n_rel > 0
    hits = hit_matrix(recs, relevant)[keep]
    n_rel = n_rel[keep]
    out: dict[str, float] = {"users": float(keep.sum())}
    for k in ks:
        h = hits[:, :k].astype(np.float64)
        discount = 1.0 / np.log2(np.arange(2, k + 2))
        ideal = np.cumsum(discount)[np.minimum(n_rel, k) - 1] if len(n_rel) else np.zeros(0)
        found = h.sum(axis=1)
        precision_at = np.cumsum(h, axis=1) / np.arange(1, k + 1)
        top = recs[keep, :k]
        listed = top[top >= 0]
        with np.errstate(invalid="ignore"):
            out[f"precision@{k}"] = float(np.mean(found / k)) if len(h) else 0.0
            out[f"recall@{k}"] = float(np.mean(found / n_rel)) if len(h) else 0.0
            out[f"ndcg@{k}"] = float(np.mean((h @ discount) / ideal)) if len(h) else 0.0
            out[f"map@{k}"] = (
                float(np.mean((precision_at * h).sum(axis=1) / np.minimum(n_rel, k)))
                if len(h)
                else 0.0
            )
        out[f"coverage@{k}"] = float(len(np.unique(listed)) / n_items) if n_items else 0.0
    return out
