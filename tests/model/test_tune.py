"""The parameter search: bounded by its budget, seeded, scored on validation pairs only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import streamrec.model.tune as tune_module
from streamrec.model.data import synthetic
from streamrec.model.params import Params
from streamrec.model.split import Split, split_interactions
from streamrec.model.tune import SPACE, perturb_params, sample_params, tune, tune_ease

SMALL = Params(factors=8, iterations=3, regularization=1.0, alpha=2.0)
SPACE_SMALL: dict[str, Any] = {**SPACE, "factors": (4, 8), "iterations": (2, 3)}


@pytest.fixture(scope="module")
def split() -> Split:
    return split_interactions(synthetic(150, 100, seed=21))


def fake_clock(step: float) -> Callable[[], float]:
    """A clock that moves ``step`` seconds every time it is read: trials 'take' time."""
    now = [0.0]

    def clock() -> float:
        now[0] += step
        return now[0]

    return clock


def _pairs(p: Any) -> set[tuple[int, int]]:
    return set(zip(p.users.tolist(), p.items.tolist(), strict=True))


def test_budget_bounds_the_search(split: Split) -> None:
    # Every clock read advances 1 s, so each trial 'costs' a few seconds: a 12 s budget
    # leaves room for a handful, never an unbounded search.
    result = tune(split, 12.0, base=SMALL, space=SPACE_SMALL, clock=fake_clock(1.0))
    assert 1 <= len(result.trials) <= 6
    slowest = max(t.seconds for t in result.trials)
    assert result.elapsed_s <= result.budget_s + slowest + 2
    # a budget smaller than one trial still runs the base trial, and only it
    tiny = tune(split, 0.5, base=SMALL, space=SPACE_SMALL, clock=fake_clock(1.0))
    assert [t.phase for t in tiny.trials] == ["base"]
    assert tiny.best == SMALL


def test_search_is_seeded_and_returns_its_best(split: Split) -> None:
    def run(seed: int) -> list[Params]:
        r = tune(split, 1e9, seed=seed, base=SMALL, space=SPACE_SMALL, max_trials=4)
        assert len(r.trials) == 4 and r.trials[0].params == SMALL
        assert r.best_score == max(t.score for t in r.trials)
        assert r.best in [t.params for t in r.trials]
        return [t.params for t in r.trials]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_trials_never_see_the_test_pairs(split: Split, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Split] = []
    real = tune_module.score_params

    def spy(valid: Split, *args: Any, **kwargs: Any) -> dict[str, float]:
        seen.append(valid)
        return real(valid, *args, **kwargs)

    monkeypatch.setattr(tune_module, "score_params", spy)
    result = tune(split, 1e9, base=SMALL, space=SPACE_SMALL, max_trials=2)
    assert len(seen) == 2
    train, test = _pairs(split.train), _pairs(split.test)
    for valid in seen:
        assert _pairs(valid.train) | _pairs(valid.test) == train
        assert not (_pairs(valid.train) | _pairs(valid.test)) & test
    table = result.to_dict()
    assert table["validation"]["train_pairs"] == len(seen[0].train)
    assert [row["trial"] for row in table["trials"]] == [0, 1]
    assert {"factors", "regularization", "alpha", "iterations", "transform", "score"} <= set(
        table["trials"][0]
    )
    assert "reg" in result.table()


def test_samples_stay_in_the_space() -> None:
    rng = np.random.default_rng(0)
    drawn = [sample_params(rng, Params(seed=5)) for _ in range(200)]
    assert {p.transform for p in drawn} == {"log", "linear"}
    assert all(p.factors in SPACE["factors"] and p.seed == 5 for p in drawn)
    regs = [p.regularization for p in drawn]
    assert min(regs) >= 0.01 and max(regs) <= 1000 and max(regs) > 10  # reaches the tens+
    near = [perturb_params(rng, Params(regularization=50.0, alpha=5.0)) for _ in range(200)]
    assert all(0.01 <= p.regularization <= 1000 and 0.3 <= p.alpha <= 100 for p in near)
    assert np.median([p.regularization for p in near]) == pytest.approx(50, rel=0.3)


def test_tune_on_all_data_then_ease(split: Split) -> None:
    everything = split_interactions(synthetic(150, 100, seed=21), 0.0)
    result = tune(everything, 1e9, base=SMALL, space=SPACE_SMALL, max_trials=2)
    assert result.validation["test_pairs"] > 0  # carved from the data, not empty
    ease = tune_ease(split, lambdas=(10.0, 100.0))
    assert ease.skipped is None and set(ease.scores) == {10.0, 100.0}
    assert ease.best in ease.scores
    assert tune_ease(split, max_items=5).skipped is not None


def test_bad_budget(split: Split) -> None:
    with pytest.raises(ValueError, match="budget"):
        tune(split, 0)
