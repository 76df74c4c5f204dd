"""Training data loaders and the confidence matrix."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from streamrec.model.data import build_matrix, load_csv, load_lastfm, synthetic
from streamrec.model.errors import DataError
from tests.conftest import shared_file


def test_csv_with_weights_and_second_timestamps(tmp_path: Path) -> None:
    p = tmp_path / "d.csv"
    p.write_text(
        "user_id,item_id,weight,timestamp\nu1,a,2,1700000000\nu1,a,3,1700000001\n"
        "u2,b,1,1700000002\n"
    )
    data = load_csv(p)
    assert len(data) == 3
    assert data.timestamps is not None and data.timestamps[0] == 1_700_000_000_000
    m = build_matrix(data, "linear")
    assert m.user_ids == ("u1", "u2") and m.item_ids == ("a", "b")
    assert m.confidence.toarray().tolist() == [[5.0, 0.0], [0.0, 1.0]]  # repeats summed


def test_log_transform_keeps_sign(tmp_path: Path) -> None:
    p = tmp_path / "d.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write("user_id,item_id,weight\nu,a,9\nu,b,-3\n")
    m = build_matrix(load_csv(p), "log")
    np.testing.assert_allclose(m.confidence.toarray()[0], [np.log(10), -np.log(4)], rtol=1e-6)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user,item\nu,a\n", "header must start"),
        ("user_id,item_id,weight\nu,a,lots\n", ":2: bad row"),
        ("user_id,item_id\n", "no rows"),
    ],
)
def test_bad_csv(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(DataError, match=message):
        load_csv(p)


def test_synthetic_is_deterministic_and_genre_structured() -> None:
    a, b = synthetic(200, 300, seed=1), synthetic(200, 300, seed=1)
    assert list(a.items) == list(b.items) and np.array_equal(a.weights, b.weights)
    assert list(a.items) != list(synthetic(200, 300, seed=2).items)
    # Most of a user's plays fall in few genres (the structure ALS should find).
    first = [i.split("-")[0] for u, i in zip(a.users, a.items, strict=True) if u == "user-0000"]
    top3 = sorted((first.count(g) for g in set(first)), reverse=True)[:3]
    assert sum(top3) / len(first) > 0.6


def test_lastfm_from_shared_data() -> None:
    path = shared_file("hetrec2011-lastfm-2k", "user_artists.dat.gz")
    data = load_lastfm(path.parent)
    assert len(data) == 92_834
    m = build_matrix(data)
    assert m.confidence.shape == (1892, 17632)
    assert m.confidence.nnz == 92_834


def test_lastfm_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="user_artists"):
        load_lastfm(tmp_path)
