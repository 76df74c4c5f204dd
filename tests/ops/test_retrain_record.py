"""The nightly job's outcome without a Pushgateway: real retrain runs (promoted, kept, failed)
write ``<p>:retrain:last``, and a running worker's /metrics exports it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.connect import ensure_topics, redis_client
from streamrec.keys import Keys, read_model_pointer
from streamrec.model.errors import ModelError
from streamrec.model.retrain import RetrainConfig, record_outcome, retrain
from streamrec.settings import Settings
from streamrec.worker.loop import Worker
from tests.conftest import wait_for
from tests.ops.conftest import http_get
from tests.ops.stack import FAST, real_retrain

pytestmark = pytest.mark.integration


def _outcome_line(text: str, outcome: str) -> str | None:
    prefix = f'streamrec_retrain_last_outcome{{outcome="{outcome}"}} '
    return next((line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)),
                None)  # fmt: skip


def test_promoted_kept_and_failed_runs_are_recorded_and_exported(
    stack: Callable[..., Settings], run_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    s = stack()
    ensure_topics(s)
    client, keys = redis_client(s), Keys(s.redis_prefix)
    models = tmp_path / "models"
    assert client.get(keys.retrain_last) is None

    before = int(time.time() * 1000)
    promoted = real_retrain(s, client, models)
    assert promoted.promoted, promoted.reason
    rec = json.loads(client.get(keys.retrain_last) or b"{}")
    pointer = read_model_pointer(client, keys)
    assert pointer is not None and rec["version"] == pointer.version == promoted.version
    assert rec["outcome"] == "promoted" and rec["live_version"] is None
    assert before <= rec["started_at_ms"] <= rec["finished_at_ms"] <= int(time.time() * 1000)
    assert rec["last_completed_at_ms"] == rec["finished_at_ms"]
    assert rec["duration_s"] == pytest.approx((rec["finished_at_ms"] - rec["started_at_ms"]) / 1000)
    assert promoted.evaluation is not None
    assert rec["metrics"]["als"]["ndcg@10"] == promoted.evaluation.result("als").metrics["ndcg@10"]
    assert set(rec["metrics"]) == {"als", "popularity"}  # no live model yet

    w = run_worker(s)
    assert w.server is not None
    url = f"http://127.0.0.1:{w.server.port}/metrics"
    wait_for(lambda: _outcome_line(http_get(url)[1].decode(), "promoted") == "1.0", 30)

    # The gate keeps the live model (no candidate is 100x better than popularity): exit 5's run.
    kept = real_retrain(s, client, models, min_lift=100.0)
    assert not kept.promoted
    rec = json.loads(client.get(keys.retrain_last) or b"{}")
    assert rec["outcome"] == "kept" and rec["version"] is None
    assert rec["live_version"] == promoted.version and "popularity" in rec["reason"]
    # the same events as the promoted run's: none newer than the live model's data, so the
    # live model is not scored (it would be scored on pairs it was trained on)
    assert set(rec["metrics"]) == {"als", "popularity"}
    kept_at = rec["finished_at_ms"]
    assert rec["last_completed_at_ms"] == kept_at
    wait_for(lambda: _outcome_line(http_get(url)[1].decode(), "kept") == "1.0", 30)

    # A run that fails (no data at all): recorded as failed, the last completed run kept.
    cfg = RetrainConfig(models_dir=models, params=FAST, read_kafka=False)
    with pytest.raises(ModelError, match="no training data"):
        retrain(s, cfg, client, echo=lambda _line: None)
    rec = json.loads(client.get(keys.retrain_last) or b"{}")
    assert rec["outcome"] == "failed" and "no training data" in rec["reason"]
    assert rec["last_completed_at_ms"] == kept_at and rec["metrics"] is None
    assert read_model_pointer(client, keys) == pointer  # the live model still serves

    def exported() -> str | None:
        text = http_get(url)[1].decode()
        return text if _outcome_line(text, "failed") == "1.0" else None

    text = wait_for(exported, 30)
    assert _outcome_line(text, "kept") == "0.0" and _outcome_line(text, "promoted") == "0.0"
    name = "streamrec_retrain_last_completed_timestamp_seconds "
    completed = [float(line.split()[1]) for line in text.splitlines() if line.startswith(name)]
    assert completed == [pytest.approx(kept_at / 1000)]


def test_the_record_never_holds_credentials(stack: Callable[..., Settings]) -> None:
    s = stack()
    client, keys = redis_client(s), Keys(s.redis_prefix)
    reason = "InfraError: redis://svc:hunter2@cache:6379/0 does not answer"
    rec = record_outcome(client, keys, "failed", 0, reason=reason)
    assert rec is not None
    raw = client.get(keys.retrain_last)
    assert isinstance(raw, bytes)
    stored = raw.decode()
    assert "hunter2" not in stored and "redis://***@cache:6379/0" in stored
    assert json.loads(stored)["last_completed_at_ms"] is None  # nothing completed before
