"""One broker of three SIGKILLed mid-stream while two producers send, then started again:
nothing lost or duplicated (the topic holds exactly the produced events), every history and
list equals one clean pass, and neither the worker nor the producers stall longer than
``STALL_BOUND_S`` (README "Running on a multi-broker Kafka" derives it).

Progress is measured per partition: a producer's, as the gap between two acknowledgements
while it keeps sending (events of ~200 users reach every partition many times a second); the
worker's, as the time its applied offset in Redis stays put while an acknowledged event
beyond it waits.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import KafkaError, Message

from streamrec.artifact import load_model
from streamrec.connect import ensure_topics, redis_client
from streamrec.events import new_event
from streamrec.keys import Keys
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from streamrec.worker.loop import Worker
from tests.conftest import consume_events, log_end, wait_for
from tests.kcluster.conftest import KCluster
from tests.worker.test_exactly_once import _assert_same, _clean_pass, _snapshot

pytestmark = pytest.mark.integration

#: The longest a producer or the worker may go without progress on a partition while a broker
#: fails over. Derived in the README: the broker's session timeout (9 s) + a controller
#: failover (~3 s) + the clients' metadata refresh (~1 s) + the worker's backoff (at most
#: retry_backoff_max_s, 5 s) = ~18 s, rounded up for a loaded 2-core machine.
STALL_BOUND_S = 30.0
RATE = 40.0  # events/s per producer: each partition gets an event every ~40 ms
DOWN_S = 20.0  # how long the killed broker stays down
AFTER_S = 8.0  # sending after it is back


class _Recording(EventProducer):
    """An EventProducer that also notes when each acknowledgement came, per partition."""

    def __init__(self, s: Settings) -> None:
        super().__init__(s)
        self.acks: list[tuple[float, int, int]] = []  # (monotonic, partition, offset)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        super()._on_delivery(err, msg)
        if err is None:
            self.acks.append((time.monotonic(), msg.partition() or 0, msg.offset() or 0))


class _Sender(threading.Thread):
    """Sends events ``ev-<tag>-<k>`` at ``RATE`` until ``stop``; ``ids`` are those sent."""

    def __init__(self, s: Settings, items: list[str], tag: str, seed: int) -> None:
        super().__init__(name=f"sender-{tag}", daemon=True)
        self.s, self.items, self.tag = s, items, tag
        self.rng = np.random.default_rng(seed)
        self.stop = threading.Event()
        self.ids: list[str] = []
        self.acks: list[tuple[float, int, int]] = []
        self.error: BaseException | None = None
        self.stopped_at = 0.0

    def run(self) -> None:
        types = ["play", "play", "click", "like", "skip", "view"]
        try:
            p = _Recording(self.s)
            with p:
                started, k = time.monotonic(), 0
                while not self.stop.is_set():
                    event_id = f"ev-{self.tag}-{k}"
                    p.send(
                        new_event(
                            f"u{min(int(self.rng.zipf(1.3)) - 1, 199)}",
                            self.items[int(self.rng.integers(len(self.items)))],
                            types[k % len(types)],
                            value=float(self.rng.integers(1, 300)),
                            timestamp=1_700_000_000_000 + k * 1000,
                            event_id=event_id,
                        )
                    )
                    self.ids.append(event_id)
                    k += 1
                    pause = started + k / RATE - time.monotonic()
                    p._producer.poll(max(0.0, pause))  # serve acknowledgements while pacing
                self.stopped_at = time.monotonic()
            self.acks = p.acks  # flushed: every event acknowledged (else DeliveryError)
        except BaseException as exc:
            self.error = exc


def _producer_stall(acks: list[tuple[float, int, int]], until: float) -> float:
    """The longest gap between two acknowledgements on one partition, up to ``until``."""
    worst = 0.0
    for part in {p for _, p, _ in acks}:
        times = sorted(t for t, p, _ in acks if p == part and t <= until)
        worst = max([worst, *(b - a for a, b in itertools.pairwise(times))])
    return worst


def _worker_stall(
    samples: list[tuple[float, dict[int, int]]], acks: list[tuple[float, int, int]]
) -> float:
    """The longest time a partition's applied offset stayed put while an event beyond it had
    been acknowledged (so the worker could have read it)."""
    worst = 0.0
    for part in samples[0][1]:
        acked = sorted((t, o) for t, p, o in acks if p == part)
        run_value, run_start = samples[0][1][part], samples[0][0]
        for t, values in [*samples[1:], (float("inf"), {})]:
            value = values.get(part, -2)  # -2: the end sentinel, unlike any offset
            if value == run_value:
                continue
            waiting = [ta for ta, o in acked if o > run_value]  # acknowledged beyond it
            if waiting:
                end = t if t != float("inf") else samples[-1][0]
                worst = max(worst, end - max(run_start, waiting[0]))
            run_value, run_start = value, t
    return worst


def test_a_broker_sigkilled_mid_stream_loses_nothing_and_stalls_no_one(
    kcluster: KCluster,
    small_model: Path,
    run_worker: Callable[..., Worker],
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = kcluster.stack(model_path=small_model, batch_max=50)
    assert ensure_topics(s) == [s.topic_events, s.topic_dlq, s.topic_models, s.topic_items]
    keys, client = Keys(s.redis_prefix), redis_client(s)
    worker = run_worker(s)
    wait_for(lambda: len(worker.assigned) == s.topic_events_partitions, 60)

    samples: list[tuple[float, dict[int, int]]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            raw = [client.get(keys.applied(s.topic_events, p)) for p in range(3)]
            samples.append((time.monotonic(), {p: int(v) if v else -1 for p, v in
                                               enumerate(raw)}))  # fmt: skip
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, name="sampler", daemon=True)
    sampler.start()
    items = list(load_model(small_model).item_ids)
    senders = [_Sender(s, items, tag, seed) for tag, seed in (("a", 1), ("b", 2))]
    for sender in senders:
        sender.start()
    applied = lambda: sum(v + 1 for v in samples[-1][1].values()) if samples else 0  # noqa: E731
    wait_for(lambda: applied() >= 300, 60)

    md = kcluster.admin().list_topics(timeout=10)
    victim = kcluster.leader(s.topic_events, 0)
    roles: dict[str, Any] = {"node": victim, "controller": md.controller_id == victim}
    kcluster.kill(victim)
    killed_at = time.monotonic()
    time.sleep(DOWN_S)
    kcluster.start()
    back_at = time.monotonic()
    time.sleep(AFTER_S)
    for sender in senders:
        sender.stop.set()
    for sender in senders:
        sender.join(180)
        assert not sender.is_alive() and sender.error is None, sender.error

    produced = [i for sender in senders for i in sender.ids]
    acks = [a for sender in senders for a in sender.acks]
    assert len(acks) == len(produced)  # every event acknowledged, none failed
    total = len(produced)
    wait_for(lambda: applied() == total, 120)
    sampling.set()
    sampler.join(10)

    # Nothing lost, nothing twice: the topic holds exactly the produced events.
    assert sum(log_end(s, s.topic_events, p) for p in range(3)) == total
    held = Counter(e.event_id for _, e in consume_events(s, total, timeout_s=60))
    assert held == Counter(produced)

    until = min(sender.stopped_at for sender in senders)
    producer_stall = _producer_stall(acks, until)
    worker_stall = _worker_stall(samples, acks)
    with capsys.disabled():
        print(f"\n[kcluster] killed node {roles} for {back_at - killed_at:.1f} s; {total} "
              f"events; longest stall: producers {producer_stall:.1f} s, worker "
              f"{worker_stall:.1f} s (bound {STALL_BOUND_S:g} s)")  # fmt: skip
    assert producer_stall < STALL_BOUND_S
    assert worker_stall < STALL_BOUND_S
    assert producer_stall > 1.0  # the kill was felt: a partition it led had to fail over

    worker.stop.set()
    _assert_same(_snapshot(client, keys), _clean_pass(s, kcluster.stack, total))
