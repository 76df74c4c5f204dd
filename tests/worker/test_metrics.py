"""/metrics and /healthz over real HTTP on loopback."""

from __future__ import annotations

import urllib.error
import urllib.request

from streamrec.worker.metrics import Metrics, MetricsServer


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_metrics_and_health() -> None:
    m = Metrics()
    m.stats.messages += 3
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


def test_health_turns_503_and_the_gauge_0_while_a_dependency_is_down() -> None:
    m = Metrics()
    server = MetricsServer(m, "127.0.0.1:0", stale_after_s=60)
    base = f"http://127.0.0.1:{server.port}"
    try:
        body = _get(base + "/metrics")[1]
        assert b'streamrec_dependency_up{dependency="redis"} 1.0' in body
        assert b'streamrec_dependency_up{dependency="kafka"} 1.0' in body
        m.dependency("redis", up=False)
        assert _get(base + "/healthz") == (503, b"redis down\n")
        m.dependency("kafka", up=False)
        assert _get(base + "/healthz") == (503, b"kafka and redis down\n")
        body = _get(base + "/metrics")[1]
        assert b'streamrec_dependency_up{dependency="redis"} 0.0' in body
        assert b'streamrec_dependency_up{dependency="kafka"} 0.0' in body
        m.dependency("redis", up=True)
        m.dependency("kafka", up=True)
        assert _get(base + "/healthz") == (200, b"ok\n")
    finally:
        server.close()


def test_bulk_histogram_exposes_what_a_prometheus_histogram_would() -> None:
    from prometheus_client import CollectorRegistry, Histogram
    from prometheus_client.exposition import generate_latest

    from streamrec.worker.metrics import BulkHistogram

    buckets = (0.005, 0.01, 0.25, 1.0)
    values = [0.0, 0.005, 0.0051, 0.2, 0.25, 3.0, 1.0, 0.01]
    reference, bulk = CollectorRegistry(), CollectorRegistry()
    h = Histogram("x_seconds", "doc", buckets=buckets, registry=reference)
    for v in values:
        h.observe(v)
    b = BulkHistogram("x_seconds", "doc", buckets)
    bulk.register(b)
    b.observe_many(values[:3])
    b.observe_many(values[3:])
    b.observe_many([])

    def samples(registry: CollectorRegistry) -> list[str]:
        return [line for line in generate_latest(registry).decode().splitlines()
                if line.startswith("x_seconds_") and "_created" not in line]  # fmt: skip

    assert samples(bulk) == samples(reference)


def test_the_counters_are_the_stats_read_at_each_scrape() -> None:
    from dataclasses import fields

    from prometheus_client.exposition import generate_latest

    from streamrec.worker.metrics import COUNTERS, Stats

    m = Metrics()
    st = m.stats
    st.users_updated += 4
    st.refolded += 3
    st.dead_lettered += 2
    st.cold_users += 1
    body = generate_latest(m.registry)
    assert b"streamrec_users_updated_total 7.0" in body  # lists written: batches + re-folds
    assert b"streamrec_events_dead_lettered_total 2.0" in body
    assert b"streamrec_cold_users_total 1.0" in body
    assert b"streamrec_messages_total 0.0" in body
    st.dead_lettered += 1
    assert b"streamrec_events_dead_lettered_total 3.0" in generate_latest(m.registry)
    # Every count is exported, but batches: the batch-size histogram counts those.
    exported = {f for _, _, summed in COUNTERS for f in summed}
    assert {f.name for f in fields(Stats)} - exported == {"batches"}
