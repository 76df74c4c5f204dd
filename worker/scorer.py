"""Histories in, ranked lists out, for one model: maps ids to rows, folds in, takes the top N.

No I/O: ``Scorer.recommend`` turns ``{user: {item: total}}`` into ``[(user, [(item, score)])]``.
Users with no positive history among the model's items get the popularity ranking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from streamrec.artifact import Model
from streamrec.feedback import confidence
from streamrec.keys import round_scores
from worker.foldin import FoldIn
from worker.topn import top_n

Ranked = list[tuple[str, list[tuple[str, float]]]]

#: Target size of the reused score buffer (users x items float32).
SCORE_BUFFER_BYTES = 32 << 20


@dataclass(frozen=True)
class Scorer:
    model: Model
    foldin: FoldIn
    index: Mapping[str, int] = field(repr=False)
    popular_order: npt.NDArray[np.int64] = field(repr=False)
    ids_array: npt.NDArray[np.object_] = field(repr=False)
    # Scratch reused across batches (one worker thread uses a Scorer at a time).
    buffers: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, model: Model) -> Scorer:
        return cls(
            model=model,
            foldin=FoldIn.create(model.item_factors, float(model.params["regularization"])),
            index={item: n for n, item in enumerate(model.item_ids)},
            popular_order=np.argsort(-model.item_popularity, kind="stable").astype(np.int64),
            ids_array=np.asarray(model.item_ids, dtype=np.object_),
        )

    @property
    def score_rows(self) -> int:
        """Users scored per matrix product: the score buffer stays near SCORE_BUFFER_BYTES
        whatever the catalogue size (worker memory = factors + a bounded overhead)."""
        return max(8, min(512, SCORE_BUFFER_BYTES // (4 * max(1, self.model.n_items))))

    def _scratch(self) -> npt.NDArray[np.float32]:
        """The reused (score_rows, n_items) float32 buffer for scores."""
        buf = self.buffers.get("scores")
        if buf is None:
            buf = np.empty((self.score_rows, self.model.n_items), dtype=np.float32)
            self.buffers["scores"] = buf
        return buf

    def _top_n(
        self,
        vectors: npt.NDArray[np.float32],
        n: int,
        excl_ptr: npt.NDArray[np.int64],
        excl_idx: npt.NDArray[np.int64],
        blocked: npt.NDArray[np.int64] | None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """``top_n`` over the batch in slices of ``score_rows`` users, one buffer for all."""
        rows = self.score_rows
        if len(vectors) <= rows:
            return top_n(
                vectors,
                self.model.item_factors,
                n,
                excl_ptr,
                excl_idx,
                blocked,
                out=self._scratch(),
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
                )
            )
        return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])

    @property
    def version(self) -> str:
        return self.model.version

    def blocked_rows(self, item_ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """Row indices of the given item ids that the model knows."""
        return np.fromiter((self.index[i] for i in item_ids if i in self.index), dtype=np.int64)

    def recommend(
        self,
        histories: Mapping[str, Mapping[str, float]],
        n: int,
        history_max: int = 500,
        blocked: npt.NDArray[np.int64] | None = None,
    ) -> tuple[Ranked, int, int]:
        """Top-``n`` lists for every user in ``histories`` (item -> feedback total).

        Every item in a user's history, and every ``blocked`` row, is excluded from their list.
        At most ``history_max`` items per user (the strongest by absolute total) enter the solve.

        Returns the lists, how many history entries named items unknown to the model, and how
        many users got the popularity ranking (no positive history among known items).
        """
        users = list(histories)
        alpha = float(self.model.params["alpha"])
        transform = self.model.params["transform"]
        # Flatten every history once (ids -> rows with a bound dict.get), then do the per-user
        # bookkeeping with numpy: this loop runs for every user of every batch.
        get = self.index.get
        rows: list[int] = []
        tots: list[float] = []
        counts = np.zeros(len(users), dtype=np.int64)
        for b, user in enumerate(users):
            h = histories[user]
            rows.extend([get(i, -1) for i in h])
            tots.extend(h.values())
            counts[b] = len(h)
        owner = np.repeat(np.arange(len(users)), counts)
        all_rows = np.asarray(rows, dtype=np.int64)
        known = all_rows >= 0
        unknown = int(len(all_rows) - known.sum())
        excl_idx, owner, totals = all_rows[known], owner[known], np.asarray(tots)[known]
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
        items, scores = self._top_n(vectors, n, excl_ptr, excl_idx, blocked)
        never = set(blocked.tolist()) if blocked is not None else set()
        rounded = round_scores(scores)
        ids = self.model.item_ids
        ids_array = self.ids_array
        out: Ranked = []
        cold = 0
        for b, user in enumerate(users):
            if not warm[b]:
                seen = set(excl_idx[excl_ptr[b] : excl_ptr[b + 1]].tolist()) | never
                pop = self.model.item_popularity
                picks = [i for i in self.popular_order[: n + len(seen)] if i not in seen][:n]
                out.append(
                    (
                        user,
                        list(
                            zip(
                                [ids[i] for i in picks],
                                round_scores(pop[picks]).tolist(),
                                strict=True,
                            )
                        ),
                    )
                )
                cold += 1
                continue
            keep = items[b] >= 0
            row = ids_array[items[b][keep]].tolist()
            out.append((user, list(zip(row, rounded[b][keep].tolist(), strict=True))))
        return out, unknown, cold
