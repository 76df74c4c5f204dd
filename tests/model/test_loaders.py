"""MovieLens, Parquet and event loaders, and the dataset dispatcher."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

from streamrec.als.history import Rules, UserState
from streamrec.events import new_event
from streamrec.feedback import event_weight
from streamrec.model.data import (
    build_matrix,
    interactions_from_events,
    load_dataset,
    load_file,
    load_ml1m,
    load_ml100k,
    load_movielens_csv,
    load_parquet,
    rating_weights,
)
from streamrec.model.errors import DataError
from tests.conftest import shared_file


def test_ratings_use_the_shared_feedback_score() -> None:
    w = rating_weights(np.array([5.0, 1.0, 2.5, 4.0, 5.0]))
    assert w.dtype == np.float32
    assert w.tolist() == [2.5, -1.5, 0.0, 1.5, 2.5]
    assert w.tolist() == [event_weight("rating", r) for r in (5.0, 1.0, 2.5, 4.0, 5.0)]


def test_ml_latest_small_from_shared_data() -> None:
    path = shared_file("ml-latest-small", "ratings.csv.gz")
    data = load_movielens_csv(path)
    assert len(data) == 100_836
    assert len(set(data.users.tolist())) == 610
    assert len(set(data.items.tolist())) == 9_724
    # first row: 1,1,4.0,964982703
    assert (data.users[0], data.items[0], float(data.weights[0])) == ("1", "1", 1.5)
    assert data.timestamps is not None and data.timestamps[0] == 964_982_703_000
    assert float(data.weights.max()) == 2.5 and float(data.weights.min()) == -2.0  # 5 and 0.5
    same = load_dataset("ml-latest-small", path.parent.parent)  # the folder holding the folder
    assert len(same) == len(data)


def test_ml100k_tab_separated(tmp_path: Path) -> None:
    d = tmp_path / "ml-100k"
    d.mkdir()
    (d / "u.data").write_text(
        "196\t242\t3\t881250949\n186\t302\t5\t891717742\n\n22\t377\t1\t878887116\n"
    )
    data = load_ml100k(d / "u.data")
    assert data.users.tolist() == ["196", "186", "22"]
    assert data.items.tolist() == ["242", "302", "377"]
    assert data.weights.tolist() == [0.5, 2.5, -1.5]
    assert data.timestamps is not None and data.timestamps[0] == 881_250_949_000
    assert len(load_dataset("ml-100k", tmp_path)) == 3  # finds ml-100k/u.data
    assert len(load_dataset("ml-100k", d)) == 3
    assert len(load_file(d / "u.data")) == 3


def test_ml1m_double_colon_gz(tmp_path: Path) -> None:
    p = tmp_path / "ratings.dat.gz"
    with gzip.open(p, "wt", encoding="latin-1") as f:
        f.write("1::1193::5::978300760\r\n1::661::3::978302109\r\n2::1193::1::978298413\r\n")
    data = load_ml1m(p)
    assert data.users.tolist() == ["1", "1", "2"]
    assert data.weights.tolist() == [2.5, 0.5, -1.5]
    m = build_matrix(data, "linear")
    assert m.confidence.shape == (2, 2)
    assert len(load_dataset("ml-1m", tmp_path)) == 3
    assert len(load_file(p)) == 3


@pytest.mark.parametrize(
    ("loader", "name", "text", "message"),
    [
        (load_ml1m, "ratings.dat", "1::2::5::9\n1::2::5\n", ":2: expected 4 fields"),
        (load_ml100k, "u.data", "1\t2\tfive\t9\n", "bad rating 'five'"),
        (load_movielens_csv, "ratings.csv", "user,movie,rating,ts\n1,2,3,4\n", "expected header"),
        (load_movielens_csv, "ratings.csv", "userId,movieId,rating,timestamp\n", "no rows"),
    ],
)
def test_bad_movielens_files(
    tmp_path: Path, loader: object, name: str, text: str, message: str
) -> None:
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(DataError, match=message):
        loader(p)  # type: ignore[operator]


def test_load_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("ml-25m", tmp_path)
    with pytest.raises(DataError, match="needs a data directory"):
        load_dataset("ml-1m")
    with pytest.raises(DataError, match=r"no ratings\.dat"):
        load_dataset("ml-1m", tmp_path)
    assert len(load_dataset("synthetic")) > 0


def test_load_file_tells_formats_apart(tmp_path: Path) -> None:
    ml = tmp_path / "ratings.csv"
    ml.write_text("userId,movieId,rating,timestamp\n1,10,4.5,1000\n")
    assert load_file(ml).weights.tolist() == [2.0]
    generic = tmp_path / "h.csv"
    generic.write_text("user_id,item_id,weight\nu,a,3\n")
    assert load_file(generic).weights.tolist() == [3.0]
    with pytest.raises(DataError, match="no such file"):
        load_file(tmp_path / "missing.csv")


def test_parquet_without_pyarrow_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "x.parquet"
    p.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match="needs pyarrow"):
        load_parquet(p)


def test_parquet_columns(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is optional and not installed")
    import pyarrow.parquet as pq

    p = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": [1, 1, 2],
                "item_id": ["a", "b", "a"],
                "type": ["play", "rating", "dislike"],
                "value": [90.0, 5.0, None],
                "timestamp": [1_700_000_000, 1_700_000_001, 1_700_000_002],
            }
        ),
        p,
    )
    data = load_file(p)
    assert data.users.tolist() == ["1", "1", "2"]
    assert data.weights.tolist() == [event_weight("play", 90.0), 2.5, -2.0]
    assert data.timestamps is not None and data.timestamps[0] == 1_700_000_000_000

    rated = tmp_path / "ratings.parquet"
    stamp = pa.array([1_700_000_000_123], type=pa.timestamp("ms"))
    pq.write_table(
        pa.table({"user_id": ["u"], "item_id": ["m"], "rating": [1.0], "timestamp": stamp}), rated
    )
    data = load_parquet(rated)
    assert data.weights.tolist() == [-1.5]
    assert data.timestamps is not None and data.timestamps.tolist() == [1_700_000_000_123]
    with pytest.raises(DataError, match="no column 'who'"):
        load_parquet(rated, user_col="who")


def test_events_are_weighted_and_decayed_as_the_worker_does() -> None:
    day = 86_400_000
    t0 = 1_700_000_000_000
    events = [
        new_event("u", "a", "play", 90.0, t0, event_id="e1"),
        new_event("u", "a", "play", 30.0, t0 + 3 * day, event_id="e2"),
        new_event("u", "b", "skip", 5.0, t0 + day, event_id="e3"),
        new_event("u", "c", "rating", 5.0, t0 + 10 * day, event_id="e4"),
        new_event("u", "c", "rating", 5.0, t0 + 10 * day, event_id="e4"),  # a duplicate
        new_event("v", "a", "like", None, t0 + 2 * day, event_id="e5"),
    ]
    plain = interactions_from_events(events)
    assert len(plain) == 5
    assert plain.weights.tolist() == [
        event_weight(e.type, e.value) for e in events[:4] + events[5:]
    ]
    assert plain.timestamps is not None and plain.timestamps.tolist()[0] == t0

    half_life = 7.0 * day
    decayed = interactions_from_events(events, half_life_ms=half_life)
    rules = Rules(
        weights=dict(_default_weights()), half_life_ms=half_life, history_max=500, dedup_window=256
    )
    states = {"u": UserState(), "v": UserState()}
    for e in events:
        states[e.user_id].apply(e, rules)
    ours: dict[tuple[str, str], float] = {}
    for u, i, w in zip(decayed.users, decayed.items, decayed.weights, strict=True):
        ours[(u, i)] = ours.get((u, i), 0.0) + float(w)
    for user, state in states.items():
        for item, total in state.totals(half_life).items():
            assert ours[(user, item)] == pytest.approx(total, rel=1e-5)


def _default_weights() -> dict[str, float]:
    from streamrec.feedback import DEFAULT_WEIGHTS

    return dict(DEFAULT_WEIGHTS)
