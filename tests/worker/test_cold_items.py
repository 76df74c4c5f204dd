"""Catalog items in a running worker, against the real broker and Redis: a brand-new item
enters a user's list from its content before any retrain; an unavailable item leaves every
list."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import redis
from prometheus_client.exposition import generate_latest

from streamrec.als.content import fit_content_map
from streamrec.artifact import ContentMap, load_model, write_model
from streamrec.catalog import Item
from streamrec.client import Client, schema
from streamrec.client import Item as ClientItem
from streamrec.connect import ensure_topics, redis_client
from streamrec.events import new_event
from streamrec.keys import Keys, model_value, popular_value
from streamrec.model.data import build_matrix, synthetic
from streamrec.model.train import Params, train
from streamrec.producer.catalog import CatalogProducer
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from streamrec.worker.catalog import Catalog
from streamrec.worker.metrics import Metrics
from streamrec.worker.models import ModelWatcher
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def _recs(client: redis.Redis, keys: Keys, user: str) -> dict[str, Any] | None:
    raw = client.get(keys.recs(user))
    return json.loads(raw) if raw else None


def _recs_at(client: redis.Redis, key: str) -> dict[str, Any] | None:
    raw = client.get(key)
    return json.loads(raw) if raw else None


def _ids(value: dict[str, Any] | None) -> list[str]:
    return [e["item_id"] for e in value["items"]] if value else []


def identity_map(k: int) -> ContentMap:
    """A hand-made content map whose prediction is the features f0..f{k-1} themselves."""
    names = tuple(f"f{j}" for j in range(k))
    weights = np.vstack([np.eye(k), np.zeros((1, k))]).astype(np.float32)
    zeros, ones = np.zeros(k, np.float32), np.ones(k, np.float32)
    return ContentMap(names, (), zeros, ones, weights)


@pytest.fixture(scope="module")
def content_model(small_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    m = load_model(small_model)
    out = tmp_path_factory.mktemp("content") / "model"
    write_model(out, m.item_ids, np.asarray(m.item_factors), np.asarray(m.item_popularity),
                m.params, content=identity_map(m.factors))  # fmt: skip
    return out


def test_new_item_enters_lists_from_its_content_and_unavailable_items_leave_every_list(
    stack: Callable[..., Settings],
    run_worker: Callable[..., Any],
    content_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("streamrec.worker.loop.PURGE_CHUNK", 3)  # the 8 users in 3 slices
    s = stack(model_path=content_model)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    model = load_model(content_model)
    ids, y = list(model.item_ids), np.asarray(model.item_factors)
    worker = run_worker(s)
    users = {f"u{n}": ids[n * 7 : n * 7 + 3] for n in range(8)}
    with EventProducer(s) as p:
        for user, played in users.items():
            for item in played:
                p.send(new_event(user, item, "play", value=200.0))
    wait_for(lambda: all(_recs(client, keys, u) for u in users), 30)
    before = _recs(client, keys, "u0")
    assert before is not None
    top = before["items"][0]["item_id"]

    # A brand-new item whose content maps to 3x the factors of u0's best item: it scores 3x.
    fresh = Item("brand-new", "Brand New", ("rock",), 2026, True,
                 {f"f{j}": float(3 * y[ids.index(top), j]) for j in range(model.factors)},
                 1_800_000_000_000)  # fmt: skip
    with CatalogProducer(s) as c:
        c.send(fresh)
    wait_for(lambda: worker.models.cold == 1, 30)
    with EventProducer(s) as p:
        p.send(new_event("u0", ids[200], "play", value=30.0))  # u0's list is written again
    value = wait_for(lambda: (v := _recs(client, keys, "u0")) and "brand-new" in _ids(v) and v,
                     30)  # fmt: skip
    entry = next(e for e in value["items"] if e["item_id"] == "brand-new")
    assert entry["why"] == "content"
    assert value["items"][0] == entry  # its mapped factors beat every trained item's
    assert value["model_version"] == model.version  # no retrain: the live model's version
    assert all("why" not in e for e in value["items"][1:])
    jsonschema.validate(value, schema("recs"))  # contract 2's JSON Schema allows the field
    assert Client(client, prefix=s.redis_prefix).recommendations("u0").items[0] == ClientItem(
        "brand-new", entry["score"], "content"
    )

    # The item u0's list and the most lists hold becomes unavailable, and the new one is
    # removed (a tombstone): every stored list is rewritten without them, no event needed.
    lists = {u: _ids(_recs(client, keys, u)) for u in users}
    held = max(ids, key=lambda i: sum(i in got for got in lists.values()))
    assert sum(held in got for got in lists.values()) >= 2
    gone = {held, "brand-new"}
    # popular as a publisher of this model wrote it, holding the item too: written again.
    n = s.top_n
    client.set(keys.popular, popular_value([(held, 9.0), *model.popular(n - 1)], model.version, 1))
    with CatalogProducer(s) as c:
        c.send(Item(held, "", (), None, False, {}, 1_800_000_000_001))
        c.remove("brand-new")

    def clean() -> bool:
        return all(not gone & set(_ids(_recs(client, keys, u))) for u in users)

    wait_for(clean, 30)
    kept = [p for p in model.popular(n + 1) if p[0] != held][:n]
    popular = wait_for(lambda: (v := _recs_at(client, keys.popular)) and held not in _ids(v)
                       and v, 30)  # fmt: skip
    assert [(e["item_id"], e["score"]) for e in popular["items"]] == kept
    assert popular["model_version"] == model.version
    assert worker.stats.purged >= 2 and worker.models.cold == 0
    exported = generate_latest(worker.metrics.registry).decode()
    assert 'streamrec_catalog_items{state="unavailable"} 1.0' in exported
    assert 'streamrec_catalog_items{state="content"} 0.0' in exported
    assert f"streamrec_lists_purged_total {float(worker.stats.purged)}" in exported
    # Lists written from then on leave them out too, and are full.
    stamp = (_recs(client, keys, "u1") or {})["updated_at_ms"]
    with EventProducer(s) as p:
        p.send(new_event("u1", ids[201], "play", value=30.0))
    after = wait_for(lambda: (v := _recs(client, keys, "u1")) and v["updated_at_ms"] > stamp
                     and ids[201] not in _ids(v) and v, 30)  # fmt: skip
    assert not gone & set(_ids(after)) and len(after["items"]) == s.top_n


def test_a_swap_maps_cold_items_again_and_a_learned_one_uses_its_trained_factors(
    stack: Callable[..., Settings], content_model: Path, tmp_path: Path
) -> None:

    first = load_model(content_model)
    trained = train(build_matrix(synthetic(300, 200, seed=5)), Params(factors=8, iterations=3),
                    tmp_path / "plain")  # fmt: skip
    second_dir = tmp_path / "second"
    write_model(second_dir, trained.item_ids, np.asarray(trained.item_factors),
                np.asarray(trained.item_popularity), trained.params,
                content=identity_map(trained.factors))  # fmt: skip
    second = load_model(second_dir)
    learned = next(i for i in second.item_ids if i not in set(first.item_ids))
    feats = {f"f{j}": float(j + 1) for j in range(16)}
    catalog = Catalog()
    catalog.apply({
        "x": Item("x", "X", (), None, True, feats, 1),
        learned: Item(learned, "L", (), None, True, feats, 1),
        "off": Item("off", "", (), None, False, feats, 1),
        first.item_ids[0]: Item(first.item_ids[0], "", (), None, False, {}, 1),
    })  # fmt: skip
    s = stack()
    keys, client = Keys(s.redis_prefix), redis_client(s)
    ensure_topics(s)
    client.set(keys.model, model_value(first.summary()))
    watcher = ModelWatcher(s, client, keys, Metrics(), check_s=0)
    try:
        watcher.use_catalog(catalog)
        cold = watcher.scorer.cold
        assert cold is not None and cold.ids == tuple(sorted(["x", learned]))
        np.testing.assert_array_equal(cold.factors[cold.index["x"]], np.arange(1, 17))
        assert watcher.blocked.tolist() == [0]  # the trained item made unavailable
        assert watcher.take_purge() == {"off", first.item_ids[0]}
        # A trained item's change keeps the cold block as it is (nothing mapped again).
        both = next(i for i in first.item_ids if i in set(second.item_ids))
        catalog.apply({both: Item(both, "", (), None, False, {}, 2)})
        watcher.catalog_changed()
        assert watcher.scorer.cold is cold
        assert sorted(watcher.blocked.tolist()) == sorted([0, first.item_ids.index(both)])
        assert watcher.take_purge() == {both}
        catalog.apply({both: Item(both, "", (), None, True, {}, 3)})
        watcher.catalog_changed()

        client.set(keys.model, model_value(second.summary()))
        assert watcher.refresh()
        cold = watcher.scorer.cold
        assert cold is not None and cold.ids == ("x",)  # the learned one is the model's now
        np.testing.assert_array_equal(cold.factors[0], np.arange(1, 9))  # the new map's
        row = watcher.scorer.rows_of([learned])[0]
        assert 0 <= row < second.n_items
        assert watcher.take_purge() == {"off", first.item_ids[0]}  # the publisher's lists
    finally:
        watcher.close()
        client.close()


def test_a_new_item_of_a_listeners_genre_enters_their_list_by_a_fitted_map(
    stack: Callable[..., Settings],
    run_worker: Callable[..., Any],
    small_model: Path,
    tmp_path: Path,
) -> None:
    # The map the nightly job fits (ridge on the trained items' content: here their genre).
    m = load_model(small_model)
    ids = list(m.item_ids)
    catalog = [Item(i, i, (i.split("-")[0],), None, True, {}, 1) for i in ids]
    model_dir = tmp_path / "fitted"
    y = np.asarray(m.item_factors)
    write_model(model_dir, ids, y, np.asarray(m.item_popularity), m.params,
                content=fit_content_map(catalog, y, 1.0))  # fmt: skip
    s = stack(model_path=model_dir)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    ensure_topics(s)
    with CatalogProducer(s) as c:  # the whole catalog, as `streamrec catalog load` sends it
        for record in catalog:
            c.send(record)
    worker = run_worker(s)
    genre = ids[0].split("-")[0]
    other = next(i for i in ids if not i.startswith(genre)).split("-")[0]
    fans = {"fan": [i for i in ids if i.startswith(genre)][:4],
            "other": [i for i in ids if i.startswith(other)][:4]}  # fmt: skip
    with CatalogProducer(s) as c:
        c.send(Item("new-song", "New Song", (genre,), 2026, True, {}, 2))
    wait_for(lambda: worker.models.cold == 1, 30)
    with EventProducer(s) as p:
        for user, played in fans.items():
            for item in played:
                p.send(new_event(user, item, "play", value=200.0))
    wait_for(lambda: all(_recs(client, keys, u) for u in fans), 30)
    fan = _ids(_recs(client, keys, "fan"))
    assert "new-song" in fan, "a new item of the fan's genre is in their list before a retrain"
    theirs = _ids(_recs(client, keys, "other"))
    assert "new-song" not in theirs or theirs.index("new-song") > fan.index("new-song")
