"""Fit implicit's ALS on a confidence matrix and write the model artifact."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from streamrec.als.ann import build_for, wanted
from streamrec.als.content import HasContent
from streamrec.artifact import Model, load_model, write_model
from streamrec.model.data import Matrix
from streamrec.model.errors import ModelError
from streamrec.model.params import Params
from streamrec.settings import Settings

log = logging.getLogger(__name__)

#: A progress callback: ``progress(done, total)`` (``streamrec.app.progress.Progress`` is one).
Progress = Callable[[float, float], None]


def fit(
    matrix: Matrix,
    params: Params,
    show_progress: bool = False,
    init: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None = None,
    iterations: int | None = None,
    progress: Progress | None = None,
) -> AlternatingLeastSquares:
    """Fit ALS on ``matrix.confidence`` (users x items); returns the fitted implicit model.

    ``init``: (n_users, k) and (n_items, k) float32 factors to start from instead of random
    ones (a warm start), for ``iterations`` (default ``params.iterations``) sweeps.
    ``progress(done, total)`` is called after each sweep (the application draws it).
    """
    # implicit parallelises with its own threads; BLAS threads on top only oversubscribe.
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations if iterations is None else iterations,
            random_state=params.seed,
            calculate_training_loss=False,
        )
        if init is not None:
            users, items = matrix.confidence.shape
            k = params.factors
            if init[0].shape != (users, k) or init[1].shape != (items, k):
                raise ModelError(
                    f"warm start factors {init[0].shape}, {init[1].shape} do not fit a "
                    f"{users} x {items} matrix with {k} factors"
                )
            als.user_factors = np.ascontiguousarray(init[0], dtype=np.float32)
            als.item_factors = np.ascontiguousarray(init[1], dtype=np.float32)
        sweeps = als.iterations

        def each_sweep(iteration: int, _elapsed: float, _loss: float | None = None) -> None:
            if progress is not None:
                progress(iteration + 1, sweeps)

        # implicit calls a callback after each sweep (iteration, elapsed s, loss).
        als.fit(matrix.confidence, show_progress=show_progress, callback=each_sweep)
    return als


def warm_start(
    matrix: Matrix,
    factors: int,
    user_ids: Sequence[str],
    user_factors: npt.NDArray[np.float32],
    item_ids: Sequence[str],
    item_factors: npt.NDArray[np.float32],
    seed: int = 0,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Starting factors for ``matrix`` from an earlier fit over (some of) the same ids: rows
    of ids that fit knew are copied, the others start as implicit starts them (uniform
    [0, 0.01)). For ``fit(..., init=...)``."""
    rng = np.random.default_rng(seed)

    def rows(ids: Sequence[str], known: Sequence[str], values: npt.NDArray[np.float32]
             ) -> npt.NDArray[np.float32]:  # fmt: skip
        out = (rng.random((len(ids), factors), dtype=np.float32) * 0.01).astype(np.float32)
        index = {x: n for n, x in enumerate(known)}
        src = np.fromiter((index.get(x, -1) for x in ids), dtype=np.int64, count=len(ids))
        hit = src >= 0
        out[hit] = np.asarray(values, dtype=np.float32)[src[hit]]
        return out

    return (
        rows(matrix.user_ids, user_ids, user_factors),
        rows(matrix.item_ids, item_ids, item_factors),
    )


def train(
    matrix: Matrix,
    params: Params,
    out: Path,
    extra: dict[str, Any] | None = None,
    progress: Progress | None = None,
    settings: Settings | None = None,
    catalog: Mapping[str, HasContent] | None = None,
) -> Model:
    """Fit and write a verified model directory at ``out``; returns the loaded model
    (``progress``: as ``fit``'s). With ``settings``, a catalogue of at least
    ``ann_min_items`` items gets its top-N index stored too, as the nightly job stores it.
    ``catalog`` (item_id -> content): the content->factor map is fitted on the model's items
    it describes and stored too (``settings``' ``content_*``, else their defaults)."""
    started = time.perf_counter()
    als = fit(matrix, params, progress=progress)
    fit_s = time.perf_counter() - started
    factors = np.asarray(als.item_factors, dtype=np.float32)
    if factors.shape != (len(matrix.item_ids), params.factors):
        raise ModelError(f"unexpected item factor shape {factors.shape}")
    popularity = np.asarray(matrix.confidence.maximum(0).sum(axis=0), dtype=np.float32).ravel()
    index = build_for(factors, settings) if settings and wanted(len(factors), settings) else None
    content = None
    if catalog:
        from streamrec.model.items import fit_for_model

        fields = Settings.model_fields
        lam = (
            settings.content_regularization
            if settings
            else fields["content_regularization"].default
        )
        min_count = (settings.content_min_category_count if settings
                     else fields["content_min_category_count"].default)  # fmt: skip
        content = fit_for_model(matrix.item_ids, factors, catalog, lam, min_count)
    write_model(
        out,
        item_ids=matrix.item_ids,
        item_factors=factors,
        item_popularity=popularity,
        params=asdict(params),
        extra={
            "n_users": len(matrix.user_ids),
            "n_entries": int(matrix.confidence.nnz),
            "fit_seconds": round(fit_s, 3),
            **({"content_fit": content.info} if content is not None else {}),
            **(extra or {}),
        },
        index=index,
        content=content.cmap if content is not None else None,
    )
    model = load_model(out)
    log.info(
        "model %s: %d items x %d factors, fitted in %.1fs, written to %s",
        model.version,
        model.n_items,
        model.factors,
        fit_s,
        out,
    )
    return model
