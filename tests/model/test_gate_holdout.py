"""The gate scores the live model only on interactions it was not trained on.

Scored on the job's usual per-user holdout, a live model trained on the same window has seen
the answers: on MovieLens it scored ndcg@10 0.42 against a fresh candidate's 0.10, and the gate
kept it 45 times in 46 (issue 15's replay). The pure part, ``Split.test_after``, with known
answers; the job end to end against the real broker and Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamrec.artifact import load_model
from streamrec.connect import ensure_topics, redis_client
from streamrec.model.data import Interactions
from streamrec.model.retrain import RetrainConfig, live_cut_ms, retrain
from streamrec.model.split import split_interactions
from streamrec.settings import Settings
from tests.model.test_retrain import FAST, _events


def test_test_after_keeps_the_newer_test_pairs_and_every_training_pair() -> None:
    users = np.array([f"u{u}" for u in range(4) for _ in range(10)], dtype=object)
    items = np.array([f"i{k}" for _ in range(4) for k in range(10)], dtype=object)
    times = np.array([1000 * u + 100 * k for u in range(4) for k in range(10)], dtype=np.int64)
    data = Interactions(users, items, np.ones(40, np.float32), times)
    split = split_interactions(data, fraction=0.3)
    assert len(split.test) == 12  # the latest 3 of each user's 10
    later = split.test_after(2500)
    assert later.train == split.train
    kept_times = later.test.times
    assert kept_times is not None
    assert sorted(kept_times.tolist()) == [2700, 2800, 2900, 3700, 3800, 3900]
    assert len(split.test_after(10**9).test) == 0
    untimed = split_interactions(Interactions(users, items, np.ones(40, np.float32)), 0.3)
    assert untimed.test_after(0) is untimed  # no times: nothing can be told apart


@pytest.mark.integration
def test_the_live_model_is_scored_on_what_came_after_its_data(
    stack: Callable[..., Settings], tmp_path: Path
) -> None:
    s = stack()
    ensure_topics(s)
    items = tuple(f"g{g:02d}-{k:02d}" for g in range(12) for k in range(25))
    _events(s, items, users=80, per_user=10, seed=1)
    client = redis_client(s)
    root = tmp_path / "models"
    first = retrain(s, RetrainConfig(models_dir=root, params=FAST), client, echo=lambda _l: None)
    assert first.promoted, first.reason
    live = load_model(root / str(first.version))
    cut = live_cut_ms(live)
    assert cut == live.manifest["data"]["max_event_ms"] <= int(time.time() * 1000)

    # Nothing new: the live model cannot be scored honestly; popularity alone gates.
    said: list[str] = []
    same = retrain(s, RetrainConfig(models_dir=root, params=FAST, seed=1), client, said.append)
    assert same.evaluation is not None
    assert {r.name for r in same.evaluation.results} == {"als", "popularity"}
    assert "the live model not compared" in same.reason

    time.sleep(0.01)  # every new event is stamped after the live model's newest
    _events(s, items, users=80, per_user=6, seed=2)
    said.clear()
    after = retrain(s, RetrainConfig(models_dir=root, params=FAST, seed=2), client, said.append)
    assert after.evaluation is not None
    rows = {r.name: r for r in after.evaluation.results}
    assert set(rows) == {"als", "popularity", "live"}
    line = next(x for x in said if "held-out pairs newer than the live model's data" in x)
    newer, total = (int(w) for w in line.split() if w.isdigit())
    assert 0 < newer < total  # the older held-out pairs, seen by the live model, are left out
