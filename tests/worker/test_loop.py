"""The worker end to end, against the real Kafka broker and Redis server."""

from __future__ import annotations

import io
import json
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest
import redis
from confluent_kafka import Consumer, Producer

from streamrec.als.history import UserState
from streamrec.artifact import load_model
from streamrec.connect import ensure_topics, redis_client
from streamrec.events import new_event, schema_text
from streamrec.keys import Keys, read_histories
from streamrec.model.publish import publish
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from tests.conftest import wait_for
from tests.streamrec.test_events import _rabin

pytestmark = pytest.mark.integration


def _recs(client: redis.Redis, keys: Keys, user: str) -> dict[str, Any] | None:
    raw = client.get(keys.recs(user))
    return json.loads(raw) if raw else None


def test_new_user_gets_a_list_within_5s_without_own_items(
    stack: Callable[..., Settings], run_worker: Callable[..., Any], small_model: Path
) -> None:
    s = stack(model_path=small_model)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    items = list(load_model(small_model).item_ids[:3])
    run_worker(s)
    sent = time.time()
    with EventProducer(s) as p:
        for item in items:
            p.send(new_event("alice", item, "play", value=120.0))
    value = wait_for(
        lambda: (v := _recs(client, keys, "alice")) and v["model_version"] and v, timeout_s=5
    )
    assert time.time() - sent < 5
    got = [i["item_id"] for i in value["items"]]
    assert len(got) == s.top_n
    assert not set(items) & set(got)
    assert value["user_id"] == "alice"
    assert value["model_version"] == load_model(small_model).version
    assert 0 < client.ttl(keys.recs("alice")) <= s.recs_ttl_s
    # the worker waits for all three plays: history holds every item
    state = wait_for(lambda: read_histories(client, keys, ["alice"]).get("alice"), timeout_s=5)
    assert set(UserState.decode(state).ids) == set(items)


def test_garbage_goes_to_dlq_with_reason_and_worker_goes_on(
    stack: Callable[..., Settings], run_worker: Callable[..., Any], small_model: Path
) -> None:
    s = stack(model_path=small_model)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    item = load_model(small_model).item_ids[0]
    worker = run_worker(s)
    with EventProducer(s) as p:
        p.send_raw(b"mallory", b"\x01\x01 this is not an event")
        p.send(new_event("bob", item, "like"))
    wait_for(lambda: _recs(client, keys, "bob"), timeout_s=10)

    dlq = Consumer(
        {**s.kafka_common(), "group.id": f"dlq-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    dlq.subscribe([s.topic_dlq])
    try:
        msg = wait_for(lambda: (m := dlq.poll(0.5)) and not m.error() and m, timeout_s=15)
    finally:
        dlq.close()
    assert msg.value() == b"\x01\x01 this is not an event"  # nothing lost, byte for byte
    assert msg.key() == b"mallory"
    headers = dict(msg.headers())
    assert b"neither Avro" in headers["streamrec.error"]
    assert headers["streamrec.source"].startswith(f"{s.topic_events}[".encode())
    assert worker.stats.dead_lettered == 1
    assert worker.stats.decoded == 1


def test_outside_client_with_only_the_contracts(
    stack: Callable[..., Settings], run_worker: Callable[..., Any], small_model: Path
) -> None:
    """A producer knowing only the .avsc and a reader knowing only the key layout."""
    s = stack(model_path=small_model)
    run_worker(s)
    item = load_model(small_model).item_ids[1]
    schema = json.loads(schema_text())
    canonical = fastavro.schema.to_parsing_canonical_form(schema)
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + _rabin(canonical.encode()).to_bytes(8, "little"))
    fastavro.schemaless_writer(
        buf,
        fastavro.parse_schema(schema),
        {
            "event_id": "ext-1",
            "user_id": "carol",
            "item_id": item,
            "type": "purchase",
            "value": None,
            "timestamp": int(time.time() * 1000),
            "context": {"app": "ios"},
        },
    )
    producer = Producer({"bootstrap.servers": s.kafka_bootstrap})
    producer.produce(s.topic_events, key=b"carol", value=buf.getvalue())
    assert producer.flush(10) == 0

    plain = redis.Redis.from_url(s.redis_url, decode_responses=True)
    key = f"{s.redis_prefix}:recs:carol"
    raw = wait_for(lambda: plain.get(key), timeout_s=5)
    value = json.loads(raw)
    assert set(value) == {"user_id", "items", "model_version", "updated_at_ms"}
    assert item not in {i["item_id"] for i in value["items"]}
    assert all(set(i) == {"item_id", "score"} for i in value["items"])


def test_hot_swap_follows_pointer_and_refuses_a_corrupt_model(
    stack: Callable[..., Settings],
    run_worker: Callable[..., Any],
    small_model: Path,
    tmp_path: Path,
) -> None:
    s = stack()  # no model path: the worker follows <prefix>:model
    keys, client = Keys(s.redis_prefix), redis_client(s)
    first = load_model(small_model)
    publish(first, s, client)
    worker = run_worker(s)
    item = first.item_ids[2]

    def play(user: str) -> None:
        with EventProducer(s) as p:
            p.send(new_event(user, item, "play"))

    play("dave")
    assert wait_for(lambda: _recs(client, keys, "dave"), 5)["model_version"] == first.version

    # A corrupt candidate: one flipped byte. The worker must refuse it and keep serving.
    bad_dir = tmp_path / "bad"
    shutil.copytree(small_model, bad_dir)
    data = bytearray((bad_dir / "item_factors.npy").read_bytes())
    data[-3] ^= 0x40
    (bad_dir / "item_factors.npy").write_bytes(bytes(data))
    client.set(keys.model, json.dumps({"version": "bad-1", "path": str(bad_dir)}))
    wait_for(lambda: "bad-1" in worker.models.refused, timeout_s=10)
    play("erin")
    assert wait_for(lambda: _recs(client, keys, "erin"), 5)["model_version"] == first.version

    # A good new model: lists written after the swap carry its version.
    from streamrec.model.data import build_matrix, synthetic
    from streamrec.model.params import Params
    from streamrec.model.train import train

    second = train(
        build_matrix(synthetic(400, 300, seed=3)),
        Params(factors=8, iterations=3),
        tmp_path / "second",
    )
    publish(second, s, client)
    wait_for(lambda: worker.scorer.version == second.version, timeout_s=10)
    play("frank")
    assert wait_for(lambda: _recs(client, keys, "frank"), 5)["model_version"] == second.version


def test_topics_are_created_with_configured_partitions(stack: Callable[..., Settings]) -> None:
    from confluent_kafka.admin import AdminClient

    s = stack(topic_events_partitions=4)
    created = ensure_topics(s)
    assert set(created) == {s.topic_events, s.topic_dlq, s.topic_models, s.topic_items}
    meta = AdminClient(s.kafka_common()).list_topics(timeout=10)
    assert len(meta.topics[s.topic_events].partitions) == 4
    assert len(meta.topics[s.topic_items].partitions) == 1
    assert ensure_topics(s) == []  # idempotent
