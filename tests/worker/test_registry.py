"""The Confluent Schema Registry framing (``00`` + schema id) end to end: events written by
confluent-kafka's own ``AvroSerializer`` (a newer writer version, registered through the real
``confluent_kafka.schema_registry`` client), read by the worker from the real broker with the
writer schema fetched by id. The registry is the loopback stand-in of
``tests/streamrec/registry_standin.py``: no real registry runs here (README)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from pydantic import SecretStr

from streamrec.als.history import parse_history
from streamrec.artifact import load_model
from streamrec.connect import ensure_topics, redis_client
from streamrec.errors import AuthError, ConfigError, EventError, InfraError
from streamrec.keys import Keys, read_histories
from streamrec.registry import RegistrySchemas, event_decoder
from streamrec.settings import Settings, load_settings
from tests.conftest import wait_for
from tests.streamrec.evolution import confluent, record, v1, v2
from tests.streamrec.registry_standin import Registry, standin_registry


@pytest.fixture()
def registry() -> Iterator[Registry]:
    with standin_registry() as reg:
        yield reg


def _registry_settings(reg: Registry, **more: Any) -> dict[str, Any]:
    return {
        "schema_registry_url": reg.url,
        "schema_registry_username": reg.user,
        "schema_registry_password": SecretStr(reg.password),  # stack() copies, unvalidated
        **more,
    }


# --- the lookup alone (no broker) ----------------------------------------------------------


def test_lookups_and_their_failures(registry: Registry) -> None:
    sid = registry.register("t-value", json.dumps(v1()))
    schemas = RegistrySchemas(load_settings(**_registry_settings(registry)))
    assert json.loads(schemas(sid)) == v1()
    assert json.loads(schemas(sid)) == v1() and registry.lookups == [sid]  # kept
    with pytest.raises(EventError, match="schema id 77 is not in the registry"):
        schemas(77)
    registry.down = True
    with pytest.raises(InfraError, match="HTTP 503"):
        schemas(78)
    registry.down = False
    wrong = RegistrySchemas(
        load_settings(**_registry_settings(registry, schema_registry_password="x"))
    )
    with pytest.raises(AuthError, match="refused the credentials"):
        wrong(sid)
    port = int(registry.url.rpartition(":")[2])
    nowhere = RegistrySchemas(load_settings(schema_registry_url=f"http://127.0.0.1:{port + 1}"))
    with pytest.raises(InfraError, match="does not answer"):
        nowhere(sid)


def test_no_secret_in_what_the_lookup_says(registry: Registry) -> None:
    registry.password = "hunter2"
    url = registry.url.replace("http://", "http://sr-user:hunter2@")
    schemas = RegistrySchemas(load_settings(schema_registry_url=url))
    assert "hunter2" not in schemas.url
    with pytest.raises(EventError) as info:
        schemas(5)
    assert "hunter2" not in info.value.reason


def test_decoder_settings(tmp_path: Path, registry: Registry) -> None:
    assert event_decoder(load_settings())._registry is None
    with pytest.raises(ConfigError, match="no such directory"):
        event_decoder(load_settings(event_schemas_dir=tmp_path / "missing"))
    with pytest.raises(ConfigError, match="schema_registry_ca_file"):
        event_decoder(load_settings(schema_registry_url=registry.url,
                                    schema_registry_ca_file=tmp_path / "no.pem"))  # fmt: skip


# --- the worker ----------------------------------------------------------------------------


def _framed_producer(s: Settings, reg: Registry) -> tuple[Producer, AvroSerializer]:
    client = SchemaRegistryClient(
        {"url": reg.url, "basic.auth.user.info": f"{reg.user}:{reg.password}"}
    )
    return Producer(s.kafka_common()), AvroSerializer(client, json.dumps(v2()))


def _dlq(s: Settings, n: int, timeout_s: float = 20) -> list[tuple[bytes, str]]:
    c = Consumer({**s.kafka_common(), "group.id": f"dlq-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest"})  # fmt: skip
    c.subscribe([s.topic_dlq])
    got: list[tuple[bytes, str]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                headers = dict(m.headers() or [])
                reason = headers["streamrec.error"]
                assert isinstance(reason, bytes)
                got.append((m.value() or b"", reason.decode()))
    finally:
        c.close()
    return got


@pytest.mark.integration
def test_worker_reads_registry_framed_events_of_a_newer_version(
    stack: Callable[..., Settings],
    run_worker: Callable[..., Any],
    small_model: Path,
    registry: Registry,
) -> None:
    s = stack(model_path=small_model, **_registry_settings(registry))
    keys, client = Keys(s.redis_prefix), redis_client(s)
    items = list(load_model(small_model).item_ids[:4])
    ensure_topics(s)
    producer, serialize = _framed_producer(s, registry)
    ctx = SerializationContext(s.topic_events, MessageField.VALUE)
    for n, item in enumerate(items):  # v2: with the field the worker's reader lacks
        rec = record(event_id=f"e{n}", user_id="reg-user", item_id=item, session_id="s1")
        producer.produce(s.topic_events, key=b"reg-user", value=serialize(rec, ctx))
    producer.produce(s.topic_events, key=b"x", value=confluent(99, v1(), record()))
    assert producer.flush(10) == 0
    run_worker(s)
    value = json.loads(wait_for(lambda: client.get(keys.recs("reg-user")), timeout_s=30))
    assert not set(items) & {i["item_id"] for i in value["items"]}
    raw = wait_for(lambda: read_histories(client, keys, ["reg-user"]).get("reg-user"), 10)
    assert {entry.item_id for entry in parse_history(raw)} == set(items)
    [(raw, reason)] = _dlq(s, 1)
    assert raw[:5] == b"\x00\x00\x00\x00\x63" and "schema id 99 is not in the registry" in reason
    assert registry.lookups.count(1) == 1  # one lookup for four events


@pytest.mark.integration
def test_a_registry_outage_is_waited_out_not_dead_lettered(
    stack: Callable[..., Settings],
    run_worker: Callable[..., Any],
    small_model: Path,
    registry: Registry,
) -> None:
    s = stack(model_path=small_model, retry_backoff_max_s=0.5, **_registry_settings(registry))
    keys, client = Keys(s.redis_prefix), redis_client(s)
    item = load_model(small_model).item_ids[0]
    ensure_topics(s)
    producer, serialize = _framed_producer(s, registry)  # registers v2 while the stand-in is up
    ctx = SerializationContext(s.topic_events, MessageField.VALUE)
    raw = serialize(record(user_id="waits", item_id=item, session_id=None), ctx)
    registry.down = True
    worker = run_worker(s)
    producer.produce(s.topic_events, key=b"waits", value=raw)
    assert producer.flush(10) == 0
    wait_for(lambda: registry.lookups == [] and worker.metrics is not None, timeout_s=5)
    time.sleep(2)  # the worker has the event and keeps failing to look its schema up
    assert client.get(keys.recs("waits")) is None
    registry.down = False
    wait_for(lambda: client.get(keys.recs("waits")), timeout_s=30)
    assert _dlq(s, 1, timeout_s=3) == []  # nothing was dead-lettered meanwhile
