"""Training data: loaders for CSV files, HetRec Last.fm 2k, MovieLens (ml-latest-small, ml-100k,
ml-1m), Parquet, Kafka events and a generated default dataset, and the user x item confidence
matrix built from them with the shared feedback score.

Every loader returns :class:`Interactions`. Ratings become feedback weights through
``streamrec.feedback.event_weight("rating", value)``, the same score the worker gives a rating
event (5 -> +2.5, 1 -> -1.5), so a model trained on ratings sees what the stream will send it.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from streamrec.events import epoch_ms, epoch_ms_array
from streamrec.feedback import DEFAULT_WEIGHTS, Transform, confidence, decay_to_latest, event_weight
from streamrec.files import open_text
from streamrec.model.datasets import DATASET_FOLDERS, DATASETS
from streamrec.model.errors import DataError

if TYPE_CHECKING:
    from streamrec.events import Event
    from streamrec.model.snapshot import EventColumns

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


def load_csv(path: Path) -> Interactions:
    """CSV with a header row: ``user_id,item_id[,weight][,timestamp]`` (``.gz`` allowed).

    ``weight`` defaults to 1 per row; ``timestamp`` is epoch seconds, milliseconds or ISO 8601,
    by ``streamrec.events.epoch_ms`` (a number below 1e11 is seconds, decided per value).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open_text(path) as f:
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
                    stamps.append(epoch_ms(row[it]))
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
    with open_text(path, "latin-1") as f:
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


def factorize(values: npt.NDArray[Any]) -> tuple[tuple[str, ...], npt.NDArray[np.int64]]:
    """(sorted distinct ids as str, (n,) int64 index of each value among them): what
    ``np.unique(values.astype(str), return_inverse=True)`` gives, 3x faster on ids (a dict
    pass, then a sort of the distinct ids only)."""
    index: dict[str, int] = {}
    codes = np.fromiter(
        (index.setdefault(str(v), len(index)) for v in values.tolist()),
        dtype=np.int64,
        count=len(values),
    )
    seen = list(index)
    order = sorted(range(len(seen)), key=seen.__getitem__)
    rank = np.empty(len(seen), dtype=np.int64)
    rank[order] = np.arange(len(seen), dtype=np.int64)
    return tuple(seen[i] for i in order), rank[codes]


def build_matrix(data: Interactions, transform: Transform = "log") -> Matrix:
    """Sum weights per (user, item), apply the feedback transform; never densified."""
    if len(data) == 0:
        raise DataError("no interactions")
    user_ids, u_idx = factorize(data.users)
    item_ids, i_idx = factorize(data.items)
    totals = sp.coo_matrix(
        (data.weights.astype(np.float64), (u_idx, i_idx)), shape=(len(user_ids), len(item_ids))
    ).tocsr()
    totals.sum_duplicates()
    totals.data = confidence(totals.data, transform)
    totals.eliminate_zeros()
    log.info("matrix: %d users x %d items, %d entries", *totals.shape, totals.nnz)
    return Matrix(
        confidence=totals.astype(np.float32),
        user_ids=user_ids,
        item_ids=item_ids,
    )


def iter_rows(data: Interactions) -> Iterator[tuple[str, str, float, int | None]]:
    """(user, item, weight, timestamp ms or None) per row, in source order."""
    for n in range(len(data)):
        ts = int(data.timestamps[n]) if data.timestamps is not None else None
        yield str(data.users[n]), str(data.items[n]), float(data.weights[n]), ts


# --- MovieLens, Parquet, events, and one entry point per dataset name -------------------------


def rating_weights(
    ratings: npt.NDArray[np.floating], weights: Mapping[str, float] = DEFAULT_WEIGHTS
) -> npt.NDArray[np.float32]:
    """(n,) ratings -> (n,) float32 feedback weights, ``event_weight("rating", r)`` each.

    The shared score is applied once per distinct rating value (a rating scale has few), so
    the result is exactly what the worker adds for the same rating events.
    """
    values, inverse = np.unique(np.asarray(ratings, dtype=np.float64), return_inverse=True)
    table = np.asarray([event_weight("rating", float(v), weights) for v in values], np.float64)
    return table[inverse.ravel()].astype(np.float32)


def _find_line(lines: list[str], start: int, ok: Any) -> int:
    """1-based number of the first line from ``start`` that ``ok`` rejects (for messages)."""
    for n in range(start, len(lines)):
        if lines[n].strip() and not ok(lines[n]):
            return n + 1
    return len(lines)


def _read_columns(
    path: Path, sep: str, n_cols: int, header: bool, encoding: str = "utf-8"
) -> tuple[list[str], npt.NDArray[np.str_]]:
    """Split a delimited text file into a (rows, n_cols) str array, vectorised.

    Returns the header fields ([] without one) and the body. Blank lines are skipped; a row
    with the wrong number of fields raises DataError naming its line.
    """
    with open_text(path, encoding) as f:
        lines = f.read().splitlines()
    head: list[str] = []
    start = 0
    if header:
        if not lines:
            raise DataError(f"{path}: empty file")
        head = [h.strip() for h in lines[0].split(sep)]
        start = 1
    body = [ln for ln in lines[start:] if ln.strip()]
    if not body:
        raise DataError(f"{path}: no rows")
    # One flat field list for the whole file; it has n_cols fields per row only when every
    # row does, so a bad row is looked for (line by line) only when the count is off.
    fields = "\n".join(body).replace(sep, "\n").split("\n")
    if len(fields) != n_cols * len(body):
        n = _find_line(lines, start, lambda ln: len(ln.split(sep)) == n_cols)
        raise DataError(f"{path}:{n}: expected {n_cols} fields separated by {sep!r}")
    table = np.asarray(fields, dtype=np.str_).reshape(len(body), n_cols)
    return head, np.char.strip(table)


def _numbers(column: npt.NDArray[np.str_], dtype: type, path: Path, what: str) -> npt.NDArray[Any]:
    try:
        return column.astype(np.float64).astype(dtype)
    except ValueError:
        for n, v in enumerate(column):
            try:
                float(v)
            except ValueError:
                raise DataError(f"{path}: data row {n + 1}: bad {what} {str(v)!r}") from None
        raise


def _ratings_table(
    table: npt.NDArray[np.str_], path: Path, weights: Mapping[str, float]
) -> Interactions:
    """Columns user, item, rating, timestamp (epoch seconds) -> Interactions."""
    users, items = table[:, 0], table[:, 1]
    if (np.char.str_len(users) == 0).any() or (np.char.str_len(items) == 0).any():
        raise DataError(f"{path}: empty user or item id")
    ratings = _numbers(table[:, 2], np.float64, path, "rating")
    seconds = _numbers(table[:, 3], np.int64, path, "timestamp")
    return Interactions(
        users.astype(np.object_),
        items.astype(np.object_),
        rating_weights(ratings, weights),
        seconds.astype(np.int64) * 1000,
    )


def load_movielens_csv(path: Path, weights: Mapping[str, float] = DEFAULT_WEIGHTS) -> Interactions:
    """MovieLens ``ratings.csv[.gz]`` (ml-latest, ml-latest-small, ml-20m, ml-25m).

    Header ``userId,movieId,rating,timestamp``; timestamp in epoch seconds (stored as ms);
    weight = ``event_weight("rating", rating)``.
    """
    return _load_ratings(path, ",", weights, header=["userid", "movieid", "rating", "timestamp"])


def load_ml100k(path: Path, weights: Mapping[str, float] = DEFAULT_WEIGHTS) -> Interactions:
    """MovieLens 100k ``u.data[.gz]``: tab-separated ``user item rating timestamp``, no header."""
    return _load_ratings(path, "\t", weights, encoding="latin-1")


def load_ml1m(path: Path, weights: Mapping[str, float] = DEFAULT_WEIGHTS) -> Interactions:
    """MovieLens 1M ``ratings.dat[.gz]``: ``UserID::MovieID::Rating::Timestamp``, no header."""
    return _load_ratings(path, "::", weights, encoding="latin-1")


def _load_ratings(
    path: Path,
    sep: str,
    weights: Mapping[str, float],
    header: list[str] | None = None,
    encoding: str = "utf-8",
) -> Interactions:
    """A ratings file of four columns (user, item, rating, timestamp s); ``header``, when the
    file has one, is what its lower-cased names must be."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    head, table = _read_columns(path, sep, 4, header=header is not None, encoding=encoding)
    if header is not None and [h.lower() for h in head] != header:
        raise DataError(f"{path}: expected header userId,movieId,rating,timestamp, got {head!r}")
    data = _ratings_table(table, path, weights)
    log.info("%s: %d ratings", path, len(data))
    return data


def load_parquet(
    path: Path,
    user_col: str = "user_id",
    item_col: str = "item_id",
    weights: Mapping[str, float] = DEFAULT_WEIGHTS,
) -> Interactions:
    """A Parquet file of interactions (needs ``pyarrow``, which is not a dependency).

    Columns: ``user_id``, ``item_id`` (any type; read as strings), then the weight from the
    first of ``weight`` (used as is), ``rating`` (``event_weight("rating", r)``) or
    ``type`` [+ ``value``] (``event_weight(type, value)`` per row, as the worker scores
    events), else 1 per row; optional ``timestamp`` (a timestamp type, or numbers or text read by
    ``streamrec.events.epoch_ms``: a number below 1e11 is epoch seconds, decided per value).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    names = set(table.column_names)
    for col in (user_col, item_col):
        if col not in names:
            raise DataError(f"{path}: no column {col!r} (columns: {sorted(names)})")

    def ids(col: str) -> npt.NDArray[np.object_]:
        column = table.column(col)
        if column.null_count:
            raise DataError(f"{path}: {column.null_count} null value(s) in {col!r}")
        out = np.asarray(column.cast(pa.string()).to_pylist(), dtype=np.object_)
        if any(not v for v in out):
            raise DataError(f"{path}: empty id in {col!r}")
        return out

    def floats(col: str) -> npt.NDArray[np.float64]:
        column = table.column(col)
        if column.null_count:
            raise DataError(f"{path}: {column.null_count} null value(s) in {col!r}")
        return np.asarray(column.cast(pa.float64()).to_numpy(), dtype=np.float64)

    users, items = ids(user_col), ids(item_col)
    if "weight" in names:
        w = floats("weight").astype(np.float32)
    elif "rating" in names:
        w = rating_weights(floats("rating"), weights)
    elif "type" in names:
        types = table.column("type").cast(pa.string()).to_pylist()
        values = table.column("value").to_pylist() if "value" in names else [None] * len(types)
        w = np.asarray(
            [event_weight(t, v, weights) for t, v in zip(types, values, strict=True)], np.float32
        )
    else:
        w = np.ones(len(users), dtype=np.float32)
    ts = None
    if "timestamp" in names:
        column = table.column("timestamp")
        if column.null_count:
            raise DataError(f"{path}: null timestamps")
        if pa.types.is_timestamp(column.type):
            ts = np.asarray(column.cast(pa.timestamp("ms")).cast(pa.int64()).to_numpy(), np.int64)
        else:
            try:
                if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                    ts = np.asarray([epoch_ms(v) for v in column.to_pylist()], np.int64)
                else:
                    ts = epoch_ms_array(floats("timestamp"))
            except ValueError as exc:
                raise DataError(f"{path}: bad timestamp ({exc})") from None
    if not len(users):
        raise DataError(f"{path}: no rows")
    return Interactions(users, items, w, ts)


def interactions_from_events(
    events: Iterable[Event],
    weights: Mapping[str, float] = DEFAULT_WEIGHTS,
    half_life_ms: float | None = None,
    dedup: bool = True,
) -> Interactions:
    """Events (e.g. read back from Kafka) -> one row per event, weighted as the worker weighs it.

    ``weight = event_weight(type, value, weights)`` (pass ``settings.event_weights``). With
    ``half_life_ms`` each weight is decayed to its user's latest event time, which is how
    ``streamrec.als.history.UserState.totals`` decays a history (pass ``settings.half_life_ms``);
    the summed totals then equal the worker's, before its ``history_max`` cut. With ``dedup`` a
    repeated ``event_id`` counts once, as in the worker. Timestamps are kept (epoch ms).
    """
    users: list[str] = []
    items: list[str] = []
    ws: list[float] = []
    stamps: list[int] = []
    seen: set[str] = set()
    for e in events:
        if dedup:
            if e.event_id in seen:
                continue
            seen.add(e.event_id)
        users.append(e.user_id)
        items.append(e.item_id)
        ws.append(event_weight(e.type, e.value, weights))
        stamps.append(int(e.timestamp))
    user_arr = np.asarray(users, dtype=np.object_)
    ts = np.asarray(stamps, dtype=np.int64)
    w = np.asarray(ws, dtype=np.float64)
    if half_life_ms and len(users):
        user_ids, u = factorize(user_arr)
        w = decay_to_latest(w, ts, u, len(user_ids), half_life_ms)
    return Interactions(user_arr, np.asarray(items, dtype=np.object_), w.astype(np.float32), ts)


def interactions_from_columns(
    columns: EventColumns,
    weights: Mapping[str, float] = DEFAULT_WEIGHTS,
    half_life_ms: float | None = None,
) -> Interactions:
    """``interactions_from_events`` of the events read into ``columns`` (already deduplicated
    by event id as they were read), the same rows in the same order with the same weights,
    without a Python object per event.

    Each distinct (type, value) pair is weighed once by ``event_weight`` (the worker's own
    function, not a second formula) and spread to its rows; users and items come out as
    (n,) object arrays of the interned id strings.
    """
    users, items, types, values, ts = columns.arrays()
    w = np.zeros(len(users), dtype=np.float64)
    from streamrec.events import EVENT_TYPES  # the code order EventColumns uses

    for code in np.unique(types).tolist():
        rows = np.flatnonzero(types == code)
        # NaN (no value) collapses to one entry: np.unique's equal_nan.
        distinct, inverse = np.unique(values[rows], return_inverse=True)
        each = np.array(
            [event_weight(EVENT_TYPES[code], None if v != v else v, weights)
             for v in distinct.tolist()],
            dtype=np.float64,
        )  # fmt: skip
        w[rows] = each[inverse.reshape(-1)]
    stamps = ts.astype(np.int64, copy=True)  # own the data: the buffers may grow on
    if half_life_ms and len(users):
        w = decay_to_latest(w, stamps, users.astype(np.int64), len(columns.user_names),
                            half_life_ms)  # fmt: skip
    user_names = np.empty(len(columns.user_names), dtype=np.object_)
    user_names[:] = columns.user_names
    item_names = np.empty(len(columns.item_names), dtype=np.object_)
    item_names[:] = columns.item_names
    return Interactions(user_names[users], item_names[items], w.astype(np.float32), stamps)


def _first_file(dirs: Iterable[Path], names: Iterable[str]) -> Path | None:
    names = list(names)
    for d in dirs:
        for name in names:
            if (d / name).is_file():
                return d / name
    return None


def load_dataset(
    name: str, data_dir: Path | None = None, weights: Mapping[str, float] = DEFAULT_WEIGHTS
) -> Interactions:
    """Load a dataset by name (one of ``DATASETS``).

    ``data_dir`` is the dataset's own folder (holding ``ratings.csv``, ``u.data``, ...) or a
    folder holding that folder under its usual name (``ml-1m/``, ``hetrec2011-lastfm-2k/``, ...),
    so ``../shared/data`` works for every dataset there. ``synthetic`` needs no files.
    """
    if name == "synthetic":
        return synthetic()
    if name not in DATASET_FOLDERS:
        raise DataError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if data_dir is None:
        raise DataError(f"dataset {name} needs a data directory")
    base = Path(data_dir)
    dirs = [base, base / DATASET_FOLDERS[name]]
    files = {
        "lastfm-2k": ("user_artists.dat", "user_artists.dat.gz"),
        "ml-latest-small": ("ratings.csv", "ratings.csv.gz"),
        "ml-100k": ("u.data", "u.data.gz"),
        "ml-1m": ("ratings.dat", "ratings.dat.gz"),
    }[name]
    path = _first_file(dirs, files)
    if path is None:
        raise DataError(
            f"{base}: no {' or '.join(files)} for dataset {name} (here or in "
            f"{DATASET_FOLDERS[name]}/)"
        )
    if name == "lastfm-2k":
        return load_lastfm(path.parent)
    if name == "ml-latest-small":
        return load_movielens_csv(path, weights)
    if name == "ml-100k":
        return load_ml100k(path, weights)
    return load_ml1m(path, weights)


def load_file(path: Path, weights: Mapping[str, float] = DEFAULT_WEIGHTS) -> Interactions:
    """Any supported file, told apart by name and header.

    ``*.parquet`` -> ``load_parquet``; ``u.data*`` -> ml-100k; ``ratings.dat*`` -> ml-1m;
    ``user_artists.dat*`` -> HetRec Last.fm; a CSV whose header starts ``userId,movieId`` ->
    MovieLens ratings; any other CSV -> ``load_csv`` (``user_id,item_id[,weight][,timestamp]``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(".parquet"):
        return load_parquet(path, weights=weights)
    if name.startswith("u.data"):
        return load_ml100k(path, weights)
    if name.startswith("ratings.dat"):
        return load_ml1m(path, weights)
    if name.startswith("user_artists.dat"):
        return load_lastfm(path.parent)
    with open_text(path) as f:
        first = f.readline().strip().lower()
    if first.startswith("userid,movieid"):
        return load_movielens_csv(path, weights)
    return load_csv(path)
