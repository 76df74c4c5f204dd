"""Outages are waited out, not crashed on: Redis and the broker killed under a running worker
(the fault tests' own services, ``tests/faults/conftest.py``), commands run with no broker.

"Correct" is what ``tests/worker/test_exactly_once.py`` calls it: every history and list equal
to one clean pass of a fresh worker over the same topic.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamrec.artifact import load_model
from streamrec.connect import ensure_topics, redis_client
from streamrec.errors import InfraError
from streamrec.events import new_event
from streamrec.keys import Keys
from streamrec.producer.errors import DeliveryError
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from streamrec.worker.loop import Worker
from tests.conftest import log_end, wait_for
from tests.faults.conftest import OwnServices
from tests.worker.test_exactly_once import _applied, _assert_same, _clean_pass, _env, _snapshot

pytestmark = pytest.mark.integration

OUTAGE_S = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once closed


def _health(port: int) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _up(port: int, dependency: str) -> float:
    """``streamrec_dependency_up{dependency=...}`` as the worker exports it."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    prefix = f'streamrec_dependency_up{{dependency="{dependency}"}} '
    return float(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix) :])


class _Sender(threading.Thread):
    """Sends ``n`` events over about ``seconds``, in chunks, each flushed; a chunk not
    acknowledged (the broker is down) is sent again, same event ids, until it is."""

    def __init__(self, s: Settings, model: Path, n: int, seconds: float, seed: int) -> None:
        super().__init__(name="sender", daemon=True)
        self.s, self.n, self.pause = s, n, seconds / (n / 25)
        self.items = load_model(model).item_ids
        self.rng = np.random.default_rng(seed)
        self.resent = 0
        self.done = False
        self.stop = threading.Event()

    def run(self) -> None:
        types = ["play", "play", "click", "like", "skip", "view"]
        with EventProducer(self.s) as p:
            for lo in range(0, self.n, 25):
                if self.stop.is_set():
                    return
                chunk = [
                    new_event(
                        f"u{min(int(self.rng.zipf(1.3)) - 1, 99)}",
                        self.items[int(self.rng.integers(len(self.items)))],
                        types[k % len(types)],
                        value=float(self.rng.integers(1, 300)),
                        timestamp=1_700_000_000_000 + k * 1000,
                        event_id=f"ev-{k}",
                    )
                    for k in range(lo, min(lo + 25, self.n))
                ]
                while not self.stop.is_set():
                    for e in chunk:
                        p.send(e)
                    try:
                        p.flush()
                        break
                    except DeliveryError:
                        self.resent += 1
                        time.sleep(0.5)
                time.sleep(self.pause)
        self.done = True


def _total(s: Settings) -> int:
    return sum(log_end(s, s.topic_events, p) for p in range(s.topic_events_partitions))


def test_redis_down_for_10_s_mid_stream_is_waited_out(
    own: OwnServices,
    small_model: Path,
    run_worker: Callable[..., Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="streamrec.worker.retry")
    port = _free_port()
    s = own.stack(
        model_path=small_model,
        batch_max=25,
        metrics_bind=f"127.0.0.1:{port}",
        retry_backoff_max_s=0.5,
    )
    ensure_topics(s)
    keys, before = Keys(s.redis_prefix), redis_client(s)
    worker = run_worker(s)
    sender = _Sender(s, small_model, 1200, seconds=OUTAGE_S + 6, seed=1)
    sender.start()
    wait_for(lambda: _applied(before, keys, s) >= 100, 30)

    own.kill_redis()  # SIGKILL; its AOF keeps every write it acknowledged
    down_at = time.monotonic()
    wait_for(lambda: _health(port) == (503, b"redis down\n"), 10)
    assert _up(port, "redis") == 0.0 and _up(port, "kafka") == 1.0
    while time.monotonic() - down_at < OUTAGE_S:  # events keep arriving meanwhile
        assert _health(port)[0] == 503
        time.sleep(0.5)
    assert not worker.stop.is_set()
    own.start_redis(empty=False)

    sender.join(60)
    assert sender.done and sender.resent == 0  # Kafka was up all along
    total = _total(s)
    assert total == 1200
    client = redis_client(s)
    wait_for(lambda: _applied(client, keys, s) == total, 60)
    wait_for(lambda: _health(port) == (200, b"ok\n"), 10)
    assert _up(port, "redis") == 1.0
    worker.stop.set()

    lines = [r.getMessage() for r in caplog.records if r.name == "streamrec.worker.retry"]
    went = [m for m in lines if " is down " in m]
    back = [m for m in lines if " is back " in m]
    assert len(went) == 1 and went[0].startswith(f"Redis at {s.redis_address} is down")
    assert len(back) == 1, lines
    # Retried every half second or so, logged twice (down, back): not once per attempt.
    attempts = int(back[0].split("(")[1].split()[0])
    assert attempts >= 8, back
    _assert_same(_snapshot(client, keys), _clean_pass(s, own.stack, total))


def test_broker_killed_and_restarted_while_producers_send(
    own: OwnServices, small_model: Path, run_worker: Callable[..., Worker]
) -> None:
    port = _free_port()
    s = own.stack(
        model_path=small_model,
        batch_max=25,
        metrics_bind=f"127.0.0.1:{port}",
        retry_backoff_max_s=0.5,
        kafka_timeout_s=3,
        delivery_timeout_s=3,  # the sender's undelivered chunks fail, and are sent again, sooner
    )
    ensure_topics(s)
    keys, client = Keys(s.redis_prefix), redis_client(s)
    worker = run_worker(s)
    wait_for(lambda: len(worker.assigned) == s.topic_events_partitions, 30)
    sender = _Sender(s, small_model, 1000, seconds=12, seed=2)
    sender.start()
    wait_for(lambda: _applied(client, keys, s) >= 100, 30)

    lone = EventProducer(s)  # built while the broker answers
    own.kill_kafka()
    try:
        # A producer's event fails after delivery_timeout_s, in one line naming the broker.
        lone.send(new_event("lone", "i", "play"))
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            lone.flush()
        assert time.monotonic() - started < s.delivery_timeout_s + 3
        message = str(caught.value)
        assert "\n" not in message and "Message timed out" in message
        assert message.startswith(f"Kafka at {s.kafka_bootstrap}: 1 event(s) not delivered")
        wait_for(lambda: _health(port) == (503, b"kafka down\n"), 15)
        assert _up(port, "kafka") == 0.0 and _up(port, "redis") == 1.0
    finally:
        own.start_kafka()

    sender.join(90)
    assert sender.done
    total = _total(s)  # what the broker holds: every event, some sent twice by the retries
    assert total >= 1000
    wait_for(lambda: _applied(client, keys, s) == total, 60)
    wait_for(lambda: _health(port) == (200, b"ok\n"), 15)
    assert _up(port, "kafka") == 1.0
    worker.stop.set()
    _assert_same(_snapshot(client, keys), _clean_pass(s, own.stack, total))


def _cli(env: dict[str, str], *args: str, timeout_s: float = 60) -> tuple[int, str, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def test_commands_with_no_broker_end_in_bounded_time_with_one_line(
    own: OwnServices, tmp_path: Path
) -> None:
    """Nothing listens at the broker's address: each command ends with exit 3 and one line
    naming it, after about ``kafka_timeout_s``."""
    nowhere = f"127.0.0.1:{_free_port()}"
    s = own.stack(kafka_bootstrap=nowhere, kafka_timeout_s=2)
    env = _env(s, STREAMREC_KAFKA_TIMEOUT_S="2", STREAMREC_LOG_FORMAT="json")
    rows = tmp_path / "events.csv"
    rows.write_text("user_id,item_id,type,value,timestamp\nu1,i1,play,10,1700000000\n")
    for args in (
        ("produce", "--user", "u", "--item", "i"),
        ("produce", "--csv", str(rows)),
        ("replay", str(rows)),
        ("loadgen", "--rate", "10", "--users", "3", "--items", "5", "--max-events", "5",
         "--catalog", "generated"),
    ):  # fmt: skip
        code, _out, err, took = _cli(env, *args)
        assert code == 3, (args, err)
        assert err.count("\n") == 1, (args, err)  # one line, no client log lines, no traceback
        assert err.startswith(f"streamrec: Kafka at {nowhere} does not answer within 2 s"), err
        assert took < 2 + 6, (args, took)  # the bound, plus interpreter start-up

    with pytest.raises(InfraError, match=f"Kafka at {nowhere} does not answer within 2 s"):
        EventProducer(s)


def test_sigterm_while_redis_and_kafka_are_down_stops_the_worker_promptly(
    own: OwnServices, small_model: Path, tmp_path: Path
) -> None:
    port = _free_port()
    s = own.stack(model_path=small_model, batch_max=25)
    ensure_topics(s)
    keys = Keys(s.redis_prefix)
    env = _env(s, STREAMREC_METRICS_BIND=f"127.0.0.1:{port}", STREAMREC_KAFKA_TIMEOUT_S="3")
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "worker"], env=env, stdout=out, stderr=out
        )
    sender = _Sender(s, small_model, 600, seconds=20, seed=3)
    try:
        sender.start()
        wait_for(lambda: _applied(redis_client(s), keys, s) >= 50 or worker.poll() is not None, 60)
        assert worker.poll() is None, log.read_text()
        own.kill_redis()  # this test is only about stopping: what Redis keeps does not matter
        wait_for(lambda: _health(port) == (503, b"redis down\n"), 15)
        own.kill_kafka()
        time.sleep(1.0)
        assert worker.poll() is None, log.read_text()
        stopped = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0, log.read_text()
        # The bounded wait for Kafka at stop (3 s), Redis' socket timeout, some slack.
        assert time.monotonic() - stopped < 3 + 5 + 2, log.read_text()
    finally:
        sender.stop.set()
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        own.start_redis(empty=True)
        own.start_kafka()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert text.count(f"Redis at {s.redis_address} is down") == 1, text
    assert "stopped while waiting for" in text, text
    sender.join(30)
