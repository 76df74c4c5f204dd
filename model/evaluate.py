"""Offline evaluation: every model's lists for a split's test users, scored @K into a report.

The pieces, in the order the data flows: ``split.py`` holds out a share of each user's pairs
(the latest, with timestamps), the models make lists for the test users from the training pairs,
``metrics.py`` scores the lists against the held-out pairs; ``evaluate`` runs them all into an
``EvalReport``.

Models: ``als`` (implicit ALS from ``streamrec.model.train.fit``, ``als_fit``, whose lists come
from the worker's own ``Scorer``: fold-in of each test user's training history, then top-N,
exactly what production serves; ``scorer_lists``), the baselines of ``baselines.py``
(``popularity``, ``itemknn``, ``ease``) and any model directory (``evaluate_model``: the live
model, or a candidate). Lists are (B, k) int64 split item indices, -1 padding a short list.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from streamrec.als.scorer import HISTORY_MAX, Scored, Scorer
from streamrec.als.scoring import score_csr, scored_in_order
from streamrec.artifact import Model, load_model
from streamrec.model.baselines import (
    EASE_LAMBDA,
    EASE_MAX_ITEMS,
    KNN_NEIGHBOURS,
    ease_lists,
    itemknn_lists,
    popularity_lists,
)
from streamrec.model.errors import DataError, ModelError
from streamrec.model.metrics import KS, ranking_metrics
from streamrec.model.params import Params
from streamrec.model.split import Split
from streamrec.model.train import fit

log = logging.getLogger(__name__)

I64 = npt.NDArray[np.int64]

#: Models ``evaluate`` runs by default (``live`` only when a model directory is given).
MODELS: tuple[str, ...] = ("popularity", "itemknn", "ease", "als")


# --- ALS, served as the worker serves it ----------------------------------------------------------


def als_model(split: Split, params: Params) -> Model:
    """Fit ALS on the training pairs and return it as an in-memory ``Model``, exactly what
    ``streamrec.model.train.train`` would write (catalog = items with a training pair, popularity =
    summed positive confidence), ready for ``Scorer.create``."""
    return als_fit(split, params)[0]


def als_fit(split: Split, params: Params) -> tuple[Model, npt.NDArray[np.float32]]:
    """``als_model``, and the fit's (n_users, k) user factors (rows: ``split.user_ids``) for
    a warm start of a later fit."""
    matrix = split.train_matrix(params.transform)
    als = fit(matrix, params)
    factors = np.ascontiguousarray(als.item_factors, dtype=np.float32)
    popularity = np.asarray(matrix.confidence.maximum(0).sum(axis=0), dtype=np.float32).ravel()
    model = Model(
        path=Path("<memory>"),
        version="offline",
        item_ids=matrix.item_ids,
        item_factors=factors,
        item_popularity=popularity,
        params=asdict(params),
        manifest={},
    )
    return model, np.asarray(als.user_factors, dtype=np.float32)


@dataclass(frozen=True)
class ScorerLists:
    """What ``scorer_lists`` returns: ``items`` (B, k) int64 split item indices (-1 = none or
    an item the split does not know), ``unknown`` history entries the model did not know,
    ``cold`` users served the popular list."""

    items: I64
    unknown: int
    cold: int


def histories(
    split: Split, users: I64, totals: sp.csr_matrix | None = None
) -> dict[str, dict[str, float]]:
    """``{user_id: {item_id: training total}}`` for ``users``: what the worker's history
    would hold (no decay) and what ``Scorer.recommend`` takes. ``totals``: the split's
    ``train_totals()``, when the caller has it already."""
    m = split.train_totals() if totals is None else totals
    ids = split.item_ids
    out: dict[str, dict[str, float]] = {}
    for u in users.tolist():
        lo, hi = m.indptr[u], m.indptr[u + 1]
        out[split.user_ids[u]] = dict(
            zip((ids[i] for i in m.indices[lo:hi]), m.data[lo:hi].tolist(), strict=True)
        )
    return out


def scorer_lists(
    split: Split,
    model: Model,
    users: I64,
    k: int,
    history_max: int = HISTORY_MAX,
    batch: int = 1024,
) -> ScorerLists:
    """Lists for ``users`` ((B,) int64 split user indices) from the worker's ``Scorer``
    (fold-in of the training history, then top-N, popular list for cold users), in batches
    scored on ``streamrec.als.scoring.THREADS`` threads; item ids mapped to split indices,
    ``items`` (B, k)."""
    scorer = Scorer.create(model, n=k, history_max=history_max)
    column_rows = scorer.rows_of(split.item_ids)
    known = column_rows >= 0
    # model row -> split index; the extra last entry maps the -1 padding to -1.
    to_split = np.full(model.n_items + 1, -1, dtype=np.int64)
    to_split[column_rows[known]] = np.flatnonzero(known)
    out = np.full((len(users), k), -1, dtype=np.int64)
    totals = split.train_totals()
    starts = range(0, len(users), batch)

    def one(sc: Scorer, start: int) -> Scored:
        return score_csr(sc, totals, users[start : start + batch], split.user_ids, column_rows)

    unknown = cold = 0
    for start, scored in zip(starts, scored_in_order(scorer, one, starts), strict=True):
        got = to_split[scored.items[:, :k]]
        out[start : start + len(got), : got.shape[1]] = got
        unknown += scored.unknown
        cold += scored.cold
    return ScorerLists(out, unknown, cold)


def als_lists(
    split: Split, params: Params, users: I64, k: int, history_max: int = HISTORY_MAX
) -> I64:
    """(len(users), k): ALS fitted on the training pairs, served through the worker's path."""
    return scorer_lists(split, als_model(split, params), users, k, history_max).items


# --- running it all -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelResult:
    """One model's row: ``metrics`` as ``ranking_metrics`` gives them (empty when skipped)."""

    name: str
    metrics: dict[str, float]
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EvalReport:
    """Every model on one split: ``split`` is ``Split.summary()``, ``ks`` the list lengths."""

    split: dict[str, Any]
    ks: tuple[int, ...]
    results: tuple[ModelResult, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def result(self, name: str) -> ModelResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "ks": list(self.ks),
            "results": [r.to_dict() for r in self.results],
            **self.extra,
        }

    def table(self) -> str:
        """A fixed-width text table: a row per model, NDCG/P/R/MAP/coverage at each K."""
        cols = [
            f"{m}@{k}" for k in self.ks for m in ("ndcg", "precision", "recall", "map", "coverage")
        ]
        head = f"{'model':<16}" + "".join(f"{c:>14}" for c in cols) + f"{'seconds':>9}"
        lines = [head, "-" * len(head)]
        for r in self.results:
            if r.skipped:
                lines.append(f"{r.name:<16}  skipped: {r.skipped}")
                continue
            vals = "".join(f"{r.metrics.get(c, float('nan')):>14.4f}" for c in cols)
            lines.append(f"{r.name:<16}{vals}{r.seconds:>9.1f}")
        return "\n".join(lines)


def evaluate_model(
    split: Split,
    model: Model | Path,
    name: str = "live",
    ks: Sequence[int] = KS,
    users: I64 | None = None,
    history_max: int = HISTORY_MAX,
) -> ModelResult:
    """An existing model (a directory, loaded and verified, or a loaded ``Model``) on the
    split's test users: each user's training history folded in by the worker's ``Scorer``.
    History items the model does not know are skipped (counted in ``note``); recommended items
    the split does not know can never be hits."""
    started = time.perf_counter()
    loaded = load_model(Path(model)) if not isinstance(model, Model) else model
    users = split.eval_users() if users is None else users
    got = scorer_lists(split, loaded, users, max(ks), history_max)
    metrics = ranking_metrics(got.items, split.relevant()[users], ks, len(split.item_ids))
    entries = int(sum(np.diff(split.train_totals()[users].indptr)))
    return ModelResult(
        name,
        metrics,
        round(time.perf_counter() - started, 3),
        params={"version": loaded.version, **dict(loaded.params)},
        note=f"{got.unknown} of {entries} history entries unknown to the model; "
        f"{got.cold} cold users",
    )


def evaluate(
    split: Split,
    models: Sequence[str] = MODELS,
    params: Params | None = None,
    tuned: Params | None = None,
    model_dir: Path | None = None,
    ks: Sequence[int] = KS,
    ease_lambda: float = EASE_LAMBDA,
    ease_max_items: int = EASE_MAX_ITEMS,
    knn_neighbours: int = KNN_NEIGHBOURS,
    history_max: int = HISTORY_MAX,
    max_users: int | None = None,
    seed: int = 0,
    als: Model | None = None,
) -> EvalReport:
    """Run ``models`` on ``split`` and return their metrics.

    ``als`` uses ``params`` (default ``Params()``, what ``streamrec train`` fits); with
    ``tuned`` an ``als-tuned`` row is added; with ``model_dir`` a ``live`` row
    (``evaluate_model``). ``max_users`` evaluates a seeded sample of the test users.
    ``als``: the candidate already fitted on ``split`` with ``params`` (``als_fit``), so the
    ``als`` row serves it instead of fitting again.
    """
    ks = tuple(sorted(set(ks)))
    k = max(ks)
    users = split.eval_users(max_users, seed)
    if len(users) == 0:
        raise DataError("no test user has a relevant held-out item")
    relevant = split.relevant()[users]
    n_items = len(split.item_ids)
    runs: list[tuple[str, Any, dict[str, Any]]] = []
    for name in models:
        if name == "popularity":
            runs.append((name, lambda: popularity_lists(split, users, k), {}))
        elif name == "itemknn":
            runs.append(
                (
                    name,
                    lambda: itemknn_lists(split, users, k, knn_neighbours),
                    {"neighbours": knn_neighbours},
                )
            )
        elif name == "ease":
            runs.append(
                (
                    name,
                    lambda: ease_lists(split, users, k, ease_lambda, max_items=ease_max_items),
                    {"lambda": ease_lambda},
                )
            )
        elif name == "als":
            p = params or Params()
            if als is not None:

                def served(m: Model = als) -> I64:
                    return scorer_lists(split, m, users, k, history_max).items

                runs.append(("als", served, asdict(p)))
            else:
                runs.append(
                    ("als", lambda p=p: als_lists(split, p, users, k, history_max), asdict(p))
                )
        else:
            raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")
    if tuned is not None:
        runs.append(
            ("als-tuned", lambda: als_lists(split, tuned, users, k, history_max), asdict(tuned))
        )
    results: list[ModelResult] = []
    for name, make, run_params in runs:
        started = time.perf_counter()
        try:
            recs = make()
        except ModelError as exc:
            log.warning("%s: %s", name, exc)
            results.append(ModelResult(name, {}, 0.0, run_params, skipped=str(exc)))
            continue
        metrics = ranking_metrics(recs, relevant, ks, n_items)
        seconds = round(time.perf_counter() - started, 3)
        log.info("%s: ndcg@%d %.4f (%.1fs)", name, ks[0], metrics[f"ndcg@{ks[0]}"], seconds)
        results.append(ModelResult(name, metrics, seconds, run_params))
    if model_dir is not None:
        results.append(evaluate_model(split, Path(model_dir), "live", ks, users, history_max))
    return EvalReport(split.summary(), ks, tuple(results))
