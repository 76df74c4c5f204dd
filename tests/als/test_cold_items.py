"""Cold items beside a model's own: the merge is exact, leaves unaffected lists bit for bit,
and never touches a fold-in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson

from streamrec.als.scorer import ColdItems, Scorer
from streamrec.artifact import load_model


def _histories(ids: list[str], n: int) -> dict[str, dict[str, float]]:
    return {f"u{u}": {ids[(u * 7 + j) % len(ids)]: 1.0 + j for j in range(1 + u % 6)}
            for u in range(n)}  # fmt: skip


def test_cold_items_merge_exactly_and_leave_other_lists_bit_for_bit(small_model: Path) -> None:
    base = Scorer.create(load_model(small_model), n=10)
    ids = list(base.model.item_ids)
    y = base.model.item_factors
    rng = np.random.default_rng(3)
    histories = _histories(ids, 60)
    plain = base.score(histories)
    # Cold item 0 is built to top one user's list (their vector, scaled up); item 1 is noise,
    # item 2 sits at the bottom of every list.
    vec = base.foldin.solve(*_one(base, histories["u5"]))[0]
    factors = np.stack([vec * 10, rng.normal(0, 0.01, y.shape[1]), -vec * 10]).astype(np.float32)
    cold = ColdItems.create(base.encoder, ["new-a", "new-b", "new-c"], factors)
    sc = base.with_(cold=cold)
    got = sc.score(histories)
    ids_all = sc.all_ids
    assert ids_all[got.items[plain.users.index("u5")][0]] == "new-a"

    # Exact: the same as scoring every row of [Y; C] with the same vectors.
    full = np.vstack([y, factors])
    for b, user in enumerate(got.users):
        u = base.foldin.solve(*_one(base, histories[user]))[0]
        s = full @ u
        s[[ids.index(i) for i in histories[user]]] = -np.inf
        want = np.argsort(-s, kind="stable")[:10]
        np.testing.assert_allclose(got.scores[b], s[want], rtol=1e-5)
        affected = bool((got.items[b] >= len(ids)).any())
        if not affected:  # no cold item entered: the model's own list, bit for bit
            np.testing.assert_array_equal(got.items[b], plain.items[b])
            np.testing.assert_array_equal(got.scores[b], plain.scores[b])
    # The fold-in is the model's: a user who played a cold item gets the same vector, and the
    # cold item is kept out of their list.
    h = {**histories["u5"], "new-a": 5.0}
    with_cold = sc.score({"u5": h})
    assert "new-a" not in set(ids_all[with_cold.items[0]].tolist())
    alone = base.score({"u5": histories["u5"]})
    kept = [i for i in with_cold.items[0] if i < len(ids)]
    np.testing.assert_array_equal(kept, alone.items[0][: len(kept)])


def test_cold_entries_say_why_and_cold_users_get_popular(small_model: Path) -> None:
    base = Scorer.create(load_model(small_model), n=5)
    vec = np.full(base.model.factors, 50.0, dtype=np.float32)
    sc = base.with_(cold=ColdItems.create(base.encoder, ["fresh"], vec[None, :]))
    ids = list(base.model.item_ids)
    h = {ids[i]: 3.0 for i in range(5)}
    scored = sc.score({"u": h, "nobody": {"fresh": 1.0}})
    value = orjson.loads(sc.values(scored, 1)[0][1])
    assert value["items"][0] == {"item_id": "fresh", "why": "content",
                                 "score": value["items"][0]["score"]}  # fmt: skip
    assert all("why" not in e for e in value["items"][1:])
    # A user whose only history is a cold item has no vector: the popular list, without it.
    nobody = orjson.loads(sc.values(scored, 1)[1][1])
    assert [e["item_id"] for e in nobody["items"]] == [i for i, _ in base.model.popular(5)]
    assert scored.unknown == 0 and scored.cold == 1
    # Dropping them is the plain scorer again.
    assert sc.with_(cold=None).cold is None


def _one(sc: Scorer, history: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The solve inputs of one user, as ``score_flat`` builds them (no history cap)."""
    from streamrec.feedback import confidence

    rows = sc.rows_of(list(history))
    totals = np.asarray(list(history.values()))
    alpha = float(sc.model.params["alpha"])
    conf = (alpha * confidence(totals, sc.model.params["transform"])).astype(np.float32)
    return np.array([0, len(rows)], dtype=np.int64), rows, conf


def test_cold_scores_do_not_depend_on_the_batch(small_model: Path) -> None:
    base = Scorer.create(load_model(small_model), n=10)
    ids = list(base.model.item_ids)
    rng = np.random.default_rng(5)
    factors = rng.normal(0, 0.3, (40, base.model.factors)).astype(np.float32)
    sc = base.with_(cold=ColdItems.create(base.encoder, [f"c{j}" for j in range(40)], factors))
    histories = _histories(ids, 150)  # more than one slice of score_rows
    batch = sc.score(histories)
    assert (batch.items >= len(ids)).any()
    for b, user in enumerate(batch.users[::7]):
        single = sc.score({user: histories[user]})
        np.testing.assert_array_equal(single.items[0], batch.items[b * 7])
        np.testing.assert_array_equal(single.scores[0], batch.scores[b * 7])


def test_a_catalogue_smaller_than_the_list_grows_by_the_cold_items(small_model: Path) -> None:
    base = Scorer.create(load_model(small_model), n=400)  # more than its 300 items
    ids = list(base.model.item_ids)
    rng = np.random.default_rng(9)
    factors = rng.normal(0, 0.3, (3, base.model.factors)).astype(np.float32)
    sc = base.with_(cold=ColdItems.create(base.encoder, ["c0", "c1", "c2"], factors))
    h = {ids[0]: 2.0, ids[1]: 1.0}
    got = sc.score({"u": h, "v": {**h, "c1": 1.0}})
    u = base.foldin.solve(*_one(base, h))[0]
    s = np.concatenate([base.model.item_factors @ u, factors @ u])
    s[[0, 1]] = -np.inf
    want = np.argsort(-s, kind="stable")[: len(ids) + 1]  # 301 allowed items, then padding
    np.testing.assert_array_equal(got.items[0][:301], want)
    assert got.items.shape == (2, 303) and (got.items[0][301:] == -1).all()
    assert len(ids) + 1 not in got.items[1].tolist()  # c1, in v's history, is left out
