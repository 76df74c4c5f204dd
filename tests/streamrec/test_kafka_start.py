"""A broker's start: the readiness wait that follows log loading, and the test topics' hygiene.

A broker restarted over thousands of partitions first recovers each log (10,784 took 61 s on
this machine, past the old fixed 60 s bound, and failed CI). The wait now runs while the
server log reports loading progress; the test sessions delete their topics so the shared broker
never grows that large.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from streamrec.errors import InfraError
from streamrec.infra import kafka
from streamrec.settings import Settings
from tests.conftest import STALE_TOPIC_S, fresh_tag, stale_test_topic

LINE = (
    "[2026-12-02 02:17:27,750] INFO Completed load of Log(dir=/d/t-x.events-2, ...) with 1 "
    "segments, local-log-start-offset 0 and log-end-offset 1332 in 7ms ({done}/{total} completed "
    "in /root/.cache/streamrec/kafka/run-9092/data) (kafka.log.LogManager)\n"
)


def test_log_load_progress_reads_the_last_count() -> None:
    text = (LINE.format(done=5, total=10) + "other line\n" + LINE.format(done=7, total=10)).encode()
    assert kafka.log_load_progress(text) == (7, 10)
    assert kafka.log_load_progress(b"[..] INFO Kafka Server started\n") is None


def _settings(tmp_path: Path) -> Settings:
    # a closed loopback port: the broker never answers, so only the bound ends the wait
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return Settings.model_construct().model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{port}", "home": tmp_path}
    )


def test_wait_ready_extends_while_logs_load_then_gives_up(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    paths = kafka.KafkaPaths.of(settings)
    paths.logs.mkdir(parents=True)
    paths.server_log.write_text("")
    stop = threading.Event()

    def loading() -> None:  # 12 progress lines, 0.25 s apart: 3 s of loading
        for done in range(1, 13):
            if stop.wait(0.25):
                return
            with paths.server_log.open("a") as f:
                f.write(LINE.format(done=done, total=12))

    feeder = threading.Thread(target=loading)
    feeder.start()
    said: list[str] = []
    started = time.monotonic()
    try:
        with pytest.raises(InfraError, match="broker not ready after"):
            kafka.wait_ready(settings, paths, lambda: True, timeout_s=1.0, echo=said.append)
    finally:
        stop.set()
        feeder.join()
    waited = time.monotonic() - started
    # it waited past its 1 s bound while loading advanced, and gave up about 1 s after the end
    assert waited > 3.0
    assert waited < 3.0 + 1.0 + 2.5


def test_wait_ready_without_progress_keeps_its_bound(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    paths = kafka.KafkaPaths.of(settings)
    started = time.monotonic()
    with pytest.raises(InfraError):
        kafka.wait_ready(settings, paths, lambda: True, timeout_s=0.5)
    assert time.monotonic() - started < 0.5 + 2.5


def test_stale_test_topics() -> None:
    now = time.time()
    fresh = fresh_tag()
    assert len(fresh) == 14
    assert not stale_test_topic(f"t-{fresh}.events", now)
    old = f"{int(now - STALE_TOPIC_S - 60):08x}abcdef"
    assert stale_test_topic(f"t-{old}.events.dlq", now)
    assert stale_test_topic(f"c-{old}.models", now)
    assert stale_test_topic("t-0123456789.events", now)  # the old untimed form
    for name in ("streamrec.events", f"t-{old}.other", "bench-x.events", f"x-{old}.events"):
        assert not stale_test_topic(name, now)
