"""New items from their content, measured honestly: whole items held out of training.

For each seed, a fraction of the items that have content (and a positive interaction) is held
out: every interaction with them leaves the training data. ALS is trained on the rest, the
content->factor map (``streamrec.als.content``) is fitted on the kept items, and the held-out
items get factors from their content alone. Each user's vector is the worker's fold-in of
their training history (``streamrec.als.foldin``), so the scores are what the served path
would give. Every user with a positive interaction with a held-out item (and a training
history) ranks the held-out items, and recall@K / NDCG@K are taken against those
interactions. The same ranking is made with

* ``random``: factors drawn from a Gaussian with the trained items' mean and covariance (a new
  item with factors that carry no information: the floor);
* ``popularity (content)``: each held-out item's popularity *predicted from its content* (the
  same ridge on log1p of the kept items' popularity): the one popularity ranking a serving
  system can actually make for an item nobody has played yet;
* ``popularity (oracle)``: the held-out items' true popularity over the evaluation data. It is
  **not available at serve time** (it counts the very interactions being predicted, the
  evaluated user's own among them); it is reported as the ceiling of a non-personal ranking,
  not as a baseline the map could be expected to beat.

Seeds change the held-out items, the ALS start and the random factors; the report gives each
metric's mean and sample standard deviation over the seeds.
"""

from __future__ import annotations

import csv
import logging
import re
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from streamrec.als.content import HasContent, fit_content_map, match_norms
from streamrec.als.foldin import FoldIn
from streamrec.files import open_text
from streamrec.model.data import Interactions, build_matrix, synthetic
from streamrec.model.datasets import DATASET_FOLDERS
from streamrec.model.errors import DataError, ModelError
from streamrec.model.metrics import ranking_metrics
from streamrec.model.params import Params
from streamrec.model.train import fit

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: The rankings compared, in the report's order.
MODELS = ("content map", "random", "popularity (content)", "popularity (oracle)")
KS = (10, 50)
#: Datasets with item content: the ``evaluate-cold`` command's choices.
CONTENT_DATASETS = ("ml-latest-small", "lastfm-2k", "synthetic", "planted")


@dataclass(frozen=True)
class ContentItem:
    """An item's content as a dataset gives it (``HasContent``, as ``catalog.Item`` is)."""

    item_id: str
    features: Mapping[str, float] = field(default_factory=dict)
    categories: tuple[str, ...] = ()


# -- content of the datasets ----------------------------------------------------------------

_YEAR = re.compile(r"\((\d{4})\)\s*$")


def movielens_content(data_dir: Path) -> dict[str, ContentItem]:
    """ml-latest-small's ``movies.csv``: categories = the genres (``(no genres listed)``
    dropped), feature ``year`` = the release year its title ends with (``Heat (1995)``), when
    it has one."""
    path = _find(data_dir, "ml-latest-small", ("movies.csv", "movies.csv.gz"))
    out: dict[str, ContentItem] = {}
    with open_text(path) as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or [h.lower() for h in header[:3]] != ["movieid", "title", "genres"]:
            raise DataError(f"{path}: expected the header movieId,title,genres, got {header!r}")
        for row in rows:
            if len(row) < 3:
                continue
            year = _YEAR.search(row[1])
            genres = tuple(g for g in row[2].split("|") if g and g != "(no genres listed)")
            features = {"year": float(year.group(1))} if year else {}
            out[row[0]] = ContentItem(row[0], features, genres)
    return out


def lastfm_content(
    data_dir: Path,
    top_tags: int = 20,
    min_tag_users: int = 10,
    taggers_of: Callable[[str], bool] | None = None,
) -> dict[str, ContentItem]:
    """HetRec Last.fm's user tags as each artist's categories: its ``top_tags`` tags most
    often applied (ties by tag name), among the tags at least ``min_tag_users`` distinct
    users applied. Artists nobody tagged so have no content.

    The tags come from the same users whose listening is evaluated, as a live catalog's tags
    would; a tag few users apply is a user's own label ("my favourites 2009") that would carry
    that user's plays from kept to held-out artists, which is why only shared tags are kept.
    ``taggers_of(user_id)``: only the tags of users it accepts are read (so the evaluated
    users' own tags can be left out of the content)."""
    path = _find(data_dir, "lastfm-2k", ("user_taggedartists.dat", "user_taggedartists.dat.gz"))
    names_path = _find(data_dir, "lastfm-2k", ("tags.dat", "tags.dat.gz"))
    names: dict[str, str] = {}
    with open_text(names_path, "latin-1") as f:
        next(f, None)
        for line in f:
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) == 2:
                names[parts[0]] = parts[1].strip().lower()
    counts: dict[str, dict[str, int]] = {}
    taggers: dict[str, set[str]] = {}
    with open_text(path, "latin-1") as f:
        header = f.readline().split()
        if header[:3] != ["userID", "artistID", "tagID"]:
            raise DataError(f"{path}: unexpected header {header!r}")
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] in names:
                if taggers_of is not None and not taggers_of(parts[0]):
                    continue
                tag = names[parts[2]]
                tags = counts.setdefault(parts[1], {})
                tags[tag] = tags.get(tag, 0) + 1
                taggers.setdefault(tag, set()).add(parts[0])
    shared = {t for t, who in taggers.items() if len(who) >= min_tag_users}
    out: dict[str, ContentItem] = {}
    for artist, tags in counts.items():
        best = sorted((t for t in tags if t in shared), key=lambda t: (-tags[t], t))[:top_tags]
        if best:
            out[artist] = ContentItem(artist, {}, tuple(best))
    return out


def synthetic_content(data: Interactions) -> dict[str, ContentItem]:
    """The generated dataset's genre (its ids' ``gNN-`` prefix) as each item's category."""
    return {
        str(i): ContentItem(str(i), {}, (str(i).split("-", 1)[0],))
        for i in np.unique(data.items.astype(str))
    }


def planted(
    n_users: int = 400,
    n_items: int = 600,
    k: int = 8,
    n_features: int = 6,
    seed: int = 0,
) -> tuple[Interactions, dict[str, ContentItem]]:
    """A small generated dataset whose item factors are a linear function of the items'
    content plus noise (the relation the map should find): users' plays are drawn by the
    softmax of user x item scores. For tests and a quick check; needs nothing."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_items, n_features))
    genre = rng.integers(0, 4, size=n_items)
    onehot = np.eye(4)[genre]
    relation = rng.standard_normal((n_features + 4, k)) / np.sqrt(n_features)
    true = np.hstack([features, onehot]) @ relation + 0.3 * rng.standard_normal((n_items, k))
    taste = rng.standard_normal((n_users, k))
    users: list[str] = []
    items: list[str] = []
    weights: list[float] = []
    for u in range(n_users):
        s = 1.5 * true @ taste[u] / np.sqrt(k)
        p = np.exp(s - s.max())
        chosen = rng.choice(n_items, size=30, replace=False, p=p / p.sum())
        users += [f"u{u:04d}"] * len(chosen)
        items += [f"i{i:04d}" for i in chosen]
        weights += [1.0 + float(rng.integers(0, 5)) for _ in chosen]
    content = {
        f"i{i:04d}": ContentItem(
            f"i{i:04d}",
            {f"f{j}": float(features[i, j]) for j in range(n_features)},
            (f"genre{genre[i]}",),
        )
        for i in range(n_items)
    }
    return (
        Interactions(
            np.asarray(users, dtype=np.object_),
            np.asarray(items, dtype=np.object_),
            np.asarray(weights, dtype=np.float32),
        ),
        content,
    )


def dataset_with_content(
    name: str, data_dir: Path | None
) -> tuple[Interactions, dict[str, ContentItem], Callable[[str], bool] | None]:
    """(interactions, item content, which users to evaluate or None for all) of one of
    ``CONTENT_DATASETS``. Last.fm's tags are user-given: its content is read from the tags of
    every other user (by a hash of the id) and only the rest are evaluated, so no evaluated
    user's own tags describe the items they are tested on."""
    from streamrec.model.data import load_dataset

    if name == "planted":
        return (*planted(), None)
    if name == "synthetic":
        data = synthetic()
        return data, synthetic_content(data), None
    if name not in ("ml-latest-small", "lastfm-2k"):
        raise DataError(f"dataset {name!r} has no item content; one of {CONTENT_DATASETS}")
    if data_dir is None:
        raise DataError(f"dataset {name} needs a data directory")
    data = load_dataset(name, data_dir)
    if name == "ml-latest-small":
        return data, movielens_content(data_dir), None

    def tagger(user: str) -> bool:
        return zlib.crc32(user.encode()) % 2 == 0

    return data, lastfm_content(data_dir, taggers_of=tagger), lambda u: not tagger(u)


def _find(data_dir: Path, dataset: str, names: Sequence[str]) -> Path:
    base = Path(data_dir)
    for d in (base, base / DATASET_FOLDERS[dataset]):
        for n in names:
            if (d / n).is_file():
                return d / n
    raise DataError(f"{base}: no {' or '.join(names)} (here or in {DATASET_FOLDERS[dataset]}/)")


# -- the evaluation -------------------------------------------------------------------------


@dataclass(frozen=True)
class ColdConfig:
    params: Params = field(default_factory=Params)
    holdout: float = 0.2  # fraction of the items with content held out
    seeds: tuple[int, ...] = (0, 1, 2)
    ks: tuple[int, ...] = KS
    regularization: float = 1.0  # the content map's ridge λ
    min_category_count: int = 1


@dataclass
class ColdRun:
    seed: int
    held_items: int
    users: int
    metrics: dict[str, dict[str, float]]  # model -> metric -> value
    mapped_norm_ratio: float  # mean norm of mapped factors / of trained factors
    seconds: float
    #: model -> metric -> value, the held-out items ranked among every item (``_whole_catalog``)
    whole_catalog: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class ColdReport:
    source: str
    config: ColdConfig
    n_users: int
    n_items: int
    content_items: int
    features: tuple[str, ...]
    categories: int
    runs: list[ColdRun]

    def summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        """model -> metric -> (mean, sample std over the seeds; 0 for one seed)."""
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for model in MODELS:
            out[model] = {}
            for metric in self.metric_names():
                v = np.array([r.metrics[model][metric] for r in self.runs])
                out[model][metric] = (
                    float(v.mean()),
                    float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                )
        return out

    def metric_names(self) -> list[str]:
        return [f"{m}@{k}" for k in self.config.ks for m in ("recall", "ndcg")]

    def table(self) -> str:
        names = self.metric_names()
        lines = [
            f"cold items from their content: {self.source}; {self.n_users} users, "
            f"{self.n_items} items, {self.content_items} with content "
            f"({len(self.features)} features, {self.categories} categories); "
            f"{self.config.holdout:.0%} of those held out, seeds {list(self.config.seeds)}",
            f"held-out items per seed {[r.held_items for r in self.runs]}, evaluated users "
            f"{[r.users for r in self.runs]}; mean ± std over seeds",
            f"{'ranking':<22}" + "".join(f"{n:>18}" for n in names),
        ]
        for model, metrics in self.summary().items():
            cells = "".join(f"{f'{m:.4f} ± {s:.4f}':>18}" for m, s in
                            (metrics[n] for n in names))  # fmt: skip
            lines.append(f"{model:<22}{cells}")
        for model in ("content map", "content map, norm-matched", "random"):
            parts: list[str] = []
            for key in sorted(self.runs[0].whole_catalog.get(model, {})):
                v = np.array([r.whole_catalog[model][key] for r in self.runs])
                spread = float(v.std(ddof=1)) if len(v) > 1 else 0.0
                parts.append(f"{key} {v.mean():.4f} ± {spread:.4f}")
            if parts:
                lines.append(f"among every item, {model}: " + ", ".join(parts))
        ratio = np.mean([r.mapped_norm_ratio for r in self.runs])
        lines.append(
            f"popularity (oracle) uses the held-out items' true popularity: unknown at serve "
            f"time. Mapped factors' mean norm / trained factors': {ratio:.2f}"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "config": {**asdict(self.config), "params": asdict(self.config.params)},
            "n_users": self.n_users,
            "n_items": self.n_items,
            "content_items": self.content_items,
            "features": list(self.features),
            "categories": self.categories,
            "summary": {
                m: {k: {"mean": v[0], "std": v[1]} for k, v in d.items()}
                for m, d in self.summary().items()
            },
            "runs": [asdict(r) for r in self.runs],
        }


def rank(scores: npt.NDArray[np.floating[Any]], k: int) -> I64:
    """(B, n) scores -> (B, min(k, n)) int64 column indices, best first (ties: lower index)."""
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.lexsort((top, -np.take_along_axis(scores, top, axis=1)), axis=1)
    return np.take_along_axis(top, order, axis=1).astype(np.int64)


def evaluate_cold(
    data: Interactions,
    content: Mapping[str, HasContent],
    cfg: ColdConfig,
    source: str = "",
    evaluated: Callable[[str], bool] | None = None,
) -> ColdReport:
    """Hold whole items out, map their factors from content, rank them (the module doc);
    ``evaluated(user_id)``: the users whose held-out interactions are measured (all: None)."""
    if not 0 < cfg.holdout < 1:
        raise ModelError(f"holdout must be in (0, 1), got {cfg.holdout}")
    matrix = build_matrix(data, cfg.params.transform)
    conf = matrix.confidence.tocsc()
    positive = np.asarray((conf > 0).sum(axis=0)).ravel() > 0
    eligible = np.array(
        [j for j, i in enumerate(matrix.item_ids) if i in content and positive[j]], dtype=np.int64
    )
    if len(eligible) < 10:
        raise DataError(f"{source}: only {len(eligible)} items have both content and plays")
    chosen = (
        np.ones(len(matrix.user_ids), np.bool_)
        if evaluated is None
        else np.fromiter((evaluated(u) for u in matrix.user_ids), np.bool_, len(matrix.user_ids))
    )
    runs = [_one_seed(matrix.confidence, matrix.item_ids, content, eligible, chosen, cfg, s)
            for s in cfg.seeds]  # fmt: skip
    probe = fit_content_map([content[matrix.item_ids[j]] for j in eligible],
                            np.zeros((len(eligible), 1), np.float32),
                            min_category_count=cfg.min_category_count)  # fmt: skip
    return ColdReport(
        source=source,
        config=cfg,
        n_users=len(matrix.user_ids),
        n_items=len(matrix.item_ids),
        content_items=len(eligible),
        features=probe.feature_names,
        categories=len(probe.categories),
        runs=runs,
    )


def _one_seed(
    confidence: sp.csr_matrix,
    item_ids: Sequence[str],
    content: Mapping[str, HasContent],
    eligible: I64,
    chosen: npt.NDArray[np.bool_],
    cfg: ColdConfig,
    seed: int,
) -> ColdRun:
    from streamrec.model.data import Matrix

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    n_items = confidence.shape[1]
    held = np.sort(rng.choice(eligible, size=max(1, round(cfg.holdout * len(eligible))),
                              replace=False))  # fmt: skip
    kept = np.setdiff1d(np.arange(n_items), held)
    csc = confidence.tocsc()
    train = csc[:, kept].tocsr()
    test = csc[:, held].tocsr()
    params = Params(**{**asdict(cfg.params), "seed": seed})
    kept_ids = tuple(item_ids[j] for j in kept)
    als = fit(Matrix(train, tuple(str(u) for u in range(train.shape[0])), kept_ids), params)
    y = np.ascontiguousarray(als.item_factors, dtype=np.float32)

    # The map, fitted on the kept items that have content.
    with_content = np.array([i for i, j in enumerate(kept) if item_ids[j] in content], np.int64)
    kept_items = [content[kept_ids[i]] for i in with_content]
    held_items = [content[item_ids[j]] for j in held]
    cmap = fit_content_map(kept_items, y[with_content], cfg.regularization,
                           min_category_count=cfg.min_category_count)  # fmt: skip
    mapped = cmap.predict(held_items)

    # Users: the fold-in of their training history (the served path), those with a positive
    # training entry and a positive held-out one.
    solver = FoldIn.create(y, params.regularization)
    train.sort_indices()
    user_vecs = solver.solve(
        train.indptr.astype(np.int64),
        train.indices.astype(np.int64),
        (train.data * params.alpha).astype(np.float32),
    )
    has_train = np.asarray((train > 0).sum(axis=1)).ravel() > 0
    relevant = (test > 0).astype(np.bool_).tocsr()
    has_test = np.diff(relevant.indptr) > 0
    users = np.flatnonzero(has_train & has_test & chosen)
    if not len(users):
        raise DataError("no user has both a training history and a held-out item")
    u = user_vecs[users].astype(np.float64)
    rel = relevant[users]
    kmax = max(cfg.ks)

    mean, cov = y.mean(axis=0), np.cov(y, rowvar=False)
    random = rng.multivariate_normal(mean, np.atleast_2d(cov), size=len(held))
    pop_all = np.asarray(csc.maximum(0).sum(axis=0), dtype=np.float64).ravel()
    pop_model = fit_content_map(kept_items, np.log1p(pop_all[kept][with_content])[:, None]
                                .astype(np.float32), cfg.regularization,
                                min_category_count=cfg.min_category_count)  # fmt: skip
    pop_content = pop_model.predict(held_items)[:, 0].astype(np.float64)
    pop_oracle = pop_all[held]

    def metrics(scores: npt.NDArray[np.floating[Any]]) -> dict[str, float]:
        m = ranking_metrics(rank(scores, kmax), rel, ks=cfg.ks)
        return {f"{x}@{k}": m[f"{x}@{k}"] for k in cfg.ks for x in ("recall", "ndcg")}

    def same_for_all(s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.broadcast_to(s, (len(users), len(s)))

    out = {
        "content map": metrics(u @ mapped.T.astype(np.float64)),
        "random": metrics(u @ random.T),
        "popularity (content)": metrics(same_for_all(pop_content)),
        "popularity (oracle)": metrics(same_for_all(pop_oracle)),
    }
    whole = {
        "content map": _whole_catalog(u, y, train[users], mapped, rel, cfg.ks),
        "random": _whole_catalog(u, y, train[users], random, rel, cfg.ks),
        "content map, norm-matched": _whole_catalog(
            u, y, train[users], match_norms(mapped, y), rel, cfg.ks
        ),
    }
    trained_norm = float(np.linalg.norm(y[with_content], axis=1).mean())
    ratio = float(np.linalg.norm(mapped, axis=1).mean()) / max(trained_norm, 1e-12)
    log.info("cold seed %d: %d held-out items, %d users, map %s", seed, len(held), len(users),
             out["content map"])  # fmt: skip
    return ColdRun(seed, len(held), len(users), out, round(ratio, 4),
                   round(time.perf_counter() - started, 2), whole)  # fmt: skip


def _whole_catalog(
    u: npt.NDArray[np.float64],
    y: F32,
    history: sp.csr_matrix,
    new: npt.NDArray[np.floating[Any]],
    relevant: sp.csr_matrix,
    ks: Sequence[int],
) -> dict[str, float]:
    """The held-out items ranked among every item, as a user's list is made: the kept items
    (minus the user's own history) and the held-out ones scored by the same user vector.
    ``recall@K``: the share of each user's held-out positives in their top K (mean over
    users); ``share@K``: the share of the top K slots that held-out items take."""
    kmax = max(ks)
    scores = np.hstack([u @ y.T.astype(np.float64), u @ np.asarray(new, np.float64).T])
    h = history.tocoo()
    scores[h.row, h.col] = -np.inf  # the user's own items never come back
    top = rank(scores, kmax)
    n_kept = y.shape[0]
    is_new = top >= n_kept
    out: dict[str, float] = {}
    rel = relevant.tocsr()
    n_rel = np.diff(rel.indptr)
    for k in ks:
        hits = np.zeros(len(top))
        for b in range(len(top)):
            cols = top[b, :k][is_new[b, :k]] - n_kept
            wanted = rel.indices[rel.indptr[b] : rel.indptr[b + 1]]
            hits[b] = np.isin(cols, wanted).sum()
        out[f"recall@{k}"] = float(np.mean(hits / np.maximum(n_rel, 1)))
        out[f"share@{k}"] = float(is_new[:, :k].mean())
    return out


# -- similar items of items with few interactions ---------------------------------------------


@dataclass
class BlendReport:
    """Similar-item lists of the items with few training users, by blend weight: precision
    and NDCG at each K against the items their held-out users also played (mean, std over seeds);
    ``frequent`` the same for the other items (where the blend is not applied)."""

    source: str
    min_interactions: int
    weights: tuple[float, ...]
    ks: tuple[int, ...]
    rare: dict[float, dict[str, tuple[float, float]]]
    frequent: dict[float, dict[str, tuple[float, float]]]
    items: tuple[int, int]  # (rare, frequent) items evaluated, first seed

    def table(self) -> str:
        names = [f"{m}@{k}" for k in self.ks for m in ("precision", "ndcg")]
        lines = [
            f"similar items by blend weight (content cosine share): {self.source}; items with "
            f"1..{self.min_interactions - 1} training users ({self.items[0]}) and the others "
            f"({self.items[1]}); mean ± std over seeds",
            f"{'items, weight':<22}" + "".join(f"{n:>18}" for n in names),
        ]
        for label, rows in (("few users", self.rare), ("more users", self.frequent)):
            for w, metrics in rows.items():
                cells = "".join(f"{f'{m:.4f} ± {s:.4f}':>18}" for m, s in
                                (metrics[n] for n in names))  # fmt: skip
                lines.append(f"{f'{label}, {w:g}':<22}{cells}")
        return "\n".join(lines)


def evaluate_similar_blend(
    data: Interactions,
    content: Mapping[str, HasContent],
    cfg: ColdConfig,
    min_interactions: int = 5,
    weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    ks: Sequence[int] = (10, 20),
    source: str = "",
    evaluated: Callable[[str], bool] | None = None,
) -> BlendReport:
    """Half of every user's positive pairs (at random) train ALS and the content map; an
    item's held-out co-occurrences (items a held-out user of it also has held out) are what
    its similar items should find. Items with 1..``min_interactions``-1 training users are
    ranked with each blend weight (``streamrec.als.similar.blend_rows``), the others too for
    contrast. ``evaluated(user_id)``: whose held-out pairs count as co-occurrences (all:
    None; Last.fm: the users whose tags are not the content)."""
    from streamrec.als.content import content_vectors
    from streamrec.als.similar import blend_rows, neighbours, unit_rows
    from streamrec.model.data import Matrix

    matrix = build_matrix(data, cfg.params.transform)
    conf = matrix.confidence.tocsr()
    chosen = np.ones(len(matrix.user_ids), np.bool_)
    if evaluated is not None:
        chosen = np.fromiter((evaluated(u) for u in matrix.user_ids), np.bool_, len(chosen))
    rare_runs: dict[float, list[dict[str, float]]] = {w: [] for w in weights}
    freq_runs: dict[float, list[dict[str, float]]] = {w: [] for w in weights}
    counts = (0, 0)
    for seed in cfg.seeds:
        rng = np.random.default_rng(seed)
        coo = conf.tocoo()
        pos = coo.data > 0
        held = pos & (rng.random(len(coo.data)) < 0.5)
        test_mask = held & chosen[coo.row]  # the others' held-out half is simply not used
        shape = conf.shape
        train = sp.csr_matrix((coo.data[~held], (coo.row[~held], coo.col[~held])),
                              shape=shape)  # fmt: skip
        test = sp.csr_matrix((np.ones(int(test_mask.sum()), np.float32),
                              (coo.row[test_mask], coo.col[test_mask])), shape=shape)  # fmt: skip
        params = Params(**{**asdict(cfg.params), "seed": seed})
        als = fit(Matrix(train, matrix.user_ids, matrix.item_ids), params)
        y = np.ascontiguousarray(als.item_factors, dtype=np.float32)
        users = np.asarray((train > 0).sum(axis=0)).ravel()
        # Co-occurrence among held-out pairs: (items x items), the diagonal dropped.
        co = (test.T @ test).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        has_truth = np.diff(co.indptr) > 0
        rare = np.flatnonzero((users >= 1) & (users < min_interactions) & has_truth)
        frequent = np.flatnonzero((users >= min_interactions) & has_truth)
        if len(frequent) > 2000:  # enough for a contrast, bounded cost
            frequent = np.sort(rng.choice(frequent, 2000, replace=False))
        if seed == cfg.seeds[0]:
            counts = (len(rare), len(frequent))
        known = [r for r, i in enumerate(matrix.item_ids) if i in content and users[r] > 0]
        cmap = fit_content_map([content[matrix.item_ids[r]] for r in known], y[known],
                               cfg.regularization,
                               min_category_count=cfg.min_category_count)  # fmt: skip
        empty = ContentItem("")
        vectors = content_vectors(cmap, [content.get(i, empty) for i in matrix.item_ids])
        unit = unit_rows(y)
        kmax = max(ks)
        for w in weights:
            rows_of = blend_rows(unit, vectors, w)
            for rows, runs in ((rare, rare_runs), (frequent, freq_runs)):
                if not len(rows):
                    continue
                recs = np.concatenate([neighbours(rows_of, rows[lo : lo + 512], kmax)[0]
                                       for lo in range(0, len(rows), 512)])  # fmt: skip
                m = ranking_metrics(recs, (co[rows] > 0).astype(np.bool_).tocsr(), ks=ks)
                runs[w].append(
                    {f"{x}@{k}": m[f"{x}@{k}"] for k in ks for x in ("precision", "ndcg")}
                )

    def summary(
        runs: dict[float, list[dict[str, float]]],
    ) -> dict[float, dict[str, tuple[float, float]]]:
        out: dict[float, dict[str, tuple[float, float]]] = {}
        for w, per_seed in runs.items():
            if not per_seed:
                continue
            out[w] = {}
            for key in per_seed[0]:
                v = np.array([r[key] for r in per_seed])
                out[w][key] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0)
        return out

    return BlendReport(source, min_interactions, tuple(weights), tuple(ks), summary(rare_runs),
                       summary(freq_runs), counts)  # fmt: skip


# -- content-only similar items where there are no users: Spotify top hits ---------------------

#: The audio features of the Spotify top-hits file read as content (its ``popularity`` is a
#: play count in disguise and ``genre`` is what the check predicts, so neither is content).
SPOTIFY_FEATURES = ("duration_ms", "year", "danceability", "energy", "key", "loudness", "mode",
                    "speechiness", "acousticness", "instrumentalness", "liveness", "valence",
                    "tempo")  # fmt: skip


def spotify_genre_agreement(data_dir: Path, ks: Sequence[int] = (10,)) -> dict[str, float]:
    """The Spotify top-hits file has audio features and genres but no users: its songs'
    content neighbours (cosine over the standardized ``SPOTIFY_FEATURES``,
    ``streamrec.als.content.content_vectors``) are checked against its genres instead: the
    share of each song's K nearest songs that share a genre with it ("any genre") or have
    exactly its genres ("same genres"), against the share among all other songs (what random
    neighbours give). Duplicate (artist, song) rows count once."""
    from streamrec.als.content import content_vectors
    from streamrec.als.similar import neighbours

    path = Path(data_dir) / "spotify-top-hits-2000-2019" / "songs_normalize.csv"
    if not path.is_file():
        path = Path(data_dir) / "songs_normalize.csv"
    if not path.is_file():
        raise DataError(f"{data_dir}: no spotify-top-hits-2000-2019/songs_normalize.csv")
    songs: dict[tuple[str, str], tuple[ContentItem, frozenset[str]]] = {}
    with open_text(path) as f:
        for row in csv.DictReader(f):
            key = (row["artist"], row["song"])
            tags = frozenset(g.strip() for g in row["genre"].split(",") if g.strip())
            feats = {n: float(row[n]) for n in SPOTIFY_FEATURES if row.get(n, "").strip()}
            songs.setdefault(key, (ContentItem(f"{key[0]} - {key[1]}", feats), tags))
    items = [c for c, _ in songs.values()]
    genres = [g for _, g in songs.values()]
    # A map fitted to nothing: only its standardization (and vocabulary) is used here.
    cmap = fit_content_map(items, np.zeros((len(items), 1), np.float32))
    unit = content_vectors(cmap, items)
    vocab = sorted(set().union(*genres))
    onehot = np.zeros((len(items), len(vocab)), np.float32)
    for r, g in enumerate(genres):
        onehot[r, [vocab.index(x) for x in g]] = 1
    codes = np.unique(np.array([",".join(sorted(g)) for g in genres]), return_inverse=True)[1]
    agree = {
        "any genre": (onehot @ onehot.T) > 0,
        "same genres": codes[:, None] == codes[None, :],
    }
    out: dict[str, float] = {"songs": float(len(items))}
    rows = np.arange(len(items), dtype=np.int64)
    near = {k: neighbours(unit, rows, k)[0] for k in ks}
    for name, match in agree.items():
        np.fill_diagonal(match, False)
        out[f"{name}, random"] = float(match.sum(axis=1).mean() / (len(items) - 1))
        for k in ks:
            out[f"{name}, content@{k}"] = float(np.take_along_axis(match, near[k], 1).mean())
    return out
