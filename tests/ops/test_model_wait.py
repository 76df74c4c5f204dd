"""A fresh install: a worker started before any model is published waits, alive but not ready,
and serves as soon as one is (STREAMREC_MODEL_WAIT_S); real Kafka and Redis."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.artifact import load_model
from streamrec.connect import ensure_topics, redis_client
from streamrec.errors import InfraError
from streamrec.events import new_event
from streamrec.keys import Keys
from streamrec.model.publish import publish
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from streamrec.worker.loop import Worker
from tests.conftest import wait_for
from tests.ops.conftest import free_port, http_get

pytestmark = pytest.mark.integration


def test_a_worker_waits_not_ready_for_a_first_model_then_serves(
    stack: Callable[..., Settings], small_model: Path
) -> None:
    port = free_port()
    s = stack(model_wait_s=120, metrics_bind=f"127.0.0.1:{port}")
    ensure_topics(s)
    base = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            Worker(s, stop).run()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run, name="worker", daemon=True)
    t.start()
    try:
        wait_for(lambda: http_get(base + "/healthz") == (503, b"waiting for a model\n"), 30)
        assert http_get(base + "/livez") == (200, b"ok\n")
        assert b"streamrec_model_missing 1.0" in http_get(base + "/metrics")[1]
        time.sleep(1.5)  # a poll or two later: still waiting, not exited
        assert t.is_alive() and not errors

        model = load_model(small_model)
        client = redis_client(s)
        publish(model, s, client)
        wait_for(lambda: http_get(base + "/healthz") == (200, b"ok\n"), 30)
        assert b"streamrec_model_missing 0.0" in http_get(base + "/metrics")[1]
        with EventProducer(s) as p:
            p.send(new_event("fresh-user", model.item_ids[0], "play", value=30.0))
        key = Keys(s.redis_prefix).recs("fresh-user")
        raw = wait_for(lambda: client.get(key), 30)
        assert json.loads(raw)["model_version"] == model.version
    finally:
        stop.set()
        t.join(timeout=30)
    assert not t.is_alive() and not errors, errors


def test_the_wait_is_bounded(stack: Callable[..., Settings]) -> None:
    s = stack(model_wait_s=1.0)
    started = time.monotonic()
    with pytest.raises(InfraError, match=r"is not set in Redis after waiting 1 s"):
        Worker(s)
    assert 1.0 <= time.monotonic() - started < 15


def test_no_wait_by_default_and_a_stop_ends_the_wait(stack: Callable[..., Settings]) -> None:
    with pytest.raises(InfraError, match="STREAMREC_MODEL_WAIT_S"):
        Worker(stack())  # model_wait_s = 0: exits at once, as before
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            Worker(stack(model_wait_s=600), stop)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.5)
    stop.set()
    t.join(timeout=10)
    assert not t.is_alive()
    assert len(errors) == 1 and "stopped while waiting for a model" in str(errors[0])
