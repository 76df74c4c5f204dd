"""Histories in, ranked lists out, for one model: maps ids to rows, folds in, takes the top N.

No I/O: ``Scorer.score`` turns ``{user: {item: total}}`` into arrays of item rows and scores
(``Scorer.encoder`` makes the Redis values from them); ``Scorer.recommend`` into
``[(user, [(item, score)])]``. Users with no positive history among the model's items get the
popularity ranking.

The knobs of a request (``n``, ``history_max``, ``blocked``) are the scorer's configuration,
given to ``Scorer.create`` and changed on a copy (``Scorer.with_``) that shares the model, its
index and the score buffer: the worker swaps in new blocked rows at runtime, the evaluation
scores one model with several ``n``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from streamrec.als.ann import TopNIndex
from streamrec.als.foldin import FoldIn
from streamrec.als.topn import row_step, select_top_n, top_n
from streamrec.artifact import Model
from streamrec.feedback import confidence
from streamrec.keys import ListEncoder, round_scores, vec_values
from streamrec.settings import Settings

Ranked = list[tuple[str, list[tuple[str, float]]]]

#: Users scored per matrix product. The (rows x items) score block is read again by the
#: selection, so it should stay in cache: 64 rows x 20k items measured 25% faster than 256
#: and more, with the product itself as fast (bench/topn_kernels.py --batch).
SCORE_ROWS = 64
#: ... and never more than this many bytes of scores, whatever the catalogue size.
SCORE_BUFFER_BYTES = 8 << 20
#: The knobs' defaults are the settings' (``STREAMREC_TOP_N``, ``STREAMREC_HISTORY_MAX``),
#: defined there once.
TOP_N: int = Settings.model_fields["top_n"].default
HISTORY_MAX: int = Settings.model_fields["history_max"].default


def _no_rows() -> npt.NDArray[np.int64]:
    return np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class ColdItems:
    """Items the model has no trained factors for, scored beside its own: row ``n_items + j``
    of a ``Scorer`` with them is ``ids[j]``, whose factors are ``factors[j]`` (given from
    elsewhere: the worker maps them from the items' content, ``streamrec.als.content``).

    ``factors``: (c, k) float32, C-contiguous; ``encoder``: the model's ``ListEncoder``
    extended by these ids, each entry marked ``"why": "content"`` (contract 2).
    """

    ids: tuple[str, ...]
    factors: npt.NDArray[np.float32] = field(repr=False)
    index: Mapping[str, int] = field(repr=False)
    encoder: ListEncoder = field(repr=False)

    @classmethod
    def create(
        cls, base: ListEncoder, ids: Sequence[str], factors: npt.ArrayLike, why: str = "content"
    ) -> ColdItems:
        """Cold items ``ids`` with ``factors`` ((c, k)), appended to the encoder ``base``."""
        y = np.ascontiguousarray(factors, dtype=np.float32)
        if y.ndim != 2 or y.shape[0] != len(ids):
            raise ValueError(f"{len(ids)} cold items but factors of shape {y.shape}")
        if not np.isfinite(y).all():
            raise ValueError("cold item factors hold NaN or infinity")
        ids = tuple(ids)
        return cls(ids, y, {item: j for j, item in enumerate(ids)}, base.extended(ids, why))

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Scorer:
    """One model, ready to score, and the knobs every call uses:

    ``n``: list length (>= 1); ``history_max``: most items per user entering the solve (the
    strongest by absolute total; all of them are still excluded from the list); ``blocked``:
    (m,) int64 model rows never returned to anyone (``blocked_rows``).

    ``ann``: a top-N index of the model's factors for big catalogues (``streamrec.als.ann``):
    when set, lists come from its ``top_n`` (history and blocked rows excluded as here).
    """

    model: Model
    foldin: FoldIn
    index: Mapping[str, int] = field(repr=False)
    popular_order: npt.NDArray[np.int64] = field(repr=False)
    ids_array: npt.NDArray[np.object_] = field(repr=False)
    encoder: ListEncoder = field(repr=False)
    n: int = TOP_N
    history_max: int = HISTORY_MAX
    blocked: npt.NDArray[np.int64] = field(default_factory=_no_rows, repr=False)
    ann: TopNIndex | None = field(default=None, repr=False)
    #: Items without trained factors, scored after the model's own and merged into each list
    #: (``ColdItems``); None = the model's items alone. They never enter a fold-in: the solve
    #: is over the trained factors only, so each user's vector is what it is without them.
    cold: ColdItems | None = field(default=None, repr=False)
    # Scratch reused across batches (one worker thread uses a Scorer at a time); copies made
    # by ``with_`` share it, so a copy per call allocates nothing.
    buffers: dict[str, npt.NDArray[Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def create(
        cls,
        model: Model,
        *,
        n: int = TOP_N,
        history_max: int = HISTORY_MAX,
        blocked: npt.ArrayLike | None = None,
        ann: TopNIndex | None = None,
    ) -> Scorer:
        """The model's id index, popularity order and solver state (built once per model);
        ``ann``: the model's index (``streamrec.als.ann.load_for``), None = exact top-N."""
        return cls(
            model=model,
            foldin=FoldIn.create(model.item_factors, float(model.params["regularization"])),
            index={item: row for row, item in enumerate(model.item_ids)},
            popular_order=np.argsort(-model.item_popularity, kind="stable").astype(np.int64),
            ids_array=np.asarray(model.item_ids, dtype=np.object_),
            encoder=ListEncoder(model.item_ids),
            n=n,
            history_max=history_max,
            blocked=_no_rows() if blocked is None else np.asarray(blocked, dtype=np.int64),
            ann=ann,
        )

    def with_(
        self,
        *,
        n: int | None = None,
        history_max: int | None = None,
        blocked: npt.ArrayLike | None = None,
        cold: ColdItems | bool | None = True,
    ) -> Scorer:
        """A copy with other knobs (None keeps this one's; ``blocked=[]`` clears them;
        ``cold``: True keeps this one's cold items, None drops them). Cheap:
        it shares the model, its index and the score buffer with this one, so use the two
        from one thread at a time (``dataclasses.replace(sc, buffers={})`` for another)."""
        return replace(
            self,
            n=self.n if n is None else n,
            history_max=self.history_max if history_max is None else history_max,
            blocked=self.blocked if blocked is None else np.asarray(blocked, dtype=np.int64),
            cold=self.cold if cold is True else (cold or None),
        )

    @property
    def score_rows(self) -> int:
        """Users scored per matrix product (worker memory = factors + a bounded overhead)."""
        return max(8, min(SCORE_ROWS, SCORE_BUFFER_BYTES // (4 * max(1, self.model.n_items))))

    def _scratch(self) -> npt.NDArray[np.float32]:
        """The reused (score_rows, n_items) float32 buffer for scores."""
        buf = self.buffers.get("scores")
        if buf is None:
            buf = np.empty((self.score_rows, self.model.n_items), dtype=np.float32)
            self.buffers["scores"] = buf
        return buf

    def _row_step(self) -> int:
        """``topn.row_step`` for this model's factors, found once (shared by copies)."""
        found = self.buffers.get("row_step")
        if found is None:
            step = row_step(self.model.item_factors, self.score_rows)
            found = self.buffers["row_step"] = np.array([step], dtype=np.int64)
        return int(found[0])

    def _top_n(
        self,
        vectors: npt.NDArray[np.float32],
        excl_ptr: npt.NDArray[np.int64],
        excl_idx: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], int]:
        """(items, scores, short): from the index when there is one (``short``: users it
        handed to exact scoring: its candidates ran short, or a norm-order scan would not stop
        early), else ``_exact``."""
        if self.ann is None:
            return (*self._exact(vectors, excl_ptr, excl_idx), 0)
        stats = self.ann.stats
        before = stats.short + stats.exact
        items, scores = self.ann.top_n(vectors, self.n, excl_ptr, excl_idx, self.blocked)
        return items, scores, stats.short + stats.exact - before

    def _exact(
        self,
        vectors: npt.NDArray[np.float32],
        excl_ptr: npt.NDArray[np.int64],
        excl_idx: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """``top_n`` over the batch in slices of ``score_rows`` users, one buffer for all."""
        rows, n, blocked = self.score_rows, self.n, self.blocked
        if len(vectors) <= rows:
            return top_n(
                vectors,
                self.model.item_factors,
                n,
                excl_ptr,
                excl_idx,
                blocked,
                out=self._scratch(),
                step=self._row_step(),
            )
        parts = []
        for lo in range(0, len(vectors), rows):
            hi = min(lo + rows, len(vectors))
            ptr = excl_ptr[lo : hi + 1]
            parts.append(
                top_n(
                    vectors[lo:hi],
                    self.model.item_factors,
                    n,
                    ptr - ptr[0],
                    excl_idx[ptr[0] : ptr[-1]],
                    blocked,
                    out=self._scratch(),
                    step=self._row_step(),
                )
            )
        return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])

    def _merge_cold(
        self,
        vectors: npt.NDArray[np.float32],
        items: npt.NDArray[np.int64],
        scores: npt.NDArray[np.float32],
        owner: npt.NDArray[np.int64],
        rows: npt.NDArray[np.int64],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The model's top-N lists ((B, m) ``items``/``scores``) merged with the cold items'
        scores: (B, min(n, n_items + c)). ``owner``/``rows``: (h,) int64 user and cold row of
        each cold item in a history (excluded from that user's list).

        A cold item enters a list only by beating its last entry: the merge is a stable sort
        of the model's list (already best first) followed by the cold candidates, so a list no
        cold item enters is the model's own, bit for bit."""
        cold = self.cold
        assert cold is not None
        n_items, c = self.model.n_items, len(cold)
        # In slices of ``score_rows`` rows, zero-padded, as ``_exact`` does: a user's scores
        # are then bit-identical whichever batch they come in (see ``top_n``).
        rows_per = self.score_rows
        b = len(vectors)
        padded = np.zeros((-(-b // rows_per) * rows_per, vectors.shape[1]), dtype=np.float32)
        padded[:b] = vectors
        ext = np.empty((len(padded), c), dtype=np.float32)
        for lo in range(0, len(padded), rows_per):
            np.matmul(padded[lo : lo + rows_per], cold.factors.T, out=ext[lo : lo + rows_per])
        ext = ext[:b]  # (B, c)
        if len(owner):
            ext[owner, rows] = -np.inf
        ci, cs = select_top_n(ext, min(self.n, c))
        ci = np.where(ci >= 0, ci + n_items, -1)
        width = min(self.n, n_items + c)
        if width == items.shape[1]:
            # Only the rows whose best cold candidate beats their last entry change (a tie
            # keeps the model's item, as the stable sort below would; NaN compares false).
            rows = np.flatnonzero(cs[:, 0] > scores[:, -1])
            if not len(rows):
                return items, scores
            items, scores = items.copy(), scores.copy()
            both_items = np.hstack([items[rows], ci[rows]])
            both_scores = np.hstack([scores[rows], cs[rows]])
            order = np.argsort(-both_scores, axis=1, kind="stable")[:, :width]
            items[rows] = np.take_along_axis(both_items, order, axis=1)
            scores[rows] = np.take_along_axis(both_scores, order, axis=1)
            return items, scores
        # A catalogue smaller than the list: every list grows by cold items. NaN (a broken
        # solve) sorts last; its row stays all NaN, as the model's would be.
        both_items = np.hstack([items, ci])
        both_scores = np.hstack([scores, cs])
        order = np.argsort(-both_scores, axis=1, kind="stable")[:, :width]
        return (
            np.take_along_axis(both_items, order, axis=1),
            np.take_along_axis(both_scores, order, axis=1),
        )

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def all_ids(self) -> npt.NDArray[np.object_]:
        """(n_items + c,) object: the id of every row a list may hold (cold items last)."""
        if self.cold is None or not len(self.cold):
            return self.ids_array
        return np.concatenate([self.ids_array, np.asarray(self.cold.ids, dtype=np.object_)])

    def blocked_rows(self, item_ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """Row indices of the given item ids that the model knows."""
        return np.fromiter((self.index[i] for i in item_ids if i in self.index), dtype=np.int64)

    def recommend(self, histories: Mapping[str, Mapping[str, float]]) -> tuple[Ranked, int, int]:
        """``score``, as (user, [(item_id, score), ...]) lists (scores rounded for JSON).

        Returns the lists, how many history entries named items unknown to the model, and how
        many users got the popularity ranking.
        """
        scored = self.score(histories)
        return scored.lists(self.all_ids), scored.unknown, scored.cold

    def score(self, histories: Mapping[str, Mapping[str, float]]) -> Scored:
        """Top-``n`` item rows and scores for every user in ``histories`` (item -> total).

        Every item in a user's history, and every ``blocked`` row, is excluded from their list.
        At most ``history_max`` items per user (the strongest by absolute total) enter the solve.
        Users with no positive history among the model's items get the popularity ranking.
        """
        counts = np.fromiter(map(len, histories.values()), dtype=np.int64, count=len(histories))
        totals = (t for h in histories.values() for t in h.values())
        return self.score_flat(
            list(histories),
            counts,
            self.rows_of([i for h in histories.values() for i in h]),
            np.fromiter(totals, dtype=np.float64, count=int(counts.sum())),
        )

    def values(self, scored: Scored, now_ms: int) -> list[tuple[str, bytes]]:
        """(user_id, ``<p>:recs:<user_id>`` JSON) for every list of ``scored``, under this
        model's version (what ``streamrec.sink.Sink.write`` takes)."""
        encoder = self.cold.encoder if self.cold is not None else self.encoder
        encoded = encoder.recs(scored.users, scored.items, scored.scores, self.version, now_ms)
        return list(zip(scored.users, encoded, strict=True))

    def vecs(self, scored: Scored) -> list[tuple[str, bytes]]:
        """(user_id, ``<p>:vec:<user_id>`` value) for every list of ``scored`` (its vectors and
        history rows under this model's version); [] when ``scored`` kept none."""
        if scored.vectors is None or scored.warm is None:
            return []
        assert scored.seen_ptr is not None and scored.seen_idx is not None
        return vec_values(scored.users, self.version, scored.vectors, scored.warm,
                          scored.seen_ptr, scored.seen_idx)  # fmt: skip

    def rows_of(self, item_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        """(n,) int64 model row of each item id, -1 for ids the model does not know (a cold
        item's row is ``n_items + j``, ``ColdItems``)."""
        get = self.index.get
        rows = np.fromiter((get(i, -1) for i in item_ids), dtype=np.int64, count=len(item_ids))
        cold = self.cold
        if cold is not None and len(cold) and (rows < 0).any():
            n_items, cget = self.model.n_items, cold.index.get
            for at in np.flatnonzero(rows < 0).tolist():
                j = cget(item_ids[at])
                if j is not None:
                    rows[at] = n_items + j
        return rows

    def score_flat(
        self,
        users: list[str],
        counts: npt.NDArray[np.int64],
        all_rows: npt.NDArray[np.int64],
        all_totals: npt.NDArray[np.float64],
    ) -> Scored:
        """``score`` with the histories flattened: user ``b`` owns the next ``counts[b]``
        entries of ``all_rows`` ((nnz,) int64 model rows, ``rows_of``; -1 = unknown item) and
        ``all_totals`` ((nnz,) float64 feedback totals). Cold items (rows past the model's)
        are kept out of the user's list and out of the solve.

        A warm user whose vector is not finite gets NaN scores and no items (-1)."""
        n, history_max = self.n, self.history_max
        alpha = float(self.model.params["alpha"])
        transform = self.model.params["transform"]
        total = len(all_rows)
        owner = np.repeat(np.arange(len(users)), counts)
        known = all_rows >= 0
        unknown = int(total - known.sum())
        cold_owner = cold_rows = _no_rows()
        if self.cold is not None and len(self.cold):
            n_items = self.model.n_items
            in_cold = all_rows >= n_items
            cold_owner, cold_rows = owner[in_cold], all_rows[in_cold] - n_items
            known &= ~in_cold
        excl_idx, owner, totals = all_rows[known], owner[known], all_totals[known]
        per_user = np.bincount(owner, minlength=len(users))
        excl_ptr = np.concatenate([[0], np.cumsum(per_user)]).astype(np.int64)
        solve_idx = excl_idx
        if (per_user > history_max).any():
            keep = np.ones(len(excl_idx), dtype=bool)
            for heavy in np.flatnonzero(per_user > history_max).tolist():
                lo, hi = excl_ptr[heavy], excl_ptr[heavy + 1]
                order = np.argsort(-np.abs(totals[lo:hi]), kind="stable")
                keep[lo + order[history_max:]] = False  # only the strongest enter the solve
            solve_idx, owner, totals = excl_idx[keep], owner[keep], totals[keep]
            per_user = np.bincount(owner, minlength=len(users))
        solve_ptr = np.concatenate([[0], np.cumsum(per_user)]).astype(np.int64)
        conf = (alpha * confidence(totals, transform)).astype(np.float32)
        warm = np.bincount(owner[conf > 0], minlength=len(users)) > 0
        vectors = self.foldin.solve(solve_ptr, solve_idx, conf)
        if not np.isfinite(vectors).all():
            # A broken solve (an overflowed confidence, a near-singular system) gives no list:
            # NaN makes every score of the row NaN, which callers can test (worker/isolate.py).
            vectors[~np.isfinite(vectors).all(axis=1)] = np.nan
        items, scores, short = self._top_n(vectors, excl_ptr, excl_idx)
        if self.cold is not None and len(self.cold):
            items, scores = self._merge_cold(vectors, items, scores, cold_owner, cold_rows)
        cold = np.flatnonzero(~warm).tolist()
        if cold:
            never = set(self.blocked.tolist())
            pop = self.model.item_popularity
            for b in cold:
                seen = set(excl_idx[excl_ptr[b] : excl_ptr[b + 1]].tolist()) | never
                picks = [i for i in self.popular_order[: n + len(seen)] if i not in seen]
                picks = picks[: items.shape[1]]
                items[b] = -1
                scores[b] = -np.inf
                items[b, : len(picks)] = picks
                scores[b, : len(picks)] = pop[picks]
        return Scored(users, items, scores, unknown, len(cold), short,
                      vectors, warm, excl_ptr, excl_idx)  # fmt: skip


@dataclass(frozen=True)
class Scored:
    """One batch's lists as arrays: row ``b`` of ``items``/``scores`` belongs to ``users[b]``."""

    users: list[str]
    items: npt.NDArray[np.int64]  # (B, m) item rows, best first; -1 pads a short list
    scores: npt.NDArray[np.float32]  # (B, m); -inf where items is -1
    unknown: int  # history entries naming items the model does not know
    cold: int  # users given the popularity ranking
    short: int = 0  # users the top-N index handed to exact scoring (``Scorer._top_n``)
    # What ``<p>:vec:<user>`` holds (``streamrec.keys.vec_values``); None where not kept.
    vectors: npt.NDArray[np.float32] | None = field(default=None, repr=False)  # (B, k)
    warm: npt.NDArray[np.bool_] | None = field(default=None, repr=False)  # (B,) not popularity
    seen_ptr: npt.NDArray[np.int64] | None = field(default=None, repr=False)  # (B + 1,)
    seen_idx: npt.NDArray[np.int64] | None = field(default=None, repr=False)  # (nnz,) rows

    def take(self, keep: npt.NDArray[np.bool_]) -> Scored:
        """The rows where ``keep`` ((B,) bool) holds, counters as they are."""
        users = [u for u, k in zip(self.users, keep.tolist(), strict=True) if k]
        vec: tuple[object, ...] = (None, None, None, None)
        if self.vectors is not None and self.seen_ptr is not None:
            assert self.warm is not None and self.seen_idx is not None
            lo, hi = self.seen_ptr[:-1][keep], self.seen_ptr[1:][keep]
            idx = (np.concatenate([self.seen_idx[a:b] for a, b in zip(lo.tolist(), hi.tolist(),
                                                                      strict=True)])
                   if len(lo) else self.seen_idx[:0])  # fmt: skip
            ptr = np.concatenate([[0], np.cumsum(hi - lo)]).astype(np.int64)
            vec = (self.vectors[keep], self.warm[keep], ptr, idx)
        return Scored(users, self.items[keep], self.scores[keep], self.unknown, self.cold,
                      self.short, *vec)  # type: ignore[arg-type]  # fmt: skip

    @staticmethod
    def vec_parts(parts: Sequence[Scored]) -> tuple[object, ...]:
        """The vector fields of ``parts`` joined, in order (all None unless every part has
        them)."""
        if not parts or any(p.vectors is None or p.seen_ptr is None for p in parts):
            return (None, None, None, None)
        ptrs, base = [np.zeros(1, np.int64)], 0
        for p in parts:
            assert p.seen_ptr is not None
            ptrs.append(p.seen_ptr[1:] + base)
            base += int(p.seen_ptr[-1])
        return (
            np.vstack([p.vectors for p in parts if p.vectors is not None]),
            np.concatenate([p.warm for p in parts if p.warm is not None]),
            np.concatenate(ptrs),
            np.concatenate([p.seen_idx for p in parts if p.seen_idx is not None]),
        )

    def lists(self, ids: npt.NDArray[np.object_]) -> Ranked:
        """(user, [(item_id, score), ...]) per user, scores rounded (``round_scores``)."""
        rounded = round_scores(self.scores)
        out: Ranked = []
        for b, user in enumerate(self.users):
            keep = self.items[b] >= 0
            row = ids[self.items[b][keep]].tolist()
            out.append((user, list(zip(row, rounded[b][keep].tolist(), strict=True))))
        return out
