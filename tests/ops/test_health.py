"""Unit tests of the worker's additions for operators (worker/metrics.py): the retrain record
as gauges, /livez, and /healthz while the worker waits for a first model."""

from __future__ import annotations

import json

from prometheus_client.exposition import generate_latest

from streamrec.worker.metrics import Metrics, MetricsServer
from tests.ops.conftest import http_get


def test_metrics_export_the_record_as_gauges() -> None:
    """Unit: a record as ``record_outcome`` writes it, as the worker exports it."""
    m = Metrics()
    assert b"streamrec_retrain" not in generate_latest(m.registry)  # no run recorded yet
    m.retrain_record(json.dumps({
        "outcome": "kept", "finished_at_ms": 1_700_000_000_500, "duration_s": 12.5,
        "last_completed_at_ms": 1_700_000_000_500,
        "metrics": {"als": {"ndcg@10": 0.25}, "live": {"ndcg@10": 0.3}},
    }))  # fmt: skip
    text = generate_latest(m.registry).decode()
    assert 'streamrec_retrain_last_outcome{outcome="kept"} 1.0' in text
    assert 'streamrec_retrain_last_outcome{outcome="promoted"} 0.0' in text
    assert 'streamrec_retrain_last_outcome{outcome="failed"} 0.0' in text
    assert "streamrec_retrain_last_finished_timestamp_seconds 1.7000000005e+09" in text
    assert "streamrec_retrain_last_duration_seconds 12.5" in text
    assert 'streamrec_retrain_last_metric{metric="ndcg@10",model="live"} 0.3' in text
    m.retrain_record(b"{not json")  # a malformed value keeps what was exported
    assert 'outcome="kept"} 1.0' in generate_latest(m.registry).decode()
    m.retrain_record(None)  # the key deleted: nothing exported
    assert b"streamrec_retrain" not in generate_latest(m.registry)


def test_waiting_for_a_model_is_alive_but_not_ready() -> None:
    m = Metrics()
    server = MetricsServer(m, "127.0.0.1:0", stale_after_s=60)
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert http_get(base + "/healthz") == (200, b"ok\n")
        assert b"streamrec_model_missing 0.0" in http_get(base + "/metrics")[1]
        m.wait_for("a model")
        assert http_get(base + "/healthz") == (503, b"waiting for a model\n")
        assert http_get(base + "/livez") == (200, b"ok\n")
        assert b"streamrec_model_missing 1.0" in http_get(base + "/metrics")[1]
        m.dependency("redis", up=False)  # Redis is not up yet either: that is said first
        assert http_get(base + "/healthz") == (503, b"redis down\n")
        m.dependency("redis", up=True)
        m.wait_for(None)
        assert http_get(base + "/healthz") == (200, b"ok\n")
        assert b"streamrec_model_missing 0.0" in http_get(base + "/metrics")[1]
    finally:
        server.close()


def test_livez_is_503_only_when_the_loop_is_stuck() -> None:
    m = Metrics()
    server = MetricsServer(m, "127.0.0.1:0", stale_after_s=0.5)
    base = f"http://127.0.0.1:{server.port}"
    try:
        m._last_loop_mono -= 1.0  # the loop last turned a second ago
        assert http_get(base + "/livez") == (503, b"stale\n")
        assert http_get(base + "/healthz") == (503, b"stale\n")
        # Waiting out an outage is not being stuck: alive, not ready.
        m.dependency("kafka", up=False)
        assert http_get(base + "/livez") == (200, b"ok\n")
        assert http_get(base + "/healthz") == (503, b"kafka down\n")
        m.dependency("kafka", up=True)
        m.looped()
        assert http_get(base + "/livez") == (200, b"ok\n")
    finally:
        server.close()
    assert http_get(base + "/livez")[0] == 0  # closed: nothing answers
