"""Offline recommend: a list for every user of a history file, computed by the worker's own
fold-in and top-N (``streamrec.als.scorer.Scorer.recommend``), in batches.

A user's history is their summed feedback total per item (the file's weights, or ratings
through the shared score), with no decay: the same ``{item: total}`` the worker would hold
after replaying those rows as events with decay off. So a line here equals the list the
worker would write to Redis for that user (blocked items aside).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamrec.als.ann import load_for
from streamrec.als.scorer import HISTORY_MAX, Scorer
from streamrec.artifact import Model, load_model
from streamrec.model.data import Interactions, factorize, load_file
from streamrec.model.errors import DataError
from streamrec.settings import Settings, load_settings

log = logging.getLogger(__name__)

#: Users per ``Scorer.recommend`` call.
BATCH = 1024


def user_histories(data: Interactions) -> dict[str, dict[str, float]]:
    """``{user_id: {item_id: summed weight}}``, users and items in sorted id order.

    Totals are summed in float64 and kept even when they sum to 0 (the worker keeps such an
    item in the history too: it is excluded from the list and neutral in the solve).
    """
    if len(data) == 0:
        raise DataError("no interactions")
    user_ids, u = factorize(data.users)
    item_ids, i = factorize(data.items)
    keys, inverse = np.unique(u.astype(np.int64) * len(item_ids) + i, return_inverse=True)
    totals = np.bincount(inverse, weights=data.weights.astype(np.float64), minlength=len(keys))
    users = keys // len(item_ids)
    bounds = np.searchsorted(users, np.arange(len(user_ids) + 1))
    items = (keys % len(item_ids)).tolist()
    values = totals.tolist()
    ids = item_ids
    return {
        str(user): {ids[items[j]]: values[j] for j in range(bounds[n], bounds[n + 1])}
        for n, user in enumerate(user_ids)
    }


@dataclass(frozen=True)
class RecommendStats:
    """``users`` lists written, ``unknown`` history entries the model did not know, ``cold``
    users given the popular list."""

    users: int
    unknown: int
    cold: int


def recommend(
    model: Model,
    histories: Mapping[str, Mapping[str, float]],
    n: int,
    history_max: int = HISTORY_MAX,
    batch: int = BATCH,
    stats: list[RecommendStats] | None = None,
    settings: Settings | None = None,
) -> Iterator[tuple[str, list[tuple[str, float]]]]:
    """``(user_id, [(item_id, score), ...])`` for every user in ``histories``, in order,
    ``batch`` users per ``Scorer.recommend`` call. Appends the totals to ``stats`` when given.
    A big catalogue (``settings.ann_min_items``, default settings when None) is ranked through
    the model's stored index, as the worker ranks it."""
    s = settings or load_settings()
    scorer = Scorer.create(model, n=n, history_max=history_max, ann=load_for(model, s))
    users = list(histories)
    unknown = cold = 0
    for start in range(0, len(users), batch):
        chunk = {u: histories[u] for u in users[start : start + batch]}
        lists, unk, cld = scorer.recommend(chunk)
        unknown += unk
        cold += cld
        yield from lists
    if stats is not None:
        stats.append(RecommendStats(len(users), unknown, cold))


def line(user: str, items: list[tuple[str, float]]) -> str:
    """One JSON line: ``{"user_id": ..., "items": [{"item_id": ..., "score": ...}, ...]}``."""
    return json.dumps(
        {"user_id": user, "items": [{"item_id": i, "score": s} for i, s in items]},
        ensure_ascii=False,
    )


def recommend_file(
    model_dir: Path,
    history: Path,
    out: Path | None,
    n: int,
    history_max: int = HISTORY_MAX,
    batch: int = BATCH,
) -> RecommendStats:
    """Lists for every user of ``history`` (any format ``load_file`` reads) from the model at
    ``model_dir``, one JSON line per user, to ``out`` (written under a temporary name, then
    renamed) or stdout when None."""
    model = load_model(Path(model_dir))
    hist = user_histories(load_file(Path(history)))
    log.info("recommending %d per user for %d users with model %s", n, len(hist), model.version)
    stats: list[RecommendStats] = []
    rows = recommend(model, hist, n, history_max, batch, stats)
    if out is None:
        for user, items in rows:
            sys.stdout.write(line(user, items) + "\n")
        sys.stdout.flush()
        return stats[0]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for user, items in rows:
                f.write(line(user, items) + "\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return stats[0]
