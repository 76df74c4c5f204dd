"""State survives the loss of Redis: after Redis comes back empty, flushed or older, every
history and list ends equal to one clean pass over the topic (``worker/rebuild.py``).

The faults are real: the fault tests' own Redis is SIGKILLed and started again without its
data, the prefix's keys are deleted while a worker runs, Redis is put back to an older state.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from streamrec.connect import ensure_topics, redis_client
from streamrec.keys import Keys
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from streamrec.sink import Sink
from streamrec.worker import rebuild
from streamrec.worker.loop import Worker
from streamrec.worker.rebuild import Origin
from tests.conftest import committed_total, log_end, wait_for
from tests.faults.conftest import OwnServices
from tests.worker.test_exactly_once import (
    _applied,
    _assert_same,
    _clean_pass,
    _env,
    _FailingSink,
    _free_port,
    _produce,
    _snapshot,
)

pytestmark = pytest.mark.integration

LATER_MS = 1_700_100_000_000  # event times of a second stream, after the first one's


def _complete(client: redis.Redis, keys: Keys, s: Settings) -> bool:
    """Every partition's origin marker says a complete pass built its state."""
    parts = range(s.topic_events_partitions)
    raw = client.mget([keys.origin(s.topic_events, p) for p in parts])
    return all(v is not None and Origin.parse(v).complete for v in raw)


def _caught_up(client: redis.Redis, keys: Keys, s: Settings, total: int) -> bool:
    return _applied(client, keys, s) == total and _complete(client, keys, s)


def _garbage(s: Settings, n: int, tag: str) -> None:
    with EventProducer(s) as p:
        for k in range(n):
            p.send_raw(f"{tag}-{k}".encode(), b"not an event")


@pytest.mark.parametrize("restart", [True, False], ids=["worker-restarted", "worker-kept"])
def test_redis_restarted_empty_then_the_worker_rebuilds(
    own: OwnServices, small_model: Path, tmp_path: Path, restart: bool
) -> None:
    """Redis SIGKILLed, events go on, Redis starts again empty. ``restart``: the worker is
    SIGKILLed too and a new one rebuilds at start; else the worker waits the outage out
    (worker/retry.py) and notices the loss itself."""
    first_n, down_n, after_n = 1500, 300, 300
    first_msgs, total = first_n + 3, first_n + 3 + down_n + 2 + after_n
    # Static membership: the restarted worker gets the partitions back at once.
    s = own.stack(model_path=small_model, batch_max=50, instance_id=f"w-{uuid.uuid4().hex[:8]}")
    ensure_topics(s)
    _produce(s, small_model, first_n, users=150, seed=11)
    _garbage(s, 3, "first")  # dead-lettered by the first worker: not again by the rebuild
    keys, client = Keys(s.redis_prefix), redis_client(s)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    cmd = [sys.executable, "-m", "streamrec", "worker"]
    ports = [_free_port(), _free_port()]
    with logs[0].open("wb") as log:
        env = _env(s, STREAMREC_METRICS_BIND=f"127.0.0.1:{ports[0]}")
        first = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_for(lambda: _applied(client, keys, s) == first_msgs or first.poll() is not None, 60)
        assert first.poll() is None, f"worker exited early; see {logs[0]}"
        wait_for(lambda: committed_total(s) == first_msgs, 30, interval_s=0.5)
        client.close()

        own.kill_redis()
        _produce(s, small_model, down_n, users=150, seed=12, start_ms=LATER_MS)  # Kafka is up
        _garbage(s, 2, "down")  # never seen by a worker: dead-lettered by the rebuild
        own.start_redis(empty=True)
        worker, log_path, port = first, logs[0], ports[0]
        if restart:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            env = _env(s, STREAMREC_METRICS_BIND=f"127.0.0.1:{ports[1]}")
            with logs[1].open("wb") as log:
                second = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
            worker, log_path, port = second, logs[1], ports[1]
        client = redis_client(s)
        _produce(s, small_model, after_n, users=150, seed=13, start_ms=2 * LATER_MS)
        wait_for(lambda: _caught_up(client, keys, s, total) or worker.poll() is not None, 90)
        assert worker.poll() is None, f"worker exited; see {log_path}"
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    text = log_path.read_text(errors="replace")
    assert text.count("rebuilding it from the events topic") == s.topic_events_partitions, text
    assert b"streamrec_rebuilds_total 3.0" in metrics
    assert log_end(s, s.topic_dlq) == 3 + 2  # every dead letter once
    for p in range(s.topic_events_partitions):
        assert f'streamrec_rebuild_remaining_messages{{partition="{p}"}} 0.0'.encode() in metrics
    _assert_same(_snapshot(client, keys), _clean_pass(s, own.stack, total))
    client.close()


def _delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Every key of the prefix at once (a script is atomic): FLUSHALL, for this prefix only."""
    script = "for _, k in ipairs(redis.call('keys', ARGV[1])) do redis.call('del', k) end"
    client.eval(script, 0, f"{prefix}:*")


def test_keys_deleted_while_the_worker_runs_are_rebuilt(
    own: OwnServices,
    small_model: Path,
    run_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rebuild, "CHECK_S", 0.3)  # idle partitions are checked this often
    first_n, after_n = 1000, 500
    s = own.stack(model_path=small_model, batch_max=50)
    ensure_topics(s)
    _produce(s, small_model, first_n, users=100, seed=21)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    worker = run_worker(s)
    wait_for(lambda: _applied(client, keys, s) == first_n and _complete(client, keys, s), 60)
    before = _snapshot(client, keys)

    _delete_prefix(client, s.redis_prefix)
    # No new event: the idle check notices, and every history and list comes back.
    wait_for(lambda: _caught_up(client, keys, s, first_n), 60)
    assert worker.stats.rebuilds == s.topic_events_partitions
    _assert_same(_snapshot(client, keys), before)

    _produce(s, small_model, after_n, users=100, seed=22, start_ms=LATER_MS)
    wait_for(lambda: _applied(client, keys, s) == first_n + after_n, 60)
    worker.stop.set()
    _assert_same(_snapshot(client, keys), _clean_pass(s, own.stack, first_n + after_n))
    client.close()


def _dump(client: redis.Redis, prefix: str) -> dict[bytes, tuple[bytes, int]]:
    """Every key of the prefix as DUMP gives it, with its TTL (ms, 0: none)."""
    out: dict[bytes, tuple[bytes, int]] = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        value: Any = client.dump(key)
        out[key] = (value, max(0, int(client.pttl(key))))
    return out


def test_redis_back_at_an_older_state_resumes_from_what_it_holds(
    own: OwnServices, small_model: Path, run_worker: Callable[..., Worker]
) -> None:
    first_n, then_n, after_n = 600, 400, 200
    s = own.stack(model_path=small_model, batch_max=50)
    ensure_topics(s)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    _produce(s, small_model, first_n, users=80, seed=31)
    Worker(s).run(max_messages=first_n, duration_s=60)
    snapshot = _dump(client, s.redis_prefix)  # what a backup, or a lagging replica, holds
    _produce(s, small_model, then_n, users=80, seed=32, start_ms=LATER_MS)
    Worker(s).run(max_messages=then_n, duration_s=60)
    assert committed_total(s) == first_n + then_n

    _delete_prefix(client, s.redis_prefix)
    for key, (value, ttl) in snapshot.items():
        client.restore(key, ttl, value)
    assert _applied(client, keys, s) == first_n  # Redis is behind Kafka's commits
    _produce(s, small_model, after_n, users=80, seed=33, start_ms=2 * LATER_MS)
    total = first_n + then_n + after_n
    again = run_worker(s)
    wait_for(lambda: _applied(client, keys, s) == total, 60)
    again.stop.set()
    assert again.stats.rebuilds == 0  # nothing was lost: Redis only had to catch up
    assert again.stats.redelivered == 0  # it started where Redis stood, not at the commits
    _assert_same(_snapshot(client, keys), _clean_pass(s, own.stack, total))
    client.close()


def test_a_rebuild_cut_short_is_done_again_from_the_start(
    own: OwnServices, small_model: Path, run_worker: Callable[..., Worker]
) -> None:
    total = 1200
    s = own.stack(model_path=small_model, batch_max=50)
    ensure_topics(s)
    # One heavy user has more events than the dedup window remembers: applying the cut-short
    # pass's events to it twice would show.
    _produce(s, small_model, total, users=60, seed=41)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    Worker(s).run(max_messages=total, duration_s=60)
    _delete_prefix(client, s.redis_prefix)

    calls: list[str] = []
    sink = _FailingSink(Sink(client, keys, s.recs_ttl_s, s.history_ttl_s), 8, True, calls)
    cut = Worker(s, sink=sink)  # dies once its 8th rebuild batch is stored
    with pytest.raises(ConnectionError, match="injected"):
        cut.run(duration_s=60)
    assert cut.stats.rebuilds == s.topic_events_partitions
    parts = range(s.topic_events_partitions)
    marks = client.mget([keys.origin(s.topic_events, p) for p in parts])
    unfinished = sum(not Origin.parse(m).complete for m in marks if m is not None)
    assert unfinished > 0  # (a small partition may have been rebuilt before the cut)
    assert 0 < _applied(client, keys, s) < total  # the cut-short pass's histories are stored

    again = run_worker(s)
    wait_for(lambda: _caught_up(client, keys, s, total), 60)
    assert again.stats.rebuilds == unfinished
    _assert_same(_snapshot(client, keys), _clean_pass(s, own.stack, total))
    client.close()
