"""Training data: loaders for CSV files, HetRec Last.fm 2k and a generated default dataset,
and the user x item confidence matrix built from them with the shared feedback score.
"""

from __future__ import annotations

import csv
import gzip
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from model.errors import DataError
from streamrec.feedback import Transform, confidence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Interactions:
    """Parallel arrays, one entry per (user, item) row of the source; repeats are summed later.

    ``users``/``items``: (n,) object arrays of str; ``weights``: (n,) float32 feedback weights;
    ``timestamps``: (n,) int64 epoch ms, or None when the source has none.
    """

    users: npt.NDArray[np.object_]
    items: npt.NDArray[np.object_]
    weights: npt.NDArray[np.float32]
    timestamps: npt.NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class Matrix:
    """``confidence``: (n_users, n_items) CSR float32 (before alpha), rows sorted by user id."""

    confidence: sp.csr_matrix
    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]


def _open_text(path: Path, encoding: str = "utf-8") -> TextIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return path.open("r", encoding=encoding, newline="")


def load_csv(path: Path) -> Interactions:
    """CSV with a header row: ``user_id,item_id[,weight][,timestamp]`` (``.gz`` allowed).

    ``weight`` defaults to 1 per row; ``timestamp`` is epoch milliseconds (or seconds, when
    every value is below 1e11).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if header[:2] != ["user_id", "item_id"]:
            raise DataError(
                f"{path}: header must start with user_id,item_id (got {','.join(header)!r})"
            )
        has_w = "weight" in header
        has_t = "timestamp" in header
        iw = header.index("weight") if has_w else -1
        it = header.index("timestamp") if has_t else -1
        users: list[str] = []
        items: list[str] = []
        weights: list[float] = []
        stamps: list[int] = []
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                u, i = row[0].strip(), row[1].strip()
                if not u or not i:
                    raise ValueError("empty id")
                w = float(row[iw]) if has_w else 1.0
                if has_t:
                    stamps.append(int(float(row[it])))
            except (ValueError, IndexError) as exc:
                raise DataError(f"{path}:{lineno}: bad row {row!r} ({exc})") from None
            users.append(u)
            items.append(i)
            weights.append(w)
    if not users:
        raise DataError(f"{path}: no rows")
    ts = None
    if has_t:
        ts = np.asarray(stamps, dtype=np.int64)
        if ts.max() < 100_000_000_000:  # seconds, not milliseconds
            ts = ts * 1000
    return Interactions(
        np.asarray(users, dtype=np.object_),
        np.asarray(items, dtype=np.object_),
        np.asarray(weights, dtype=np.float32),
        ts,
    )


def load_lastfm(data_dir: Path) -> Interactions:
    """HetRec 2011 Last.fm 2k ``user_artists.dat[.gz]`` (userID, artistID, weight = plays)."""
    data_dir = Path(data_dir)
    for name in ("user_artists.dat", "user_artists.dat.gz"):
        path = data_dir / name
        if path.is_file():
            break
    else:
        raise DataError(f"{data_dir}: no user_artists.dat or user_artists.dat.gz")
    users: list[str] = []
    items: list[str] = []
    weights: list[float] = []
    with _open_text(path, "latin-1") as f:
        header = f.readline().split()
        if header[:3] != ["userID", "artistID", "weight"]:
            raise DataError(f"{path}: unexpected header {header!r}")
        for line in f:
            parts = line.split()
            if len(parts) == 3:
                users.append(parts[0])
                items.append(parts[1])
                weights.append(float(parts[2]))
    return Interactions(
        np.asarray(users, dtype=np.object_),
        np.asarray(items, dtype=np.object_),
        np.asarray(weights, dtype=np.float32),
    )


def synthetic(
    n_users: int = 2000, n_items: int = 1500, n_genres: int = 12, seed: int = 7
) -> Interactions:
    """A deterministic, realistic listening log; needs nothing outside the repo.

    Items belong to genres and have Zipf-like popularity; each user likes one to three genres
    and draws most plays from them (the rest from the global charts); play counts per
    (user, item) are heavy-tailed. Ids look like ``user-0042`` and ``g03-track-0117``.
    """
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, n_genres, size=n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    popularity = popularity[rng.permutation(n_items)]
    item_ids = np.asarray(
        [f"g{genre[i]:02d}-track-{i:04d}" for i in range(n_items)], dtype=np.object_
    )
    global_p = popularity / popularity.sum()
    by_genre = []
    for g in range(n_genres):
        p = np.where(genre == g, popularity, 0.0)
        by_genre.append(p / p.sum())
    users: list[str] = []
    items: list[str] = []
    weights: list[float] = []
    stamps: list[int] = []
    t0 = 1_700_000_000_000
    for u in range(n_users):
        likes = rng.choice(n_genres, size=rng.integers(1, 4), replace=False)
        n = int(np.clip(rng.lognormal(3.0, 0.7), 5, 300))
        taste = np.mean([by_genre[g] for g in likes], axis=0)
        p = 0.85 * taste + 0.15 * global_p
        chosen = rng.choice(n_items, size=min(n, n_items // 2), replace=False, p=p)
        plays = np.ceil(rng.pareto(1.5, size=len(chosen)) * 3).astype(np.float32) + 1
        users.extend([f"user-{u:04d}"] * len(chosen))
        items.extend(item_ids[chosen])
        weights.extend(plays)
        stamps.extend(t0 + np.sort(rng.integers(0, 30 * 86_400_000, size=len(chosen))))
    return Interactions(
        np.asarray(users, dtype=np.object_),
        np.asarray(items, dtype=np.object_),
        np.asarray(weights, dtype=np.float32),
        np.asarray(stamps, dtype=np.int64),
    )


def build_matrix(data: Interactions, transform: Transform = "log") -> Matrix:
    """Sum weights per (user, item), apply the feedback transform; never densified."""
    if len(data) == 0:
        raise DataError("no interactions")
    user_ids, u_idx = np.unique(data.users.astype(str), return_inverse=True)
    item_ids, i_idx = np.unique(data.items.astype(str), return_inverse=True)
    totals = sp.coo_matrix(
        (data.weights.astype(np.float64), (u_idx, i_idx)), shape=(len(user_ids), len(item_ids))
    ).tocsr()
    totals.sum_duplicates()
    totals.data = confidence(totals.data, transform)
    totals.eliminate_zeros()
    log.info("matrix: %d users x %d items, %d entries", *totals.shape, totals.nnz)
    return Matrix(
        confidence=totals.astype(np.float32),
        user_ids=tuple(user_ids.tolist()),
        item_ids=tuple(item_ids.tolist()),
    )


def iter_rows(data: Interactions) -> Iterator[tuple[str, str, float, int | None]]:
    """(user, item, weight, timestamp ms or None) per row, in source order."""
    for n in range(len(data)):
        ts = int(data.timestamps[n]) if data.timestamps is not None else None
        yield str(data.users[n]), str(data.items[n]), float(data.weights[n]), ts
