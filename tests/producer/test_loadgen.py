"""Load generator: Zipf draws, session bursts, rate and bounds, the CLI against real Kafka."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from streamrec.app.cli import main
from streamrec.artifact import load_model
from streamrec.connect import redis_client
from streamrec.errors import ConfigError
from streamrec.events import Event
from streamrec.model.publish import publish
from streamrec.producer.loadgen import TYPES, LoadSpec, Zipf, events, generated_items, run_load
from streamrec.settings import Settings
from tests.conftest import consume_events


class FakeProducer:
    topic = "fake"

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.sent = self.delivered = 0

    def send(self, event: Event) -> None:
        self.events.append(event)
        self.sent += 1
        self.delivered += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


def test_zipf_ranks(rng: np.random.Generator) -> None:
    counts = np.bincount(Zipf(100, 1.1, rng).draw(50_000), minlength=100)
    assert counts.argmax() == 0
    assert counts[0] > 2 * counts[1] * 0.9 and counts[:10].sum() > counts[10:].sum() * 0.9
    assert counts[0] / counts[1] == pytest.approx(2**1.1, rel=0.1)
    flat = np.bincount(Zipf(10, 0.0, rng).draw(50_000), minlength=10)
    assert flat.min() > 4_500 and flat.max() < 5_500


def test_sessions_come_in_bursts(rng: np.random.Generator) -> None:
    spec = LoadSpec(rate=1, users=5_000, items=50, burst=6.0, sessions=1)
    items = generated_items(50)
    stream = list(itertools.islice(events(spec, items, rng), 6_000))
    runs = [len(list(g)) for _, g in itertools.groupby(u for u, _, _, _ in stream)]
    assert 5.0 < np.mean(runs) < 8.0  # one user at a time: runs are the sessions
    assert all(u.startswith("loadgen-user-") for u, _, _, _ in stream)
    kinds = Counter(t for _, _, t, _ in stream)
    assert set(kinds) <= set(TYPES) and kinds.most_common(1)[0][0] == "play"
    for _, item, t, value in stream:
        assert item in items
        if t == "play":
            assert value is not None and 30 <= value < 300
        elif t == "skip":
            assert value is not None and 1 <= value < 15
        else:
            assert value is None
    assert Counter(i for _, i, _, _ in stream).most_common(1)[0][0] == items[0]

    many = LoadSpec(rate=1, users=5_000, items=50, burst=6.0, sessions=16)
    stream = list(itertools.islice(events(many, items, rng), 6_000))
    runs = [len(list(g)) for _, g in itertools.groupby(u for u, _, _, _ in stream)]
    assert np.mean(runs) < 2.0  # interleaved with other users' bursts
    for n in range(0, 6_000, 500):  # yet few users are active in any stretch of time
        assert len({u for u, _, _, _ in stream[n : n + 40]}) <= 16 + 40 // 6 * 2


def test_rate_and_bounds() -> None:
    fake = FakeProducer()
    spec = LoadSpec(rate=10_000, users=100, items=20, max_events=250, seed=1)
    report = run_load(cast(Any, fake), spec, generated_items(20))
    assert report.sent == 250 == report.delivered and report.failed == 0

    fake = FakeProducer()
    started = time.monotonic()
    spec = LoadSpec(rate=200, users=100, items=20, duration_s=0.5, seed=1)
    report = run_load(cast(Any, fake), spec, generated_items(20))
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 2.0
    # ~100 at 200/s for 0.5 s: never more than the rate allows; fewer when the machine is
    # busy (55 under a full load of two cores), so the lower bound only says it paced, not
    # stalled
    assert 20 <= report.sent <= 110

    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    fake = FakeProducer()
    report = run_load(cast(Any, fake), LoadSpec(rate=50, users=10, items=5), ["a"], stop=stop)
    assert 1 <= report.sent <= 30
    assert {e.item_id for e in fake.events} == {"a"}


@pytest.mark.parametrize(
    "kwargs", [{"rate": 0}, {"users": 0}, {"burst": 0.5}, {"sessions": 0}, {"zipf_items": -1}]
)
def test_bad_specs(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        LoadSpec(**{"rate": 1.0, "users": 1, "items": 1, **kwargs})


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["loadgen", "--rate", "0"], "must be > 0"),
        (["loadgen", "--users", "none"], "not an integer"),
        (["loadgen", "--catalog", "shop"], "invalid choice"),
        (["loadgen", "--duration", "-3"], "must be > 0"),
    ],
)
def test_cli_bad_args(args: list[str], fragment: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamrec", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


@pytest.mark.integration
def test_cli_against_kafka_with_the_models_items(
    stack: Callable[..., Settings],
    small_model: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = stack()
    monkeypatch.setenv("STREAMREC_TOPIC_EVENTS", s.topic_events)
    monkeypatch.setenv("STREAMREC_TOPIC_EVENTS_PARTITIONS", "3")
    monkeypatch.setenv("STREAMREC_REDIS_PREFIX", s.redis_prefix)
    argv = ["loadgen", "--rate", "500", "--max-events", "60", "--users", "20", "--items", "30"]
    assert main([*argv, "--catalog", "model"]) == 2  # nothing published yet
    assert "no model published" in capsys.readouterr().err

    model = load_model(small_model)
    publish(model, s, redis_client(s))
    assert main([*argv, "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert f"model {model.version}, most popular first" in out
    assert "sent 60, delivered 60, failed 0" in out

    top30 = {item for item, _ in model.popular(30)}
    pairs = consume_events(s, 60, timeout_s=20)
    assert len(pairs) == 60
    assert all(key == event.user_id.encode() for key, event in pairs)
    got = [event for _, event in pairs]
    assert {e.item_id for e in got} <= top30
    assert len({e.user_id for e in got}) <= 20
