"""The scorer: id mapping, exclusion, cold start, unknown items."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamrec.als.scorer import Scorer
from streamrec.artifact import load_model


def test_known_history_is_excluded_and_unknown_items_counted(small_model: Path) -> None:
    scorer = Scorer.create(load_model(small_model))
    ids = scorer.model.item_ids
    history = {ids[0]: 3.0, ids[5]: 1.0, "never-seen": 2.0}
    lists, unknown, _ = scorer.with_(n=20).recommend({"u": history})
    got = [i for i, _ in lists[0][1]]
    assert unknown == 1
    assert len(got) == 20 and len(set(got)) == 20
    assert not {ids[0], ids[5]} & set(got)
    scores = [s for _, s in lists[0][1]]
    assert scores == sorted(scores, reverse=True)


def test_cold_user_gets_popular_minus_own_items(small_model: Path) -> None:
    scorer = Scorer.create(load_model(small_model), n=5)
    popular = [i for i, _ in scorer.model.popular(10)]
    lists, unknown, _ = scorer.recommend({"new": {"never-seen": 1.0}})
    assert unknown == 1
    assert [i for i, _ in lists[0][1]] == popular[:5]
    # only a dislike of the top item: still cold, and the disliked item is left out
    lists, _, _ = scorer.recommend({"new": {popular[0]: -2.0}})
    assert [i for i, _ in lists[0][1]] == popular[1:6]


def test_history_cap_keeps_strongest_items(small_model: Path) -> None:
    scorer = Scorer.create(load_model(small_model))
    ids = scorer.model.item_ids
    history = {ids[i]: float(i + 1) for i in range(30)}
    capped, _, _ = scorer.with_(n=10, history_max=5).recommend({"u": history})
    strongest, _, _ = scorer.with_(n=40).recommend(
        {"u": {ids[i]: float(i + 1) for i in range(25, 30)}}
    )
    allowed = [i for i, _ in strongest[0][1] if i not in history]
    assert [i for i, _ in capped[0][1]] == allowed[:10]  # same solve, all 30 still excluded


def test_batch_equals_one_by_one(small_model: Path) -> None:
    scorer = Scorer.create(load_model(small_model), n=10)
    ids = scorer.model.item_ids
    histories = {
        f"u{n}": {ids[(n * 13 + j) % len(ids)]: 1.0 + j for j in range(n % 9)} for n in range(40)
    }
    batch = scorer.score(histories)
    for b, user in enumerate(batch.users):
        single = scorer.score({user: histories[user]})
        # Bit for bit, not to rounding: a clean pass must rebuild exactly the live lists.
        np.testing.assert_array_equal(single.items[0], batch.items[b])
        np.testing.assert_array_equal(single.scores[0], batch.scores[b])


def test_knobs_live_on_copies_that_share_the_score_buffer(small_model: Path) -> None:
    scorer = Scorer.create(load_model(small_model), n=10)
    ids = scorer.model.item_ids
    history = {ids[3]: 2.0, ids[8]: 1.0}
    first, _, _ = scorer.recommend({"u": history})
    buffer = scorer.buffers["scores"]
    top = [i for i, _ in first[0][1]]
    blocked = scorer.with_(n=5, blocked=scorer.blocked_rows([top[0], "never-seen"]))
    assert (blocked.n, blocked.history_max) == (5, scorer.history_max)
    assert blocked.blocked.tolist() == [scorer.index[top[0]]]
    got, _, _ = blocked.recommend({"u": history})
    assert [i for i, _ in got[0][1]] == top[1:6]  # the blocked item out, the rest moves up
    assert scorer.n == 10 and len(scorer.blocked) == 0  # the original keeps its knobs
    again, _, _ = blocked.with_(blocked=[]).with_(n=10).recommend({"u": history})
    assert again == first
    assert blocked.buffers is scorer.buffers and scorer.buffers["scores"] is buffer  # no new one
