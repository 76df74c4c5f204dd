"""``streamrec replay --evaluate``: the prequential evaluation through the real broker, a real
worker and Redis, on generated data with a known drift and on a slice of MovieLens."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.app.cli import main
from streamrec.settings import Settings
from tests.conftest import drop_topics, shared_file


def _check_structure(report: dict, path: Path) -> None:
    for policy in ("live", "static", "popularity"):
        block = report["policies"][policy]
        for metric in ("hr10", "hr50", "ndcg10"):
            assert 0.0 <= block[metric] <= 1.0
            lo, hi = block["ci"][metric]
            assert lo <= block[metric] <= hi
        assert set(block["segments"]) == {"user_known", "user_new", "item_known", "item_new"}
        assert block["hr10"] <= block["hr50"]
    fresh = report["freshness_ms"]
    assert 0 <= fresh["p50"] <= fresh["p95"] <= fresh["p99"] <= fresh["max"]
    assert report["data"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert report["model_versions"] and report["retrains"][0]["outcome"] == "promoted"
    assert report["settings"]["retrain_every_days"] > 0
    assert "live_over_static" in report["lift"]


@pytest.mark.integration
def test_live_beats_static_on_a_known_drift(stack: Callable[..., Settings], tmp_path: Path) -> None:
    from streamrec.app.replay_eval import EvalConfig, run_evaluation
    from streamrec.model.drift import drifting_log, write_csv
    from streamrec.model.params import Params

    s = stack(topic_events_partitions=3)
    data = tmp_path / "drift.csv"
    n = write_csv(data, drifting_log(n_users=90, n_items=200, n_genres=6, days=6, seed=2))
    cfg = EvalConfig(
        path=data,
        report_dir=tmp_path / "report",
        params=Params(factors=16, iterations=8),
        n_boot=200,
        isolate=False,  # the stack fixture's topics and prefix, deleted by it
    )
    report = run_evaluation(s, cfg, echo=print)
    _check_structure(report, data)
    assert report["data"]["events"] == n
    # every event of the second half was replayed, scored and seen by the worker
    assert report["data"]["replayed_events"] == report["data"]["test_events"] == n - n // 2
    assert report["worker"]["messages"] == n and report["worker"]["dead_lettered"] == 0
    # pacing: each read reflected its user's previous event, and each event reached its list
    assert report["pacing"]["timeouts"] == 0
    assert report["stale_reads"]["stale"] == 0 and report["stale_reads"]["reads"] > 0
    assert report["freshness_ms"]["unreflected"] == 0
    assert report["freshness_ms"]["n"] == report["data"]["replayed_events"]
    # several nightly retrains in event time (one day each), through the gate
    assert len(report["retrains"]) >= 3
    live, static = report["policies"]["live"], report["policies"]["static"]
    assert live["hr10"] >= static["hr10"]
    # the drift: users the nightly model does not know get popularity from it, and the live
    # fold-in learns their session's genre from its first plays
    assert live["segments"]["user_new"]["hr10"] > static["segments"]["user_new"]["hr10"]
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("<svg") == 3 and "<script" not in page
    assert json.loads((tmp_path / "report" / "report.json").read_text())["policies"]


@pytest.mark.integration
def test_cli_on_a_movielens_slice(
    infra: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command as a user runs it, CI-sized: the earliest 6000 ratings, 400 replayed; it
    makes a namespace of its own on the shared services and deletes it at the end."""
    from confluent_kafka.admin import AdminClient

    from streamrec.connect import kafka_config, redis_client

    ratings = shared_file("ml-latest-small", "ratings.csv.gz")
    admin = AdminClient(kafka_config(infra))
    before = set(admin.list_topics(timeout=30).topics)
    monkeypatch.setenv("STREAMREC_REDIS_PREFIX", "test-eval")
    out = tmp_path / "report"
    try:
        code = main(
            [
                "replay", str(ratings), "--evaluate", "--report", str(out),
                "--limit", "6000", "--test-limit", "400", "--retrain-every", "365d",
                "--factors", "16", "--iterations", "6", "--bootstrap", "100",
            ]
        )  # fmt: skip
    finally:

        def left_over() -> list[str]:
            made = set(admin.list_topics(timeout=30).topics) - before
            return sorted(t for t in made if t.startswith("eval-"))

        # a deletion reaches the metadata shortly after it is accepted: bounded poll
        deadline = time.monotonic() + 30
        while (left := left_over()) and time.monotonic() < deadline:
            time.sleep(0.5)
        drop_topics(infra, left)
    assert code == 0
    assert not left, f"the evaluation left its topics behind: {left}"
    report = json.loads((out / "report.json").read_text())
    _check_structure(report, ratings)
    assert report["data"]["kind"] == "movielens" and report["data"]["replayed_events"] == 400
    assert report["settings"]["redis_prefix"].startswith("test-eval-eval-")
    assert not list(redis_client(infra).scan_iter(match="test-eval-eval-*", count=1000))
    printed = capsys.readouterr().out
    assert "live / static HR@10" in printed and "report.html" in printed


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--evaluate"], "needs --report"),
        (["--evaluate", "--report", "r", "--speed", "60x"], "drop --speed"),
        (["--evaluate", "--report", "r", "--retrain-every", "soon"], "not a duration"),
    ],
)
def test_cli_usage_errors(
    args: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "e.csv"
    f.write_text("user_id,item_id,timestamp\nu,a,1\nu,b,2\nv,a,3\nv,b,4\n")
    try:
        code: int | str | None = main(["replay", str(f), *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]


def test_cli_needs_timestamps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "e.csv"
    f.write_text("user_id,item_id\nu,a\nu,b\nv,a\nv,b\n")
    assert main(["replay", str(f), "--evaluate", "--report", str(tmp_path / "r")]) == 4
    assert "needs a timestamp column" in capsys.readouterr().err
