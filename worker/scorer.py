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
        excl_ptr = np.zeros(len(users) + 1, dtype=np.int64)
        solve_ptr = np.zeros(len(users) + 1, dtype=np.int64)
        excl: list[list[int]] = []
        solve: list[list[tuple[int, float]]] = []
        unknown = 0
        for b, user in enumerate(users):
            known = [(self.index[i], t) for i, t in histories[user].items() if i in self.index]
            unknown += len(histories[user]) - len(known)
            excl.append([i for i, _ in known])
            if len(known) > history_max:
                known = sorted(known, key=lambda p: -abs(p[1]))[:history_max]
            solve.append(known)
            excl_ptr[b + 1] = excl_ptr[b] + len(excl[b])
            solve_ptr[b + 1] = solve_ptr[b] + len(known)
        excl_idx = np.fromiter((i for row in excl for i in row), np.int64, int(excl_ptr[-1]))
        solve_idx = np.fromiter((i for row in solve for i, _ in row), np.int64, int(solve_ptr[-1]))
        totals = np.fromiter((t for row in solve for _, t in row), np.float64, int(solve_ptr[-1]))
        conf = (alpha * confidence(totals, transform)).astype(np.float32)
        vectors = self.foldin.solve(solve_ptr, solve_idx, conf)
        items, scores = self._top_n(vectors, n, excl_ptr, excl_idx, blocked)
        never = set(blocked.tolist()) if blocked is not None else set()
        rounded = round_scores(scores)
        ids = self.model.item_ids
        ids_array = self.ids_array
        out: Ranked = []
        cold = 0
        for b, user in enumerate(users):
            if not (conf[solve_ptr[b] : solve_ptr[b + 1]] > 0).any():
                seen = set(excl[b]) | never
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
