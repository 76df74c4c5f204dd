"""The nightly retrain against the real broker and Redis: promote, refuse, no gap."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import streamrec.model.retrain as retrain_module
from streamrec.als.history import UserState
from streamrec.als.scorer import Scorer
from streamrec.artifact import load_model
from streamrec.connect import ensure_topics, read_ranges, redis_client
from streamrec.events import new_event
from streamrec.keys import Keys, read_histories
from streamrec.model.data import synthetic
from streamrec.model.params import Params
from streamrec.model.publish import publish
from streamrec.model.retrain import RetrainConfig, retrain
from streamrec.model.snapshot import Snapshot
from streamrec.model.store import versions
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from streamrec.worker.loop import Worker
from tests.conftest import log_end, wait_for

pytestmark = pytest.mark.integration

FAST = Params(factors=16, iterations=6, regularization=1.0, alpha=4.0)


def _events(s: Settings, items: tuple[str, ...], users: int, per_user: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with EventProducer(s) as p:
        for u in range(users):
            # each user sticks to one genre, so the holdout is predictable
            genre = [i for i in items if i.startswith(f"g{u % 12:02d}")] or list(items)
            for _ in range(per_user):
                p.send(new_event(f"user-{u:04d}", str(rng.choice(genre)), "play", value=60.0))


def test_retrain_promotes_publishes_and_prunes(
    stack: Callable[..., Settings], tmp_path: Path
) -> None:
    s = stack()
    ensure_topics(s)
    base = synthetic(400, 300, seed=11)
    items = tuple(sorted(set(base.items.astype(str))))
    _events(s, items, users=60, per_user=8, seed=1)
    client, keys = redis_client(s), Keys(s.redis_prefix)
    root = tmp_path / "models"
    cfg = RetrainConfig(
        models_dir=root,
        base=base,
        base_name="synthetic",
        params=FAST,
        keep=2,
        report_dir=tmp_path / "report",
    )
    first = retrain(s, cfg, client, echo=lambda _l: None)
    assert first.promoted, first.reason
    model = load_model(root / str(first.version))
    snap = model.manifest["kafka_snapshot"]
    assert snap["topic"] == s.topic_events
    assert sum(snap["offsets"].values()) == 60 * 8
    pointer = json.loads(client.get(keys.model) or b"{}")
    assert pointer["version"] == first.version
    # every known user has a list under the new version, never containing their own items
    rec = json.loads(client.get(keys.recs("user-0003")) or b"{}")
    assert rec["model_version"] == first.version and len(rec["items"]) == s.top_n
    sim = json.loads(client.get(keys.similar(items[0])) or b"{}")
    assert sim["item_id"] == items[0] and items[0] not in {i["item_id"] for i in sim["items"]}
    assert json.loads(client.get(keys.popular) or b"{}")["model_version"] == first.version
    html = (tmp_path / "report" / "report.html").read_text()
    assert "promoted" in html and "<svg" in html
    assert json.loads((tmp_path / "report" / "report.json").read_text())["promoted"]

    for seed in (2, 3):  # two more promotions: only the last two versions stay
        again = retrain(
            s,
            RetrainConfig(
                models_dir=root, base=base, params=FAST, keep=2, seed=seed, tolerance=1.0
            ),
            client,
            echo=lambda _l: None,
        )
        assert again.promoted, again.reason
    kept = [d.name for d in versions(root)]
    assert len(kept) == 2 and str(again.version) in kept
    # each promotion was announced on the models topic, after the pointer moved to it
    end = {0: log_end(s, s.topic_models)}
    announced = [(m.key(), m.value()) for m in read_ranges(s, s.topic_models, {0: (0, end[0])},
                                                           "g-announcements", 30)]  # fmt: skip
    assert [k.decode() for k, _ in announced if k] == [
        str(first.version),
        *[d.name for d in versions(root)],
    ]
    assert announced[-1][1] == client.get(keys.model)


def test_broken_candidate_is_refused(stack: Callable[..., Settings], tmp_path: Path) -> None:
    s = stack()
    ensure_topics(s)
    client, keys = redis_client(s), Keys(s.redis_prefix)
    base = synthetic(400, 300, seed=12)
    # A candidate whose factors are crushed to zero by regularization: no better than chance.
    broken = Params(factors=4, iterations=2, regularization=1e9, alpha=1.0)
    result = retrain(
        s,
        RetrainConfig(models_dir=tmp_path / "m", base=base, params=broken, read_kafka=False),
        client,
        echo=lambda _l: None,
    )
    assert not result.promoted
    assert "popularity" in result.reason
    assert client.get(keys.model) is None  # nothing was published
    assert versions(tmp_path / "m") == []
    assert retrain_module.EXIT_KEPT == 5


def test_events_during_a_retrain_all_show_up_afterwards(
    stack: Callable[..., Settings],
    small_model: Path,
    tmp_path: Path,
    run_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = stack()
    ensure_topics(s)
    client, keys = redis_client(s), Keys(s.redis_prefix)
    old = load_model(small_model)
    publish(old, s, client, histories=None, similar_n=0)
    worker = run_worker(s)
    items = old.item_ids
    with EventProducer(s) as p:
        for u in range(20):
            p.send(new_event(f"early-{u}", items[u], "play"))
    wait_for(lambda: client.get(keys.recs("early-19")), 10)

    late_users = [f"late-{u}" for u in range(15)]
    real_read = retrain_module.read_window

    def read_then_more_events(settings: Settings, since_ms: int) -> Snapshot:
        snap = real_read(settings, since_ms)
        with EventProducer(s) as p:  # after the snapshot, before the publish
            for n, u in enumerate(late_users):
                p.send(new_event(u, items[40 + n], "like"))
        wait_for(lambda: client.get(keys.recs(late_users[-1])), 10)  # the old model saw them
        return snap

    monkeypatch.setattr(retrain_module, "read_window", read_then_more_events)
    base = synthetic(400, 300, seed=3)
    result = retrain(
        s,
        RetrainConfig(models_dir=tmp_path / "models", base=base, params=FAST, tolerance=1.0),
        client,
        echo=lambda _l: None,
    )
    assert result.promoted, result.reason
    new = result.version
    wait_for(lambda: worker.scorer.version == new, 15)
    wait_for(lambda: worker.stats.refolded >= len(late_users), 10)
    scorer = Scorer.create(load_model(tmp_path / "models" / str(new)), n=s.top_n)

    def fresh_list(user: str) -> Callable[[], bytes | str | None]:
        def check() -> bytes | str | None:
            raw = client.get(keys.recs(user))
            return raw if raw and json.loads(raw)["model_version"] == new else None

        return check

    for n, user in enumerate(late_users):
        value = json.loads(wait_for(fresh_list(user), 10))
        got = [i["item_id"] for i in value["items"]]
        assert items[40 + n] not in got
        state = UserState.from_json(read_histories(client, keys, [user])[user])
        want, _, _ = scorer.recommend({user: state.totals(s.half_life_ms)})
        assert got == [i for i, _ in want[0][1]]
