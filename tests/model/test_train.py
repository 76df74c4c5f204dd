"""Training writes a verified artifact whose factors serve the fold-in exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from model.data import build_matrix, synthetic
from model.train import Params, fit, train
from streamrec.artifact import load_model
from worker.scorer import Scorer


def test_train_writes_model_matching_implicit(tmp_path: Path) -> None:
    matrix = build_matrix(synthetic(300, 200, seed=4))
    params = Params(factors=16, iterations=5, regularization=1.0, alpha=3.0)
    model = train(matrix, params, tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["params"]["alpha"] == 3.0 and manifest["n_users"] == 300
    reference = fit(matrix, params)  # same seed, same data: same factors
    np.testing.assert_allclose(model.item_factors, reference.item_factors, rtol=1e-5, atol=1e-6)

    # A training user's history folded in through the worker's scorer reproduces
    # implicit's recommend(recalculate_user=True).
    scorer = Scorer.create(load_model(tmp_path / "m"))
    u = 7
    row = matrix.confidence[u]
    history = {
        matrix.item_ids[i]: float(np.expm1(c)) for i, c in zip(row.indices, row.data, strict=True)
    }
    lists, unknown, _ = scorer.recommend({"x": history}, 10)
    ref_items, _ = reference.recommend(
        u, row, N=10, filter_already_liked_items=True, recalculate_user=True
    )
    assert unknown == 0
    assert [i for i, _ in lists[0][1]] == [matrix.item_ids[i] for i in ref_items]


def test_popularity_is_summed_positive_confidence(tmp_path: Path) -> None:
    matrix = build_matrix(synthetic(100, 80, seed=5))
    model = train(matrix, Params(factors=4, iterations=2), tmp_path / "m")
    expected = np.asarray(matrix.confidence.sum(axis=0)).ravel()
    np.testing.assert_allclose(model.item_popularity, expected, rtol=1e-5)
    top = model.popular(3)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
