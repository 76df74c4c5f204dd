"""``streamrec model list`` and ``streamrec model rollback VERSION`` against the real stack:
the rollback verifies the stored version, rewrites lists, moves the pointer and announces it,
and a running worker swaps to it and keeps its lists following new events."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.app.cli import main
from streamrec.artifact import Model
from streamrec.connect import ensure_topics, redis_client
from streamrec.events import new_event
from streamrec.keys import Keys, parse_list, read_model_pointer
from streamrec.settings import Settings
from tests.conftest import export_settings, wait_for

pytestmark = pytest.mark.integration


def _versions(root: Path) -> tuple[Model, Model]:
    """Two stored versions over the same items (other seeds, so other factors)."""
    from streamrec.model.data import build_matrix, synthetic
    from streamrec.model.params import Params
    from streamrec.model.store import write_version
    from streamrec.model.train import fit

    matrix = build_matrix(synthetic(300, 200, seed=3))
    out = []
    for seed in (1, 2):
        params = Params(factors=8, iterations=4, seed=seed)
        als = fit(matrix, params)
        popularity = np.asarray(matrix.confidence.maximum(0).sum(axis=0), np.float32).ravel()
        factors = np.asarray(als.item_factors, np.float32)
        extra = {"metrics": {"als": {"ndcg@10": 0.1 * seed, "precision@10": 0.05}}}
        out.append(write_version(root, matrix.item_ids, factors, popularity, asdict(params), extra))
    assert out[0].version != out[1].version
    return out[0], out[1]


def _use(monkeypatch: pytest.MonkeyPatch, s: Settings, home: Path) -> None:
    """The CLI reads its settings from the environment: point it at this test's stack."""
    export_settings(monkeypatch, s, "topic_events", "topic_dlq", "topic_models", "topic_items",
                    "consumer_group", "redis_prefix", "topic_events_partitions",
                    "metrics_bind")  # fmt: skip
    monkeypatch.setenv("STREAMREC_HOME", str(home))


def test_model_list_and_rollback_swap_a_running_worker(
    stack: Callable[..., Settings],
    run_worker: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from streamrec.model.publish import live_histories, publish
    from streamrec.producer.producer import EventProducer

    s = stack()
    home = tmp_path / "home"
    root = home / "models"  # the default --models-dir: <home>/models
    old, new = _versions(root)
    _use(monkeypatch, s, home)
    ensure_topics(s)
    client = redis_client(s)
    keys = Keys(s.redis_prefix)
    publish(old, s, client)  # the first model, then a worker that follows the pointer
    worker = run_worker(s)
    users = [f"u{i}" for i in range(5)]
    items = list(old.item_ids[:12])

    def lists(version: str) -> dict[str, dict[str, Any]] | None:
        raw = client.mget([keys.recs(u) for u in users])
        got = {u: parse_list(r) for u, r in zip(users, raw, strict=True) if r is not None}
        ok = len(got) == len(users) and all(v["model_version"] == version for v in got.values())
        return got if ok else None

    with EventProducer(s) as producer:
        for n, u in enumerate(users):
            for item in items[n : n + 3]:
                producer.send(new_event(u, item, "play"))
    wait_for(lambda: lists(old.version), timeout_s=30)

    # The nightly job promotes a new model (lists from the live histories); the worker swaps.
    publish(new, s, client, histories=live_histories(client, keys, users, s.half_life_ms))
    wait_for(lambda: worker.scorer.version == new.version, timeout_s=15)
    wait_for(lambda: lists(new.version), timeout_s=15)

    capsys.readouterr()
    assert main(["model", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["version", "created", "(UTC)", "items", "factors"]
    rows = {line.lstrip("* ").split()[0]: line for line in out[1:]}
    assert set(rows) == {old.version, new.version}
    assert rows[new.version].startswith("*") and not rows[old.version].startswith("*")
    assert "0.2000" in rows[new.version] and "0.1000" in rows[old.version]  # their ndcg@10
    assert main(["model", "list", "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(v["version"], v["live"]) for v in listed] == [
        (old.version, False),
        (new.version, True),
    ]

    # Roll back: verified, every list rewritten under it, the pointer moved, announced.
    assert main(["model", "rollback", old.version]) == 0
    assert f"-> {old.version}" in capsys.readouterr().out
    pointed = read_model_pointer(client, keys)
    assert pointed is not None and pointed.version == old.version
    assert lists(old.version), "the rollback rewrote every user's list under the old version"
    wait_for(lambda: worker.scorer.version == old.version, timeout_s=15)

    # Lists follow: a new event after the rollback is folded in by the swapped worker.
    def recs(user: str) -> dict[str, Any]:
        raw = client.get(keys.recs(user))
        assert raw is not None, f"no list for {user}"
        return parse_list(raw)

    before = recs(users[0])
    fresh = next(i["item_id"] for i in before["items"])  # its top item, now played
    with EventProducer(s) as producer:
        producer.send(new_event(users[0], fresh, "play"))

    def updated() -> dict[str, Any] | None:
        now = recs(users[0])
        return now if now["updated_at_ms"] > before["updated_at_ms"] else None

    after = wait_for(updated, timeout_s=15)
    assert after["model_version"] == old.version
    assert fresh not in [i["item_id"] for i in after["items"]]  # played: never recommended
    client.close()


def test_rollback_refuses_an_unknown_or_corrupt_version(
    stack: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from streamrec.model.publish import publish

    s = stack()
    home = tmp_path / "home"
    old, new = _versions(home / "models")
    _use(monkeypatch, s, home)
    ensure_topics(s)
    client = redis_client(s)
    keys = Keys(s.redis_prefix)
    publish(new, s, client, announce=False)
    capsys.readouterr()
    assert main(["model", "rollback", "19990101T000000Z-00000000"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model version 19990101T000000Z-00000000" in err[0]
    assert old.version in err[0]  # says what is there

    data = bytearray((old.path / "item_factors.npy").read_bytes())
    data[-3] ^= 0x40  # one flipped bit: the checksum no longer matches
    (old.path / "item_factors.npy").write_bytes(bytes(data))
    assert main(["model", "rollback", old.version]) == 4
    assert "does not match its checksum" in capsys.readouterr().err
    pointed = read_model_pointer(client, keys)
    assert pointed is not None and pointed.version == new.version  # nothing moved
    shutil.rmtree(old.path)
    client.close()
