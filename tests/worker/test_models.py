"""The model watcher against real Redis and Kafka: initial load, swaps, refusals, blocked rows."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from prometheus_client.exposition import generate_latest

from streamrec.artifact import Model, load_model
from streamrec.connect import ensure_topics, redis_client
from streamrec.errors import InfraError
from streamrec.keys import Keys, model_value
from streamrec.settings import Settings
from streamrec.worker.metrics import Metrics
from streamrec.worker.models import ModelWatcher
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """A second model, of other data: other item ids at other rows than ``small_model``'s."""
    from streamrec.model.data import build_matrix, synthetic
    from streamrec.model.train import Params, train

    out = tmp_path_factory.mktemp("models") / "other"
    return train(build_matrix(synthetic(300, 200, seed=5)), Params(factors=8, iterations=3), out)


def _corrupt(model_dir: Path, out: Path) -> Path:
    """A copy of ``model_dir`` with one flipped bit in its item factors."""
    shutil.copytree(model_dir, out)
    data = bytearray((out / "item_factors.npy").read_bytes())
    data[-3] ^= 0x40
    (out / "item_factors.npy").write_bytes(bytes(data))
    return out


def _setup(s: Settings) -> tuple[Keys, redis.Redis]:
    ensure_topics(s)
    return Keys(s.redis_prefix), redis_client(s)


def test_a_pinned_model_serves_with_the_settings_knobs_and_ignores_the_pointer(
    stack: Callable[..., Settings], small_model: Path, other_model: Model
) -> None:
    s = stack(model_path=small_model, top_n=7, history_max=11)
    keys, client = _setup(s)
    client.set(keys.model, model_value(other_model.summary()))
    metrics = Metrics()
    watcher = ModelWatcher(s, client, keys, metrics, check_s=0)
    try:
        assert watcher.scorer.version == load_model(small_model).version
        assert (watcher.scorer.n, watcher.scorer.history_max) == (7, 11)
        assert len(watcher.blocked) == 0
        assert not watcher.refresh()
        assert watcher.scorer.version == load_model(small_model).version
        assert metrics.stats.model_swaps == 1
    finally:
        watcher.close()
        client.close()


def test_without_a_pointer_or_a_path_there_is_no_model(stack: Callable[..., Settings]) -> None:
    s = stack()
    keys, client = _setup(s)
    with pytest.raises(InfraError, match="no model"):
        ModelWatcher(s, client, keys, Metrics())
    client.close()


def test_follows_the_pointer_and_refuses_a_bad_artifact(
    stack: Callable[..., Settings], small_model: Path, other_model: Model, tmp_path: Path
) -> None:
    s = stack(top_n=9)
    keys, client = _setup(s)
    first = load_model(small_model)
    client.set(keys.model, model_value(first.summary()))
    metrics = Metrics()
    watcher = ModelWatcher(s, client, keys, metrics, check_s=0)
    try:
        assert watcher.scorer.version == first.version
        assert not watcher.refresh()  # the same pointer: nothing to do

        bad = _corrupt(small_model, tmp_path / "bad")
        client.set(keys.model, json.dumps({"version": "bad-1", "path": str(bad)}))
        assert not watcher.refresh()
        assert watcher.refused == {"bad-1"}
        assert watcher.scorer.version == first.version  # the old one keeps serving
        assert not watcher.refresh()  # remembered: not loaded, nor counted, again
        assert metrics.stats.models_refused == 1

        client.set(keys.model, model_value(other_model.summary()))
        assert watcher.refresh()
        assert watcher.scorer.version == other_model.version
        assert watcher.scorer.model.item_ids == other_model.item_ids
        assert watcher.scorer.n == 9
        assert metrics.stats.model_swaps == 2
        exposed = generate_latest(metrics.registry)
        assert f'streamrec_model_info{{version="{other_model.version}"}} 1.0'.encode() in exposed
        assert f'version="{first.version}"'.encode() not in exposed
        assert b"streamrec_models_refused_total 1.0" in exposed
    finally:
        watcher.close()
        client.close()


def test_checks_when_due_or_at_once_on_an_announcement(
    stack: Callable[..., Settings], small_model: Path, other_model: Model
) -> None:
    s = stack()
    keys, client = _setup(s)
    client.set(keys.model, model_value(load_model(small_model).summary()))
    watcher = ModelWatcher(s, client, keys, Metrics(), check_s=3600)
    producer = Producer(s.kafka_common())
    try:
        assert not watcher.refresh()  # the first check, due at once
        value = model_value(other_model.summary())
        client.set(keys.model, value)
        assert not watcher.refresh()  # next check due in an hour
        assert watcher.scorer.version != other_model.version

        def announced() -> bool:
            # Announcements are read from the latest offset once the watcher's consumer has
            # joined, so send one per try until one lands.
            producer.produce(s.topic_models, key=other_model.version.encode(), value=value)
            producer.flush(5)
            return watcher.refresh()

        wait_for(announced, 30, interval_s=0.2)
        assert watcher.scorer.version == other_model.version
    finally:
        watcher.close()
        client.close()


def test_blocked_items_reload_and_are_mapped_again_after_a_swap(
    stack: Callable[..., Settings], small_model: Path, other_model: Model
) -> None:
    s = stack()
    keys, client = _setup(s)
    first = load_model(small_model)
    client.set(keys.model, model_value(first.summary()))
    watcher = ModelWatcher(s, client, keys, Metrics(), check_s=0)
    try:
        shared = sorted(set(first.item_ids) & set(other_model.item_ids))[:2]
        only_first = next(i for i in first.item_ids if i not in set(other_model.item_ids))
        blocked = [*shared, only_first]
        client.sadd(keys.blocked, *blocked, "in-no-model")
        assert not watcher.refresh()
        assert sorted(watcher.blocked.tolist()) == sorted(first.item_ids.index(i) for i in blocked)
        assert watcher.scorer.blocked is watcher.blocked  # what scoring excludes
        buffers = watcher.scorer.buffers

        client.srem(keys.blocked, shared[0])
        watcher.refresh()
        assert sorted(watcher.blocked.tolist()) == sorted(
            first.item_ids.index(i) for i in (shared[1], only_first)
        )
        assert watcher.scorer.buffers is buffers  # new knobs, same score buffer

        client.set(keys.model, model_value(other_model.summary()))
        assert watcher.refresh()
        assert watcher.blocked.tolist() == [other_model.item_ids.index(shared[1])]

        client.delete(keys.blocked)
        watcher.refresh()
        assert len(watcher.blocked) == 0
    finally:
        watcher.close()
        client.close()


def test_a_big_catalogue_swaps_with_its_index_and_a_wrong_index_is_refused(
    stack: Callable[..., Settings], small_model: Path, tmp_path: Path
) -> None:
    """Above ``ann_min_items`` the watcher serves through the model's stored norm index; a
    model whose index is not its factors' norm order (checksums matching) is refused."""
    import hashlib

    import numpy as np

    from streamrec.als.ann import NormIndex
    from streamrec.artifact import INDEX, MANIFEST, write_model

    base = load_model(small_model)
    y = np.asarray(base.item_factors)

    def with_index(out: Path) -> Model:
        write_model(out, base.item_ids, y, base.item_popularity, base.params,
                    index=NormIndex.build(y))  # fmt: skip
        return load_model(out)

    good = with_index(tmp_path / "good")
    bad = with_index(tmp_path / "bad")
    order = np.load(bad.path / INDEX)[::-1].copy()
    np.save(bad.path / INDEX, order, allow_pickle=False)
    manifest = json.loads((bad.path / MANIFEST).read_text())
    data = (bad.path / INDEX).read_bytes()
    manifest["files"][INDEX] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest["version"] = "bad-index"
    (bad.path / MANIFEST).write_text(json.dumps(manifest))

    s = stack(ann_min_items=len(y))
    keys, client = _setup(s)
    client.set(keys.model, model_value(base.summary()))
    metrics = Metrics()
    watcher = ModelWatcher(s, client, keys, metrics, check_s=0)
    try:
        assert isinstance(watcher.scorer.ann, NormIndex)  # built on load: it has none stored
        client.set(keys.model, json.dumps({"version": "bad-index", "path": str(bad.path)}))
        assert not watcher.refresh()
        assert watcher.refused == {"bad-index"} and watcher.scorer.version == base.version
        client.set(keys.model, model_value(good.summary()))
        assert watcher.refresh()
        assert watcher.scorer.version == good.version
        assert isinstance(watcher.scorer.ann, NormIndex)
        np.testing.assert_array_equal(watcher.scorer.ann.order, np.load(good.path / INDEX))
        hist = {"u": {base.item_ids[0]: 3.0, base.item_ids[1]: 1.0}}
        exact = watcher.scorer.with_()
        from dataclasses import replace

        plain = replace(exact, ann=None)
        np.testing.assert_array_equal(exact.score(hist).items, plain.score(hist).items)
    finally:
        watcher.close()
        client.close()
