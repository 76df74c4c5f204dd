"""Exactly-once effect, scale-out and filters, against the real broker and Redis.

The reference for "correct" is always a clean pass: a fresh worker (own consumer group, own
key prefix) reading the same topic from the start, once, without interruption.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from confluent_kafka import Message

from streamrec.als.history import UserState
from streamrec.artifact import load_model
from streamrec.connect import ensure_topics, redis_client
from streamrec.events import new_event
from streamrec.keys import Keys, parse_home
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from streamrec.sink import Sink
from streamrec.worker.loop import Worker
from streamrec.worker.source import Source
from tests.conftest import committed_total, wait_for

pytestmark = pytest.mark.integration


def _produce(
    s: Settings, model: Path, n: int, users: int, seed: int, start_ms: int = 1_700_000_000_000
) -> None:
    """``n`` events: Zipf-ish users and items, a mix of types, some duplicate event_ids."""
    rng = np.random.default_rng(seed)
    items = load_model(model).item_ids
    types = ["play", "play", "play", "click", "like", "skip", "dislike", "view"]
    with EventProducer(s) as p:
        for k in range(n):
            u = min(int(rng.zipf(1.3)) - 1, users - 1)
            e = new_event(
                f"u{u}",
                items[int(rng.integers(len(items)))],
                types[k % len(types)],
                value=float(rng.integers(1, 300)),
                timestamp=start_ms + k * 1000,
                event_id=f"ev-{seed}-{k}" if k % 17 else f"ev-{seed}-{k - 1}",
            )
            p.send(e)


def _snapshot(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Every user's state and list under ``keys.prefix`` (list timestamps dropped)."""
    out: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{keys.prefix}:*", count=1000):
        k = key.decode()
        kind = k.split(":")[1]
        history = keys.parse_user(k)
        if history is not None:
            state = UserState.decode(client.get(key))
            out[history[2] + "/state"] = (state.items, state.seen)
        elif kind == "home":
            # The partition: a clean pass may read another topic, partitioned alike.
            out[k.split(":", 2)[2] + "/home"] = parse_home(client.get(key) or b"")[1]
        elif kind == "recs":
            v = json.loads(client.get(key) or b"null")
            out[k.split(":", 2)[2] + "/recs"] = [(i["item_id"], i["score"]) for i in v["items"]]
    return out


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        # Exact, lists included: same events, same order, same arithmetic; a user's fold-in
        # and scores do not depend on the batch they were computed in (streamrec/als/foldin.py).
        assert got[key] == value, key


def _clean_pass(s: Settings, stack: Callable[..., Settings], total: int) -> dict[str, Any]:
    ref = stack(
        topic_events=s.topic_events, topic_dlq=s.topic_dlq, model_path=s.model_path, batch_max=500
    )
    w = Worker(ref)
    w.run(max_messages=total, duration_s=60)
    assert w.stats.messages == total
    return _snapshot(redis_client(ref), Keys(ref.redis_prefix))


def _env(s: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    for name in (
        "kafka_bootstrap",
        "redis_url",
        "topic_events",
        "topic_dlq",
        "topic_models",
        "topic_items",
        "consumer_group",
        "redis_prefix",
        "model_path",
        "batch_max",
        "poll_timeout_s",
        "instance_id",
        "redis_cluster",
    ):
        if getattr(s, name) is not None:
            env[f"STREAMREC_{name.upper()}"] = str(getattr(s, name))
    return {**env, **extra}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _applied(client: redis.Redis, keys: Keys, s: Settings) -> int:
    vals = [client.get(keys.applied(s.topic_events, p)) for p in range(s.topic_events_partitions)]
    return sum(int(v) + 1 for v in vals if v is not None)


def test_sigkill_mid_stream_then_restart_equals_one_clean_pass(
    stack: Callable[..., Settings], small_model: Path, tmp_path: Path
) -> None:
    total = 3000
    # Static membership: the restarted worker takes its partitions back without waiting for
    # the killed one's session to time out.
    s = stack(model_path=small_model, batch_max=25, instance_id=f"w-{uuid.uuid4().hex[:8]}")
    ensure_topics(s)
    _produce(s, small_model, total, users=300, seed=1)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    log = (tmp_path / "worker.log").open("wb")
    cmd = [sys.executable, "-m", "streamrec", "worker"]
    first = subprocess.Popen(cmd, env=_env(s, STREAMREC_METRICS_BIND=""), stdout=log, stderr=log)
    try:
        wait_for(lambda: _applied(client, keys, s) >= total // 4 or first.poll() is not None, 60)
        assert first.poll() is None, "worker exited early; see worker.log"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    assert _applied(client, keys, s) < total, "the kill must land mid-stream"

    port = _free_port()
    env = _env(s, STREAMREC_METRICS_BIND=f"127.0.0.1:{port}")
    second = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    try:
        wait_for(lambda: _applied(client, keys, s) == total or second.poll() is not None, 90)
        assert second.poll() is None
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200
        assert b"streamrec_event_to_redis_seconds_bucket" in metrics
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, "SIGTERM must stop the worker cleanly"
        log.close()
    _assert_same(_snapshot(client, keys), _clean_pass(s, stack, total))


def test_redelivered_batches_are_skipped(
    stack: Callable[..., Settings], small_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis has the effect but Kafka never got the commit (a crash between the two)."""
    total = 400
    s = stack(model_path=small_model, batch_max=50)
    ensure_topics(s)
    _produce(s, small_model, total, users=40, seed=2)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    with monkeypatch.context() as mp:
        mp.setattr(Source, "commit", lambda self, msgs, asynchronous=False: None)
        w = Worker(s)
        w.run(max_messages=total, duration_s=60)
    before = _snapshot(client, keys)
    assert w.stats.redelivered == 0 and w.stats.duplicates > 0

    again = Worker(s)  # same group: everything is redelivered
    again.run(max_messages=total, duration_s=60)
    assert again.stats.messages == total
    assert again.stats.redelivered == total
    assert again.stats.users_updated == 0
    _assert_same(_snapshot(client, keys), before)


def test_two_workers_then_one_lose_nothing_and_count_nothing_twice(
    stack: Callable[..., Settings], small_model: Path, run_worker: Callable[..., Worker]
) -> None:
    s = stack(model_path=small_model, topic_events_partitions=6, batch_max=50)
    ensure_topics(s)
    a, b = run_worker(s), run_worker(s)
    wait_for(lambda: len(a.assigned) + len(b.assigned) == 6 and a.assigned and b.assigned, 60)
    _produce(s, small_model, 1500, users=200, seed=3)
    wait_for(lambda: a.stats.messages > 0 and b.stats.messages > 0, 60)
    a.stop.set()
    _produce(s, small_model, 1500, users=200, seed=4, start_ms=1_700_010_000_000)
    wait_for(
        lambda: (
            a.stats.messages + b.stats.messages - b.stats.redelivered - a.stats.redelivered >= 3000
        ),
        90,
    )
    keys = Keys(s.redis_prefix)
    wait_for(lambda: _applied(redis_client(s), keys, s) == 3000, 30)
    # Kafka holds the same position while the worker still runs (commits sent during the
    # rebalance can be refused; they are sent again), not only after its final commit.
    wait_for(lambda: committed_total(s) == 3000, 30)
    b.stop.set()
    _assert_same(_snapshot(redis_client(s), keys), _clean_pass(s, stack, 3000))


def test_blocked_items_never_appear(
    stack: Callable[..., Settings], small_model: Path, run_worker: Callable[..., Worker]
) -> None:
    s = stack(model_path=small_model)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    model = load_model(small_model)
    worker = run_worker(s)
    with EventProducer(s) as p:
        p.send(new_event("gina", model.item_ids[0], "play"))
    first = json.loads(wait_for(lambda: client.get(keys.recs("gina")), 5))
    top = first["items"][0]["item_id"]
    client.sadd(keys.blocked, top)
    wait_for(lambda: len(worker.models.blocked) == 1, 10)
    with EventProducer(s) as p:
        p.send(new_event("gina", model.item_ids[1], "play"))
    wait_for(
        lambda: (
            (v := client.get(keys.recs("gina")))
            and json.loads(v)["updated_at_ms"] > first["updated_at_ms"]
        ),
        5,
    )
    again = json.loads(client.get(keys.recs("gina")) or b"{}")
    assert top not in {i["item_id"] for i in again["items"]}
    assert len(again["items"]) == s.top_n


class _Recorded:
    """The real source, noting each commit in ``calls`` ("c"; "C" for the final one)."""

    def __init__(self, source: Source, calls: list[str]) -> None:
        self._source, self.calls = source, calls

    @property
    def assigned(self) -> set[tuple[str, int]]:
        return self._source.assigned

    def poll(self) -> list[Message]:
        return self._source.poll()

    def commit(self, msgs: Sequence[Message], asynchronous: bool = False) -> None:
        self.calls.append("c")
        self._source.commit(msgs, asynchronous)

    def commit_all(self) -> None:
        self.calls.append("C")
        self._source.commit_all()

    def idle(self) -> None:
        self._source.idle()

    def lag(self) -> int:
        return self._source.lag()

    def close(self) -> None:
        self._source.close()


class _FailingSink:
    """The real sink, except that write number ``nth`` raises, before anything reaches Redis
    or (``after``) once its EXEC has stored the batch; each write is noted in ``calls``."""

    def __init__(self, sink: Sink, nth: int, after: bool, calls: list[str]) -> None:
        self._sink, self._nth, self._after, self.calls = sink, nth, after, calls

    def watch_read(self, keys: Sequence[str]) -> list[bytes | None]:
        return self._sink.watch_read(keys)

    def write(
        self,
        lists: Sequence[tuple[str, bytes]],
        states: Sequence[tuple[str, bytes]] = (),
        applied: Sequence[tuple[str, int]] = (),
        transaction: bool = True,
        homes: Sequence[tuple[str, bytes]] = (),
    ) -> bool:
        self.calls.append("w")
        failing = self.calls.count("w") == self._nth
        if failing and not self._after:
            raise ConnectionError("injected: Redis gone before the write")
        ok = self._sink.write(lists, states, applied, transaction, homes)
        if failing:
            raise ConnectionError("injected: connection lost after EXEC")
        return ok

    def reset(self) -> None:
        self._sink.reset()

    def close(self) -> None:
        self._sink.close()


@pytest.mark.parametrize("after", [False, True], ids=["before-write", "after-exec"])
def test_a_sink_failing_mid_stream_then_a_restart_equals_one_clean_pass(
    stack: Callable[..., Settings], small_model: Path, after: bool
) -> None:
    total, nth = 600, 5
    s = stack(model_path=small_model, batch_max=25)
    ensure_topics(s)
    _produce(s, small_model, total, users=60, seed=5)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    calls: list[str] = []
    sink = _FailingSink(Sink(client, keys, s.recs_ttl_s, s.history_ttl_s), nth, after, calls)
    first = Worker(s, source=_Recorded(Source(s), calls), sink=sink)
    with pytest.raises(ConnectionError, match="injected"):
        first.run(max_messages=total, duration_s=60)
    # Each batch is written, then committed; the failed one never is; the stop commits.
    assert "".join(calls) == "wc" * (nth - 1) + "w" + "C"
    done, stored = committed_total(s), _applied(client, keys, s)
    assert first.stats.messages == done and first.stats.batches == nth - 1
    assert 0 < done < total
    assert (stored > done) == after  # after EXEC: in Redis, not committed to Kafka

    again = Worker(s)  # same group and prefix: resumes at the committed offsets
    again.run(max_messages=total - done, duration_s=60)
    assert again.stats.messages == total - done
    assert again.stats.redelivered == stored - done  # the stored batch is skipped, not redone
    assert _applied(client, keys, s) == total
    _assert_same(_snapshot(client, keys), _clean_pass(s, stack, total))
    client.close()
