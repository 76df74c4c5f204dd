"""The front-end kit: contract 2's JSON Schemas hold for what a real worker and publisher
write, and ``streamrec.client`` reads those values, falling back to the popular list, in a
process where the ALS dependencies cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from streamrec.client import SCHEMAS, Client, Item, schema
from streamrec.settings import Settings
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]

#: What a front-end that did not install the ALS side lacks: importing one fails.
HEAVY = (
    "numpy",
    "scipy",
    "implicit",
    "confluent_kafka",
    "fastavro",
    "pydantic",
    "pydantic_settings",
    "threadpoolctl",
    "prometheus_client",
)

BLOCKER = f"""
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(HEAVY)!r}:
            raise ImportError("blocked for this test: " + name)
        return None
sys.meta_path.insert(0, _Block())
"""


def _run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schema(name))


def test_the_schemas_are_valid_and_shipped() -> None:
    for name in SCHEMAS:
        Draft202012Validator.check_schema(schema(name))
    with pytest.raises(KeyError, match="known: recs"):
        schema("user")  # internal keys have no public schema


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("recs", {"user_id": "u", "model_version": "v", "updated_at_ms": 1}),  # no items
        ("recs", {"user_id": "u", "items": [{"item_id": "i", "score": "high"}]}),
        ("recs", {"items": [], "model_version": "v", "updated_at_ms": 1}),  # no user_id
        ("similar", {"item_id": "", "items": [], "model_version": "v", "updated_at_ms": 1}),
        ("popular", {"items": [{"item_id": "i"}], "model_version": "v", "updated_at_ms": 1}),
        ("popular", {"items": [], "model_version": "v", "updated_at_ms": -5}),
        ("model", {"version": "v", "n_items": 3, "path": "/m", "contract_version": 2}),
    ],
)
def test_the_schemas_refuse_what_breaks_the_contract(name: str, value: dict[str, Any]) -> None:
    assert not _validator(name).is_valid(value)


def test_the_kit_imports_without_the_als_dependencies() -> None:
    proc = _run_blocked(
        "import sys, streamrec.client, streamrec.keys\n"
        "from streamrec.client import schema\n"
        "assert schema('recs')['required']\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    # The blocker works: what needs numpy fails under it.
    assert _run_blocked("import streamrec.als.topn").returncode != 0


def test_fallback_to_popular_from_plain_values() -> None:
    """Known answers for the reader's rules, from values as the contract spells them."""
    popular = {"items": [{"item_id": "p1", "score": 9.0}, {"item_id": "p2", "score": 5.0}],
               "model_version": "m1", "updated_at_ms": 10}  # fmt: skip
    own = {"user_id": "u1", "items": [{"item_id": "a", "score": 0.5, "extra": 1}],
           "model_version": "m1", "updated_at_ms": 11, "new_field": True}  # fmt: skip
    values = {"p:popular": json.dumps(popular), "p:recs:u1": json.dumps(own).encode(),
              "p:recs:bad": b"not json"}  # fmt: skip
    client = Client(values, prefix="p")  # a dict has .get: the kit needs nothing more
    got = client.recommendations("u1")
    assert (got.source, got.user_id, got.items) == ("user", "u1", (Item("a", 0.5),))
    cold = client.recommendations("nobody", n=1)
    assert (cold.source, cold.items, cold.model_version) == ("popular", (Item("p1", 9.0),), "m1")
    assert client.recommendations("bad").source == "popular"  # malformed: served as missing
    assert Client({}, prefix="p").recommendations("u1").source == "none"
    assert client.similar("a") is None and client.model() is None


@pytest.mark.integration
def test_values_written_by_the_worker_and_the_publisher_match_the_schemas(
    stack: Callable[..., Settings], run_worker: Callable[..., Any], small_model: Path
) -> None:
    from streamrec.artifact import load_model
    from streamrec.connect import ensure_topics, redis_client
    from streamrec.events import new_event
    from streamrec.keys import Keys
    from streamrec.model.publish import publish
    from streamrec.producer.producer import EventProducer

    s = stack(top_n=10)
    ensure_topics(s)
    client = redis_client(s)
    keys = Keys(s.redis_prefix)
    model = load_model(small_model)
    items = list(model.item_ids)
    # The publisher: lists of two users from their totals, popular, similar, the pointer.
    publish(model, s, client, histories={"pub-1": {items[0]: 2.0}, "pub-2": {items[1]: 1.0}})
    run_worker(s)
    users = [f"w{i}" for i in range(4)]
    with EventProducer(s) as producer:
        for n, u in enumerate(users):
            for item in items[n : n + 4]:
                producer.send(new_event(u, item, "play"))
        producer.send(new_event("cold", "an-item-no-model-knows", "play"))  # popular ranking
    wait_for(lambda: all(client.exists(keys.recs(u)) for u in [*users, "cold"]), timeout_s=30)

    def values(pattern: str) -> list[Any]:
        found = sorted(client.scan_iter(match=pattern, count=1000))
        return [json.loads(v or b"null") for v in client.mget(found)] if found else []

    recs = values(keys.recs("*"))
    similar = values(keys.similar("*"))
    assert {r["user_id"] for r in recs} == {"pub-1", "pub-2", *users, "cold"}
    assert len(similar) == model.n_items
    checked = {
        "recs": recs,
        "similar": similar,
        "popular": values(keys.popular),
        "model": values(keys.model),
    }
    for name, found in checked.items():
        assert found, name
        validator = _validator(name)
        for value in found:
            errors = [e.message for e in validator.iter_errors(value)]
            assert not errors, (name, value, errors)
    assert all(r["items"] for r in recs)  # real lists, not vacuous ones

    # The kit, in a process that cannot import the ALS side, reads the same values.
    proc = _run_blocked(
        "import json\n"
        "from streamrec.client import Client\n"
        f"c = Client.from_url({s.redis_url!r}, prefix={s.redis_prefix!r})\n"
        "out = {}\n"
        f"for u in ['w0', 'nobody']:\n"
        "    r = c.recommendations(u, n=3)\n"
        "    out[u] = [r.source, r.model_version, [[i.item_id, i.score] for i in r.items]]\n"
        f"s = c.similar({items[0]!r}, n=2)\n"
        "out['similar'] = [s.source, [i.item_id for i in s.items]]\n"
        "out['model'] = c.model()['version']\n"
        "print(json.dumps(out))\n"
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    own, popular, similar_0 = (
        json.loads(v or b"null")
        for v in client.mget([keys.recs("w0"), keys.popular, keys.similar(items[0])])
    )

    def top(value: dict[str, Any], n: int) -> list[list[Any]]:
        return [[i["item_id"], i["score"]] for i in value["items"][:n]]

    assert got["w0"] == ["user", model.version, top(own, 3)]
    assert got["nobody"] == ["popular", model.version, top(popular, 3)]
    assert got["similar"] == ["similar", [i["item_id"] for i in similar_0["items"][:2]]]
    assert got["model"] == model.version
    client.close()
