"""/metrics and /healthz over real HTTP on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request

from worker.metrics import Metrics, MetricsServer


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_metrics_and_health() -> None:
    m = Metrics()
    m.messages.inc(3)
    m.stage("decode").observe(0.002)
    m.model_loaded("v1")
    m.model_loaded("v2")
    server = MetricsServer(m, "127.0.0.1:0", stale_after_s=60)
    base = f"http://127.0.0.1:{server.port}"
    try:
        code, body = _get(base + "/metrics")
        assert code == 200
        assert b"streamrec_messages_total 3.0" in body
        assert b'streamrec_stage_seconds_count{stage="decode"} 1.0' in body
        assert b'streamrec_model_info{version="v2"} 1.0' in body
        assert b'version="v1"' not in body  # only the serving model is reported
        assert _get(base + "/healthz") == (200, b"ok\n")
        assert _get(base + "/nope")[0] == 404
    finally:
        server.close()


def test_health_turns_503_when_the_loop_stalls() -> None:
    m = Metrics()
    server = MetricsServer(m, "127.0.0.1:0", stale_after_s=0.0)
    try:
        m._last_loop_mono -= 1.0  # the loop last turned a second ago
        assert _get(f"http://127.0.0.1:{server.port}/healthz") == (503, b"stale\n")
    finally:
        server.close()
