"""The per-user holdout split: interaction rows -> (user, item) pairs -> train and test pairs.

Rows are first summed per (user, item) (a *pair*, as ``build_matrix`` sums them); pairs whose
total is exactly 0 are dropped, as training drops them. With timestamps, each user's latest
``fraction`` of pairs (ordered by the pair's *first* event, i.e. when the user found the item) is
held out: a per-user time split, which asks "what will this user pick up next". Without
timestamps, a seeded random ``fraction`` per user. Users with fewer than ``min_interactions``
pairs stay wholly in train; nobody loses all their training pairs. Only held-out pairs with a
positive total are *relevant*; a disliked held-out item is neither a hit nor a miss.

``split_interactions`` makes a ``Split``; ``Split.validation`` splits its training pairs again
by the same rule (for tuning without looking at the test pairs). Vectorised: no Python loop
over users or pairs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from streamrec.feedback import Transform, confidence
from streamrec.model.data import Interactions, Matrix, factorize
from streamrec.model.errors import DataError

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]

#: Share of each user's pairs held out.
FRACTION = 0.2
#: Users with fewer pairs than this stay wholly in train.
MIN_INTERACTIONS = 5


@dataclass(frozen=True)
class Pairs:
    """(user, item) pairs: ``users``/``items`` (n,) int64 indices into the split's id tuples,
    ``totals`` (n,) float32 summed feedback weights (raw, before the confidence transform;
    never 0), ``times`` (n,) int64 epoch ms of the pair's first event, or None."""

    users: I64
    items: I64
    totals: F32
    times: I64 | None = None

    def __len__(self) -> int:
        return len(self.users)

    def take(self, mask: npt.NDArray[np.bool_]) -> Pairs:
        return Pairs(
            self.users[mask],
            self.items[mask],
            self.totals[mask],
            None if self.times is None else self.times[mask],
        )

    def matrix(
        self, shape: tuple[int, int], values: npt.NDArray[Any] | None = None
    ) -> sp.csr_matrix:
        """(n_users, n_items) CSR of ``values`` (default ``totals``) at the pairs."""
        data = self.totals if values is None else values
        return sp.csr_matrix((data, (self.users, self.items)), shape=shape)


def _confidence(totals: sp.csr_matrix, transform: Transform) -> sp.csr_matrix:
    """``totals`` with each entry turned into its confidence (in place), zeros dropped."""
    totals.data = confidence(totals.data, transform)
    totals.eliminate_zeros()
    return totals


@dataclass(frozen=True)
class Split:
    """A train/test split over one id space (every user and item of the source data)."""

    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    train: Pairs
    test: Pairs
    method: Literal["time", "random", "none"]
    fraction: float
    seed: int

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_ids), len(self.item_ids)

    def test_after(self, cut_ms: int) -> Split:
        """This split with only the test pairs first seen after ``cut_ms`` (epoch ms), the
        training pairs unchanged: the pairs a model trained on data up to ``cut_ms`` never saw,
        so it can be scored on them without having learned the answers. Without times, the
        split as it is (nothing can be told apart)."""
        if self.test.times is None:
            return self
        return replace(self, test=self.test.take(self.test.times > cut_ms))

    def train_totals(self) -> sp.csr_matrix:
        """(n_users, n_items) float32 CSR of raw training totals (sign kept)."""
        return self.train.matrix(self.shape)

    def train_confidence(self, transform: Transform = "log") -> sp.csr_matrix:
        """(n_users, n_items) float32 CSR confidence (before alpha), as ``build_matrix``."""
        return _confidence(self.train_totals(), transform)

    def all_totals(self) -> sp.csr_matrix:
        """(n_users, n_items) float32 CSR of every pair's total, train and test."""
        both = Pairs(
            np.concatenate([self.train.users, self.test.users]),
            np.concatenate([self.train.items, self.test.items]),
            np.concatenate([self.train.totals, self.test.totals]),
        )
        m = both.matrix(self.shape)
        m.sort_indices()
        return m

    def all_matrix(self, transform: Transform = "log") -> Matrix:
        """``build_matrix`` of the split's source data (every pair), from the pairs."""
        return Matrix(_confidence(self.all_totals(), transform), self.user_ids, self.item_ids)

    def train_matrix(self, transform: Transform = "log") -> Matrix:
        """The training pairs' confidence over the items that have one (``trained_items``):
        what a model fitted on this split is fitted on."""
        items = self.trained_items()
        conf = self.train_confidence(transform)[:, items].tocsr()
        return Matrix(conf, self.user_ids, tuple(self.item_ids[i] for i in items))

    def trained_items(self) -> I64:
        """Item indices with at least one training pair: the catalog a model trained here has."""
        return np.unique(self.train.items)

    def relevant(self) -> sp.csr_matrix:
        """(n_users, n_items) bool CSR: held-out pairs with a positive total."""
        pos = self.test.totals > 0
        m = self.test.take(pos).matrix(self.shape, np.ones(int(pos.sum()), dtype=np.bool_))
        m.sort_indices()
        return m

    def eval_users(self, max_users: int | None = None, seed: int = 0) -> I64:
        """Users with at least one relevant held-out item, sorted; a seeded sample of at most
        ``max_users`` of them when given."""
        users = np.flatnonzero(np.diff(self.relevant().indptr) > 0).astype(np.int64)
        if max_users is not None and len(users) > max_users:
            rng = np.random.default_rng(seed)
            users = np.sort(rng.choice(users, size=max_users, replace=False))
        return users

    def validation(
        self,
        fraction: float | None = None,
        min_interactions: int = MIN_INTERACTIONS,
        seed: int | None = None,
    ) -> Split:
        """A split of this split's *training* pairs only (the test pairs never enter it), by
        the same rule: for tuning without looking at the test set. ``fraction`` defaults to
        this split's (``FRACTION`` when that is 0), ``seed`` to this split's plus one."""
        fraction = (self.fraction or FRACTION) if fraction is None else fraction
        seed = self.seed + 1 if seed is None else seed
        held = holdout_mask(
            self.train.users, self.train.times, len(self.user_ids), fraction, min_interactions, seed
        )
        return Split(
            self.user_ids,
            self.item_ids,
            self.train.take(~held),
            self.train.take(held),
            "random" if self.train.times is None else "time",
            fraction,
            seed,
        )

    def summary(self) -> dict[str, Any]:
        rel = self.relevant()
        return {
            "method": self.method,
            "fraction": self.fraction,
            "seed": self.seed,
            "users": len(self.user_ids),
            "items": len(self.item_ids),
            "train_pairs": len(self.train),
            "test_pairs": len(self.test),
            "relevant_pairs": int(rel.nnz),
            "eval_users": int((np.diff(rel.indptr) > 0).sum()),
        }


def aggregate(data: Interactions) -> tuple[tuple[str, ...], tuple[str, ...], Pairs]:
    """Rows -> (user ids, item ids, pairs): weights summed per (user, item), the first event
    time kept; ids sorted as ``build_matrix`` sorts them; zero totals dropped."""
    if len(data) == 0:
        raise DataError("no interactions")
    user_ids, u = factorize(data.users)
    item_ids, i = factorize(data.items)
    key = u.astype(np.int64) * len(item_ids) + i
    keys, inverse = np.unique(key, return_inverse=True)
    totals = np.bincount(inverse, weights=data.weights.astype(np.float64), minlength=len(keys))
    times = None
    if data.timestamps is not None:
        times = np.full(len(keys), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(times, inverse, data.timestamps.astype(np.int64))
    pairs = Pairs(
        (keys // len(item_ids)).astype(np.int64),
        (keys % len(item_ids)).astype(np.int64),
        totals.astype(np.float32),
        times,
    )
    pairs = pairs.take(pairs.totals != 0)
    return user_ids, item_ids, pairs


def holdout_mask(
    users: I64,
    times: I64 | None,
    n_users: int,
    fraction: float = FRACTION,
    min_interactions: int = MIN_INTERACTIONS,
    seed: int = 0,
) -> npt.NDArray[np.bool_]:
    """(n,) bool: which of the pairs ``users`` ((n,) int64 user indices, < ``n_users``) and
    ``times`` ((n,) int64 epoch ms, or None) to hold out, per user, vectorised.

    Each user with at least ``min_interactions`` pairs loses ``max(1, floor(fraction * n))``
    of them (never all): the latest by ``times`` (ties broken by a seeded random key) or,
    without times, a seeded random choice. ``fraction`` 0 holds out nothing.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n = len(users)
    if fraction == 0 or n == 0:
        return np.zeros(n, dtype=np.bool_)
    rng = np.random.default_rng(seed)
    tiebreak = rng.random(n)
    order = _by_user_time_tiebreak(users, times, tiebreak, n_users)
    counts = np.bincount(users, minlength=n_users)
    starts = np.cumsum(counts) - counts
    n_test = np.maximum(1, np.floor(fraction * counts + 1e-9)).astype(np.int64)
    n_test = np.where(counts >= max(min_interactions, 2), np.minimum(n_test, counts - 1), 0)
    su = users[order]
    rank = np.arange(n) - starts[su]
    mask = np.empty(n, dtype=np.bool_)
    mask[order] = rank >= counts[su] - n_test[su]
    return mask


def _by_user_time_tiebreak(
    users: I64, times: I64 | None, tiebreak: npt.NDArray[np.float64], n_users: int
) -> I64:
    """``np.lexsort((tiebreak, times, users))``: by user, then time, then the random key.
    Where user and time fit one int64 key, two sorts instead of lexsort's three passes (2.6x
    faster on 500k pairs): the random order first, then a stable sort by (user, time)."""
    if times is None:
        return np.lexsort((tiebreak, users))
    t0 = int(times.min()) if len(times) else 0
    span = (int(times.max()) - t0 + 1) if len(times) else 1
    if n_users * span >= 2**62:
        return np.lexsort((tiebreak, times, users))
    shuffled = np.argsort(tiebreak)
    key = users.astype(np.int64) * span + (times - t0)
    return shuffled[np.argsort(key[shuffled], kind="stable")]


def split_interactions(
    data: Interactions,
    fraction: float = FRACTION,
    min_interactions: int = MIN_INTERACTIONS,
    seed: int = 0,
) -> Split:
    """Aggregate ``data`` into pairs and hold out ``fraction`` per user (see the module doc).

    ``fraction`` 0 gives a split whose test set is empty (all data in train; for tuning and
    then training on everything)."""
    user_ids, item_ids, pairs = aggregate(data)
    held = holdout_mask(pairs.users, pairs.times, len(user_ids), fraction, min_interactions, seed)
    method: Literal["time", "random", "none"] = (
        "none" if fraction == 0 else "random" if pairs.times is None else "time"
    )
    split = Split(user_ids, item_ids, pairs.take(~held), pairs.take(held), method, fraction, seed)
    log.info(
        "split (%s): %d users x %d items, %d train / %d test pairs",
        method,
        len(user_ids),
        len(item_ids),
        len(split.train),
        len(split.test),
    )
    return split
