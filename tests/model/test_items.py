"""The nightly job's catalog: the map fitted for a model's items (and stored by ``train``),
and the items topic read to its end against the real broker (tombstones remove, bad
records are skipped and counted)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Producer

from streamrec.catalog import Item, encode_item, encode_item_json
from streamrec.connect import ensure_topics
from streamrec.model.items import MIN_CONTENT_ITEMS, fit_for_model, read_catalog
from streamrec.settings import Settings


def _item(i: int, **kw: Any) -> Item:
    base: dict[str, Any] = {
        "item_id": f"i{i}",
        "name": f"Item {i}",
        "categories": ("rock",),
        "year": 2000 + i,
        "available": True,
        "features": {"tempo": 100.0 + i},
        "updated_at_ms": 1_700_000_000_000,
    }
    return Item(**{**base, **kw})


def test_fit_for_model_uses_the_items_with_content() -> None:
    rng = np.random.default_rng(0)
    ids = [f"i{i}" for i in range(40)]
    tempo = rng.normal(120, 20, 40)
    factors = np.stack([tempo / 100, -tempo / 50], axis=1).astype(np.float32)
    catalog = {f"i{i}": _item(i, features={"tempo": float(tempo[i])}, categories=(), year=None)
               for i in range(30)}  # fmt: skip
    catalog["i31"] = _item(31, features={}, categories=(), year=None)  # no content at all
    fit = fit_for_model(ids, factors, catalog, regularization=1e-6)
    assert fit.cmap is not None and fit.cmap.feature_names == ("tempo",)
    assert fit.info["items"] == 30 and fit.info["catalog_items"] == 31
    assert fit.info["train_r2"] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(fit.cmap.predict([catalog["i3"]]), factors[3:4], atol=1e-3)
    few = {k: catalog[k] for k in list(catalog)[: MIN_CONTENT_ITEMS - 1]}
    skipped = fit_for_model(ids, factors, few, regularization=1.0)
    assert skipped.cmap is None and "content" in skipped.info["skipped"]


@pytest.mark.integration
def test_read_catalog_to_its_end(stack: Callable[..., Settings]) -> None:
    s = stack()
    assert read_catalog(s) is None  # no topic yet: no catalog, no error
    ensure_topics(s)
    p = Producer({**s.kafka_common(), "acks": "all"})
    failed: list[str] = []

    def report(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    for i in range(20):
        p.produce(s.topic_items, key=f"i{i}".encode(), value=encode_item(_item(i)),
                  on_delivery=report)  # fmt: skip
    p.produce(s.topic_items, key=b"i3", value=encode_item_json(_item(3, name="renamed")))
    p.produce(s.topic_items, key=b"i4", value=None)  # tombstone
    p.produce(s.topic_items, key=b"i7", value=encode_item(_item(7, available=False)))
    p.produce(s.topic_items, key=b"i8", value=None)  # removed, then listed again
    p.produce(s.topic_items, key=b"i8", value=encode_item(_item(8)))
    p.produce(s.topic_items, key=b"i5", value=b"{not json")  # bad: skipped, i5 stays
    p.produce(s.topic_items, key=b"other", value=encode_item(_item(6)))  # key != item_id
    assert p.flush(30) == 0 and not failed, failed
    got = read_catalog(s)
    assert got is not None
    assert set(got.items) == {f"i{i}" for i in range(20)} - {"i4"}
    assert got.items["i3"].name == "renamed" and got.items["i5"] == _item(5)
    assert got.records == 27 and got.bad == 2  # (a compacted topic refuses a record without a key)
    assert sum(got.offsets.values()) == 27
    assert got.removed == {"i4"} and got.unavailable() == {"i4", "i7"}


def test_train_stores_the_map_of_a_catalog(tmp_path: Path) -> None:
    from streamrec.artifact import load_content_map
    from streamrec.model.data import build_matrix, synthetic
    from streamrec.model.params import Params
    from streamrec.model.train import train

    data = synthetic(200, 120, seed=3)
    matrix = build_matrix(data)
    catalog = {i: _item(0, item_id=i, categories=(i.split("-")[0],)) for i in matrix.item_ids}
    model = train(matrix, Params(factors=8, iterations=3), tmp_path / "m", catalog=catalog)
    cmap = load_content_map(model.path)
    assert cmap is not None and cmap.factors == 8
    assert cmap.feature_names == ("tempo", "year") and len(cmap.categories) == 12
    assert model.manifest["content_fit"]["items"] == len(matrix.item_ids)
    plain = train(matrix, Params(factors=8, iterations=3), tmp_path / "plain")
    assert load_content_map(plain.path) is None and "content_fit" not in plain.manifest
