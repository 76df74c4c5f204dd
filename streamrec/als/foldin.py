"""Fold-in: the exact least-squares user vector against fixed ALS item factors.

For user ``u`` with confidences ``c_ui`` over the items in their history (implicit's
convention: ``c = alpha * confidence``; a negative value marks a disliked item), the
implicit-feedback ALS user step (Hu, Koren, Volinsky 2008) is::

    (YᵀY + Σ_i (|c_ui| - 1) y_i y_iᵀ + λI) x_u = Σ_{i: c_ui > 0} c_ui y_i

which is what ``implicit``'s ``recalculate_user`` solves. Here it is solved for a batch of users
at once: histories are bucketed by length and gathered into padded blocks, and each block is
solved with stacked LAPACK calls. Each history is padded to a length fixed by its own length,
so a user's vector does not depend on which other users share the batch (the worker's live
batches and a clean pass give bit-identical lists). ``P⁻¹ = YᵀY + λI`` is computed once per
model (``FoldIn``).

Short histories (h items, h well below k) use the Woodbury identity instead of the k x k
system: with ``G`` the history's factors (h x k), ``W = diag(|c| - 1)``, ``H = G P`` and
``c⁺ = max(c, 0)``::

    x = Hᵀ s,   where   (I + W H Gᵀ) s = c⁺        (an h x h system)

which is exact (same solution, different algebra) and several times cheaper when h << k.

Pure numpy: arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: Rows (users x padded history length) gathered per block; bounds memory at
#: BLOCK_ROWS * k * 8 bytes (64k rows, k=64: 32 MiB).
BLOCK_ROWS = 65_536
#: Histories are padded to the next of the lengths BLOCK_SLACK, then each about BLOCK_GROWTH
#: times the last (8, 11, 15, 20, 26, ...): padding wastes at most ~30% of the Gram products,
#: and a user's padded length depends on their own length alone.
BLOCK_GROWTH = 1.3
BLOCK_SLACK = 8
#: Woodbury (an h x h system) when h * WOODBURY_RATIO <= k; measured faster below ~k/1.5.
WOODBURY_RATIO = 1.5


def padded_length(lengths: I64) -> I64:
    """(n,) int64 history lengths -> (n,) int64 padded lengths: 0 stays 0, else the smallest
    of BLOCK_SLACK, ceil(BLOCK_SLACK * BLOCK_GROWTH), ... that is >= the length."""
    lengths = np.asarray(lengths, dtype=np.int64)
    top = int(lengths.max(initial=0))
    edges = [0, BLOCK_SLACK]
    while edges[-1] < top:
        edges.append(int(np.ceil(edges[-1] * BLOCK_GROWTH)))
    table = np.asarray(edges, dtype=np.int64)
    return table[np.searchsorted(table, lengths, side="left")]


@dataclass(frozen=True)
class FoldIn:
    """Solver state for one model: the item factors and ``YᵀY + λI`` (float64)."""

    item_factors: F32  # (n_items, k) float32
    regularized_gram: npt.NDArray[np.float64]  # (k, k) float64: P⁻¹ = YᵀY + λI
    inverse: npt.NDArray[np.float32]  # (k, k) float32: P = (YᵀY + λI)⁻¹

    @classmethod
    def create(cls, item_factors: F32, regularization: float) -> FoldIn:
        """``item_factors``: (n_items, k) float32; ``regularization``: λ >= 0."""
        y = np.asarray(item_factors)
        if y.ndim != 2 or y.dtype != np.float32:
            raise ValueError(f"item_factors must be 2-D float32, got {y.dtype} {y.shape}")
        gram = np.zeros((y.shape[1], y.shape[1]), dtype=np.float64)
        for lo in range(0, len(y), BLOCK_ROWS):  # float64 a slice at a time: bounded memory
            part = np.asarray(y[lo : lo + BLOCK_ROWS], dtype=np.float64)
            gram += part.T @ part
        gram[np.diag_indices_from(gram)] += regularization
        inverse = np.linalg.inv(gram).astype(np.float32)
        return cls(item_factors=y, regularized_gram=gram, inverse=inverse)

    @property
    def factors(self) -> int:
        return int(self.item_factors.shape[1])

    def solve(self, indptr: I64, indices: I64, conf: F32) -> F32:
        """User vectors for a batch of histories given in CSR form.

        Args:
            indptr: (B + 1,) int64, row pointers; user ``b`` owns ``indptr[b]:indptr[b+1]``.
            indices: (nnz,) int64, item rows into ``item_factors``; no duplicates within a user.
            conf: (nnz,) float32, ``alpha * confidence`` per entry (negative = disliked).

        Returns:
            (B, k) float32. A user with no entries gets the zero vector.
        """
        indptr = np.asarray(indptr, dtype=np.int64)
        n_users = len(indptr) - 1
        k = self.factors
        out = np.zeros((n_users, k), dtype=np.float32)
        if n_users == 0:
            return out
        lengths = np.diff(indptr)
        padded = padded_length(lengths)
        order = np.lexsort((np.arange(n_users), padded))  # by padded length, then position
        bounds = np.flatnonzero(np.diff(padded[order])) + 1
        for group in np.split(order, bounds):
            # One padded length per group, fixed by each user's own length (never by the
            # batch): a user's vector is bit-for-bit the same whichever batch it is solved in.
            h = int(padded[group[0]])
            step = max(1, BLOCK_ROWS // max(1, h))
            for lo in range(0, len(group), step):
                users = group[lo : lo + step]
                out[users] = self._solve_block(indptr, indices, conf, users, lengths, h)
        return out

    def _solve_block(
        self, indptr: I64, indices: I64, conf: F32, users: I64, lengths: I64, h: int
    ) -> F32:
        b = len(users)
        k = self.factors
        if h == 0:
            return np.zeros((b, k), dtype=np.float32)
        # Padded (b, h) layout: pad slots point at item 0 with weight 0, so they add nothing.
        pos = np.arange(h)[None, :]
        valid = pos < lengths[users][:, None]
        flat = (indptr[users][:, None] + pos)[valid]
        idx = np.zeros((b, h), dtype=np.int64)
        c = np.zeros((b, h), dtype=np.float32)
        idx[valid] = indices[flat]
        c[valid] = conf[flat]
        g = self.item_factors[idx]  # (b, h, k) float32
        w = np.where(valid, np.abs(c) - 1.0, 0.0).astype(np.float32)
        if h * WOODBURY_RATIO <= k:
            return self._solve_woodbury(g, w, np.where(c > 0, c, 0.0))
        # The per-user corrections in float32 (3x faster; they are small next to YᵀY), the
        # system itself in float64.
        a = np.matmul(g.transpose(0, 2, 1) * w[:, None, :], g) + self.regularized_gram
        rhs = np.matmul(g.transpose(0, 2, 1), np.where(c > 0, c, 0.0)[:, :, None])
        return np.linalg.solve(a, rhs.astype(np.float64))[:, :, 0].astype(np.float32)

    def _solve_woodbury(
        self, g: npt.NDArray[np.float32], w: npt.NDArray[np.float32], cpos: F32
    ) -> F32:
        """``g``: (b, h, k) history factors; ``w``: (b, h) |c| - 1 (0 on padding);
        ``cpos``: (b, h) max(c, 0)."""
        b, h, k = g.shape
        hp = (g.reshape(b * h, k) @ self.inverse).reshape(b, h, k).astype(np.float64)
        m = np.matmul(hp, g.transpose(0, 2, 1).astype(np.float64))  # (b, h, h) = H Gᵀ
        m *= w[:, :, None]
        m[:, np.arange(h), np.arange(h)] += 1.0
        s = np.linalg.solve(m, cpos.astype(np.float64)[:, :, None])  # (b, h, 1)
        return np.matmul(hp.transpose(0, 2, 1), s)[:, :, 0].astype(np.float32)
