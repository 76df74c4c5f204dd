"""One user's failure stays that user's: unreadable states, overflowed totals, a singular solve
and non-finite scores each take out their own user, and everyone else is scored as if alone.

The faults are real: a model with no regularization and an identity factor matrix makes the
fold-in of a user with a zero confidence singular (LAPACK refuses it, and numpy's stacked solve
then refuses the whole batch); a total of 1e39 is finite in float64 and infinite as the float32
confidence the solve takes.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.als.history import UserState, flatten
from streamrec.als.scorer import Scored, Scorer
from streamrec.artifact import load_model, write_model
from streamrec.worker.isolate import Failed, flatten_apart, read_states, score_apart

K = 6


@pytest.fixture()
def scorer(tmp_path: Path) -> Scorer:
    """No regularization, identity factors: ``YᵀY + λI`` is I, and a zero confidence cancels a
    whole dimension of a user's system."""
    ids = [f"i{k}" for k in range(K)]
    popularity = np.arange(K, 0, -1, dtype=np.float32)
    params = {"regularization": 0.0, "alpha": 1.0, "transform": "log"}
    write_model(tmp_path / "m", ids, np.eye(K, dtype=np.float32), popularity, params)
    return Scorer.create(load_model(tmp_path / "m"), n=3)


def _flat(
    scorer: Scorer, histories: dict[str, dict[str, float]]
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    users = list(histories)
    counts = np.array([len(h) for h in histories.values()], dtype=np.int64)
    rows = scorer.rows_of([i for h in histories.values() for i in h])
    totals = np.array([t for h in histories.values() for t in h.values()], dtype=np.float64)
    return users, counts, rows, totals


def _lists(scored: Scored) -> dict[str, tuple[list[int], list[float]]]:
    return {
        u: (scored.items[b].tolist(), scored.scores[b].tolist()) for b, u in enumerate(scored.users)
    }


GOOD = {
    "ann": {"i0": 3.0},
    "bob": {"i3": 1.0, "i4": 2.0},
    "cat": {"i5": 0.5, "nope": 1.0},  # an unknown item: counted, not a failure
}


def test_a_clean_batch_is_scored_whole(scorer: Scorer) -> None:
    failed: Failed = {}
    got = score_apart(scorer, *_flat(scorer, GOOD), failed)
    assert failed == {}
    want = scorer.score(GOOD)
    assert _lists(got) == _lists(want)
    assert (got.unknown, got.cold) == (want.unknown, want.cold) == (1, 0)


def test_a_singular_solve_takes_out_its_user_alone(scorer: Scorer) -> None:
    histories = {**GOOD, "sam": {"i1": 0.0, "i2": 1.0}}  # warm, and singular at i1
    with pytest.raises(np.linalg.LinAlgError):  # the fault: one user fails the whole batch
        scorer.score(histories)
    for user in ("sam", "dan"):  # at any place in the batch
        failed: Failed = {}
        order = {user: histories["sam"], **GOOD} if user == "dan" else histories
        got = score_apart(scorer, *_flat(scorer, order), failed)
        assert list(failed) == [user]
        assert failed[user].startswith("fold-in/top-N: LinAlgError")
        assert _lists(got) == _lists(scorer.score(GOOD))
        assert got.users == list(GOOD)  # in batch order
        assert got.unknown == 1


def test_non_finite_scores_take_out_their_user(scorer: Scorer) -> None:
    histories = {"ann": GOOD["ann"], "max": {"i2": 1e39}, "bob": GOOD["bob"]}
    failed: Failed = {}
    got = score_apart(scorer, *_flat(scorer, histories), failed)
    assert failed == {"max": "fold-in/top-N: scores are not finite (a degenerate solve)"}
    assert _lists(got) == _lists(scorer.score({u: histories[u] for u in ("ann", "bob")}))
    # what the worker would have written without the check: a NaN row, not a list
    assert np.isnan(scorer.score({"max": histories["max"]}).scores).all()


def test_every_user_failing_leaves_an_empty_result(scorer: Scorer) -> None:
    failed: Failed = {}
    got = score_apart(scorer, *_flat(scorer, {"max": {"i2": 1e39}}), failed)
    assert list(failed) == ["max"]
    assert got.users == [] and got.items.shape == (0, 3) and got.scores.shape == (0, 3)


def test_states_that_cannot_be_read_or_flattened(scorer: Scorer) -> None:
    failed: Failed = {}
    good = UserState(items={"i0": [2.0, 10.0]})
    raw = [good.to_json(), b"\x00 not a state", None, b'{"items": {"i0": 5}, "seen": ""}']
    states = read_states(["ann", "bob", "new", "odd"], raw, failed)
    # bob's is no version the worker knows; odd's JSON has a total that is not [total, ms]
    assert list(failed) == ["bob", "odd"]
    assert failed["bob"].startswith("stored state: ValueError: not a user history")
    assert failed["odd"].startswith("stored state: TypeError")
    assert states["ann"] == good and states["new"] == UserState()
    states["inf"] = UserState(items={"i1": [math.inf, 10.0]})
    states["nan"] = UserState(items={"i1": [1.0, 10.0], "i2": [-math.inf, 20.0]})
    with pytest.raises((TypeError, ValueError)):  # no state holds a total that is no number
        UserState(items={"i1": [None, 10.0]})  # type: ignore[list-item]
    users = ["ann", "inf", "nan", "new"]
    kept, counts, item_ids, totals = flatten_apart(users, states, 1e9, failed)
    assert kept == ["ann", "new"]
    assert failed["inf"] == failed["nan"]
    assert failed["inf"] == "history: a feedback total is not finite (a value overflowed)"
    want = flatten([states["ann"], states["new"]], 1e9)
    assert counts.tolist() == want[0].tolist() and item_ids == want[1]
    assert totals.tolist() == want[2].tolist()


def test_clean_states_are_flattened_whole() -> None:
    failed: Failed = {}
    states = {"a": UserState(items={"x": [1.0, 5.0], "y": [2.0, 9.0]}), "b": UserState()}
    kept, counts, item_ids, totals = flatten_apart(["a", "b"], states, None, failed)
    assert failed == {} and kept == ["a", "b"]
    assert counts.tolist() == [2, 0] and item_ids == ["x", "y"] and totals.tolist() == [1.0, 2.0]


def test_the_index_fallback_count_survives_the_split(
    scorer: Scorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch split around a failing user, and rows dropped for non-finite scores: the users
    # a big catalogue's index handed to exact scoring (``Scored.short``) still add up.
    real = Scorer.score_flat

    def counting(self: Scorer, users: list[str], *rest: Any) -> Scored:
        return replace(real(self, users, *rest), short=len(users))

    monkeypatch.setattr(Scorer, "score_flat", counting)
    histories = {**GOOD, "sam": {"i1": 0.0, "i2": 1.0}, "max": {"i2": 1e39}}
    failed: Failed = {}
    got = score_apart(scorer, *_flat(scorer, histories), failed)
    assert set(failed) == {"sam", "max"}
    assert got.short == len(histories) - 1  # every user scored; sam's call raised
