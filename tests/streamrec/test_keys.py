"""The Redis contract: key names and the JSON values front-ends read."""

from __future__ import annotations

import json

import numpy as np

from streamrec.keys import (
    CONTRACT_VERSION,
    Keys,
    ListEncoder,
    home_value,
    model_value,
    parse_home,
    parse_list,
    popular_value,
    recs_value,
    round_scores,
    similar_value,
)


def test_key_layout() -> None:
    k = Keys()
    assert k.recs("u:1") == "streamrec:recs:u:1"
    assert k.popular == "streamrec:popular"
    assert k.model == "streamrec:model"
    assert Keys("shop").recs("42") == "shop:recs:42"
    assert Keys("shop").user("42", "ev", 3) == "shop:{ev:3}:user:42"
    assert Keys("shop").home("42") == "shop:home:42"
    assert Keys("shop").blocked == "shop:blocked"
    assert Keys().similar("i:9") == "streamrec:similar:i:9"
    assert Keys().applied("streamrec.events", 3) == "streamrec:{streamrec.events:3}:applied"
    assert Keys().origin("streamrec.events", 3) == "streamrec:{streamrec.events:3}:origin"


def test_a_partitions_internal_keys_share_one_cluster_slot() -> None:
    from redis.crc import key_slot

    k = Keys()
    names = [k.applied("ev", 2), k.origin("ev", 2), k.user("a", "ev", 2), k.user("{b}:x", "ev", 2)]
    assert len({key_slot(n.encode()) for n in names}) == 1
    assert key_slot(k.applied("ev", 2).encode()) != key_slot(k.applied("ev", 3).encode())
    assert k.parse_user(k.user("u:{1}", "t.x-1", 12)) == ("t.x-1", 12, "u:{1}")
    assert k.parse_user(k.recs("u")) is None and k.parse_user(k.applied("t", 1)) is None
    assert parse_home(home_value("t.x-1", 12)) == ("t.x-1", 12)


def test_recs_value_shape() -> None:
    raw = recs_value("u1", [("a", 0.5), ("b", 0.25)], "v1", 1_700_000_000_000)
    obj = json.loads(raw)
    assert set(obj) == {"user_id", "items", "model_version", "updated_at_ms"}
    assert obj["user_id"] == "u1"
    assert obj["items"] == [{"item_id": "a", "score": 0.5}, {"item_id": "b", "score": 0.25}]
    assert obj["model_version"] == "v1"
    assert obj["updated_at_ms"] == 1_700_000_000_000
    assert parse_list(raw) == obj


def test_popular_value_has_no_user() -> None:
    obj = json.loads(popular_value([("a", 3.0)], "v2", 5))
    assert set(obj) == {"items", "model_version", "updated_at_ms"}


def test_model_value_carries_contract_version() -> None:
    obj = json.loads(model_value({"version": "v3", "n_items": 10}))
    assert obj == {"version": "v3", "n_items": 10, "contract_version": CONTRACT_VERSION}


def test_scores_are_rounded_to_six_significant_digits() -> None:
    rounded = round_scores(np.array([0.123456789, 1.5e-7 + 1e-15, -3.0, 123456789.0, 0.0]))
    assert rounded.tolist() == [0.123457, 1.5e-07, -3.0, 123457000.0, 0.0]
    obj = json.loads(recs_value("u", [("a", rounded[0])], "v", 0))
    raw = recs_value("u", [("a", float(rounded[0]))], "v", 0)
    assert obj["items"][0]["score"] == 0.123457 and b'"score":0.123457}' in raw


def test_non_ascii_ids_survive() -> None:
    obj = json.loads(recs_value("ユーザー", [("Björk", 1.0)], "v", 0))
    assert obj["user_id"] == "ユーザー" and obj["items"][0]["item_id"] == "Björk"


def test_ids_needing_escapes_and_tiny_scores_stay_valid_json() -> None:
    raw = recs_value('a"b\\c\n', [('it"em', 1.5e-07), ("x", -3.0), ("y", 123456789.0)], "v", 1)
    obj = json.loads(raw)
    assert obj["user_id"] == 'a"b\\c\n'
    assert [i["item_id"] for i in obj["items"]] == ['it"em', "x", "y"]
    assert [i["score"] for i in obj["items"]] == [1.5e-07, -3.0, 123456789.0]
    assert json.loads(popular_value([("a", 2.0)], "v", 3)) == {
        "items": [{"item_id": "a", "score": 2.0}],
        "model_version": "v",
        "updated_at_ms": 3,
    }


def test_list_encoder_writes_the_same_bytes_as_the_one_list_encoders() -> None:
    ids = ["a", 'q"x\\', "ユーザー", "Björk\n", "e"]
    enc = ListEncoder(ids)
    items = np.array([[1, 0, 3], [2, -1, -1], [-1, -1, -1], [4, 2, 1]])
    scores = np.array(
        [[0.5, 0.123456789, -3.0], [1.5e-7, -np.inf, -np.inf], [-np.inf] * 3, [1e9, 7.0, 0.0]],
        dtype=np.float32,
    )
    users = ["u1", 'u"2', "u3", "ü4"]
    rounded = round_scores(scores)
    expected = []
    for b in range(len(users)):
        keep = items[b] >= 0
        row = [ids[i] for i in items[b][keep]]
        expected.append(list(zip(row, rounded[b][keep].tolist(), strict=True)))
    assert enc.recs(users, items, scores, "v-1", 7) == [
        recs_value(u, e, "v-1", 7) for u, e in zip(users, expected, strict=True)
    ]
    assert enc.similar(ids[:4], items, scores, "v-1", 7) == [
        similar_value(i, e, "v-1", 7) for i, e in zip(ids[:4], expected, strict=True)
    ]
    assert json.loads(enc.recs(["u3"], items[2:3], scores[2:3], "v", 1)[0])["items"] == []
    assert enc.recs([], items[:0], scores[:0], "v", 1) == []
