"""The dashboard and the alerts against a live worker: every metric they read is one a worker
serving a retrained model exports, and a real Prometheus (Debian's binary) scraping that
worker answers the dashboard's queries with the worker's real figures."""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamrec.connect import ensure_topics, redis_client
from streamrec.settings import Settings
from streamrec.worker.loop import Worker
from tests.conftest import wait_for
from tests.ops.conftest import DASHBOARD, PROMETHEUS_DIR, debian_tool, free_port, http_get
from tests.ops.stack import exported_names, produce, queried_names, real_retrain

pytestmark = pytest.mark.integration

JOB = "streamrec-worker"  # the job name alerts.yml and the ServiceMonitor use
#: Declared by every worker (``# TYPE`` line) but with samples only once the situation arises:
#: the per-partition rebuild gauges after Redis lost a partition's state (README "Losing Redis").
CONDITIONAL = {"streamrec_rebuild_remaining_messages", "streamrec_rebuild_remaining_lists"}


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard query, Grafana's variables filled in."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "5m").replace("$job", JOB)
            out.append((panel["title"], expr))
    return out


def alert_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def _serving_worker(
    stack: Callable[..., Settings], run_worker: Callable[..., Worker], tmp_path: Path, events: int
) -> tuple[Settings, Worker]:
    """A worker serving the model a real retrain promoted, ``events`` events applied."""
    s = stack()
    ensure_topics(s)
    result = real_retrain(s, redis_client(s), tmp_path / "models")
    assert result.promoted, result.reason
    w = run_worker(s)
    produce(s, events)
    wait_for(lambda: w.stats.decoded >= events, timeout_s=60)
    return s, w


def test_every_dashboard_and_alert_metric_is_exported_by_a_live_worker(
    stack: Callable[..., Settings], run_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    _s, w = _serving_worker(stack, run_worker, tmp_path, events=50)
    assert w.server is not None
    base = f"http://127.0.0.1:{w.server.port}"
    # The retrain record is read with the pointer (every 2 s): wait until it is exported.
    wait_for(lambda: b"streamrec_retrain_last_outcome" in http_get(base + "/metrics")[1], 30)
    code, body = http_get(base + "/metrics")
    assert code == 200
    text = body.decode()
    exported = exported_names(text)
    for name in CONDITIONAL:
        assert f"# TYPE {name} gauge" in text.splitlines(), name
    exported |= CONDITIONAL
    missing = {
        (where, name)
        for where, expr in dashboard_exprs() + alert_exprs()
        for name in queried_names(expr)
        if name not in exported
    }
    assert not missing, f"read by the dashboard or alerts, not exported: {sorted(missing)}"
    assert len({n for _, e in dashboard_exprs() for n in queried_names(e)}) >= 20


@pytest.fixture()
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """Factory: a Prometheus scraping 127.0.0.1:PORT every second as job streamrec-worker,
    with the alert rules loaded; returns its base URL. Stopped at teardown."""
    binary = debian_tool("prometheus")
    procs: list[subprocess.Popen[bytes]] = []

    def start(target_port: int) -> str:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
            "scrape_configs": [
                {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
            ],
        }
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={cfg}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(url + "/-/ready")[0] == 200 or procs[-1].poll() is not None, 90)
        assert procs[-1].poll() is None, (tmp_path / "prometheus.log").read_text()
        return url

    yield start
    for p in procs:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def _api(url: str, path: str, **params: str) -> Any:
    code, body = http_get(f"{url}/api/v1/{path}?{urllib.parse.urlencode(params)}")
    assert code == 200, body[:500]
    reply = json.loads(body)
    assert reply["status"] == "success", reply
    return reply["data"]


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    data = _api(url, "query", query=expr)
    assert data["resultType"] == "vector", (expr, data)
    return list(data["result"])


def _value(url: str, expr: str) -> float | None:
    result = _query(url, expr)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_prometheus_scrapes_a_live_worker_and_answers_the_dashboard(
    stack: Callable[..., Settings],
    run_worker: Callable[..., Worker],
    tmp_path: Path,
    prometheus: Callable[[int], str],
) -> None:
    s, w = _serving_worker(stack, run_worker, tmp_path, events=40)
    assert w.server is not None
    url = prometheus(w.server.port)

    def target_up() -> bool:
        active = _api(url, "targets")["activeTargets"]
        return any(t["labels"]["job"] == JOB and t["health"] == "up" for t in active)

    wait_for(target_up, timeout_s=60, interval_s=0.5)
    # Events applied while Prometheus watches: the rate over the dashboard's window is > 0.
    produce(s, 60, seed=1)
    wait_for(lambda: w.stats.decoded >= 100, timeout_s=60)
    wait_for(lambda: _value(url, f'sum(streamrec_events_decoded_total{{job="{JOB}"}})') == 100,
             timeout_s=30, interval_s=0.5)  # fmt: skip
    applied = next(e for t, e in dashboard_exprs()
                   if t == "Events/s in and applied" and "events_decoded" in e)  # fmt: skip
    rate = wait_for(lambda: _value(url, applied), timeout_s=30, interval_s=0.5)
    assert rate is not None and rate > 0

    # Every dashboard query is valid PromQL for this Prometheus; those about what happened
    # here have the worker's figures.
    empty = [title for title, expr in dashboard_exprs() if not _query(url, expr)]
    # Only the rebuild panel may be empty here (no rebuild ran: CONDITIONAL).
    assert set(empty) <= {"Rebuilds under way"}, empty
    p99 = next(e for t, e in dashboard_exprs() if t == "Event -> Redis latency" and "0.99" in e)
    latency = _value(url, p99)
    assert latency is not None and 0 < latency <= 30  # the histogram's largest finite bucket
    outcome = next(e for t, e in dashboard_exprs() if t == "Last retrain outcome")
    by_outcome = {r["metric"]["outcome"]: float(r["value"][1]) for r in _query(url, outcome)}
    assert by_outcome == {"promoted": 1.0, "kept": 0.0, "failed": 0.0}
    version = next(e for t, e in dashboard_exprs() if t == "Serving model version")
    (serving,) = _query(url, version)
    assert serving["metric"]["version"] == w.scorer.version
    ndcg = next(e for t, e in dashboard_exprs() if t == "Last retrain NDCG@10")
    models = {r["metric"]["model"] for r in _query(url, ndcg)}
    assert {"als", "popularity"} <= models

    # The alert rules are loaded and evaluate without error; a healthy worker fires none
    # of the worker alerts.
    def rules_evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in _api(url, "rules")["groups"] for r in g["rules"]]
        return rules if rules and all(r["health"] == "ok" for r in rules) else None

    rules = wait_for(rules_evaluated, timeout_s=30, interval_s=0.5)
    assert {r["name"] for r in rules} == {name for name, _ in alert_exprs()}
    firing = {a["labels"]["alertname"] for a in _api(url, "alerts")["alerts"]}
    assert not firing & {"StreamrecWorkerDown", "StreamrecNoWorkers", "StreamrecDependencyDown"}
