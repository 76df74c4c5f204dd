"""Offline evaluation: the served path (the worker's lists), a live model, the report."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from streamrec.als.scorer import Scorer
from streamrec.artifact import write_model
from streamrec.model.data import Interactions, load_lastfm, synthetic
from streamrec.model.evaluate import (
    als_model,
    evaluate,
    evaluate_model,
    histories,
    scorer_lists,
)
from streamrec.model.metrics import ranking_metrics
from streamrec.model.params import Params
from streamrec.model.split import split_interactions
from tests.conftest import shared_file


def test_als_lists_are_the_workers_lists(tmp_path: Path) -> None:
    split = split_interactions(synthetic(200, 150, seed=6))
    params = Params(factors=8, iterations=4, regularization=2.0)
    model = als_model(split, params)
    users = split.eval_users()[:40]
    got = scorer_lists(split, model, users, 10)
    lists, _, _ = Scorer.create(model, n=10).recommend(histories(split, users))
    index = {item: n for n, item in enumerate(split.item_ids)}
    assert got.items.tolist() == [[index[i] for i, _ in ranked] for _, ranked in lists]
    # the same model through a directory ("live") gives the same metrics
    write_model(
        tmp_path / "m",
        model.item_ids,
        model.item_factors,
        model.item_popularity,
        asdict(params),
    )
    live = evaluate_model(split, tmp_path / "m", users=users)
    direct = ranking_metrics(got.items, split.relevant()[users], (10, 20)[:1], len(split.item_ids))
    assert live.metrics["ndcg@10"] == pytest.approx(direct["ndcg@10"])
    assert live.note is not None and live.note.startswith("0 of")


def test_live_model_skips_unknown_items(small_model: Path) -> None:
    # small_model knows synthetic(400, 300, seed=3)'s items, not these
    data = synthetic(60, 50, seed=9)
    renamed = Interactions(
        data.users, np.asarray([f"x-{i}" for i in data.items], dtype=np.object_), data.weights
    )
    split = split_interactions(renamed)
    result = evaluate_model(split, small_model, ks=(5,))
    assert result.metrics["ndcg@5"] == 0.0
    assert result.note is not None and "cold users" in result.note


def test_evaluate_report_shape() -> None:
    split = split_interactions(synthetic(200, 150, seed=5))
    report = evaluate(
        split,
        models=("popularity", "itemknn", "ease", "als"),
        params=Params(factors=8, iterations=4),
        tuned=Params(factors=8, iterations=4, regularization=10.0),
        ks=(5, 10),
        ease_lambda=50.0,
    )
    names = [r.name for r in report.results]
    assert names == ["popularity", "itemknn", "ease", "als", "als-tuned"]
    for r in report.results:
        assert set(r.metrics) >= {"ndcg@5", "precision@10", "recall@5", "map@10", "coverage@5"}
        assert 0 <= r.metrics["ndcg@10"] <= 1
    d = report.to_dict()
    assert d["ks"] == [5, 10] and d["split"]["method"] == "time"
    assert "als-tuned" in report.table()


def test_als_beats_popularity_on_lastfm() -> None:
    path = shared_file("hetrec2011-lastfm-2k", "user_artists.dat.gz")
    split = split_interactions(load_lastfm(path.parent))
    assert split.method == "random"
    report = evaluate(
        split, models=("popularity", "als"), params=Params(factors=32, iterations=8), ks=(10,)
    )
    als = report.result("als").metrics["ndcg@10"]
    pop = report.result("popularity").metrics["ndcg@10"]
    assert als >= 1.5 * pop, (als, pop)
    assert (
        report.result("als").metrics["coverage@10"]
        > 5 * report.result("popularity").metrics["coverage@10"]
    )
