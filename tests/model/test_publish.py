"""Publishing a model against the real Redis and broker: every list under the new version, the
same lists the ``Scorer`` makes, popular and similar items without blocked items, then the
pointer, then the announcement."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from streamrec.als.history import UserState
from streamrec.als.scorer import Scorer
from streamrec.artifact import Model, load_model
from streamrec.connect import read_ranges, redis_client
from streamrec.keys import Keys, home_value, mget, parse_model_pointer, recs_value
from streamrec.model.publish import Totals, live_histories, publish
from streamrec.settings import Settings
from tests.conftest import log_end

pytestmark = pytest.mark.integration


def _listed(raw: bytes | str | None) -> list[tuple[str, float]]:
    assert raw is not None
    return [(i["item_id"], i["score"]) for i in json.loads(raw)["items"]]


def _expected(
    model: Model, histories: dict[str, dict[str, float]], s: Settings, blocked: set[str]
) -> dict[str, list[tuple[str, float]]]:
    """The Scorer's lists for ``histories``, as one batch on one BLAS thread (as published)."""
    scorer = Scorer.create(model, n=s.top_n, history_max=s.history_max)
    with threadpool_limits(1, "blas"):
        lists, _, _ = scorer.with_(blocked=scorer.blocked_rows(blocked)).recommend(histories)
    return dict(lists)


def test_publish_writes_the_scorers_lists_then_moves_the_pointer(
    stack: Callable[..., Settings], small_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = stack(top_n=10)
    client, keys = redis_client(s), Keys(s.redis_prefix)
    model = load_model(small_model)
    ids = model.item_ids
    pop_order = np.argsort(-model.item_popularity, kind="stable")
    blocked = {ids[pop_order[0]], ids[pop_order[3]], ids[7]}  # the most popular item too
    client.sadd(keys.blocked, *blocked)

    histories = {
        f"h-{u}": {ids[(3 * u + j) % len(ids)]: 1.0 + j for j in range(4)} for u in range(12)
    }
    # Users known only from the totals matrix, one also in ``histories`` (histories win), and
    # a column the model does not know.
    columns = (*ids[:40], "unknown-item")
    rng = np.random.default_rng(5)
    dense = (rng.random((6, len(columns))) < 0.2) * rng.integers(1, 5, (6, len(columns)))
    dense[0, -1] = 3  # t-0 also has an item the model does not know
    totals = Totals(
        ("t-0", "t-1", "t-2", "t-3", "t-4", "h-0"),
        columns,
        sp.csr_matrix(dense.astype(np.float32)),
    )
    from_totals = {
        u: {columns[c]: float(dense[r, c]) for c in np.flatnonzero(dense[r])}
        for r, u in enumerate(totals.user_ids[:5])
    }
    client.set(keys.recs("h-1"), recs_value("h-1", [(ids[0], 1.0)], "an-old-version", 1))

    # When the pointer moves, every list must be in place already under the new version.
    real_set = client.set
    at_pointer: list[set[str | None]] = []  # the versions readers could see, per pointer move

    def set_spy(name: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if name == keys.model:
            users = [*histories, *from_totals]
            raws = mget(client, [keys.recs(u) for u in users] + [keys.popular])
            raws += mget(client, [keys.similar(i) for i in ids])
            at_pointer.append({json.loads(r)["model_version"] if r else None for r in raws})
        return real_set(name, value, *args, **kwargs)

    monkeypatch.setattr(client, "set", set_spy)
    counts = publish(model, s, client, histories=histories, similar_n=5, totals=totals)

    assert counts == {"lists": 12 + 5, "similar": len(ids)}
    assert at_pointer == [{model.version}]
    # The lists are the Scorer's, histories first (h-0 from its history, not its totals row).
    want = {**_expected(model, histories, s, blocked), **_expected(model, from_totals, s, blocked)}
    for user, ranked in want.items():
        raw = client.get(keys.recs(user))
        assert _listed(raw) == ranked, user
        assert json.loads(raw or b"{}")["model_version"] == model.version
        assert len(ranked) == s.top_n and not {i for i, _ in ranked} & blocked
        history = histories.get(user) or from_totals[user]
        assert not {i for i, _ in ranked} & set(history)
    # Popular: by popularity, blocked items left out, still top_n long.
    popular = _listed(client.get(keys.popular))
    allowed = [ids[i] for i in pop_order if ids[i] not in blocked]
    assert [i for i, _ in popular] == allowed[: s.top_n]
    pops = dict(zip(ids, model.item_popularity.tolist(), strict=True))
    assert [p for _, p in popular] == pytest.approx([pops[i] for i, _ in popular], rel=1e-5)
    # Similar items: the highest cosines of the factors, the item itself and blocked left out.
    for item, raw in zip(ids, mget(client, [keys.similar(i) for i in ids]), strict=True):
        assert not {i for i, _ in _listed(raw)} & (blocked | {item})
    factors = model.item_factors.astype(np.float64)
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    for row in (0, 7, 150, len(ids) - 1):
        raw = client.get(keys.similar(ids[row]))
        assert raw is not None and json.loads(raw)["item_id"] == ids[row]
        cos = unit @ unit[row]
        order = np.argsort(-cos, kind="stable")
        nearest = [int(c) for c in order if c != row and ids[c] not in blocked][:5]
        got = _listed(raw)
        assert [i for i, _ in got] == [ids[c] for c in nearest]
        assert [c for _, c in got] == pytest.approx(cos[nearest].tolist(), rel=1e-4)
    # The pointer, and its announcement on the models topic.
    pointer = parse_model_pointer(client.get(keys.model) or b"")
    assert pointer.version == model.version and pointer.path == small_model.resolve()
    end = log_end(s, s.topic_models)
    announced = list(read_ranges(s, s.topic_models, {0: (0, end)}, "g-announce", 30))
    assert [(m.key(), m.value()) for m in announced] == [
        (model.version.encode(), client.get(keys.model))
    ]


def test_publish_without_users_or_similar_items_still_moves_the_pointer(
    stack: Callable[..., Settings], small_model: Path
) -> None:
    s = stack()
    client, keys = redis_client(s), Keys(s.redis_prefix)
    model = load_model(small_model)
    counts = publish(model, s, client, histories=None, similar_n=0, announce=False)
    assert counts == {"lists": 0, "similar": 0}
    assert not list(client.scan_iter(match=f"{s.redis_prefix}:similar:*"))
    assert not list(client.scan_iter(match=f"{s.redis_prefix}:recs:*"))
    assert [i for i, _ in _listed(client.get(keys.popular))] == [
        i for i, _ in model.popular(s.top_n)
    ]
    assert parse_model_pointer(client.get(keys.model) or b"").version == model.version


def test_the_catalogs_unavailable_items_are_left_out_of_everything_published(
    stack: Callable[..., Settings], small_model: Path
) -> None:
    """What the nightly job passes from the catalog (``CatalogRead.unavailable``) is left
    out as blocked items are: of users' lists, popular and similar items, each still full."""
    s = stack(top_n=10)
    client, keys = redis_client(s), Keys(s.redis_prefix)
    model = load_model(small_model)
    ids = model.item_ids
    pop_order = np.argsort(-model.item_popularity, kind="stable")
    off = {ids[pop_order[0]], ids[pop_order[2]], ids[11]}
    histories = {f"h-{u}": {ids[(5 * u + j) % len(ids)]: 1.0 for j in range(3)} for u in range(8)}
    counts = publish(model, s, client, histories=histories, similar_n=5, announce=False,
                     unavailable=off)  # fmt: skip
    assert counts == {"lists": 8, "similar": len(ids)}
    want = _expected(model, histories, s, off)
    for user, ranked in want.items():
        assert _listed(client.get(keys.recs(user))) == ranked
        assert len(ranked) == s.top_n and not {i for i, _ in ranked} & off
    allowed = [ids[i] for i in pop_order if ids[i] not in off]
    assert [i for i, _ in _listed(client.get(keys.popular))] == allowed[: s.top_n]
    for raw in mget(client, [keys.similar(i) for i in ids]):
        got = {i for i, _ in _listed(raw)}
        assert len(got) == 5 and not got & off
    # Not a test that cannot fail: without them, the most popular item heads popular.
    publish(model, s, client, histories=None, similar_n=0, announce=False)
    assert _listed(client.get(keys.popular))[0][0] == ids[pop_order[0]]


def test_live_histories_reads_the_workers_states(stack: Callable[..., Settings]) -> None:
    s = stack()
    client, keys = redis_client(s), Keys(s.redis_prefix)
    day = 86_400_000.0
    a = UserState({"x": [2.0, 5 * day], "y": [1.0, 4 * day]}).to_json()
    client.set(keys.user("a", "ev", 0), a)
    client.set(keys.user("b", "ev", 2), UserState({"z": [-1.5, 9 * day]}).to_json())
    client.set(keys.home("a"), home_value("ev", 0))
    client.set(keys.home("b"), home_value("ev", 2))
    client.set(keys.home("gone"), home_value("ev", 1))  # its history expired meanwhile
    got = live_histories(client, keys, ["a", "nobody", "b", "gone"], half_life_ms=day)
    assert got == {"a": {"x": 2.0, "y": pytest.approx(0.5)}, "b": {"z": -1.5}}
    assert live_histories(client, keys, ["a"], None) == {"a": {"x": 2.0, "y": 1.0}}


def test_a_big_catalogue_publishes_through_its_indexes_the_same_lists(
    stack: Callable[..., Settings], small_model: Path
) -> None:
    """Above ``ann_min_items`` the lists come from the model's norm index and the similar
    items from an IVF index of the unit rows; with every IVF list probed both are exact, so
    each list equals the one published by brute force (scores up to float rounding)."""
    model = load_model(small_model)
    ids = model.item_ids
    histories = {
        f"u-{u}": {ids[(5 * u + j) % len(ids)]: 1.0 + j for j in range(3 + u % 4)}
        for u in range(30)
    }
    exact = stack(top_n=10, ann_min_items=0)
    big = stack(top_n=10, ann_min_items=1, ann_nprobe=1000, ann_overfetch=5)
    written = {}
    for s in (exact, big):
        client, keys = redis_client(s), Keys(s.redis_prefix)
        client.sadd(keys.blocked, ids[3], ids[11])
        counts = publish(model, s, client, histories=histories, similar_n=5, announce=False)
        assert counts == {"lists": 30, "similar": len(ids)}
        names = [keys.recs(u) for u in histories] + [keys.similar(i) for i in ids]
        written[s.redis_prefix] = [_listed(r) for r in client.mget(names)]
    want, got = written[exact.redis_prefix], written[big.redis_prefix]
    for w, g in zip(want, got, strict=True):
        assert [i for i, _ in g] == [i for i, _ in w]
        assert [c for _, c in g] == pytest.approx([c for _, c in w], rel=1e-4, abs=1e-6)
