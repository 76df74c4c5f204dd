"""The top-N indexes of big catalogues (streamrec/als/ann.py) and their use by the scorer, the
similar items and the model artifact. The known answer is the brute-force ``top_n``:
``NormIndex`` is exact by construction, and an IVF-Flat search with ``nprobe == nlist`` visits
every list, so it is exact too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamrec.als.ann import NORM_BLOCK, IvfIndex, NormIndex, augment, load_for, rerank, wanted
from streamrec.als.scorer import Scorer
from streamrec.als.similar import similar_items, unit_index
from streamrec.als.topn import top_n
from streamrec.artifact import INDEX, MANIFEST, Model, load_model, write_model
from streamrec.errors import ArtifactError
from streamrec.settings import load_settings

PARAMS = {"regularization": 0.1, "alpha": 2.0, "transform": "log"}


def trained_like(n: int, k: int = 16, seed: int = 0) -> np.ndarray:
    """Factors whose norms spread over orders of magnitude, as ALS item factors do."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal((n, k)).astype(np.float32)
    return (y * rng.lognormal(-1.0, 1.0, (n, 1))).astype(np.float32)


def test_augmentation_turns_inner_product_order_into_l2_order() -> None:
    y = trained_like(300)
    u = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    x, top = augment(y)
    assert x.shape == (300, 17)
    assert top == pytest.approx(float(np.linalg.norm(y, axis=1).max()), rel=1e-6)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), top, rtol=1e-5)
    q = np.hstack([u, np.zeros((5, 1), np.float32)])
    l2 = ((q[:, None, :] - x[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(
        np.argsort(l2, axis=1)[:, :20], np.argsort(-(u @ y.T), axis=1)[:, :20]
    )


def test_full_probe_equals_brute_force_with_exclusions() -> None:
    y = trained_like(4000)
    rng = np.random.default_rng(2)
    u = rng.standard_normal((40, 16)).astype(np.float32)
    index = IvfIndex.build(y, nlist=16, nprobe=16, threads=1)
    # Each user's history: their 30 best items plus 10 random ones; 5 items blocked for all.
    best = np.argsort(-(u @ y.T), axis=1)[:, :30]
    hist = [np.unique(np.concatenate([best[b], rng.choice(4000, 10)])) for b in range(40)]
    ptr = np.concatenate([[0], np.cumsum([len(h) for h in hist])]).astype(np.int64)
    idx = np.concatenate(hist).astype(np.int64)
    blocked = best[:5, 30 - 1].astype(np.int64)
    want_items, want_scores = top_n(u, y, 10, ptr, idx, blocked)
    items, scores, short = rerank(index, y, u, 10, 60, ptr, idx, blocked)
    assert not short.any()
    np.testing.assert_array_equal(items, want_items)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    assert index.stats.searched == 40


def test_ivf_candidates_running_short_are_flagged() -> None:
    y = trained_like(3000)
    index = IvfIndex.build(y, nlist=8, nprobe=8, threads=1)
    u = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    # Query 0 excludes its 12 best rows: 5 + 10 fetched leaves 3 < 5.
    best = np.argsort(-(u[0] @ y.T))[:12].astype(np.int64)
    ptr = np.array([0, 12, 12], dtype=np.int64)
    items, _, short = rerank(index, y, u, 5, 10, ptr, best)
    assert short.tolist() == [True, False]
    np.testing.assert_array_equal(items[1], top_n(u[1:], y, 5)[0][0])


@pytest.mark.parametrize("spread", [True, False])
def test_norm_index_equals_brute_force(spread: bool) -> None:
    """Exact with history and blocked rows excluded, whether norms spread (early stop) or not
    (equal norms: every row is scanned), across several blocks."""
    n = 6 * NORM_BLOCK + 77
    rng = np.random.default_rng(5)
    y = trained_like(n, seed=5) if spread else _unit(rng.standard_normal((n, 16)))
    index = NormIndex.build(y)
    u = rng.standard_normal((70, 16)).astype(np.float32)
    u[3] = 0.0  # a zero vector: every score 0, still n items
    best = np.argsort(-(u @ y.T), axis=1)[:, :40]
    hist = [np.unique(np.concatenate([best[b, ::2], rng.choice(n, 20)])) for b in range(70)]
    hist[5] = np.zeros(0, dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum([len(h) for h in hist])]).astype(np.int64)
    idx = np.concatenate(hist).astype(np.int64)
    blocked = np.unique(best[:4, 1]).astype(np.int64)
    want_items, want_scores = top_n(u, y, 50, ptr, idx, blocked)
    items, scores = index.top_n(u, 50, ptr, idx, blocked)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    rows = np.ptp(want_scores, axis=1) > 0  # the zero vector's items all tie
    np.testing.assert_array_equal(items[rows], want_items[rows])
    assert (items[3] >= 0).all() and not np.isin(items[3], blocked).any()
    assert index.stats.searched == 70
    if not spread:  # no early stop: past a sixteenth of the rows, brute force takes over
        assert index.stats.exact > 60


@pytest.mark.parametrize("spread", [True, False])
def test_norm_index_hands_hopeless_users_to_brute_force_after_one_block(spread: bool) -> None:
    """Norms that do not spread (Gaussian factors, k=64, as bench/bigcatalog.py): after the
    first block no user's 50th best reaches even the last row's bound, so each goes to brute
    force at once instead of scanning a sixteenth of the rows first. Norms that spread
    (ALS-like): none does, and the scan stops early. Exact both ways."""
    n, k = 40 * NORM_BLOCK, 64
    rng = np.random.default_rng(11)
    u = rng.standard_normal((100, k)).astype(np.float32)
    y = rng.standard_normal((n, k)).astype(np.float32)
    if spread:  # three orders of magnitude, as trained ALS item norms
        y *= rng.lognormal(0.0, 2.0, (n, 1)).astype(np.float32)
    index = NormIndex.build(y)
    want_items, want_scores = top_n(u, y, 50)
    items, scores = index.top_n(u, 50)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-6)
    # The same items, up to the order of near-ties (products in other shapes round apart).
    np.testing.assert_array_equal(np.sort(items, axis=1), np.sort(want_items, axis=1))
    per_user = index.stats.scanned / len(u)
    if spread:
        assert index.stats.exact == 0 and per_user <= 3 * NORM_BLOCK  # two blocks of 40
    else:
        assert index.stats.exact == len(u) and per_user == NORM_BLOCK


@pytest.mark.parametrize("spread", [True, False])
def test_norm_index_lists_do_not_depend_on_the_batch(spread: bool) -> None:
    """A user's items and scores are bit-identical whichever users share its call (the
    worker's batches vary), through the early stop and through brute force alike."""
    n = 12 * NORM_BLOCK + 5
    rng = np.random.default_rng(12)
    y = trained_like(n, seed=12) if spread else rng.standard_normal((n, 16)).astype(np.float32)
    index = NormIndex.build(y)
    u = rng.standard_normal((150, 16)).astype(np.float32)
    hist = [rng.choice(n, 15, replace=False) for _ in range(150)]
    ptr = np.concatenate([[0], np.cumsum([len(h) for h in hist])]).astype(np.int64)
    idx = np.concatenate(hist).astype(np.int64)
    items, scores = index.top_n(u, 50, ptr, idx)
    for lo, size in [(0, 1), (7, 1), (9, 3), (20, 17), (40, 65), (10, 130)]:
        p = ptr[lo : lo + size + 1]
        part_items, part_scores = index.top_n(u[lo : lo + size], 50, p - p[0], idx[p[0] : p[-1]])
        np.testing.assert_array_equal(part_scores, scores[lo : lo + size])
        np.testing.assert_array_equal(part_items, items[lo : lo + size])


def test_norm_index_pads_short_lists_and_marks_non_finite_users() -> None:
    y = trained_like(30)
    index = NormIndex.build(y)
    u = np.ones((2, 16), np.float32)
    u[1, 0] = np.inf
    ptr = np.array([0, 25, 25], dtype=np.int64)
    items, scores = index.top_n(u, 10, ptr, np.arange(25, dtype=np.int64))
    assert items.shape == (2, 10)
    assert sorted(items[0, :5].tolist()) == [25, 26, 27, 28, 29] and (items[0, 5:] == -1).all()
    assert np.isneginf(scores[0, 5:]).all()
    assert (items[1] == -1).all() and np.isnan(scores[1]).all()


def test_scorer_through_the_norm_index_writes_the_exact_lists() -> None:
    y = trained_like(5000)
    model = _model(y)
    rng = np.random.default_rng(6)
    histories = {
        f"u{b}": {f"i{r}": float(rng.integers(1, 5)) for r in rng.choice(5000, 30 + b)}
        for b in range(100)
    }
    blocked = np.array([1, 2, 3], dtype=np.int64)
    exact = Scorer.create(model, n=20, blocked=blocked).score(histories)
    fast = Scorer.create(model, n=20, blocked=blocked, ann=NormIndex.build(y)).score(histories)
    np.testing.assert_array_equal(fast.items, exact.items)
    np.testing.assert_allclose(fast.scores, exact.scores, rtol=1e-5)
    assert fast.short == 0


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_non_finite_query_gives_no_items_and_nan_scores() -> None:
    y = trained_like(500)
    index = IvfIndex.build(y, nlist=4, nprobe=4, threads=1)
    u = np.ones((2, 16), np.float32)
    u[1, 3] = np.nan
    items, scores, short = rerank(index, y, u, 5, 10)
    assert (items[1] == -1).all() and np.isnan(scores[1]).all() and not short.any()
    assert (items[0] >= 0).all()


def test_similar_items_through_the_index_equal_the_exact_ones() -> None:
    y = trained_like(2500)
    y[7] = 0.0  # a zero row: cosine 0 with everything, in both
    blocked = np.array([3, 11], dtype=np.int64)
    exact = list(similar_items(y, 8, blocked, threads=1))
    index = unit_index(y, nprobe=8, threads=1)
    index.index.nprobe = index.index.nlist  # every list: exact
    approx = list(similar_items(y, 8, blocked, threads=1, index=index))
    rows = np.concatenate([r for r, _, _ in exact])
    np.testing.assert_array_equal(np.concatenate([r for r, _, _ in approx]), rows)
    e_items = np.vstack([i for _, i, _ in exact])
    a_items = np.vstack([i for _, i, _ in approx])
    e_sc = np.vstack([s for _, _, s in exact])
    a_sc = np.vstack([s for _, _, s in approx])
    np.testing.assert_allclose(a_sc, e_sc, rtol=1e-5, atol=1e-6)
    # Equal cosines (the zero row's neighbours all score 0) may come in another order.
    distinct = np.ptp(e_sc, axis=1) > 0
    np.testing.assert_array_equal(a_items[distinct], e_items[distinct])
    assert not np.isin(a_items, blocked).any()
    assert not (a_items == np.arange(len(y))[:, None]).any()


def _model(y: np.ndarray, tmp: Path | None = None, index: NormIndex | None = None) -> Model:
    import tempfile

    out = (tmp or Path(tempfile.mkdtemp())) / "m"
    write_model(out, [f"i{r}" for r in range(len(y))], y, np.ones(len(y), np.float32), PARAMS,
                index=index)  # fmt: skip
    return load_model(out)


def test_index_is_stored_checksummed_and_memory_mapped(tmp_path: Path) -> None:
    y = trained_like(3000)
    model = _model(y, tmp_path, NormIndex.build(y))
    assert model.index_path == model.path / INDEX and model.index_path.is_file()
    assert model.manifest["index"] == {"kind": "norm-order-mips", "n_items": 3000,
                                       "file": INDEX}  # fmt: skip
    assert INDEX in model.manifest["files"]
    settings = load_settings(ann_min_items=1000)
    loaded = load_for(model, settings)
    assert loaded is not None and loaded.n_items == 3000
    assert isinstance(loaded.order, np.memmap) or isinstance(loaded.order.base, np.memmap)
    u = np.random.default_rng(4).standard_normal((20, 16)).astype(np.float32)
    np.testing.assert_array_equal(loaded.top_n(u, 30)[0], top_n(u, y, 30)[0])
    # Below the threshold, or with it off, the model is served by the plain brute force.
    assert load_for(model, load_settings(ann_min_items=3001)) is None
    assert load_for(model, load_settings(ann_min_items=0)) is None
    assert wanted(3000, settings) and not wanted(999, settings)
    # A big model stored without one gets it built on load.
    plain = load_for(_model(y, tmp_path / "plain"), settings)
    assert plain is not None
    np.testing.assert_array_equal(plain.order, loaded.order)


def test_ivf_index_saves_and_loads_memory_mapped(tmp_path: Path) -> None:
    y = trained_like(3000)
    built = IvfIndex.build(y, nlist=20, nprobe=5, threads=1)
    built.save(tmp_path / "ivf")
    loaded = IvfIndex.load(tmp_path / "ivf", built.meta(), nprobe=5)
    u = np.random.default_rng(4).standard_normal((20, 16)).astype(np.float32)
    np.testing.assert_array_equal(loaded.search(u, 30), built.search(u, 30))
    with pytest.raises(ArtifactError, match="dimension 99"):
        IvfIndex.load(tmp_path / "ivf", {**built.meta(), "dim": 99}, nprobe=5)
    (tmp_path / "junk").write_bytes(b"not an index")
    with pytest.raises(ArtifactError, match="not a faiss index"):
        IvfIndex.load(tmp_path / "junk", built.meta(), nprobe=5)


def test_a_changed_index_file_is_refused(tmp_path: Path) -> None:
    y = trained_like(1000)
    model = _model(y, tmp_path, NormIndex.build(y))
    f = model.path / INDEX
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum"):
        load_model(model.path)


def _rewrite(model_dir: Path, order: np.ndarray | None = None, **index: object) -> None:
    """Replace the stored order and/or manifest index fields, with matching checksums."""
    import hashlib

    manifest = json.loads((model_dir / MANIFEST).read_text())
    if order is not None:
        np.save(model_dir / INDEX, order, allow_pickle=False)
        data = (model_dir / INDEX).read_bytes()
        manifest["files"][INDEX] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest["index"].update(index)
    (model_dir / MANIFEST).write_text(json.dumps(manifest))


def test_an_index_that_is_not_the_factors_norm_order_is_refused(tmp_path: Path) -> None:
    y = trained_like(1000)
    model = _model(y, tmp_path, NormIndex.build(y))
    settings = load_settings(ann_min_items=1)
    good = np.load(model.path / INDEX)
    _rewrite(model.path, good[::-1].copy())
    with pytest.raises(ArtifactError, match="decreasing norm"):
        load_for(load_model(model.path), settings)
    bad = good.copy()
    bad[0] = bad[1]
    _rewrite(model.path, bad)
    with pytest.raises(ArtifactError, match="permutation"):
        load_for(load_model(model.path), settings)
    _rewrite(model.path, good[:10].copy())
    with pytest.raises(ArtifactError, match="int64"):
        load_for(load_model(model.path), settings)
    _rewrite(model.path, good, kind="hnsw")
    with pytest.raises(ArtifactError, match="kind"):
        load_for(load_model(model.path), settings)
    # An index entry without its file listed is no model.
    manifest = json.loads((model.path / MANIFEST).read_text())
    del manifest["files"][INDEX]
    (model.path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="exactly"):
        load_model(model.path)


def test_scorer_counts_the_users_the_norm_index_hands_to_brute_force() -> None:
    # Flat norms: every user goes to brute force after the first block; ``Scored.short`` says
    # how many (the worker's streamrec_topn_index_fallback_total), and the lists stay exact.
    n, k = 4 * NORM_BLOCK, 64
    y = np.random.default_rng(13).standard_normal((n, k)).astype(np.float32)
    model = _model(y)
    rng = np.random.default_rng(14)
    histories = {f"u{b}": {f"i{r}": 1.0 for r in rng.choice(n, 5)} for b in range(30)}
    exact = Scorer.create(model, n=20).score(histories)
    fast = Scorer.create(model, n=20, ann=NormIndex.build(y)).score(histories)
    np.testing.assert_array_equal(np.sort(fast.items, axis=1), np.sort(exact.items, axis=1))
    assert fast.short == len(histories)
    assert exact.short == 0
