"""Every kind of client over TLS and SASL against a real broker (``conftest.secure_broker``):
SASL_SSL with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN, SSL with a client certificate (mTLS);
wrong credentials and untrusted certificates end with one line and exit 7."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamrec.artifact import load_model
from streamrec.connect import ensure_topics, read_ranges, redis_client
from streamrec.errors import AuthError
from streamrec.events import decode, new_event
from streamrec.exits import Exit
from streamrec.keys import Keys
from streamrec.model.publish import publish
from streamrec.model.snapshot import read_window
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from tests.conftest import wait_for
from tests.security.conftest import PLAIN, SCRAM_256, SCRAM_512, SecureBroker

pytestmark = pytest.mark.integration

#: A command refused by the broker must end well within this (it is told within about a
#: second; the bound leaves room for the interpreter's start on a busy 2-core machine).
REFUSED_WITHIN_S = 30.0


def _roundtrip(s: Settings, n: int = 5) -> list[str]:
    """Create the topics, produce ``n`` events and read them back, all with ``s``."""
    ensure_topics(s)
    with EventProducer(s) as p:
        for i in range(n):
            p.send(new_event(f"u{i}", f"i{i}", "play"))
    ranges = {part: (0, 1 << 62) for part in range(s.topic_events_partitions)}
    got: list[str] = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        got = [
            decode(m.value()).user_id
            for m in read_ranges(s, s.topic_events, ranges, "sec-read", timeout_s=30)
        ]
    return sorted(got)


def test_worker_over_sasl_ssl_scram_follows_a_model_and_writes_lists(
    secure_broker: SecureBroker,
    secure_stack: Callable[..., Settings],
    run_worker: Callable[..., Any],
    small_model: Path,
) -> None:
    # Every client here talks SASL_SSL/SCRAM-SHA-256: topic creation (admin), the model
    # announcement (producer), the worker's consumer, its announcement consumer and its
    # broker probe, the event producer and the dead-letter producer.
    s = secure_stack(**secure_broker.sasl_ssl(*SCRAM_256))
    assert s.kafka_common()["security.protocol"] == "SASL_SSL"
    keys, client = Keys(s.redis_prefix), redis_client(s)
    model = load_model(small_model)
    ensure_topics(s)
    publish(model, s, client)
    run_worker(s)
    items = list(model.item_ids[:3])
    with EventProducer(s) as p:
        for item in items:
            p.send(new_event("sasl-user", item, "play", value=60.0))
        p.send_raw(b"sasl-user", b"not an event")
    value = wait_for(lambda: client.get(keys.recs("sasl-user")), timeout_s=30)
    rec = json.loads(value)
    assert rec["model_version"] == model.version
    assert len(rec["items"]) == s.top_n
    assert not set(items) & {i["item_id"] for i in rec["items"]}
    # the garbage went to the dead-letter topic, over SASL_SSL too
    letters = wait_for(
        lambda: list(read_ranges(s, s.topic_dlq, {0: (0, 1)}, "sec-dlq", timeout_s=10)),
        timeout_s=30,
    )
    assert letters[0].value() == b"not an event"


@pytest.mark.parametrize(("mechanism", "user", "password"), [SCRAM_512, PLAIN])
def test_producer_and_reader_over_other_sasl_mechanisms(
    secure_broker: SecureBroker,
    secure_stack: Callable[..., Settings],
    mechanism: str,
    user: str,
    password: str,
) -> None:
    s = secure_stack(**secure_broker.sasl_ssl(mechanism, user, password))
    assert _roundtrip(s) == [f"u{i}" for i in range(5)]


def test_mtls_client_certificate(
    secure_broker: SecureBroker, secure_stack: Callable[..., Settings]
) -> None:
    s = secure_stack(**secure_broker.mtls())
    assert _roundtrip(s, 3) == ["u0", "u1", "u2"]
    # the retrain's reader (a consumer of its own) over mTLS as well
    users = {e.user_id for e in read_window(s, since_ms=0, timeout_s=60).events}
    assert users == {"u0", "u1", "u2"}


def _env(values: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    for key, value in values.items():
        env[f"STREAMREC_{key.upper()}"] = str(value)
    return env


def _cli(args: list[str], values: dict[str, Any]) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "streamrec", *args],
        env=_env(values),
        capture_output=True,
        text=True,
        timeout=REFUSED_WITHIN_S + 30,
        check=False,
    )
    return proc.returncode, proc.stderr, time.monotonic() - started


def _refusals(b: SecureBroker, topic_values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "wrong password": {**topic_values, **b.sasl_ssl(SCRAM_256[0], SCRAM_256[1], "wrong")},
        "unknown user": {**topic_values, **b.sasl_ssl("SCRAM-SHA-512", "mallory", "x")},
        "untrusted broker": {
            **topic_values,
            **b.sasl_ssl(*SCRAM_256, kafka_ssl_ca_file=b.pki.stranger_ca),
        },
        "no client certificate": {
            **topic_values,
            "kafka_bootstrap": f"127.0.0.1:{b.mtls_port}",
            "kafka_security_protocol": "SSL",
            "kafka_ssl_ca_file": b.pki.ca,
        },
    }


@pytest.mark.parametrize(
    "case", ["wrong password", "unknown user", "untrusted broker", "no client certificate"]
)
def test_refused_producer_cli_says_so_in_one_line_and_exits_7(
    secure_broker: SecureBroker, secure_stack: Callable[..., Settings], case: str
) -> None:
    s = secure_stack()
    values = _refusals(secure_broker, {"topic_events": s.topic_events, "kafka_timeout_s": 20})[case]
    rc, err, took = _cli(["produce", "--user", "u", "--item", "i"], values)
    assert rc == Exit.AUTH, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"streamrec: Kafka at {values['kafka_bootstrap']} refused"), err
    assert took < REFUSED_WITHIN_S  # told apart from a broker that is down (20 s here)
    for secret in ("wrong", SCRAM_256[2]):
        assert f"={secret}" not in err and f" {secret} " not in err


def test_refused_worker_exits_7_with_one_line_and_no_secret(
    secure_broker: SecureBroker, secure_stack: Callable[..., Settings], small_model: Path
) -> None:
    s = secure_stack()
    values = {
        "topic_events": s.topic_events,
        "topic_dlq": s.topic_dlq,
        "topic_models": s.topic_models,
        "topic_items": s.topic_items,
        "redis_url": s.redis_url,
        "redis_prefix": s.redis_prefix,
        "metrics_bind": "127.0.0.1:0",
        "kafka_timeout_s": 20,
        **secure_broker.sasl_ssl(SCRAM_256[0], SCRAM_256[1], "hunter2-wrong"),
    }
    rc, err, took = _cli(["worker", "--model", str(small_model)], values)
    assert rc == Exit.AUTH, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"streamrec: Kafka at {values['kafka_bootstrap']} refused"), err
    assert "SASL authentication" in last and "SCRAM-SHA-256" in last, last
    assert "hunter2-wrong" not in err
    assert took < REFUSED_WITHIN_S


def test_refusal_in_process_is_an_auth_error(
    secure_broker: SecureBroker, secure_stack: Callable[..., Settings]
) -> None:
    s = secure_stack(**secure_broker.sasl_ssl(SCRAM_256[0], SCRAM_256[1], "nope"))
    started = time.monotonic()
    with pytest.raises(AuthError, match="refused the connection"):
        EventProducer(s)
    assert time.monotonic() - started < s.kafka_timeout_s


def test_web_service_posts_events_over_sasl_ssl(
    secure_broker: SecureBroker, secure_stack: Callable[..., Settings]
) -> None:
    from streamrec.app.web.api import DemoApp

    s = secure_stack(**secure_broker.sasl_ssl(*SCRAM_512))
    app = DemoApp(s)  # creates the events topic and its producer over SASL_SSL
    try:
        ack = app.post_event({"user_id": "web-user", "item_id": "i9", "type": "like"})
    finally:
        app.close()
    assert ack["delivered"] is True
    ranges = {part: (0, 1 << 62) for part in range(s.topic_events_partitions)}
    got = [decode(m.value()) for m in read_ranges(s, s.topic_events, ranges, "web", 30)]
    assert [(e.user_id, e.type) for e in got] == [("web-user", "like")]
