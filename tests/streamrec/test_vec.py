"""``<p>:vec:<user_id>``: the user's folded-in vector beside the list (the serving API's
filters), packed and parsed by ``streamrec.keys``, written by a real worker and publisher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.als.history import UserState
from streamrec.als.scorer import Scorer
from streamrec.artifact import load_model
from streamrec.connect import redis_client
from streamrec.events import new_event
from streamrec.keys import VEC_FORMAT, Keys, parse_list, parse_vec, read_histories, vec_values
from streamrec.model.publish import publish
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from tests.conftest import wait_for


def test_vec_values_round_trip_per_user() -> None:
    vectors = (np.arange(12).reshape(3, 4) / 7).astype(np.float32)
    warm = np.array([True, False, True])
    ptr = np.array([0, 2, 2, 5], dtype=np.int64)
    idx = np.array([4, 9, 1, 2, 3], dtype=np.int64)
    out = dict(vec_values(["a", "b", "c"], "v-é1", vectors, warm, ptr, idx))
    a, b, c = (parse_vec(out[u]) for u in "abc")
    assert a.model_version == b.model_version == "v-é1"
    assert a.vector is not None and np.array_equal(a.vector, vectors[0])
    assert a.seen.tolist() == [4, 9]
    assert b.vector is None and b.seen.tolist() == []  # popularity: no vector kept
    assert c.vector is not None and np.array_equal(c.vector, vectors[2])
    assert c.seen.tolist() == [1, 2, 3]
    assert out["a"][0] == VEC_FORMAT
    # 1 + 2 + len(version) + 2 + 4 + 4k + 4m bytes
    assert len(out["a"]) == 1 + 2 + len("v-é1".encode()) + 6 + 16 + 8


@pytest.mark.parametrize(
    "raw", [b"", b"\x02\x00\x00", b"\x01\x05\x00ab", b"\x01\x01\x00v\x01\x00\x00\x00\x00\x00"]
)
def test_parse_vec_refuses_malformed_values(raw: bytes) -> None:
    with pytest.raises(ValueError):
        parse_vec(raw)


@pytest.mark.integration
def test_the_worker_keeps_each_users_vector_beside_the_list(
    stack: Callable[..., Settings], run_worker: Callable[..., Any], small_model: Path
) -> None:
    s = stack(model_path=small_model)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    model = load_model(small_model)
    played = list(model.item_ids[5:9])
    run_worker(s)
    with EventProducer(s) as p:
        for item in played:
            p.send(new_event("vera", item, "play", value=200.0))
        p.send(new_event("cold-carl", played[0], "skip", value=2.0))  # only a dislike

    def both() -> Any:
        vec, recs = client.get(keys.vec("vera")), client.get(keys.recs("vera"))
        return vec and recs and len(parse_vec(vec).seen) == len(played) and (vec, recs)

    raw, recs_raw = wait_for(both, timeout_s=10)
    got = parse_vec(raw)
    assert got.model_version == model.version
    assert sorted(got.seen.tolist()) == sorted(model.item_ids.index(i) for i in played)
    # the vector is the fold-in of that history: the stored list's scores are its products
    stored = UserState.decode(read_histories(client, keys, ["vera"])["vera"])
    totals = stored.totals(s.half_life_days * 86_400_000 if s.half_life_days else None)
    want = Scorer.create(model).score({"vera": totals}).vectors
    assert got.vector is not None and want is not None
    np.testing.assert_allclose(got.vector, want[0], rtol=1e-3, atol=1e-5)
    recs = parse_list(recs_raw)
    for entry in recs["items"][:10]:
        row = model.item_ids.index(entry["item_id"])
        score = float(model.item_factors[row] @ got.vector)
        assert score == pytest.approx(entry["score"], rel=1e-3, abs=1e-5)
    assert 0 < client.ttl(keys.vec("vera")) <= s.recs_ttl_s
    cold = parse_vec(wait_for(lambda: client.get(keys.vec("cold-carl")), timeout_s=10))
    assert cold.vector is None and cold.seen.tolist() == [model.item_ids.index(played[0])]


@pytest.mark.integration
def test_publishing_a_model_writes_every_known_users_vector(
    stack: Callable[..., Settings], small_model: Path
) -> None:
    s = stack()
    keys, client = Keys(s.redis_prefix), redis_client(s)
    model = load_model(small_model)
    histories = {"u1": {model.item_ids[0]: 3.0, model.item_ids[1]: 1.0}, "u2": {}}
    publish(model, s, client, histories=histories)
    v1 = parse_vec(client.get(keys.vec("u1")))
    assert v1.model_version == model.version and v1.vector is not None
    assert sorted(v1.seen.tolist()) == [0, 1]
    assert parse_vec(client.get(keys.vec("u2"))).vector is None
